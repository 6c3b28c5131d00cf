"""The pipeline's `eval` stage: score the base model and every produced checkpoint.

Writes into the stage folder one ``<checkpoint>/<benchmark>/`` report folder each, one
``<checkpoint>/perplexity/<set>/`` folder per text set (the corpus's held-out papers as
``heldout``, plus ``eval.perplexity_sets``: perplexity and bits per byte, see
:mod:`eval.perplexity`), and ``comparison.md`` / ``comparison.json`` / ``comparison.png``
(did domain training help? see :mod:`eval.comparison`). Scores are cached per checkpoint x
benchmark (or text set) x settings in ``<run>/eval.cache/`` (outside the stage folder, which is
replaced on every rerun), so a rerun only scores what changed.

:func:`evaluate_run` runs the steps in order: settings and checkpoints (:mod:`eval.checkpoints`),
text sets, benchmark scores, perplexity scores, the comparison, counts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from astrosage.core.stage import StageContext, StageResult

from .checkpoints import Checkpoint, list_checkpoints, select_checkpoints
from .comparison import comparison_metrics, write_comparison
from .evaluator import EvalSettings, evaluate

log = logging.getLogger("astrosage")

CACHE_DIR = "eval.cache"


def eval_settings(ctx: StageContext) -> EvalSettings:
    """The evaluator's settings from the recipe's ``eval`` and ``model`` sections."""
    section, model = ctx.recipe.eval, ctx.recipe.model
    return EvalSettings(
        method=section.method,
        batch_size=section.batch_size,
        limit=section.limit,
        dtype=model.dtype,
        backend=section.backend,
        max_new_tokens=section.max_new_tokens,
        thinking=section.thinking,
        attn_implementation=model.attn_implementation,
        trust_remote_code=model.trust_remote_code,
    )


def heldout_dir(ctx: StageContext) -> Path | None:
    """The corpus stage's held-out papers (``corpus/heldout``), or None when this run has none."""
    if "corpus" in ctx.upstream:
        outputs = ctx.upstream["corpus"].get("outputs", {})
        return ctx.upstream_output("corpus", "heldout") if "heldout" in outputs else None
    if not ctx.recipe.corpus.enabled:
        return None
    # the eval stage does not list the corpus as an input: read the run's finished corpus stage
    manifest = ctx.run_dir / "corpus" / "manifest.json"
    try:
        rel = json.loads(manifest.read_text(encoding="utf-8")).get("outputs", {}).get("heldout")
    except (OSError, ValueError):
        return None
    return ctx.run_dir / "corpus" / rel if rel and (ctx.run_dir / "corpus" / rel).is_dir() else None


def text_sets(ctx: StageContext) -> list[Any]:
    """The held-out papers (when the corpus made them and ``eval.perplexity`` is on) + ``eval.perplexity_sets``."""
    from .perplexity import load_heldout, load_text_set

    section = ctx.recipe.eval
    sets = []
    if section.perplexity:
        held = heldout_dir(ctx)
        if held is None:
            log.info("eval: no held-out corpus papers in this run (corpus stage off or older than corpus.heldout_fraction)")
        else:
            found = load_heldout(held, section.heldout_limit)
            if found.docs:
                sets.append(found)
            else:
                log.info("eval: the corpus held out no papers (corpus.heldout_fraction = %s)", ctx.recipe.corpus.heldout_fraction)
    for ref in section.perplexity_sets:
        sets.append(load_text_set(ref.name, ref.path, config=ref.config, split=ref.split, text_field=ref.text_field, limit=ref.limit))
    return sets


def perplexity_settings(ctx: StageContext) -> Any:
    """Window = ``cpt.max_seq_len``; stride = ``eval.perplexity_stride`` (checked against it, naming both fields)."""
    from .perplexity import PerplexitySettings

    recipe = ctx.recipe
    window, stride = recipe.cpt.max_seq_len, recipe.eval.perplexity_stride
    if stride is not None and stride >= window:
        raise ValueError(f"eval.perplexity_stride: {stride} must be smaller than the window, cpt.max_seq_len = {window}")
    return PerplexitySettings(window=window, stride=stride, batch_size=recipe.eval.perplexity_batch_size, dtype=recipe.model.dtype,
                              attn_implementation=recipe.model.attn_implementation, trust_remote_code=recipe.model.trust_remote_code)


def score_benchmarks(ctx: StageContext, checkpoints: list[Checkpoint], settings: EvalSettings) -> list[tuple[Checkpoint, str, dict[str, Any]]]:
    """The report of every checkpoint on every benchmark (cached in ``<run>/eval.cache``)."""
    reports = []
    for ckpt in checkpoints:
        for bench in ctx.recipe.eval.benchmarks:
            log.info("eval: %s on %s (%s)", ckpt.name, bench.name, settings.method)
            report = evaluate(
                ckpt.path,
                bench.path,
                ctx.work_dir / ckpt.name / bench.name,
                settings,
                name=ckpt.name,
                benchmark_name=bench.name,
                split=bench.split,
                revision=ctx.recipe.model.revision if ckpt.name == "base" else None,
                model_fp=ckpt.fingerprint,
                store_dir=ctx.run_dir / CACHE_DIR,
            )
            reports.append((ckpt, bench.name, report))
    return reports


def score_perplexity(ctx: StageContext, checkpoints: list[Checkpoint], sets: list[Any], settings: Any) -> list[tuple[Checkpoint, dict[str, Any]]]:
    """Bits per byte of every checkpoint on every text set (empty when there is no text to score)."""
    from .perplexity import evaluate_perplexity

    out = []
    for ckpt in checkpoints:
        for text in sets:
            log.info("eval: %s perplexity on %s (%d documents, window %d, stride %d)", ckpt.name, text.name, len(text.docs),
                     settings.window, settings.effective_stride)
            report = evaluate_perplexity(
                ckpt.path, text, ctx.work_dir / ckpt.name / "perplexity" / text.name, settings, name=ckpt.name,
                revision=ctx.recipe.model.revision if ckpt.name == "base" else None, model_fp=ckpt.fingerprint,
                store_dir=ctx.run_dir / CACHE_DIR,
            )
            out.append((ckpt, report))
    return out


def run_counts(checkpoints: list[Checkpoint], n_benchmarks: int, reports: list[tuple[Checkpoint, str, dict[str, Any]]],
               ppl_reports: list[tuple[Checkpoint, dict[str, Any]]]) -> dict[str, int]:
    """What was scored: checkpoints, benchmarks, questions and documents, now or from the cache."""
    return {
        "checkpoints": len(checkpoints),
        "benchmarks": n_benchmarks,
        "questions": sum(rep["n"] for _, _, rep in reports),
        "scored_now": sum(rep["scored_now"] for _, _, rep in reports),
        "from_cache": sum(rep["from_cache"] for _, _, rep in reports),
        "text_sets": len({rep["set"] for _, rep in ppl_reports}),
        "perplexity_docs": sum(rep["n_docs"] for _, rep in ppl_reports),
        "perplexity_scored_now": sum(rep["scored_now"] for _, rep in ppl_reports),
        "perplexity_from_cache": sum(rep["from_cache"] for _, rep in ppl_reports),
    }


def evaluate_run(ctx: StageContext) -> StageResult:
    """Score every selected checkpoint on every benchmark and text set, and write the comparison."""
    settings = eval_settings(ctx)
    checkpoints = select_checkpoints(list_checkpoints(ctx), ctx.recipe.eval.checkpoints)
    ppl_settings = perplexity_settings(ctx)  # bad settings or text sets fail before any scoring
    sets = text_sets(ctx)
    reports = score_benchmarks(ctx, checkpoints, settings)
    ppl_reports = score_perplexity(ctx, checkpoints, sets, ppl_settings)
    rows, ppl = write_comparison(ctx.work_dir, settings.method, reports, ppl_reports)
    counts = run_counts(checkpoints, len(ctx.recipe.eval.benchmarks), reports, ppl_reports)
    return StageResult(counts=counts, metrics=comparison_metrics(rows, ppl), outputs={"report": "comparison.json"})
