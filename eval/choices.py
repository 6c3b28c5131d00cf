"""`choices` scoring (lm-eval's ``multiple_choice``): one context forward shared by a question's four options.

lm-eval scores option k by running ``(context + continuation_k)[:-1]`` in full: four forwards of
the same context per question. Here a question is ONE packed piece (:mod:`eval.packing`): the
context once, then the four continuations (all but their last token), each continuation seeing
the context and its own earlier tokens only, with position ids that restart right after the
context. Every scored logit is the one the plain per-option forward computes (the context's
keys/values do not depend on what follows it: causal attention). The instruction prefix every
context starts with is run once for all questions and its KV cache reused (as `letter` does).

Tokens follow lm-eval's ``_encode_pair`` exactly (:func:`eval.scoring.encode_pairs`): the
sequence is ``context_ids + continuation_ids``, also where tokenizing ``context + continuation``
merges tokens across the boundary.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from .data import LETTERS, Question
from .modeling import LoadedModel
from .packing import Piece, packed_scores, packs
from .prefix import SharedPrefix
from .prompts import TARGET_DELIMITER, choices_prompt
from .scoring import argmax, encode_pairs, forward_logprobs, length_batches


def choices_piece(ctx: list[int], conts: Sequence[list[int]], skip: int) -> Piece:
    """``ctx[skip:]`` (segment 0), then each continuation but its last token (segment k+1, parent: the context)."""
    piece = Piece()
    piece.add(ctx[skip:], skip, 0)
    last = len(piece.ids) - 1
    for k, cont in enumerate(conts):
        first = piece.add(cont[:-1], len(ctx), k + 1, parent=0)
        # the context's last token predicts the first continuation token; each fed token predicts the next
        piece.targets += [(last if u == 0 else first + u - 1, tok, k) for u, tok in enumerate(cont)]
    return piece


def iter_choices(lm: LoadedModel, questions: Sequence[Question], batch_size: int,
                 packed: bool = True, reuse_prefix: bool = True) -> Iterator[list[dict]]:
    """`choices`: summed log-likelihood of each option's text as the continuation of the question.

    ``batch_size`` questions per forward, longest first. ``packed`` (with an sdpa or eager model):
    a question's context runs once for its four options and the shared instruction prefix once
    for all (``reuse_prefix``); otherwise each option runs ``context + option`` in full in its own
    padded row (lm-eval's computation). Rows also carry ``scores_norm`` (divided by the option's
    length in characters, lm-eval's ``acc_norm``) and ``prediction_norm``.
    """
    pairs = encode_pairs(lm.tokenizer, [(choices_prompt(q), [TARGET_DELIMITER + o for o in q.options]) for q in questions])
    if packed and packs(lm):
        prefix = SharedPrefix.maybe(lm, [ctx for ctx, _ in pairs], reuse_prefix)
        skip = len(prefix.ids) if prefix is not None else 0
        pieces = [choices_piece(ctx, conts, skip) for ctx, conts in pairs]
        for batch in length_batches([len(p.ids) for p in pieces], batch_size):
            scores = packed_scores(lm, [pieces[i] for i in batch], prefix)
            yield [_row(questions[i], s) for i, s in zip(batch, scores)]
        return
    for batch in length_batches([max(len(ctx) + len(c) for c in conts) for ctx, conts in pairs], batch_size):
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
