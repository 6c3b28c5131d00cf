"""Exact (normalised-text hash) and near-duplicate (datasketch MinHash + LSH) detection.

Signatures are datasketch's ``affine32`` MinHash, computed with numpy over whole documents:
5-word shingles hashed once (see :mod:`corpus_tools.hashing`) and cut to 32 bits -- the values
datasketch's ``hashfunc`` would return --, mixed with the MurmurHash3 finalizer, then datasketch's
``num_perm`` permutations ``h -> a*h + b (mod 2**32)`` (its own ``a``, ``b`` for the seed) applied
to all shingles at once in blocks; the signature is the per-permutation minimum, bit for bit what
``datasketch.MinHash(seed=seed, scheme="affine32")`` holds after ``update_batch`` over the same
shingle hashes. The LSH index is datasketch's :class:`~datasketch.MinHashLSH`; candidates are
confirmed by the estimated Jaccard similarity before a document is called a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Iterator

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from .hashing import ngram_hashes, word_hashes, words

SCHEME = "affine32"
_NON_WORD = re.compile(r"[\W_]+")
_BLOCK = 2048
_EMPTY = np.uint32(0xFFFFFFFF)


def exact_key(text: str) -> str:
    """sha1 of the text lowercased with punctuation and whitespace collapsed."""
    norm = _NON_WORD.sub(" ", text.lower()).strip()
    return hashlib.sha1(norm.encode("utf-8", "replace")).hexdigest()


def shingle_hashes(text: str, shingle_size: int) -> np.ndarray:
    """uint32 hash of every word shingle of the text (the inputs datasketch's ``hashfunc`` would give)."""
    return ngram_hashes(word_hashes(words(text)), shingle_size).astype(np.uint32)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's pre-mix of affine32 inputs)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class MinHasher:
    """datasketch affine32 MinHash signatures of word-shingle sets, numpy-vectorised per document."""

    def __init__(self, num_perm: int = 112, shingle_size: int = 5, seed: int = 1):
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.seed = seed
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self.a, self.b = a.astype(np.uint32)[:, None], b.astype(np.uint32)[:, None]

    def signature(self, text: str) -> np.ndarray:
        """uint32[num_perm] signature; an empty text gives all 0xFFFFFFFF (datasketch's empty MinHash)."""
        return self.signature_of_hashes(shingle_hashes(text, self.shingle_size))

    def signature_of_hashes(self, shingles: np.ndarray) -> np.ndarray:
        """Signature of uint32 shingle hashes."""
        sig = np.full(self.num_perm, _EMPTY, dtype=np.uint32)
        if len(shingles) == 0:
            return sig
        mixed = fmix32(shingles.astype(np.uint32))
        buf = np.empty((self.num_perm, min(_BLOCK, len(mixed))), dtype=np.uint32)
        for start in range(0, len(mixed), _BLOCK):
            block = mixed[None, start : start + _BLOCK]
            vals = buf[:, : block.shape[1]]
            np.multiply(self.a, block, out=vals)  # in place, wrapping mod 2**32: no temporaries
            vals += self.b
            np.minimum(sig, vals.min(axis=1), out=sig)
        return sig


def as_minhash(sig: np.ndarray, seed: int) -> LeanMinHash:
    """A signature as a datasketch MinHash (for LSH and ``jaccard`` estimates)."""
    return LeanMinHash(seed=seed, hashvalues=sig, scheme=SCHEME)


class NearDedup:
    """Streaming near-duplicate detector: feed documents in priority order; the first one of a cluster is kept."""

    def __init__(self, num_perm: int, threshold: float, seed: int = 1):
        self.threshold = threshold
        self.seed = seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.kept: dict[str, LeanMinHash] = {}

    def check(self, doc_id: str, sig: np.ndarray) -> str | None:
        """Return the id of a kept document this one duplicates, else index it and return None."""
        mh = as_minhash(sig, self.seed)
        best: tuple[float, str] | None = None
        for cand in self.lsh.query(mh):
            sim = mh.jaccard(self.kept[cand])
            if sim >= self.threshold and (best is None or sim > best[0]):
                best = (sim, cand)
        if best is not None:
            return best[1]
        self.lsh.insert(doc_id, mh)
        self.kept[doc_id] = mh
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
