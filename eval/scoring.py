"""Log-likelihood scoring: the `letter` scorer (AstroMLab "token" method) and the pieces `choices` shares.

`letter` and `choices` (:mod:`eval.choices`, lm-eval style) tokenize exactly as
lm-evaluation-harness does for a causal model (trailing spaces of the context move to the
continuation; the continuation's tokens are those of ``context + continuation`` after the
context's tokens), so their predictions match lm-eval's on the exported task. Batches are
formed from questions sorted by length (longest first, ties by index: deterministic), packed
into rows (:mod:`eval.packing`) or right-padded, and only the positions that are scored go
through the LM head (``logits_to_keep``; the saving grows with the vocabulary: 128k for Llama-3).

Each scorer yields one list of rows per batch: ``{"index": i, "scores": [sA, sB, sC, sD], ...}``
where the scores are log-probabilities (softmax over them gives p for calibration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from .data import LETTERS, Question
from .modeling import LoadedModel
from .packing import Piece, packed_scores, packs
from .prefix import SharedPrefix, cache_kwarg
from .prompts import TARGET_DELIMITER, letter_prompt


class ScoringError(RuntimeError):
    """A question cannot be scored with the chosen method (e.g. letters that are not one token)."""


def encode_pairs(
    tokenizer: Any, items: Sequence[tuple[str, Sequence[str]]]
) -> list[tuple[list[int], list[list[int]]]]:
    """For each (context, continuations): (context ids, ids of each continuation).

    Split the way lm-eval's ``_encode_pair`` does: trailing spaces of the context move to the
    continuation; the continuation's ids are those of ``context + continuation`` after the
    context's ids. Tokenizes in two batched calls (fast tokenizers are slow one string at a time).
    """
    contexts, wholes, sizes = [], [], []
    for context, continuations in items:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuations = [context[-n_spaces:] + c for c in continuations]
            context = context[:-n_spaces]
        contexts.append(context)
        wholes.extend(context + c for c in continuations)
        sizes.append(len(continuations))
    ctx_ids = tokenizer(contexts)["input_ids"] if contexts else []
    whole_ids = tokenizer(wholes)["input_ids"] if wholes else []
    result, start = [], 0
    for ctx, size in zip(ctx_ids, sizes):
        result.append((ctx, [w[len(ctx):] for w in whole_ids[start : start + size]]))
        start += size
    return result


@dataclass
class LetterRequest:
    """Score the last position of ``input_ids`` at the four ``targets`` (one token per letter)."""

    index: int
    input_ids: list[int]
    targets: list[int]


def letter_requests(tokenizer: Any, questions: Sequence[Question]) -> list[LetterRequest]:
    """Build the one-forward-pass request of each question.

    The continuations " A" .. " D" may be one token each (Llama-3, GPT-2 style "ĠA") or share a
    leading piece (SentencePiece "▁" + "A"); a shared prefix is appended to the prompt (its
    probability is common to all four, so it cancels in the softmax and the argmax).
    """
    letters = [TARGET_DELIMITER + letter for letter in LETTERS]
    encoded = encode_pairs(tokenizer, [(letter_prompt(q), letters) for q in questions])
    return [_letter_request(tokenizer, q, ctx, conts) for q, (ctx, conts) in zip(questions, encoded)]


def _letter_request(tokenizer: Any, q: Question, ctx: list[int], conts: list[list[int]]) -> LetterRequest:
    shared = 0
    while all(len(c) > shared + 1 for c in conts) and len({c[shared] for c in conts}) == 1:
        shared += 1
    tails = [c[shared:] for c in conts]
    if any(len(t) != 1 for t in tails) or len({t[0] for t in tails}) != 4:
        shown = [tokenizer.convert_ids_to_tokens(c) for c in conts]
        raise ScoringError(
            f"question {q.index}: the answer letters are not single distinct tokens after the prompt ({shown}); "
            "use --method choices"
        )
    return LetterRequest(q.index, ctx + conts[0][:shared], [t[0] for t in tails])


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions grouped into batches of similar length: longest first, ties by position."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def forward_logprobs(lm: LoadedModel, seqs: list[list[int]], wanted: list[list[int]], prefix: "SharedPrefix | None" = None) -> list[Any]:
    """Log-softmax over the vocabulary at positions ``wanted[r]`` of sequence ``r``: one [len, V] tensor each.

    Sequences are right-padded and run without an attention mask, as lm-eval does: causal
    attention never looks to the right, so padding after a sequence cannot change its logits,
    and the fast causal attention path is used. Only the wanted positions go through the LM head.
    With ``prefix``, every sequence starts with ``prefix.ids``: only the rest is run, attending to
    the prefix's cached keys/values (positions in ``wanted`` still count from the sequence start).
    """
    import torch

    skip = len(prefix.ids) if prefix is not None else 0
    width = max(len(s) for s in seqs) - skip
    ids = torch.full((len(seqs), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s) - skip] = torch.tensor(s[skip:], dtype=torch.long)
    keep = sorted({p - skip for w in wanted for p in w})
    column = {p + skip: k for k, p in enumerate(keep)}
    extra = {cache_kwarg(lm.model): prefix.cache(len(seqs)), "use_cache": True} if prefix is not None else {"use_cache": False}
    with torch.inference_mode():
        logits = lm.model(
            input_ids=ids.to(lm.device),
            logits_to_keep=torch.tensor(keep, dtype=torch.long, device=lm.device),
            **extra,
        ).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    return [logprobs[row, [column[p] for p in w]] for row, w in enumerate(wanted)]


def letter_piece(request: LetterRequest, skip: int) -> Piece:
    """The prompt after the shared prefix, scored at its last token for the four letters."""
    piece = Piece()
    piece.add(request.input_ids[skip:], skip, 0)
    piece.targets = [(len(piece.ids) - 1, target, k) for k, target in enumerate(request.targets)]
    return piece


def iter_letter(lm: LoadedModel, questions: Sequence[Question], batch_size: int, reuse_prefix: bool = True,
                packed: bool = True) -> Iterator[list[dict]]:
    """`letter`: one forward pass per question, log-probabilities of the four letter tokens.

    Prompts are tokenized once, batched longest first, the shared instruction prefix is run once
    (``reuse_prefix``), and only the last position goes through the LM head. ``packed`` (with an
    sdpa or eager model): short prompts share a row instead of being padded (:mod:`eval.packing`);
    otherwise each prompt is one right-padded row, as in lm-eval.
    """
    requests = letter_requests(lm.tokenizer, questions)
    prefix = SharedPrefix.maybe(lm, [r.input_ids for r in requests], reuse_prefix)
    if packed and packs(lm):
        skip = len(prefix.ids) if prefix is not None else 0
        pieces = [letter_piece(r, skip) for r in requests]
        for batch in length_batches([len(p.ids) for p in pieces], batch_size):
            scores = packed_scores(lm, [pieces[i] for i in batch], prefix)
            yield [{"index": requests[i].index, "scores": s} for i, s in zip(batch, scores)]
        return
    for batch in length_batches([len(r.input_ids) for r in requests], batch_size):
        reqs = [requests[i] for i in batch]
        logprobs = forward_logprobs(lm, [r.input_ids for r in reqs], [[len(r.input_ids) - 1] for r in reqs], prefix)
        yield [{"index": r.index, "scores": lp[0, r.targets].tolist()} for r, lp in zip(reqs, logprobs)]


def argmax(values: Sequence[float]) -> int:
    """First index of the maximum (numpy's tie rule, as lm-eval uses)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best
