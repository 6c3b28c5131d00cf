"""The corpus stage: harvest -> e-prints -> text -> filters -> decontamination -> dedup -> parquet.

Steps and where their state lives:

1. gather (``sources``): metadata + e-prints; network results cached in ``<run dir>/corpus.cache``.
2. extract (``process.ExtractStep``) through a datatrove executor (local processes, or Slurm with
   ``corpus.executor: slurm``): one parquet file per task under ``<stage>/_work/extract``;
   datatrove's completion markers let a rerun of a crashed stage skip finished tasks.
3. global: benchmark-overlap drop (or flag), exact + MinHash-LSH near-duplicate removal, in
   (submission date, id) order so the earliest version of a paper is kept.
4. held-out split (``heldout.choose_heldout``): ``corpus.heldout_fraction`` of the kept papers,
   by a hash of the paper id, whole duplicate clusters at a time.
5. output: ``docs/part-NNNNN.parquet`` (id, title, abstract, text, categories, date, source,
   license, n_chars, contamination, authors, year) for training, ``heldout/part-NNNNN.parquet``
   (same schema) for held-out perplexity only -- cpt and synth read ``docs`` and never see it --,
   ``rejected.jsonl`` (id, reason, detail), counts.

"tokens" in the counts is a whitespace-token estimate (``len(text.split())``), not a tokenizer count.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from astrosage.core.artifacts import atomic_write_text
from astrosage.core.stage import StageContext, StageResult

from .decontam import NgramIndex, load_benchmark_texts
from .dedup import MinHasher, dedup
from .filters import SUPPORTED_LANGUAGES, FilterConfig
from .heldout import choose_heldout, cluster_roots
from .process import ExtractStep, ProcessConfig
from .records import dumps_jsonl
from .sources import gather

log = logging.getLogger("astrosage")

DOC_SCHEMA = pa.schema([
    ("id", pa.string()), ("title", pa.string()), ("abstract", pa.string()), ("text", pa.string()),
    ("categories", pa.list_(pa.string())), ("date", pa.string()), ("source", pa.string()), ("license", pa.string()),
    ("n_chars", pa.int64()), ("contamination", pa.string()),
    ("authors", pa.list_(pa.string())), ("year", pa.int32()),
])
MISSING_REASONS = ("eprint_missing", "download_failed", "eprint_not_found")


def benchmark_paths(ctx: StageContext) -> list[str]:
    """Benchmarks to decontaminate against: eval.benchmarks + corpus.decontamination.benchmarks."""
    paths = [b.path for b in ctx.recipe.eval.benchmarks] + [str(p) for p in ctx.recipe.corpus.decontamination.benchmarks]
    return list(dict.fromkeys(paths))


def _load_benchmark(ref: str) -> list[str]:
    path = Path(ref).expanduser()
    if path.exists():
        return load_benchmark_texts(path)
    try:  # a Hub dataset id
        import datasets

        ds = datasets.load_dataset(ref, split="train")
    except Exception as exc:  # noqa: BLE001 - any loader failure means we cannot decontaminate
        raise RuntimeError(f"cannot load benchmark {ref!r} for decontamination: {exc}") from None
    tmp = [dict(r) for r in ds]
    from .decontam import _item_text

    return [_item_text(r) for r in tmp]


def _check_config(cfg: Any) -> None:
    bad = [lang for lang in cfg.filters.languages if lang not in SUPPORTED_LANGUAGES]
    if bad:
        raise ValueError(f"corpus.filters.languages: {bad} not supported by the offline detector (supports {SUPPORTED_LANGUAGES})")


class _Bars:
    """One rich progress bar per step (harvest, download, extract, dedup, write)."""

    def __init__(self, console: Console):
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]corpus {task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[str, Any] = {}

    def __call__(self, step: str, completed: int, total: int | None) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.progress.add_task(step, total=total)
        self.progress.update(self.tasks[step], completed=completed, total=total)


def _default_partition() -> str:
    """The cluster's default partition (marked '*' by sinfo); datatrove needs one by name."""
    import subprocess

    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60).stdout.split()
    for name in out:
        if name.endswith("*"):
            return name[:-1]
    if out:
        return out[0]
    raise RuntimeError("corpus.executor is 'slurm' but no Slurm partition was found; set slurm.partition")


def _wait_for_slurm_tasks(job_id: str | None, logs: Path, tasks: int, poll_s: float = 5.0) -> None:
    """Wait until every task left a completion marker, or the job array left the queue (failed tasks)."""
    import subprocess

    def finished() -> int:
        return len(list((logs / "completions").glob("*"))) if (logs / "completions").exists() else 0

    if not job_id:
        raise RuntimeError("datatrove did not report a Slurm job id for the extraction array; see its logs in " + str(logs))
    while finished() < tasks:
        if job_id:
            queued = subprocess.run(["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True)
            if queued.returncode == 0 and not queued.stdout.strip() and finished() < tasks:
                time.sleep(poll_s)  # a task may write its marker just as it leaves the queue
                break
        time.sleep(poll_s)


def _run_executor(step: ExtractStep, tasks: int, workers: int, logs: Path, executor: str, recipe: Any, bars: _Bars) -> None:
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = recipe.slurm
        activate = Path(sys.prefix) / "bin" / "activate"
        ex = SlurmPipelineExecutor(
            pipeline=[step], tasks=tasks, time=s.time, partition=s.partition or _default_partition(),
            job_name=f"{recipe.run.name}-corpus", logging_dir=str(logs), cpus_per_task=1, qos=s.qos or "",
            sbatch_args={
                **({"account": s.account} if s.account else {}),
                # the recipe's extra sbatch options (validated --name[=value] by the schema)
                **{opt[2:].split("=", 1)[0]: (opt.split("=", 1)[1] if "=" in opt else "") for opt in s.extra_sbatch},
            },
            # the array tasks need this Python environment: the recipe's set-up lines, else this venv
            env_command="\n".join(s.setup) or None,
            venv_path=str(activate) if not s.setup and activate.exists() else None,
        )
    else:
        from datatrove.executor import LocalPipelineExecutor

        ex = LocalPipelineExecutor(pipeline=[step], tasks=tasks, workers=workers, logging_dir=str(logs), skip_completed=True)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            done = len(list((logs / "completions").glob("*"))) if (logs / "completions").exists() else 0
            bars("extract", done, tasks)
            stop.wait(0.5)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        ex.run()
        if executor == "slurm":  # sbatch returns at once: wait for the array's completion markers
            _wait_for_slurm_tasks(getattr(ex, "job_id", None), logs, tasks)
    finally:
        stop.set()
        watcher.join()
    done = len(list((logs / "completions").glob("*")))
    bars("extract", done, tasks)
    if done < tasks:
        raise RuntimeError(f"{tasks - done} of {tasks} extraction tasks failed; see the logs in {logs}")


def build_corpus(ctx: StageContext) -> StageResult:
    """Build the corpus described by ``ctx.recipe.corpus`` into ``ctx.work_dir``."""
    cfg = ctx.recipe.corpus
    _check_config(cfg)
    work = ctx.work_dir
    tmp = work / "_work"
    tmp.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache_dir).expanduser().resolve() if cfg.cache_dir else ctx.run_dir / "corpus.cache"
    console = Console(stderr=True)
    bars = _Bars(console)
    with bars.progress:
        # 1. papers
        gathered = gather(cfg, cache, bars)
        inputs_path = tmp / "inputs.jsonl"
        if not inputs_path.exists():  # a resumed run keeps the original task split
            atomic_write_text(inputs_path, dumps_jsonl(gathered.inputs))
        n_inputs = sum(1 for _ in inputs_path.open(encoding="utf-8"))
        # 2. benchmark n-grams
        dc = cfg.decontamination
        texts: list[str] = []
        for ref in benchmark_paths(ctx):
            texts += _load_benchmark(ref)
        index = NgramIndex.from_texts(texts, dc.ngram)
        index.save(tmp / "benchmark_ngrams.npy")
        # 3. per-paper extraction through datatrove
        pcfg = ProcessConfig(
            work_dir=str(tmp), filters=FilterConfig.from_settings(cfg.filters), limits_bytes=cfg.max_uncompressed_mb * 1024 * 1024,
            limits_members=cfg.max_archive_members, ngram=dc.ngram, num_perm=cfg.dedup.num_perm,
            shingle_size=cfg.dedup.shingle_size, seed=cfg.dedup.seed, doi_prefixes=tuple(dc.drop_doi_prefixes),
            journal_refs=tuple(dc.drop_journal_refs), near=cfg.dedup.near,
        )
        tasks = max(1, min(n_inputs, max(cfg.num_workers, math.ceil(n_inputs / cfg.shard_docs))))
        if n_inputs:
            _run_executor(ExtractStep(pcfg), tasks, min(cfg.num_workers, tasks), tmp / "logs", cfg.executor, ctx.recipe, bars)
        shards = sorted((tmp / "extract").glob("*.parquet")) if n_inputs else []
        rejected: list[dict[str, str]] = list(gathered.rejected)
        for shard in shards:
            for line in shard.with_suffix(".rejected.jsonl").read_text(encoding="utf-8").splitlines():
                rejected.append(json.loads(line))
        # 4. global decontamination + dedup
        keys = pa.concat_tables([pq.read_table(s, columns=["id", "date", "exact_key", "signature", "benchmark_overlap"])
                                 for s in shards]) if shards else None
        rows = keys.to_pylist() if keys is not None else []
        rows.sort(key=lambda r: (r["date"] or "", r["id"]))
        contamination: dict[str, str] = {}
        candidates = []
        for r in rows:
            if r["benchmark_overlap"] > 0:
                note = f"{r['benchmark_overlap']} {dc.ngram}-grams shared with a benchmark item"
                if dc.action == "drop":
                    rejected.append({"id": r["id"], "reason": "decontaminated_ngram", "detail": note})
                    continue
                contamination[r["id"]] = note
            candidates.append(r)
        keep: set[str] = set()
        sigs = ((r["id"], r["exact_key"], np.asarray(r["signature"], dtype=np.uint32) if r["signature"] is not None else None)
                for r in candidates)
        for i, (pid, reason, other) in enumerate(dedup(sigs, cfg.dedup.exact, cfg.dedup.near, cfg.dedup.num_perm,
                                                       cfg.dedup.threshold, cfg.dedup.seed), 1):
            if reason is None:
                keep.add(pid)
            else:
                rejected.append({"id": pid, "reason": reason, "detail": f"duplicate of {other}"})
            if i % 1000 == 0 or i == len(candidates):
                bars("dedup", i, len(candidates))
        heldout = _split_heldout(candidates, keep, cfg, shards)
        # papers that never reached an outcome (e.g. in no bulk tar)
        seen = {r["id"] for r in rejected} | {r["id"] for r in rows}
        for rec in gathered.records:
            if rec["id"] not in seen:
                rejected.append({"id": rec["id"], "reason": "eprint_missing", "detail": "no e-print found"})
        # 5. output
        for name in ("docs", "heldout"):
            if (work / name).exists():
                shutil.rmtree(work / name)
            (work / name).mkdir(parents=True)
        authors = {r["id"]: list(r.get("authors") or []) for r in gathered.records}
        written = _write_docs(shards, keep, heldout, contamination, authors, work, cfg.shard_docs, bars)
        kept, tokens, chars = written["docs"]
        n_held, held_tokens, held_chars = written["heldout"]
        rejected.sort(key=lambda r: r["id"])
        atomic_write_text(work / "rejected.jsonl", dumps_jsonl({"id": r["id"], "reason": r["reason"], "detail": r.get("detail", "")}
                                                               for r in rejected))
    reasons = Counter(r["reason"] for r in rejected)
    counts = _counts(len(gathered.records), reasons, len(rows), kept + n_held, tokens, len(contamination))
    counts = _with_split(counts, n_held, kept)
    _print_table(console, counts)
    shutil.rmtree(tmp)
    metrics = {"kept": kept + n_held, "train": kept, "heldout": n_held, "heldout_chars": held_chars,
               "heldout_tokens_whitespace_estimate": held_tokens, "tokens_whitespace_estimate": tokens, "chars": chars,
               "rejected": len(rejected),
               "rejected_by_reason": dict(sorted(reasons.items())), "benchmarks": benchmark_paths(ctx),
               "benchmark_ngrams": int(len(index.hashes))}
    return StageResult(counts=counts, metrics=metrics, outputs={"docs": "docs", "heldout": "heldout", "rejected": "rejected.jsonl"})


def _split_heldout(candidates: list[dict[str, Any]], keep: set[str], cfg: Any, shards: list[Path]) -> set[str]:
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


def _with_split(counts: dict[str, int], heldout: int, train: int) -> dict[str, int]:
    """Insert ``heldout`` and ``train`` after ``kept`` (``kept`` = both)."""
    out: dict[str, int] = {}
    for key, value in counts.items():
        out[key] = value
        if key == "kept":
            out["heldout"], out["train"] = heldout, train
    return out


class _ShardWriter:
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

    def close(self) -> tuple[int, int, int]:
        self.flush(final=True)
        if self.rows == 0:  # an empty but loadable dataset
            pq.write_table(pa.Table.from_pylist([], schema=DOC_SCHEMA), self.out / "part-00000.parquet")
        return self.rows, self.tokens, self.chars


def _write_docs(shards: list[Path], keep: set[str], heldout: set[str], contamination: dict[str, str],
                authors: dict[str, list[str]], work: Path, per_shard: int, bars: _Bars) -> dict[str, tuple[int, int, int]]:
    """Stream kept rows of the extract shards into ``work/docs/`` (training) and ``work/heldout/``.

    ``authors`` (paper id -> names, from the harvested metadata) and the submission year are
    added to each row, so synthetic items can cite the work as "Smith et al. (2021)".
    Returns (rows, whitespace tokens, chars) per output folder.
    """
    cols = [f.name for f in DOC_SCHEMA if f.name not in ("contamination", "authors", "year")]
    writers = {"docs": _ShardWriter(work / "docs", per_shard), "heldout": _ShardWriter(work / "heldout", per_shard)}
    done = 0
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(columns=cols, batch_size=256):
            for row in batch.to_pylist():
                if row["id"] not in keep:
                    continue
                row["contamination"] = contamination.get(row["id"])
                row["authors"] = authors.get(row["id"], [])
                year = str(row.get("date") or "")[:4]
                row["year"] = int(year) if year.isdigit() else None
                writers["heldout" if row["id"] in heldout else "docs"].add(row)
                done += 1
            bars("write", done, len(keep))
    return {name: w.close() for name, w in writers.items()}


def _counts(harvested: int, reasons: Counter, extracted_ok: int, kept: int, tokens: int, flagged: int) -> dict[str, int]:
    missing = sum(n for r, n in reasons.items() if r in MISSING_REASONS or r.startswith("eprint_http_"))
    filtered = {r: n for r, n in reasons.items() if r.startswith("filtered_")}
    extraction_failed = {f"failed_{r}": n for r, n in reasons.items()
                         if not r.startswith(("filtered_", "decontaminated_")) and r not in ("exact_duplicate", "near_duplicate")
                         and r not in MISSING_REASONS and not r.startswith("eprint_http_")}
    source = reasons.get("decontaminated_source", 0)
    ngram = reasons.get("decontaminated_ngram", 0)
    extracted = extracted_ok + sum(filtered.values())
    counts = {
        "harvested": harvested,
        "downloaded": harvested - missing,
        "extracted": extracted,
        **dict(sorted(extraction_failed.items())),
        "filtered": sum(filtered.values()),
        **dict(sorted(filtered.items())),
        "decontaminated": source + ngram + flagged,
        "decontaminated_source": source,
        "decontaminated_ngram": ngram if not flagged else flagged,
        "deduped": reasons.get("exact_duplicate", 0) + reasons.get("near_duplicate", 0),
        "deduped_exact": reasons.get("exact_duplicate", 0),
        "deduped_near": reasons.get("near_duplicate", 0),
        "kept": kept,
        "tokens": tokens,
    }
    return counts


def _print_table(console: Console, counts: dict[str, int]) -> None:
    table = Table(title="corpus", title_justify="left")
    table.add_column("step")
    table.add_column("papers", justify="right")
    for key, value in counts.items():
        label = f"  {key}" if key.startswith(("filtered_", "failed_", "decontaminated_", "deduped_")) else key
        table.add_row(label + (" (whitespace estimate)" if key == "tokens" else ""), f"{value:,}")
    console.print(table)
