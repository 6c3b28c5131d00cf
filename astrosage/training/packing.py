"""Document-masked packing: documents back to back in rows of exactly ``max_seq_len`` tokens.

No padding: the token stream of all documents is cut into full rows (the last partial row is
dropped). ``position_ids`` restart at 0 wherever a document starts and at the start of every
row (a document split across rows continues, with fresh positions, in the next row).
transformers 5 turns restarting ``position_ids`` (with ``attention_mask=None``) into a
block-diagonal causal mask for sdpa/eager and into varlen calls for flash-attention, so no
token attends across documents -- but only when no KV cache is in play: with ``use_cache=True``
(the config default) the model creates a cache and silently skips the packed-sequence mask, so
the collator passes ``use_cache=False`` and the training loader sets ``config.use_cache=False``. Labels are the inputs with ``-100`` at every segment start:
a document's first token is never predicted from the previous document. The loss of a packed
batch is then the token-weighted mean of the per-document losses (each document trained alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IGNORE_INDEX = -100


class PackedDataset(torch.utils.data.Dataset):
    """Rows of ``seq_len`` tokens over the shards of a :class:`TokenizedCorpus` (memory-mapped)."""

    def __init__(self, shards: list[Path], seq_len: int):
        self.seq_len = seq_len
        self._tokens = [np.load(Path(s) / "tokens.npy", mmap_mode="r") for s in shards]
        sizes = np.array([t.size for t in self._tokens], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        lens = [np.load(Path(s) / "lens.npy") for s in shards]
        all_lens = np.concatenate(lens) if lens else np.zeros(0, dtype=np.int64)
        self.doc_starts = np.concatenate([[0], np.cumsum(all_lens)[:-1]]).astype(np.int64) if all_lens.size else np.zeros(1, np.int64)
        self.n_docs = int(all_lens.size)
        self.n_tokens = int(self._offsets[-1])
        self.n_rows = self.n_tokens // seq_len
        self.dropped_tokens = self.n_tokens - self.n_rows * seq_len

    def __len__(self) -> int:
        return self.n_rows

    def _slice(self, start: int, end: int) -> np.ndarray:
        out = []
        k = int(np.searchsorted(self._offsets, start, side="right") - 1)
        while start < end:
            local = start - self._offsets[k]
            take = min(end - start, self._tokens[k].size - local)
            out.append(np.asarray(self._tokens[k][local : local + take]))
            start += take
            k += 1
        return np.concatenate(out) if len(out) > 1 else out[0]

    def __getitem__(self, row: int) -> dict[str, np.ndarray]:
        if row < 0 or row >= self.n_rows:
            raise IndexError(row)
        start, end = row * self.seq_len, (row + 1) * self.seq_len
        ids = self._slice(start, end)
        idx = np.arange(start, end, dtype=np.int64)
        seg = self.doc_starts[np.searchsorted(self.doc_starts, idx, side="right") - 1]
        positions = idx - np.maximum(seg, start)
        return {"input_ids": ids.astype(np.int64), "position_ids": positions}


def pack_documents(docs: list[list[int]], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Pack token lists in memory the same way (for tests and the bench): (input_ids, position_ids)."""
    lens = np.array([len(d) for d in docs], dtype=np.int64)
    tokens = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    n_rows = tokens.size // seq_len
    idx = np.arange(n_rows * seq_len, dtype=np.int64).reshape(n_rows, seq_len)
    seg = starts[np.searchsorted(starts, idx, side="right") - 1]
    row_start = (idx // seq_len) * seq_len
    return tokens[: n_rows * seq_len].reshape(n_rows, seq_len), idx - np.maximum(seg, row_start)


class PackedCollator:
    """Stack packed rows; labels = inputs with -100 at segment starts; no attention_mask.

    ``flatten=True`` concatenates the micro-batch into one ``[1, B*L]`` row (what flash-attention's
    varlen path wants); sdpa/eager take ``[B, L]`` rows with per-row block-diagonal masks.
    """

    def __init__(self, flatten: bool = False):
        self.flatten = flatten

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        input_ids = torch.as_tensor(np.stack([r["input_ids"] for r in rows]), dtype=torch.long)
        position_ids = torch.as_tensor(np.stack([r["position_ids"] for r in rows]), dtype=torch.long)
        labels = input_ids.clone()
        labels[position_ids == 0] = IGNORE_INDEX
        if self.flatten:
            input_ids, position_ids, labels = (t.reshape(1, -1) for t in (input_ids, position_ids, labels))
        # use_cache=False: with a KV cache transformers does not derive the per-document mask from position_ids
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "use_cache": False}


# ---------------------------------------------------------------- attention over document blocks
#: attention implementation name for packed rows on CPU/any device without flash-attention varlen
PACKED_SDPA = "sdpa_packed"


def _packed_mask(*args, attention_mask=None, **kwargs):
    """No 4D mask for packed rows (documents are separated inside the attention); a real padding mask is kept."""
    if attention_mask is not None and not bool(attention_mask.all()):
        from transformers.masking_utils import sdpa_mask

        return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)
    return None


def _segments(positions: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each document of one packed row: a document starts where its position is 0."""
    starts = (positions == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return list(zip(starts, [*starts[1:], positions.numel()]))


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """Causal sdpa per document of a packed row, instead of one [L, L] masked attention over the whole row.

    The block-diagonal mask transformers builds for sdpa computes every query against every key
    of the row (then masks most of it out) and cannot use the fused causal kernel; per document
    the work is sum(len_i^2)/2 instead of L^2, on the ``is_causal`` fast path. Same outputs up to
    float rounding (tested). Anything that is not a packed training forward (a padding mask, a KV
    cache, no position_ids) goes to transformers' own sdpa.
    """
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    positions = position_ids.expand(query.shape[0], -1)
    rows = []
    for b in range(query.shape[0]):
        parts = [
            F.scaled_dot_product_attention(query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e],
                                           dropout_p=p, is_causal=True, scale=scaling, enable_gqa=gqa)
            for s, e in _segments(positions[b])
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def register_packed_sdpa() -> str:
    """Register ``attn_implementation="sdpa_packed"`` with transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_mask)
    return PACKED_SDPA
