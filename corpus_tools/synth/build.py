"""Stage ``synth``: corpus chunks -> teacher -> validated QA (with <think> chains) and MCQs.

    corpus docs (or synth.docs) -> chunks -> shards of ``shard_chunks`` chunks      (.chunking, .shards)
      -> per chunk and task one teacher request (transformers | vllm | openai)     (.backends, .generate)
      -> JSON extraction -> validation -> decontamination -> near-dup questions    (.parsing, .validate)
      -> qa/part-*.jsonl, mcq/part-*.jsonl (+ state/ledger.jsonl), then mcq/dev.jsonl  (.store, .report)
      -> rejected.jsonl: every rejected reply/item with its chunk, task, reason, raw text (capped)

Replies are constrained to the task's JSON schema (:mod:`.schemas`, ``synth.structured_output``).
A live bar shows requests done, kept/rejected items, items/s, tokens/s and the ETA (:mod:`.progress`);
the same throughput figures go into the manifest.

Resumable: a killed run continues after its last committed shard (see :mod:`.store`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from astrosage.core.stage import StageContext, StageResult

from ..decontam import benchmark_refs
from .backends.base import make_backend
from .chunking import iter_chunks
from .generate import Synthesizer
from .progress import SynthProgress, console, estimate_chunks
from .report import stage_metrics, summary_table, top_reasons, totals, write_dev_set
from .shards import generate_missing
from .store import ShardStore
from .templates import load_template
from .validate import Decontaminator, QuestionDeduper

log = logging.getLogger("astrosage")

OUTPUTS = {"qa": "qa", "mcq": "mcq", "mcq_dev": "mcq/dev.jsonl", "rejected": "rejected.jsonl"}


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
    for ref in benchmark_refs(ctx.recipe):
        path = Path(ref).expanduser()
        if path.is_file():
            files.append(path.resolve())
        else:
            skipped.append(ref)
    for ref in skipped:
        log.warning("synth: benchmark %r is not a local file; generated items are not decontaminated against it", ref)
    return files, skipped


def restored_dedupers(store: ShardStore, tasks: list[str], threshold: float, seed: int) -> dict[str, QuestionDeduper]:
    """One question deduper per task, fed the questions of the shards already committed (a resumed run)."""
    dedupers = {t: QuestionDeduper(threshold, seed=seed) for t in tasks}
    for rec in store.iter_records("qa"):
        task = rec["meta"]["task"]
        if task in dedupers:
            dedupers[task].check(rec["messages"][0]["content"])
    if "mcq" in dedupers:
        for rec in store.iter_records("mcq"):
            dedupers["mcq"].check(rec["question"])
    return dedupers


def build_synth(ctx: StageContext) -> StageResult:
    """Generate, validate and store the synthetic items of ``ctx.recipe.synth`` into ``ctx.work_dir``."""
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
    dedupers = restored_dedupers(store, section.tasks, section.dedup_threshold, recipe.run.seed + 1)
    teacher = teacher_ref(ctx)

    def start() -> Synthesizer:
        backend = make_backend(section.backend, teacher, section, seed=recipe.run.seed)
        return Synthesizer(backend, templates, section, recipe.run.seed, dedupers, decontaminator)

    out = console()
    est = estimate_chunks(docs, section.chunk_chars, section.chunk_overlap, section.max_chunks)
    chunks = iter_chunks(docs, section.chunk_chars, section.chunk_overlap, section.max_chunks)
    with SynthProgress(out, est * len(section.tasks) if est else None, store) as progress:
        backend = generate_missing(chunks, section.shard_chunks, store, start, progress)

    counts = totals(store, section.tasks)
    if counts["chunks"] == 0:
        raise ValueError(f"the synth stage found no text to chunk in {docs}")
    dev = write_dev_set(store, section.mcq_dev_size if "mcq" in section.tasks else 0, ctx.work_dir / OUTPUTS["mcq_dev"])
    counts["mcq_dev"] = len(dev)
    if "mcq" in section.tasks and len(dev) < section.mcq_dev_size:
        log.warning("synth: only %d validated MCQs for a dev set of %d (more chunks or mcq_per_chunk give more)", len(dev), section.mcq_dev_size)
    n_logged = store.gather_rejected(ctx.work_dir / OUTPUTS["rejected"])
    reasons = top_reasons(ctx.work_dir / OUTPUTS["rejected"])
    out.print(summary_table(counts, section.tasks, reasons))

    metrics = stage_metrics(
        counts=counts, store=store, dev=dev, reasons=reasons, n_logged=n_logged, rate=progress.rate, ran=backend is not None,
        setup={"backend": section.backend, "teacher": teacher if section.backend == "openai" else Path(teacher).name,
               "prompts": {t: f"{tm.id}@{tm.sha}" for t, tm in templates.items()}, "structured_output": section.structured_output,
               "shards_resumed": resumed},
        decontam={"decontaminated_against": [str(p) for p in bench_files], "decontam_skipped": bench_skipped, "decontam_ngram": ngram},
    )
    if getattr(backend, "stats", None):
        metrics["http"] = dict(backend.stats)
    log.info(
        "synth: %d chunks, %d requests, %d items generated, %d kept, %d rejected (%s)",
        counts["chunks"], counts["requests"], counts["generated"], counts["kept"], counts["rejected"],
        ", ".join(f"{k}={v}" for k, v in metrics["rejected_by_reason"].items()) or "none",
    )
    return StageResult(counts=counts, metrics=metrics, outputs=dict(OUTPUTS))
