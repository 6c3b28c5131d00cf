"""The per-paper processing step, run by a datatrove executor (locally or on Slurm).

Each task reads its share of ``inputs.jsonl`` (line i goes to task i % world_size), and for every
paper: drop-by-source check, e-print -> text, quality filters, benchmark n-gram overlap, exact key
and MinHash signature. It writes ``extract/<rank>.parquet`` (usable documents with their keys)
and ``extract/<rank>.rejected.jsonl`` atomically, so a rerun skips finished tasks (datatrove's
completion markers) and never reads a half-written shard.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
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


def _paper_key(pid: str) -> str:
    return pid.replace("/", "_")


_BULK_NAME = re.compile(r"^([a-z][a-z\-]*?)(\d{7})$")


def bulk_member_id(member: str) -> str | None:
    """arXiv id of a bulk-tar member (``2401/2401.00001.gz`` -> ``2401.00001``; ``0601/astro-ph0601001.gz``)."""
    base = os.path.basename(member)
    for suffix in (".gz", ".pdf", ".tar"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    m = _BULK_NAME.match(base)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    return base or None


def iter_bulk_tar(path: str, wanted: set[str], requester_pays: bool = True) -> Iterator[tuple[str, bytes]]:
    """Stream one arXiv bulk source tar through fsspec, yielding (id, e-print bytes) for wanted ids."""
    import tarfile

    import fsspec

    kwargs = {"requester_pays": True} if requester_pays and path.startswith("s3://") else {}
    with fsspec.open(path, "rb", **kwargs) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            pid = bulk_member_id(member.name)
            if pid not in wanted:
                continue
            f = tar.extractfile(member)
            if f is not None:
                yield pid, f.read()


class ExtractStep(PipelineStep):
    """datatrove step: e-prints -> filtered documents with dedup keys, one parquet file per task."""

    name = "arXiv e-print -> text"
    type = "astrosage"

    def __init__(self, config: ProcessConfig):
        super().__init__()
        self.config = config

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        cfg = self.config
        work = Path(cfg.work_dir)
        out_dir = work / "extract"
        out_dir.mkdir(parents=True, exist_ok=True)
        index = NgramIndex.load(work / "benchmark_ngrams.npy", cfg.ngram)
        hasher = MinHasher(cfg.num_perm, cfg.shingle_size, cfg.seed) if cfg.near else None
        limits = Limits(cfg.limits_bytes, cfg.limits_members)
        rows: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        tmp_parquet = out_dir / f".{rank:05d}.parquet.tmp"
        writer = pq.ParquetWriter(tmp_parquet, EXTRACT_SCHEMA)

        def flush() -> None:
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=EXTRACT_SCHEMA))
                rows.clear()

        def handle(meta: dict[str, Any], data_bytes: bytes | None, source: str) -> None:
            pid = meta["id"]
            why = source_match(meta, cfg.doi_prefixes, cfg.journal_refs)
            if why:
                self.stat_update("decontaminated_source")
                rejected.append({"id": pid, "reason": "decontaminated_source", "detail": why})
                return
            result = extract_guarded(meta, data_bytes, limits, source)
            if result.doc is None:
                self.stat_update(f"rejected_{result.reason}")
                rejected.append({"id": pid, "reason": result.reason, "detail": result.detail})
                return
            self.stat_update("extracted")
            if result.info.get("fallback"):
                self.stat_update("extracted_with_fallback")
            doc = result.doc
            reason, stats = check(doc["text"], cfg.filters)
            if reason is not None:
                self.stat_update(f"filtered_{reason}")
                rejected.append({"id": pid, "reason": f"filtered_{reason}", "detail": json.dumps(stats)})
                return
            doc["exact_key"] = exact_key(doc["text"])
            doc["signature"] = hasher.signature(doc["text"]).tolist() if hasher else None
            doc["benchmark_overlap"] = index.overlap(doc["text"])
            rows.append(doc)
            if len(rows) >= 256:
                flush()

        try:
            with open(work / "inputs.jsonl", encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if i % world_size != rank:
                        continue
                    item = json.loads(line)
                    if item["kind"] == "tar":
                        # papers of this month that are not in this tar are in another one; the stage
                        # reports papers found in no tar at all as eprint_missing
                        metas = {m["id"]: m for m in item["papers"]}
                        for pid, blob in iter_bulk_tar(item["tar"], set(metas), item.get("requester_pays", True)):
                            handle(metas[pid], blob, "arxiv")
                        continue
                    meta = item["meta"]
                    path = item.get("path")
                    blob = Path(path).read_bytes() if path and Path(path).is_file() else None
                    handle(meta, blob, item.get("source", "arxiv"))
            flush()
        finally:
            writer.close()
        os.replace(tmp_parquet, out_dir / f"{rank:05d}.parquet")
        tmp = out_dir / f".{rank:05d}.rejected.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected), encoding="utf-8")
        os.replace(tmp, out_dir / f"{rank:05d}.rejected.jsonl")
        yield from ()


def config_dict(cfg: ProcessConfig) -> dict[str, Any]:
    """JSON-able view of a ProcessConfig (for logs)."""
    return asdict(cfg)
