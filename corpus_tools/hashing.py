"""Word tokenisation and vectorised word n-gram hashing shared by dedup and decontamination.

Words are lowercase runs of ASCII letters/digits and non-ASCII bytes (found on the UTF-8 bytes,
which is ~2x faster than a Unicode regex; non-ASCII punctuation such as an en dash therefore
joins its neighbours, which is harmless for overlap detection); each word is hashed once with xxh64 (stable across
processes, unlike ``hash()``), and an n-gram hash is a polynomial combination of its word hashes
computed with numpy (uint64 arithmetic wraps, which is what we want).
"""

from __future__ import annotations

import re

import numpy as np
import xxhash

_WORD = re.compile(rb"[a-z0-9\x80-\xff]+")
_MULTS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                   0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x94D049BB133111EB], dtype=np.uint64)


def words(text: str) -> list[bytes]:
    """Lowercase word tokens as UTF-8 bytes."""
    return _WORD.findall(text.lower().encode("utf-8", "replace"))


def word_hashes(tokens: list[bytes]) -> np.ndarray:
    """uint64 xxh64 of every token."""
    return np.fromiter(map(xxhash.xxh64_intdigest, tokens), dtype=np.uint64, count=len(tokens))


def _mult(k: int) -> np.uint64:
    base = _MULTS[k % len(_MULTS)]
    return np.uint64(((int(base) * (k // len(_MULTS) + 1)) | 1) & 0xFFFFFFFFFFFFFFFF)


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every word n-gram (one hash of all words when there are fewer than n)."""
    if len(wh) == 0:
        return np.zeros(0, dtype=np.uint64)
    if len(wh) < n:
        n = len(wh)
    m = len(wh) - n + 1
    out = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            out += wh[k : k + m] * _mult(k)
        out ^= out >> np.uint64(29)
        out *= np.uint64(0xBF58476D1CE4E5B9)
        out ^= out >> np.uint64(32)
    return out
