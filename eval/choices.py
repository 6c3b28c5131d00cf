"""`choices` scoring (lm-eval's ``multiple_choice``): one context forward shared by a question's four options.

lm-eval scores option k by running ``(context + continuation_k)[:-1]`` in full: four forwards of
the same context per question. Here a question is ONE row: the context once, then the four
continuations (all but their last token) after it. An attention mask lets each continuation see
the context and its own earlier tokens only, and its position ids restart right after the
context, so every scored logit is the one the plain per-option forward computes (the context's
keys/values do not depend on what follows it: causal attention). The instruction prefix every
context starts with is run once for all questions and its KV cache reused (as `letter` does).

Tokens follow lm-eval's ``_encode_pair`` exactly (:func:`eval.scoring.encode_pairs`): the row is
``context_ids + continuation_ids``, also where tokenizing ``context + continuation`` merges
tokens across the boundary. A row is left-padded so that the scored positions (the context's
last token and the continuations) end every row: only those go through the LM head
(``logits_to_keep``). Custom masks need the ``sdpa`` or ``eager`` attention; other kernels
(flash-attention) use the per-option forwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from .data import LETTERS, Question
from .modeling import LoadedModel
from .prompts import TARGET_DELIMITER, choices_prompt
from .scoring import SharedPrefix, argmax, cache_kwarg, encode_pairs, forward_logprobs, length_batches

#: attention kernels that take an arbitrary 4D additive mask
MASKED_ATTENTION = ("sdpa", "eager")


@dataclass
class PackedRow:
    """One question's row after the shared prefix: ids, position ids, segments (-1 pad, 0 context, k+1 option k)."""

    ids: list[int]
    positions: list[int]
    segments: list[int]
    #: (row position, target token, option) of every scored token
    targets: list[tuple[int, int, int]]


def pack_row(ctx: list[int], conts: Sequence[list[int]], skip: int, width: int, pad_id: int) -> PackedRow:
    """Left-padded row of ``width``: ``ctx[skip:]`` then each continuation but its last token."""
    body = ctx[skip:] + [t for cont in conts for t in cont[:-1]]
    pad = width - len(body)
    ids = [pad_id] * pad + body
    positions = [0] * pad + list(range(skip, len(ctx)))
    segments = [-1] * pad + [0] * (len(ctx) - skip)
    last_ctx = pad + len(ctx) - skip - 1
    targets, start = [], last_ctx + 1
    for k, cont in enumerate(conts):
        n = max(len(cont) - 1, 0)
        positions += range(len(ctx), len(ctx) + n)
        segments += [k + 1] * n
        # the context's last position predicts the first token; each fed token predicts the next
        targets += [(last_ctx if u == 0 else start + u - 1, tok, k) for u, tok in enumerate(cont)]
        start += n
    return PackedRow(ids, positions, segments, targets)


def packed_mask(segments: Any, prefix_len: int, dtype: Any) -> Any:
    """[B, 1, W, prefix + W] additive mask: the prefix, then causal within a segment, plus the context for options.

    Padding attends only to padding (never fully masked, never seen by real tokens).
    """
    import torch

    width = segments.shape[1]
    pos = torch.arange(width)
    causal = pos[:, None] >= pos[None, :]
    q, k = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((q == k) | ((k == 0) & (q > 0)))
    allowed = torch.cat([torch.ones(segments.shape[0], width, prefix_len, dtype=torch.bool), allowed], dim=-1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def packed_scores(lm: LoadedModel, rows: list[PackedRow], prefix: SharedPrefix | None) -> list[list[float]]:
    """Summed log-likelihood of each option of each row: one forward for the batch."""
    import torch

    device, n_rows = lm.device, len(rows)
    keep = max(len(r.ids) - min(p for p, _, _ in r.targets) for r in rows if r.targets) if any(r.targets for r in rows) else 1
    ids = torch.tensor([r.ids for r in rows], dtype=torch.long)
    positions = torch.tensor([r.positions for r in rows], dtype=torch.long)
    segments = torch.tensor([r.segments for r in rows], dtype=torch.long)
    skip = len(prefix.ids) if prefix is not None else 0
    mask = packed_mask(segments, skip, lm.model.dtype)
    extra = {cache_kwarg(lm.model): prefix.cache(n_rows), "use_cache": True} if prefix is not None else {"use_cache": False}
    width = ids.shape[1]
    cells: dict[tuple[int, int], int] = {}
    for row, r in enumerate(rows):
        for p, _, _ in r.targets:
            cells.setdefault((row, p - (width - keep)), len(cells))
    sums = [[0.0] * 4 for _ in rows]
    if not cells:
        return sums
    with torch.inference_mode():
        logits = lm.model(
            input_ids=ids.to(device), position_ids=positions.to(device), attention_mask=mask.to(device),
            logits_to_keep=keep, **extra,
        ).logits
        where = torch.tensor(list(cells), dtype=torch.long, device=logits.device)
        picked = logits[where[:, 0], where[:, 1]].float()
        lse = torch.logsumexp(picked, dim=-1)
        cell_ix, tokens, owners = [], [], []
        for row, r in enumerate(rows):
            for p, tok, k in r.targets:
                cell_ix.append(cells[(row, p - (width - keep))])
                tokens.append(tok)
                owners.append(4 * row + k)
        cell_t = torch.tensor(cell_ix, dtype=torch.long, device=logits.device)
        token_lp = picked[cell_t, torch.tensor(tokens, dtype=torch.long, device=logits.device)] - lse[cell_t]
        totals = torch.zeros(4 * n_rows, dtype=torch.float32, device=logits.device)
        totals.index_add_(0, torch.tensor(owners, dtype=torch.long, device=logits.device), token_lp)
    flat = totals.cpu().tolist()
    return [flat[4 * row : 4 * row + 4] for row in range(n_rows)]


def shares_context(lm: LoadedModel) -> bool:
    """Whether the model's attention kernel takes the packed rows' custom mask."""
    return getattr(lm.model.config, "_attn_implementation", None) in MASKED_ATTENTION


def iter_choices(lm: LoadedModel, questions: Sequence[Question], batch_size: int,
                 share_context: bool = True, reuse_prefix: bool = True) -> Iterator[list[dict]]:
    """`choices`: summed log-likelihood of each option's text as the continuation of the question.

    ``batch_size`` questions per forward, longest first. With ``share_context`` (and an sdpa or
    eager model) a question's context is run once for its four options and the shared instruction
    prefix once for all (``reuse_prefix``); otherwise each option runs ``context + option`` in full
    (lm-eval's computation). Rows also carry ``scores_norm`` (divided by the option's length in
    characters, lm-eval's ``acc_norm``) and ``prediction_norm``.
    """
    pairs = encode_pairs(lm.tokenizer, [(choices_prompt(q), [TARGET_DELIMITER + o for o in q.options]) for q in questions])
    if share_context and shares_context(lm):
        prefix = SharedPrefix.maybe(lm, [ctx for ctx, _ in pairs], reuse_prefix)
        skip = len(prefix.ids) if prefix is not None else 0
        lengths = [len(ctx) - skip + sum(max(len(c) - 1, 0) for c in conts) for ctx, conts in pairs]
        for batch in length_batches(lengths, batch_size):
            width = max(lengths[i] for i in batch)
            rows = [pack_row(*pairs[i], skip, width, lm.tokenizer.pad_token_id) for i in batch]
            yield [_row(questions[i], s) for i, s in zip(batch, packed_scores(lm, rows, prefix))]
        return
    lengths = [max(len(ctx) + len(c) for c in conts) for ctx, conts in pairs]
    for batch in length_batches(lengths, batch_size):
        seqs, conts = [], []
        for i in batch:
            ctx, options = pairs[i]
            seqs += [(ctx + cont)[:-1] for cont in options]
            conts += options
        # the last len(cont) positions of (ctx + cont)[:-1] predict the continuation's tokens
        wanted = [list(range(len(seq) - len(cont), len(seq))) for seq, cont in zip(seqs, conts)]
        logprobs = forward_logprobs(lm, seqs, wanted)
        sums = [float(lp.gather(-1, _col(cont)).sum()) for lp, cont in zip(logprobs, conts)]
        yield [_row(questions[i], sums[4 * j : 4 * j + 4]) for j, i in enumerate(batch)]


def _row(q: Question, scores: list[float]) -> dict:
    norm = [s / len(opt) for s, opt in zip(scores, q.options)]
    return {"index": q.index, "scores": scores, "scores_norm": norm, "prediction_norm": LETTERS[argmax(norm)]}


def _col(ids: list[int]) -> Any:
    import torch

    return torch.tensor(ids, dtype=torch.long).unsqueeze(-1)
