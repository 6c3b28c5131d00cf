"""Packed scoring forwards: several scored pieces per row, each token seeing only what its own forward would see.

A *piece* is what one question needs after the shared instruction prefix: for `letter` its prompt,
for `choices` its context plus each option's continuation. Its tokens carry position ids, a
segment and a parent segment: a token attends to the prefix, to the earlier tokens (by position)
of its own segment and to all of its parent segment (an option's parent is its context). So every
scored logit equals the one of the plain causal forward of that token's own sequence: attention
masks out everything else, and rotary positions are the sequence's own.

Pieces are bin-packed into rows (first fit, longest first), so short questions share a row instead
of being padded to the longest; the row width (1x to 4x the longest piece) is the one with the
fewest estimated FLOPs (:func:`plan`: wider rows waste less padding but attend over more masked
keys, which pays on wide models and not on attention-heavy tiny ones). Because the mask, not the
order in the row, decides what a token sees, the tokens whose logits are needed are placed at the
end of their row: the LM head runs on the last few columns only (``logits_to_keep``). Custom masks
need the ``sdpa`` or ``eager`` attention (:func:`packs`); scorers use plain padded rows otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

from .modeling import LoadedModel
from .prefix import SharedPrefix, cache_kwarg

#: attention kernels that take an arbitrary 4D mask
MASKED_ATTENTION = ("sdpa", "eager")


@dataclass
class Piece:
    """One question's tokens after the prefix, and the log-likelihood terms to sum over them.

    ``targets``: (token index, next token id, option) for each scored term; the option's score is
    the sum of ``log p(next token | sequence up to that token)`` over its terms.
    """

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    targets: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, ids: Sequence[int], start: int, segment: int, parent: int = -1) -> int:
        """Append a segment of ``ids`` at position ids ``start``...; returns the index of its first token."""
        first = len(self.ids)
        self.ids += ids
        self.positions += range(start, start + len(ids))
        self.segments += [segment] * len(ids)
        self.parents += [parent] * len(ids)
        return first

    @property
    def n_scored(self) -> int:
        """Tokens whose logits are needed (LM-head positions)."""
        return len({t for t, _, _ in self.targets})


def packs(lm: LoadedModel) -> bool:
    """Whether the model's attention kernel takes the packed rows' custom mask."""
    return getattr(lm.model.config, "_attn_implementation", None) in MASKED_ATTENTION


def first_fit(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Pieces (positions in ``lengths``, longest first) packed into rows of at most ``width`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([])
            room.append(width)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= lengths[i]
    return rows


@dataclass(frozen=True)
class Costs:
    """Forward FLOPs per token (matmuls but the LM head), per query-key pair (attention), per LM-head position."""

    token: float
    pair: float
    head: float

    @classmethod
    def of(cls, model: Any) -> "Costs":
        """Estimated from the parameter counts and the attention shape of ``model``."""
        cfg = model.config
        embedding = model.get_input_embeddings().weight
        output = model.get_output_embeddings()
        head = output.weight.numel() if output is not None else embedding.numel()
        tied = output is not None and output.weight is embedding
        body = sum(p.numel() for p in model.parameters()) - embedding.numel() - (0 if tied else head)
        heads = getattr(cfg, "num_attention_heads", 1)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return cls(2.0 * body, 4.0 * getattr(cfg, "num_hidden_layers", 1) * heads * head_dim, 2.0 * head)


#: row widths tried, as multiples of the longest piece
WIDTH_FACTORS = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)


class Plan(NamedTuple):
    """Rows of one packed forward: width, the pieces of each row, LM-head columns kept, estimated FLOPs."""

    width: int
    rows: list[list[int]]
    keep: int
    flops: float


def plan(lengths: Sequence[int], scored: Sequence[int], prefix_len: int, costs: Costs) -> Plan:
    """The first-fit rows with the fewest estimated FLOPs; ``scored[i]``: LM-head positions of piece i."""
    plans = []
    for factor in WIDTH_FACTORS:
        rows = first_fit(lengths, int(max(lengths) * factor))
        width = max(sum(lengths[i] for i in row) for row in rows)
        keep = max(sum(scored[i] for i in row) for row in rows)
        flops = len(rows) * (width * (costs.token + costs.pair * (prefix_len + width)) + keep * costs.head)
        plans.append(Plan(width, rows, keep, flops))
    return min(plans, key=lambda x: x.flops)  # the first (narrowest) of equals


@dataclass
class _Rows:
    ids: list[list[int]]
    positions: list[list[int]]
    segments: list[list[int]]
    parents: list[list[int]]
    keep: int
    #: (row, kept column, next token, piece, option) per scored term
    terms: list[tuple[int, int, int, int, int]]


def _layout(pieces: Sequence[Piece], members_of: list[list[int]], width: int, pad_id: int) -> _Rows:
    """Rows of ``width``: each row's unscored tokens, padding, then its scored tokens (right-aligned)."""
    rows = _Rows([], [], [], [], 1, [])
    tails = []
    for r, members in enumerate(members_of):
        head, tail, seg_base = [], [], 0
        for j in members:
            piece = pieces[j]
            scored = {t for t, _, _ in piece.targets}
            head += [(j, t, seg_base) for t in range(len(piece.ids)) if t not in scored]
            tail += [(j, t, seg_base) for t in sorted(scored)]
            seg_base += max(piece.segments) + 1
        cells = head + [None] * (width - len(head) - len(tail)) + tail
        rows.ids.append([pad_id if c is None else pieces[c[0]].ids[c[1]] for c in cells])
        rows.positions.append([0 if c is None else pieces[c[0]].positions[c[1]] for c in cells])
        rows.segments.append([-1 if c is None else c[2] + pieces[c[0]].segments[c[1]] for c in cells])
        rows.parents.append([-2 if c is None or pieces[c[0]].parents[c[1]] < 0 else c[2] + pieces[c[0]].parents[c[1]] for c in cells])
        tails.append((r, tail))
    rows.keep = max(1, max(len(t) for _, t in tails))
    for r, tail in tails:
        column = {(j, t): rows.keep - len(tail) + k for k, (j, t, _) in enumerate(tail)}
        for j in dict.fromkeys(j for j, _, _ in tail):  # the row's pieces, in order
            rows.terms += [(r, column[(j, t)], tok, j, k) for t, tok, k in pieces[j].targets]
    return rows


def packed_mask(segments: Any, parents: Any, positions: Any, prefix_len: int, dtype: Any = None) -> Any:
    """[rows, 1, width, prefix + width] mask: the prefix, own segment up to the same position, the parent segment.

    Boolean (True = attend) when ``dtype`` is None, else additive (0 or the dtype's minimum). Padding
    (segment -1) attends only to padding: no row is fully masked, no real token sees padding.
    """
    import torch

    q_seg, k_seg = segments[:, :, None], segments[:, None, :]
    allowed = ((q_seg == k_seg) & (positions[:, None, :] <= positions[:, :, None])) | (parents[:, :, None] == k_seg)
    allowed = torch.cat([torch.ones(*segments.shape, prefix_len, dtype=torch.bool), allowed], dim=-1).unsqueeze(1)
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)


def packed_scores(lm: LoadedModel, pieces: Sequence[Piece], prefix: SharedPrefix | None, n_options: int = 4) -> list[list[float]]:
    """Summed log-likelihood of each option of each piece, from one forward over the packed rows."""
    import torch

    skip = len(prefix.ids) if prefix is not None else 0
    chosen = plan([len(p.ids) for p in pieces], [p.n_scored for p in pieces], skip, Costs.of(lm.model))
    rows = _layout(pieces, chosen.rows, chosen.width, lm.tokenizer.pad_token_id)
    sums = [[0.0] * n_options for _ in pieces]
    if not rows.terms:
        return sums
    tensors = [torch.tensor(x, dtype=torch.long) for x in (rows.ids, rows.positions, rows.segments, rows.parents)]
    ids, positions, segments, parents = tensors
    eager = getattr(lm.model.config, "_attn_implementation", None) == "eager"
    mask = packed_mask(segments, parents, positions, skip, lm.model.dtype if eager else None)
    extra = {cache_kwarg(lm.model): prefix.cache(len(ids)), "use_cache": True} if prefix is not None else {"use_cache": False}
    device = lm.device
    with torch.inference_mode():
        logits = lm.model(
            input_ids=ids.to(device), position_ids=positions.to(device), attention_mask=mask.to(device),
            logits_to_keep=rows.keep, **extra,
        ).logits
        terms = torch.tensor(rows.terms, dtype=torch.long, device=logits.device)
        cells, which = torch.unique(terms[:, :2], dim=0, return_inverse=True)
        picked = logits[cells[:, 0], cells[:, 1]].float()
        term_lp = picked[which, terms[:, 2]] - torch.logsumexp(picked, dim=-1)[which]
        totals = torch.zeros(len(pieces) * n_options, dtype=torch.float32, device=logits.device)
        totals.index_add_(0, terms[:, 3] * n_options + terms[:, 4], term_lp)
    flat = totals.cpu().tolist()
    return [flat[n_options * j : n_options * (j + 1)] for j in range(len(pieces))]
