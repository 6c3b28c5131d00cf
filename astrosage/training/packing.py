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
