"""The per-paper processing step, run by a datatrove executor (locally or on Slurm).

Each task reads its share of ``inputs.jsonl`` (:mod:`corpus_tools.inputs`), and for every
paper: drop-by-source check, e-print -> text, quality filters, benchmark n-gram overlap, exact key
and MinHash signature. It writes ``extract/<rank>.parquet`` (usable documents with their keys)
and ``extract/<rank>.rejected.jsonl`` atomically, so a rerun skips finished tasks (datatrove's
completion markers) and never reads a half-written shard. The readers of those files for the
stage's global steps are here too.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.pipeline.base import PipelineStep

from .decontam import NgramIndex, source_match
from .dedup import MinHasher, exact_key
from .eprint import Limits
from .extract import Extracted, extract_paper
from .filters import FilterConfig, check
from .inputs import iter_papers

EXTRACT_SCHEMA = pa.schema([
    ("id", pa.string()), ("title", pa.string()), ("abstract", pa.string()), ("text", pa.string()),
    ("categories", pa.list_(pa.string())), ("date", pa.string()), ("source", pa.string()), ("license", pa.string()),
    ("n_chars", pa.int64()), ("exact_key", pa.string()), ("signature", pa.list_(pa.uint32())),
    ("benchmark_overlap", pa.int64()),
])


@dataclass(frozen=True)
class ProcessConfig:
    """Everything a worker needs (plain values, picklable)."""

    work_dir: str
    filters: FilterConfig
    limits_bytes: int
    limits_members: int
    ngram: int
    num_perm: int
    shingle_size: int
    seed: int
    doi_prefixes: tuple[str, ...]
    journal_refs: tuple[str, ...]
    near: bool

    @classmethod
    def from_settings(cls, cfg: Any, work_dir: Path) -> "ProcessConfig":
        """The worker's view of the recipe's ``corpus`` section."""
        dc, dd = cfg.decontamination, cfg.dedup
        return cls(
            work_dir=str(work_dir), filters=FilterConfig.from_settings(cfg.filters), limits_bytes=cfg.max_uncompressed_mb * 1024 * 1024,
            limits_members=cfg.max_archive_members, ngram=dc.ngram, num_perm=dd.num_perm, shingle_size=dd.shingle_size, seed=dd.seed,
            doi_prefixes=tuple(dc.drop_doi_prefixes), journal_refs=tuple(dc.drop_journal_refs), near=dd.near,
        )


#: wall-clock seconds one paper may take from e-print bytes to text; over it the paper is
#: rejected (``timeout``) and the worker goes on with the next one
PAPER_TIME_BUDGET_S = 120.0


class PaperTimeout(Exception):
    """Raised inside a paper's conversion when its time budget is spent."""


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise :class:`PaperTimeout` in this block after ``seconds`` (SIGALRM; main thread only, else no limit)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _fire(signum: int, frame: Any) -> None:
        raise PaperTimeout(f"over the {seconds:g} s budget")

    previous = signal.signal(signal.SIGALRM, _fire)
    outer, _ = signal.getitimer(signal.ITIMER_REAL)  # someone else's alarm (e.g. pytest-timeout): keep it
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer - (time.monotonic() - started)))


def extract_guarded(meta: dict[str, Any], data: bytes | None, limits: Limits, source: str,
                    budget_s: float = PAPER_TIME_BUDGET_S) -> Extracted:
    """:func:`extract_paper` that never raises: over budget -> ``timeout``, any error -> ``unparsable`` + detail."""
    try:
        with time_budget(budget_s):
            return extract_paper(meta, data, limits, source=source)
    except PaperTimeout as exc:
        return Extracted(meta["id"], reason="timeout", detail=str(exc))
    except MemoryError:
        return Extracted(meta["id"], reason="unparsable", detail="MemoryError")
    except Exception as exc:  # one bad paper must never stop a whole datatrove task
        return Extracted(meta["id"], reason="unparsable", detail=f"{type(exc).__name__}: {exc}"[:300])


class ExtractShard:
    """One task's output: ``extract/<rank>.parquet`` (documents) + ``<rank>.rejected.jsonl``, renamed into place by :meth:`commit`."""

    def __init__(self, out_dir: Path, rank: int):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.rank = out_dir, rank
        self.tmp = out_dir / f".{rank:05d}.parquet.tmp"
        self.writer = pq.ParquetWriter(self.tmp, EXTRACT_SCHEMA)
        self.rows: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []

    def add(self, doc: dict[str, Any]) -> None:
        self.rows.append(doc)
        if len(self.rows) >= 256:
            self.flush()

    def reject(self, pid: str, reason: str, detail: str) -> None:
        self.rejected.append({"id": pid, "reason": reason, "detail": detail})

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=EXTRACT_SCHEMA))
            self.rows.clear()

    def close(self) -> None:
        self.writer.close()

    def commit(self) -> None:
        """Rename the closed parquet file and the rejections into place (a crashed task leaves only temp files)."""
        os.replace(self.tmp, self.out_dir / f"{self.rank:05d}.parquet")
        tmp = self.out_dir / f".{self.rank:05d}.rejected.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rejected), encoding="utf-8")
        os.replace(tmp, self.out_dir / f"{self.rank:05d}.rejected.jsonl")


class ExtractStep(PipelineStep):
    """datatrove step: e-prints -> filtered documents with dedup keys, one parquet file per task."""

    name = "arXiv e-print -> text"
    type = "astrosage"

    def __init__(self, config: ProcessConfig):
        super().__init__()
        self.config = config
        # loaded by run() in the worker, from the files the stage wrote before starting the tasks
        self.index: NgramIndex | None = None
        self.hasher: MinHasher | None = None
        self.limits = Limits(config.limits_bytes, config.limits_members)

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        cfg = self.config
        work = Path(cfg.work_dir)
        self.index = NgramIndex.load(work / "benchmark_ngrams.npy", cfg.ngram)
        self.hasher = MinHasher(cfg.num_perm, cfg.shingle_size, cfg.seed) if cfg.near else None
        shard = ExtractShard(work / "extract", rank)
        try:
            for meta, blob, source in iter_papers(work / "inputs.jsonl", rank, world_size):
                self.process(meta, blob, source, shard)
            shard.flush()
        finally:
            shard.close()
        shard.commit()
        yield from ()

    def process(self, meta: dict[str, Any], data: bytes | None, source: str, shard: ExtractShard) -> None:
        """One paper: drop by source, extract, filter, then its dedup keys and benchmark overlap."""
        cfg = self.config
        pid = meta["id"]
        why = source_match(meta, cfg.doi_prefixes, cfg.journal_refs)
        if why:
            self.stat_update("decontaminated_source")
            shard.reject(pid, "decontaminated_source", why)
            return
        result = extract_guarded(meta, data, self.limits, source)
        if result.doc is None:
            self.stat_update(f"rejected_{result.reason}")
            shard.reject(pid, result.reason, result.detail)
            return
        self.stat_update("extracted")
        if result.info.get("fallback"):
            self.stat_update("extracted_with_fallback")
        doc = result.doc
        reason, stats = check(doc["text"], cfg.filters)
        if reason is not None:
            self.stat_update(f"filtered_{reason}")
            shard.reject(pid, f"filtered_{reason}", json.dumps(stats))
            return
        doc["exact_key"] = exact_key(doc["text"])
        doc["signature"] = self.hasher.signature(doc["text"]).tolist() if self.hasher else None
        doc["benchmark_overlap"] = self.index.overlap(doc["text"])
        shard.add(doc)


def extracted_shards(work: Path) -> list[Path]:
    """The finished tasks' document files, in task order."""
    return sorted((work / "extract").glob("*.parquet"))


def read_rejections(shards: list[Path]) -> list[dict[str, str]]:
    """Every paper the extraction tasks rejected, task by task."""
    out: list[dict[str, str]] = []
    for shard in shards:
        out += [json.loads(line) for line in shard.with_suffix(".rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    return out


def read_keys(shards: list[Path]) -> list[dict[str, Any]]:
    """(id, date, exact_key, signature, benchmark_overlap) of every extracted document, in (date, id) order."""
    if not shards:
        return []
    cols = ["id", "date", "exact_key", "signature", "benchmark_overlap"]
    rows = pa.concat_tables([pq.read_table(s, columns=cols) for s in shards]).to_pylist()
    rows.sort(key=lambda r: (r["date"] or "", r["id"]))
    return rows
