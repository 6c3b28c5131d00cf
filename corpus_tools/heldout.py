"""The held-out split: which papers the corpus sets aside for perplexity and never trains on.

A paper is held out when the hash of its *cluster* (see below) falls under ``fraction``:

    u(id) = first 8 bytes of sha256("astrosage-heldout:" + id) / 2**64   (uniform in [0, 1))
    held out  <=>  u(root of the paper's cluster) < fraction

The decision depends on the id alone, so adding papers to a corpus never moves a paper that
was already placed, and two runs over the same papers split them the same way. When the fraction
gives fewer than ``min_papers`` papers (small corpora), the clusters with the lowest ``u`` are
added until there are ``min_papers``, but never more than a fifth of the corpus. (In that
small-corpus regime a new paper with a lower hash can take the place of an old one; above it,
never.)

Clusters: near-duplicate papers must land on the same side, or the "held-out" text would have
been trained on in another copy. The corpus stage removes duplicates (exact and MinHash-LSH,
keeping the earliest), so with both kinds of dedup on every kept paper is its own cluster. When
a kind of dedup is switched off, duplicates stay in the corpus and :func:`cluster_roots` groups
them with the same detector (``corpus_tools.dedup.dedup``), so a whole cluster goes one way.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

from .dedup import dedup

SALT = "astrosage-heldout:"
#: the min-papers floor never takes more than this share of the corpus
MAX_FLOOR_SHARE = 0.2


def paper_hash(paper_id: str) -> float:
    """The paper's position in [0, 1), from sha256 of its id (stable across runs and machines)."""
    digest = hashlib.sha256((SALT + paper_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def cluster_roots(items: Iterable[tuple[str, str, np.ndarray | None]], num_perm: int, threshold: float,
                  seed: int = 1) -> dict[str, str]:
    """Map each (id, exact key, signature) in priority order to the first paper of its duplicate cluster.

    Exact-key matches always cluster; MinHash near-duplicates cluster where signatures exist.
    """
    items = list(items)
    near = any(sig is not None for _, _, sig in items)
    parent: dict[str, str] = {}
    for doc_id, _reason, other in dedup(items, True, near, num_perm, threshold, seed):
        parent[doc_id] = other if other is not None else doc_id

    def root(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    return {doc_id: root(doc_id) for doc_id in parent}


def choose_heldout(roots: dict[str, str], fraction: float, min_papers: int) -> set[str]:
    """The ids to hold out, given each paper's cluster root (``{id: id}`` when there are no duplicates)."""
    if fraction <= 0 or not roots:
        return set()
    members: dict[str, list[str]] = {}
    for doc_id, r in roots.items():
        members.setdefault(r, []).append(doc_id)
    ranked = sorted(members, key=lambda r: (paper_hash(r), r))
    chosen = [r for r in ranked if paper_hash(r) < fraction]
    held = sum(len(members[r]) for r in chosen)
    floor = min(min_papers, int(MAX_FLOOR_SHARE * len(roots)))
    for r in ranked[len(chosen):]:
        if held >= floor:
            break
        if held + len(members[r]) > floor:
            continue  # a cluster too big for the floor stays in training; try the next one
        chosen.append(r)
        held += len(members[r])
    return {doc_id for r in chosen for doc_id in members[r]}
