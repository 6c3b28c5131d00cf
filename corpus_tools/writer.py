"""The corpus stage's outputs: ``docs/`` and ``heldout/`` parquet shards, and ``rejected.jsonl``.

``docs/part-NNNNN.parquet`` (id, title, abstract, text, categories, date, source, license,
n_chars, contamination, authors, year) is for training; ``heldout/part-NNNNN.parquet`` (same
schema) is for held-out perplexity only -- cpt and synth read ``docs`` and never see it.
``rejected.jsonl`` has one (id, reason, detail) line per rejected paper, sorted by id.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from astrosage.core.artifacts import atomic_write_text

from .records import dumps_jsonl
from .selection import Rejection, Selection
from .sources import Progress

DOC_SCHEMA = pa.schema([
    ("id", pa.string()), ("title", pa.string()), ("abstract", pa.string()), ("text", pa.string()),
    ("categories", pa.list_(pa.string())), ("date", pa.string()), ("source", pa.string()), ("license", pa.string()),
    ("n_chars", pa.int64()), ("contamination", pa.string()),
    ("authors", pa.list_(pa.string())), ("year", pa.int32()),
])
SPLITS = ("docs", "heldout")


class Totals(NamedTuple):
    """What one output folder holds: rows, whitespace tokens (``len(text.split())``), characters."""

    rows: int
    tokens: int
    chars: int


class ShardWriter:
    """Rows into ``<out>/part-NNNNN.parquet`` (``per_shard`` rows each), each file renamed into place when full."""

    def __init__(self, out: Path, per_shard: int):
        self.out, self.per_shard = out, per_shard
        self.buffer: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.part = self.in_shard = self.rows = self.tokens = self.chars = 0

    def add(self, row: dict[str, Any]) -> None:
        self.buffer.append(row)
        self.rows += 1
        self.in_shard += 1
        self.tokens += len(row["text"].split())
        self.chars += row["n_chars"]
        if len(self.buffer) >= 256 or self.in_shard >= self.per_shard:
            self.flush()

    def flush(self, final: bool = False) -> None:
        tmp = self.out / f".part-{self.part:05d}.parquet.tmp"
        if self.buffer:
            if self.writer is None:
                self.writer = pq.ParquetWriter(tmp, DOC_SCHEMA)
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=DOC_SCHEMA))
            self.buffer.clear()
        if self.writer is not None and (final or self.in_shard >= self.per_shard):
            self.writer.close()
            tmp.rename(self.out / f"part-{self.part:05d}.parquet")
            self.writer, self.part, self.in_shard = None, self.part + 1, 0

    def close(self) -> Totals:
        self.flush(final=True)
        if self.rows == 0:  # an empty but loadable dataset
            pq.write_table(pa.Table.from_pylist([], schema=DOC_SCHEMA), self.out / "part-00000.parquet")
        return Totals(self.rows, self.tokens, self.chars)


def write_splits(shards: list[Path], chosen: Selection, records: list[dict[str, Any]], work: Path, per_shard: int,
                 bars: Progress) -> dict[str, Totals]:
    """Stream the kept rows of the extract shards into ``work/docs/`` (training) and ``work/heldout/``.

    The authors (from the harvested metadata ``records``) and the submission year are added to
    each row, so synthetic items can cite the work as "Smith et al. (2021)".
    """
    authors = {r["id"]: list(r.get("authors") or []) for r in records}
    for name in SPLITS:
        if (work / name).exists():
            shutil.rmtree(work / name)
        (work / name).mkdir(parents=True)
    cols = [f.name for f in DOC_SCHEMA if f.name not in ("contamination", "authors", "year")]
    writers = {name: ShardWriter(work / name, per_shard) for name in SPLITS}
    done = 0
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(columns=cols, batch_size=256):
            for row in batch.to_pylist():
                if row["id"] not in chosen.keep:
                    continue
                row["contamination"] = chosen.contamination.get(row["id"])
                row["authors"] = authors.get(row["id"], [])
                year = str(row.get("date") or "")[:4]
                row["year"] = int(year) if year.isdigit() else None
                writers["heldout" if row["id"] in chosen.heldout else "docs"].add(row)
                done += 1
            bars("write", done, len(chosen.keep))
    return {name: w.close() for name, w in writers.items()}


def write_rejected(path: Path, rejected: list[Rejection]) -> None:
    """``rejected.jsonl``: (id, reason, detail) per rejected paper, by id."""
    rows = sorted(rejected, key=lambda r: r["id"])
    atomic_write_text(path, dumps_jsonl({"id": r["id"], "reason": r["reason"], "detail": r.get("detail", "")} for r in rows))
