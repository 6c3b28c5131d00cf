"""Stage ``synth``: corpus chunks -> teacher -> validated QA (with <think> chains) and MCQs.

    corpus docs (or synth.docs) -> chunks -> shards of ``shard_chunks`` chunks
      -> per chunk and task one teacher request (transformers | vllm | openai)
      -> JSON extraction -> validation -> decontamination -> near-dup questions
      -> qa/part-*.jsonl, mcq/part-*.jsonl (+ state/ledger.jsonl), then mcq/dev.jsonl

Resumable: a killed run continues after its last committed shard (see :mod:`.store`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from astrosage.artifacts import atomic_write_text
from astrosage.pipeline import StageContext, StageResult

from .backends.base import Backend, make_backend
from .chunking import Chunk, doc_files, iter_chunks
from .generate import ShardResult, SynthError, Synthesizer
from .store import ShardStore, chunk_digest
from .templates import load_template
from .validate import REASONS, Decontaminator, QuestionDeduper

log = logging.getLogger("astrosage")

DEV_FIELDS = ("id", "question", "A", "B", "C", "D", "answer", "explanation", "topic", "paper_id")
OUTPUTS = {"qa": "qa", "mcq": "mcq", "mcq_dev": "mcq/dev.jsonl"}


# ---------------------------------------------------------------------------- inputs
def docs_path(ctx: StageContext) -> Path:
    """The corpus stage's docs, else ``synth.docs``; a clear error when there are none."""
    if "corpus" in ctx.upstream:
        return ctx.upstream_output("corpus", "docs")
    if ctx.recipe.synth.docs is not None:
        return Path(ctx.recipe.synth.docs).expanduser().resolve()
    raise ValueError("the synth stage has no documents: enable the corpus stage or set synth.docs (parquet file or folder)")


def teacher_ref(ctx: StageContext) -> str:
    """The teacher: a resolved local model for transformers/vllm, the served model name for openai."""
    section = ctx.recipe.synth
    ref = section.teacher_model or ctx.recipe.model.base_instruct
    if not ref:
        raise ValueError("the synth stage needs synth.teacher_model or model.base_instruct")
    return ctx.resolve_model(ref) if section.backend in ("transformers", "vllm") else ref


def benchmark_files(ctx: StageContext) -> tuple[list[Path], list[str]]:
    """Local benchmark files to decontaminate against (eval.benchmarks + corpus extras), and refs skipped."""
    files: list[Path] = []
    skipped: list[str] = []
    refs = [b.path for b in ctx.recipe.eval.benchmarks] + [str(p) for p in ctx.recipe.corpus.decontamination.benchmarks]
    for ref in dict.fromkeys(refs):
        path = Path(ref).expanduser()
        if path.is_file():
            files.append(path.resolve())
        else:
            skipped.append(ref)
    for ref in skipped:
        log.warning("synth: benchmark %r is not a local file; generated items are not decontaminated against it", ref)
    return files, skipped


def estimate_chunks(docs: Path, chunk_chars: int, overlap: int, max_chunks: int | None) -> int | None:
    """Rough chunk count from the docs' n_chars column (for the progress bar), or None."""
    import pyarrow.parquet as pq

    total = 0
    try:
        for path in doc_files(docs):
            for n in pq.read_table(path, columns=["n_chars"]).column("n_chars").to_pylist():
                total += max(1, -(-max(0, (n or 0) - overlap) // (chunk_chars - overlap)))
    except (KeyError, ValueError, OSError):
        return max_chunks
    return min(total, max_chunks) if max_chunks else total


def shards(chunks: Iterable[Chunk], size: int) -> Iterator[tuple[int, list[Chunk]]]:
    """(shard index, chunks) in order."""
    it = iter(chunks)
    index = 0
    while batch := list(islice(it, size)):
        yield index, batch
        index += 1


# ---------------------------------------------------------------------------- display
def _console():
    """The CLI's console when running under it (one live display), else a stderr console."""
    from rich.console import Console

    cli = sys.modules.get("astrosage.cli")
    return getattr(cli, "console", None) or Console(stderr=True)


def _progress(console, total: int | None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks  {task.fields[items]} kept  {task.fields[items_s]:.2f} items/s  {task.fields[tok_s]:.0f} tok/s"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def summary_table(counts: dict[str, int], tasks: Iterable[str]):
    """The final table: chunks, requests, items generated, rejected per reason, kept per task."""
    from rich.table import Table

    table = Table(title="synth", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("chunks", "requests", "generated"):
        table.add_row(key, str(counts.get(key, 0)))
    for reason in REASONS:
        if counts.get(f"rejected_{reason}"):
            table.add_row(f"rejected: {reason}", str(counts[f"rejected_{reason}"]))
    for task in tasks:
        table.add_row(f"kept: {task}", str(counts.get(f"kept_{task}", 0)))
    table.add_row("mcq dev set", str(counts.get("mcq_dev", 0)))
    return table


# ---------------------------------------------------------------------------- totals / outputs
def totals(store: ShardStore, tasks: Iterable[str]) -> dict[str, int]:
    """Counts summed over every committed shard (so they survive resumes)."""
    gen: Counter = Counter()
    kept: Counter = Counter()
    rej: Counter = Counter()
    chunks = requests = ptok = ctok = 0
    for entry in store.entries.values():
        chunks += entry["n_chunks"]
        requests += entry["requests"]
        ptok += entry.get("prompt_tokens", 0)
        ctok += entry.get("completion_tokens", 0)
        gen.update(entry["generated"])
        kept.update(entry["kept"])
        rej.update(entry["rejected"])
    counts = {
        "shards": len(store.entries),
        "chunks": chunks,
        "requests": requests,
        "generated": sum(gen.values()),
        "kept": sum(kept.values()),
        "rejected": sum(rej.values()),
        "prompt_tokens": ptok,
        "completion_tokens": ctok,
    }
    counts.update({f"kept_{t}": kept.get(t, 0) for t in tasks})
    counts.update({f"rejected_{r}": n for r, n in sorted(rej.items())})
    return counts


def write_dev_set(store: ShardStore, size: int, path: Path) -> list[dict[str, Any]]:
    """The first ``size`` validated MCQs (evaluator format + provenance) -> ``mcq/dev.jsonl``."""
    import json

    rows = []
    for rec in islice(store.iter_records("mcq"), size):
        rows.append({**{k: rec.get(k) for k in DEV_FIELDS}, "meta": rec.get("meta", {})})
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def _rebuild_dedup(store: ShardStore, dedupers: dict[str, QuestionDeduper]) -> None:
    for rec in store.iter_records("qa"):
        task = rec["meta"]["task"]
        if task in dedupers:
            dedupers[task].check(rec["messages"][0]["content"])
    if "mcq" in dedupers:
        for rec in store.iter_records("mcq"):
            dedupers["mcq"].check(rec["question"])


# ---------------------------------------------------------------------------- the stage
def run(ctx: StageContext) -> StageResult:
    recipe, section = ctx.recipe, ctx.recipe.synth
    docs = docs_path(ctx)
    templates = {t: load_template(t, section.prompt_version, section.prompt_dir) for t in section.tasks}
    store = ShardStore(ctx.work_dir)
    resumed = len(store.entries)
    if resumed:
        log.info("synth: resuming; %d shard(s) already committed", resumed)
    bench_files, bench_skipped = benchmark_files(ctx)
    ngram = recipe.corpus.decontamination.ngram
    decontaminator = Decontaminator.from_files(bench_files, ngram)
    dedupers = {t: QuestionDeduper(section.dedup_threshold, seed=recipe.run.seed + 1) for t in section.tasks}
    _rebuild_dedup(store, dedupers)
    teacher = teacher_ref(ctx)

    backend: Backend | None = None
    session = {"items": 0, "tokens": 0, "shards": 0, "seconds": 0.0}  # this process only (throughput)
    console = _console()
    total = estimate_chunks(docs, section.chunk_chars, section.chunk_overlap, section.max_chunks)
    try:
        with _progress(console, total) as progress:
            kept_total = sum(sum(e["kept"].values()) for e in store.entries.values())
            bar = progress.add_task("synth", total=total, items=kept_total, items_s=0.0, tok_s=0.0)
            chunks = iter_chunks(docs, section.chunk_chars, section.chunk_overlap, section.max_chunks)
            for shard, batch in shards(chunks, section.shard_chunks):
                if store.done(shard):
                    if store.entries[shard]["chunk_digest"] != chunk_digest(c.key for c in batch):
                        raise SynthError(
                            f"shard {shard} in {store.ledger_path} was made from other chunks than the corpus gives now; "
                            "rerun with --force to start over"
                        )
                    progress.advance(bar, len(batch))
                    continue
                if backend is None:
                    backend = make_backend(section.backend, teacher, section, seed=recipe.run.seed)
                    synth = Synthesizer(backend, templates, section, recipe.run.seed, dedupers, decontaminator)
                t_shard = time.monotonic()
                result: ShardResult = synth.run_shard(batch)
                store.commit(shard, result.records, result.ledger_entry(batch))
                session["seconds"] += time.monotonic() - t_shard
                for ex in result.examples[:2]:
                    log.debug("synth: rejected (%s, %s, %s): %s", ex["reason"], ex["task"], ex["chunk"], ex["detail"])
                session["items"] += sum(result.kept.values())
                session["tokens"] += result.completion_tokens
                session["shards"] += 1
                elapsed = max(session["seconds"], 1e-9)
                kept_total += sum(result.kept.values())
                progress.update(
                    bar, advance=len(batch), items=kept_total, items_s=session["items"] / elapsed, tok_s=session["tokens"] / elapsed
                )
    finally:
        if backend is not None:
            backend.close()
    elapsed = session["seconds"]

    counts = totals(store, section.tasks)
    if counts["chunks"] == 0:
        raise ValueError(f"the synth stage found no text to chunk in {docs}")
    dev = write_dev_set(store, section.mcq_dev_size if "mcq" in section.tasks else 0, ctx.work_dir / OUTPUTS["mcq_dev"])
    counts["mcq_dev"] = len(dev)
    if "mcq" in section.tasks and len(dev) < section.mcq_dev_size:
        log.warning("synth: only %d validated MCQs for a dev set of %d (more chunks or mcq_per_chunk give more)", len(dev), section.mcq_dev_size)
    console.print(summary_table(counts, section.tasks))

    http_stats = getattr(backend, "stats", None)
    metrics: dict[str, Any] = {
        "kept": counts["kept"],
        "rejected": counts["rejected"],
        "items_per_s": round(session["items"] / elapsed, 4) if elapsed > 0 else 0.0,
        "tokens_per_s": round(session["tokens"] / elapsed, 2) if elapsed > 0 else 0.0,
        "backend": section.backend,
        "teacher": teacher if section.backend == "openai" else Path(teacher).name,
        "prompts": {t: f"{tm.id}@{tm.sha}" for t, tm in templates.items()},
        "rejected_by_reason": {k[len("rejected_"):]: v for k, v in counts.items() if k.startswith("rejected_")},
        "shards_resumed": resumed,
        "shards_this_run": session["shards"],
        "decontaminated_against": [str(p) for p in bench_files],
        "decontam_skipped": bench_skipped,
        "decontam_ngram": ngram,
        "dev_answer_letters": dict(sorted(Counter(r["answer"] for r in dev).items())),
    }
    if http_stats:
        metrics["http"] = dict(http_stats)
    log.info(
        "synth: %d chunks, %d requests, %d items generated, %d kept, %d rejected (%s)",
        counts["chunks"], counts["requests"], counts["generated"], counts["kept"], counts["rejected"],
        ", ".join(f"{k}={v}" for k, v in metrics["rejected_by_reason"].items()) or "none",
    )
    return StageResult(counts=counts, metrics=metrics, outputs=dict(OUTPUTS))
