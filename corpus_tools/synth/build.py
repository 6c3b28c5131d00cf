"""Stage ``synth``: corpus chunks -> teacher -> validated QA (with <think> chains) and MCQs.

    corpus docs (or synth.docs) -> chunks -> shards of ``shard_chunks`` chunks
      -> per chunk and task one teacher request (transformers | vllm | openai)
      -> JSON extraction -> validation -> decontamination -> near-dup questions
      -> qa/part-*.jsonl, mcq/part-*.jsonl (+ state/ledger.jsonl), then mcq/dev.jsonl
      -> rejected.jsonl: every rejected reply/item with its chunk, task, reason, raw text (capped)

Replies are constrained to the task's JSON schema (:mod:`.schemas`, ``synth.structured_output``).
A live bar shows requests done, kept/rejected items, items/s, tokens/s and the ETA; the same
throughput figures go into the manifest. Without a terminal (Slurm logs) a progress line is
logged after each shard instead.

Resumable: a killed run continues after its last committed shard (see :mod:`.store`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from astrosage.core.artifacts import atomic_write_text
from astrosage.core.stage import StageContext, StageResult

from .backends.base import Backend, make_backend
from .chunking import Chunk, doc_files, iter_chunks
from .generate import ShardResult, SynthError, Synthesizer
from .store import ShardStore, chunk_digest
from .templates import load_template
from .validate import REASONS, Decontaminator, QuestionDeduper

log = logging.getLogger("astrosage")

DEV_FIELDS = ("id", "question", "A", "B", "C", "D", "answer", "explanation", "topic", "paper_id")
OUTPUTS = {"qa": "qa", "mcq": "mcq", "mcq_dev": "mcq/dev.jsonl", "rejected": "rejected.jsonl"}
TOP_REASONS = 5  # rejection reasons shown with an example in the summary


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


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "requests  [green]{task.fields[kept]} kept[/]  [red]{task.fields[rejected]} rejected[/]  "
            "{task.fields[items_s]:.2f} items/s  {task.fields[tok_s]:.0f} tok/s"
        ),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class Throughput:
    """This process's generation rates (a resumed run's earlier shards are not counted)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.requests = self.items = self.tokens = self.shards = 0
        self.lock = threading.Lock()

    def add_request(self, completion_tokens: int) -> None:
        with self.lock:
            self.requests += 1
            self.tokens += completion_tokens

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def rates(self) -> tuple[float, float]:
        elapsed = max(self.seconds, 1e-9)
        return self.items / elapsed, self.tokens / elapsed

    def eta_s(self, done: int, total: int | None) -> float | None:
        if not total or not self.requests or done >= total:
            return None
        return (total - done) * self.seconds / self.requests


def top_reasons(path: Path, n: int = TOP_REASONS) -> list[tuple[str, int, str]]:
    """(reason, count, one example detail) for the ``n`` commonest reasons in rejected.jsonl."""
    import json

    counts: Counter = Counter()
    example: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            counts[row["reason"]] += 1
            example.setdefault(row["reason"], f"{row['task']} {row['chunk']}: {row.get('detail', '')}")
    return [(reason, count, example[reason]) for reason, count in counts.most_common(n)]


def summary_table(counts: dict[str, int], tasks: Iterable[str], reasons: list[tuple[str, int, str]] | None = None):
    """The final table: chunks, requests, items, kept per task, and the top rejection reasons with an example."""
    from rich.table import Table

    table = Table(title="synth", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("example", overflow="fold", max_width=70)
    for key in ("chunks", "requests", "generated"):
        table.add_row(key, str(counts.get(key, 0)), "")
    for task in tasks:
        table.add_row(f"kept: {task}", str(counts.get(f"kept_{task}", 0)), "")
    table.add_row("kept", f"[bold]{counts.get('kept', 0)}[/]", "")
    table.add_row("rejected", str(counts.get("rejected", 0)), "all in rejected.jsonl" if counts.get("rejected") else "")
    if reasons is None:
        reasons = [(r, counts[f"rejected_{r}"], "") for r in REASONS if counts.get(f"rejected_{r}")]
    for reason, count, example in reasons:
        table.add_row(f"  {reason}", str(count), example[:200])
    table.add_row("mcq dev set", str(counts.get("mcq_dev", 0)), "")
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


def counts_structured(store: ShardStore) -> dict[str, int]:
    """Replies per structured-output mode over all committed shards."""
    out: Counter = Counter()
    for entry in store.entries.values():
        out.update(entry.get("structured", {}))
    return dict(sorted(out.items()))


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
def build_synth(ctx: StageContext) -> StageResult:
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
    rate = Throughput()
    console = _console()
    est = estimate_chunks(docs, section.chunk_chars, section.chunk_overlap, section.max_chunks)
    total = est * len(section.tasks) if est else None
    last_log = 0.0
    try:
        with _progress(console) as progress:
            done = sum(e["requests"] for e in store.entries.values())
            kept_total = sum(sum(e["kept"].values()) for e in store.entries.values())
            rejected_total = sum(sum(e["rejected"].values()) for e in store.entries.values())
            bar = progress.add_task("synth", total=total, completed=done, kept=kept_total, rejected=rejected_total, items_s=0.0, tok_s=0.0)

            def on_result(res) -> None:  # per finished request (worker threads for openai)
                rate.add_request(res.completion_tokens)
                progress.update(bar, advance=1, tok_s=rate.rates()[1])

            chunks = iter_chunks(docs, section.chunk_chars, section.chunk_overlap, section.max_chunks)
            for shard, batch in shards(chunks, section.shard_chunks):
                if store.done(shard):
                    if store.entries[shard]["chunk_digest"] != chunk_digest(c.key for c in batch):
                        raise SynthError(
                            f"shard {shard} in {store.ledger_path} was made from other chunks than the corpus gives now; "
                            "rerun with --force to start over"
                        )
                    continue
                if backend is None:
                    backend = make_backend(section.backend, teacher, section, seed=recipe.run.seed)
                    synth = Synthesizer(backend, templates, section, recipe.run.seed, dedupers, decontaminator)
                    rate = Throughput()  # rates exclude loading the teacher
                result: ShardResult = synth.run_shard(batch, on_result=on_result)
                store.commit(shard, {**result.records, "rejected": result.rejections}, result.ledger_entry(batch))
                for ex in result.examples[:2]:
                    log.debug("synth: rejected (%s, %s, %s): %s", ex["reason"], ex["task"], ex["chunk"], ex["detail"])
                done += result.requests
                rate.items += sum(result.kept.values())
                rate.shards += 1
                kept_total += sum(result.kept.values())
                rejected_total += sum(result.rejected.values())
                items_s, tok_s = rate.rates()
                progress.update(bar, completed=done, kept=kept_total, rejected=rejected_total, items_s=items_s, tok_s=tok_s)
                if not console.is_terminal and time.monotonic() - last_log >= 30:
                    last_log = time.monotonic()
                    eta = rate.eta_s(done, total)
                    log.info(
                        "synth: %d/%s requests, %d kept, %d rejected, %.2f items/s, %.0f tok/s, ETA %s",
                        done, total if total else "?", kept_total, rejected_total, items_s, tok_s,
                        f"{eta / 60:.1f} min" if eta is not None else "?",
                    )
    finally:
        if backend is not None:
            backend.close()
    session = {"items": rate.items, "tokens": rate.tokens, "shards": rate.shards, "seconds": rate.seconds if backend is not None else 0.0}
    elapsed = session["seconds"]

    counts = totals(store, section.tasks)
    if counts["chunks"] == 0:
        raise ValueError(f"the synth stage found no text to chunk in {docs}")
    dev = write_dev_set(store, section.mcq_dev_size if "mcq" in section.tasks else 0, ctx.work_dir / OUTPUTS["mcq_dev"])
    counts["mcq_dev"] = len(dev)
    if "mcq" in section.tasks and len(dev) < section.mcq_dev_size:
        log.warning("synth: only %d validated MCQs for a dev set of %d (more chunks or mcq_per_chunk give more)", len(dev), section.mcq_dev_size)
    n_logged = store.gather_rejected(ctx.work_dir / OUTPUTS["rejected"])
    reasons = top_reasons(ctx.work_dir / OUTPUTS["rejected"])
    console.print(summary_table(counts, section.tasks, reasons))

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
        "rejected_logged": n_logged,
        "top_rejections": [{"reason": r, "count": n, "example": ex} for r, n, ex in reasons],
        "seconds": round(elapsed, 2),
        "requests_this_run": rate.requests,
        "completion_tokens_this_run": rate.tokens,
        "structured": counts_structured(store),
        "truncated": sum(e.get("truncated", 0) for e in store.entries.values()),
        "structured_output": section.structured_output,
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
