"""Exact (normalised-text hash) and near-duplicate (MinHash + datasketch LSH) detection.

Signatures are computed with numpy: 5-word shingles hashed once (see :mod:`corpus_tools.hashing`),
then ``num_perm`` universal hash functions ``h -> (a*h + b) >> 32`` (multiply-shift over 64-bit
words) applied to all shingles at once; the signature is the per-function minimum. The LSH index
is datasketch's :class:`~datasketch.MinHashLSH`; candidates are confirmed by the estimated
Jaccard similarity (share of equal signature slots) before a document is called a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Iterator

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from .hashing import ngram_hashes, word_hashes, words

_NON_WORD = re.compile(r"[\W_]+")
_BLOCK = 2048


def exact_key(text: str) -> str:
    """sha1 of the text lowercased with punctuation and whitespace collapsed."""
    norm = _NON_WORD.sub(" ", text.lower()).strip()
    return hashlib.sha1(norm.encode("utf-8", "replace")).hexdigest()


class MinHasher:
    """MinHash signatures of word-shingle sets (numpy-vectorised, deterministic for a seed)."""

    def __init__(self, num_perm: int = 112, shingle_size: int = 5, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.seed = seed
        self.a = (rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        """uint32[num_perm] signature; an empty text gives all 0xFFFFFFFF."""
        sh = ngram_hashes(word_hashes(words(text)), self.shingle_size)
        return self.signature_of_hashes(sh)

    def signature_of_hashes(self, shingles: np.ndarray) -> np.ndarray:
        """Signature of precomputed uint64 shingle hashes."""
        sig = np.full(self.num_perm, np.uint64(0xFFFFFFFF), dtype=np.uint64)
        if len(shingles) == 0:
            return sig.astype(np.uint32)
        a = self.a[:, None]
        b = self.b[:, None]
        shift = np.uint64(32)
        buf = np.empty((self.num_perm, min(_BLOCK, len(shingles))), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), _BLOCK):
                block = shingles[None, start : start + _BLOCK]
                vals = buf[:, : block.shape[1]]
                np.multiply(a, block, out=vals)  # in place: no temporaries (memory traffic dominates)
                vals += b
                vals >>= shift
                np.minimum(sig, vals.min(axis=1), out=sig)
        return sig.astype(np.uint32)


def jaccard_estimate(s1: np.ndarray, s2: np.ndarray) -> float:
    """Share of equal slots of two signatures (an unbiased Jaccard estimate)."""
    return float(np.mean(s1 == s2))


class NearDedup:
    """Streaming near-duplicate detector: feed documents in priority order; the first one of a cluster is kept."""

    def __init__(self, num_perm: int, threshold: float, seed: int = 1):
        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.signatures: dict[str, np.ndarray] = {}

    def check(self, doc_id: str, sig: np.ndarray) -> str | None:
        """Return the id of a kept document this one duplicates, else index it and return None."""
        mh = LeanMinHash(seed=self.seed, hashvalues=sig.astype(np.uint64), scheme="affine32")
        best: tuple[float, str] | None = None
        for cand in self.lsh.query(mh):
            sim = jaccard_estimate(sig, self.signatures[cand])
            if sim >= self.threshold and (best is None or sim > best[0]):
                best = (sim, cand)
        if best is not None:
            return best[1]
        self.lsh.insert(doc_id, mh)
        self.signatures[doc_id] = sig
        return None


def dedup(items: Iterable[tuple[str, str, np.ndarray | None]], exact: bool, near: bool, num_perm: int, threshold: float,
          seed: int = 1) -> Iterator[tuple[str, str | None, str | None]]:
    """For (id, exact key, signature) in priority order yield (id, reason or None, duplicate-of id)."""
    seen: dict[str, str] = {}
    nd = NearDedup(num_perm, threshold, seed) if near else None
    for doc_id, key, sig in items:
        if exact and key in seen:
            yield doc_id, "exact_duplicate", seen[key]
            continue
        if exact:
            seen[key] = doc_id
        if nd is not None and sig is not None:
            other = nd.check(doc_id, sig)
            if other is not None:
                yield doc_id, "near_duplicate", other
                continue
        yield doc_id, None, None
