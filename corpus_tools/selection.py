"""The corpus stage's global steps over all extracted documents: which ones are kept, and where.

In (submission date, id) order, so the earliest version of a paper is the one kept:

1. benchmark overlap: documents sharing an n-gram with a benchmark item are dropped
   (``decontaminated_ngram``) or, with ``decontamination.action: flag``, kept with a note;
2. exact + MinHash-LSH near-duplicate removal (:func:`corpus_tools.dedup.dedup`);
3. the held-out split (:mod:`corpus_tools.heldout`): ``corpus.heldout_fraction`` of the kept
   papers, whole duplicate clusters at a time;
4. papers that never reached an outcome (e.g. in no bulk tar) are rejected as ``eprint_missing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from .dedup import MinHasher, dedup
from .heldout import choose_heldout, cluster_roots
from .process import read_keys, read_rejections
from .sources import Gathered, Progress

Rejection = dict[str, str]


@dataclass
class Selection:
    """The outcome of the global steps: kept ids (training + held-out) and every rejection so far."""

    extracted: int
    keep: set[str]
    heldout: set[str]
    contamination: dict[str, str]
    rejected: list[Rejection]


def decontaminate(rows: list[dict[str, Any]], ngram: int, action: str) -> tuple[list[dict[str, Any]], dict[str, str], list[Rejection]]:
    """(rows left, notes of flagged rows by id, rejections) after the benchmark-overlap check."""
    left: list[dict[str, Any]] = []
    flagged: dict[str, str] = {}
    dropped: list[Rejection] = []
    for r in rows:
        if r["benchmark_overlap"] > 0:
            note = f"{r['benchmark_overlap']} {ngram}-grams shared with a benchmark item"
            if action == "drop":
                dropped.append({"id": r["id"], "reason": "decontaminated_ngram", "detail": note})
                continue
            flagged[r["id"]] = note
        left.append(r)
    return left, flagged, dropped


def deduplicate(rows: list[dict[str, Any]], settings: Any, bars: Progress) -> tuple[set[str], list[Rejection]]:
    """(ids kept, rejections) after exact and near-duplicate removal (``corpus.dedup``), rows in priority order."""
    keep: set[str] = set()
    dropped: list[Rejection] = []
    sigs = ((r["id"], r["exact_key"], np.asarray(r["signature"], dtype=np.uint32) if r["signature"] is not None else None)
            for r in rows)
    found = dedup(sigs, settings.exact, settings.near, settings.num_perm, settings.threshold, settings.seed)
    for i, (pid, reason, other) in enumerate(found, 1):
        if reason is None:
            keep.add(pid)
        else:
            dropped.append({"id": pid, "reason": reason, "detail": f"duplicate of {other}"})
        if i % 1000 == 0 or i == len(rows):
            bars("dedup", i, len(rows))
    return keep, dropped


def split_heldout(candidates: list[dict[str, Any]], keep: set[str], cfg: Any, shards: list[Path]) -> set[str]:
    """The kept papers to hold out (``corpus.heldout_fraction``), whole duplicate clusters at a time.

    With exact and near dedup both on, every kept paper is its own cluster; otherwise the
    duplicates left in the corpus are grouped by :func:`corpus_tools.heldout.cluster_roots`
    (MinHash signatures are computed here for the kept papers when near dedup was off).
    """
    if cfg.heldout_fraction <= 0:
        return set()
    kept_rows = [r for r in candidates if r["id"] in keep]  # in (date, id) priority order
    if cfg.dedup.exact and cfg.dedup.near:
        roots = {r["id"]: r["id"] for r in kept_rows}
    else:
        sigs = {r["id"]: np.asarray(r["signature"], dtype=np.uint32) for r in kept_rows if r["signature"] is not None}
        missing = {r["id"] for r in kept_rows} - set(sigs)
        if missing:
            hasher = MinHasher(cfg.dedup.num_perm, cfg.dedup.shingle_size, cfg.dedup.seed)
            for shard in shards:
                for batch in pq.ParquetFile(shard).iter_batches(columns=["id", "text"], batch_size=256):
                    for row in batch.to_pylist():
                        if row["id"] in missing:
                            sigs[row["id"]] = hasher.signature(row["text"])
        roots = cluster_roots(((r["id"], r["exact_key"], sigs.get(r["id"])) for r in kept_rows),
                              cfg.dedup.num_perm, cfg.dedup.threshold, cfg.dedup.seed)
    return choose_heldout(roots, cfg.heldout_fraction, cfg.heldout_min_papers)


def never_reached(records: list[dict[str, Any]], rejected: list[Rejection], extracted: list[dict[str, Any]]) -> list[Rejection]:
    """Papers neither rejected nor extracted (e.g. in no bulk tar): ``eprint_missing``."""
    seen = {r["id"] for r in rejected} | {r["id"] for r in extracted}
    return [{"id": rec["id"], "reason": "eprint_missing", "detail": "no e-print found"} for rec in records if rec["id"] not in seen]


def select(shards: list[Path], gathered: Gathered, cfg: Any, bars: Progress) -> Selection:
    """Run the global steps over the extraction tasks' shards (``cfg`` = the recipe's corpus section)."""
    rejected = list(gathered.rejected) + read_rejections(shards)
    rows = read_keys(shards)
    candidates, flagged, contaminated = decontaminate(rows, cfg.decontamination.ngram, cfg.decontamination.action)
    keep, duplicates = deduplicate(candidates, cfg.dedup, bars)
    heldout = split_heldout(candidates, keep, cfg, shards)
    rejected += contaminated + duplicates
    rejected += never_reached(gathered.records, rejected, rows)
    return Selection(extracted=len(rows), keep=keep, heldout=heldout, contamination=flagged, rejected=rejected)
