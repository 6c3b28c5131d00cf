"""The pipeline's `eval` stage: score the base model and every produced checkpoint.

Writes into the stage folder one ``<checkpoint>/<benchmark>/`` report folder each, plus
``comparison.md`` / ``comparison.json`` / ``comparison.png`` (did domain training help?).
Scores are cached per checkpoint x benchmark x settings in ``<run>/eval.cache/`` (outside the
stage folder, which is replaced on every rerun), so a rerun only scores what changed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from astrosage.artifacts import atomic_write_json, atomic_write_text
from astrosage.pipeline import MODEL_STAGES, StageContext, StageResult

from .evaluator import EvalSettings, evaluate

log = logging.getLogger("astrosage")

CACHE_DIR = "eval.cache"


@dataclass(frozen=True)
class Checkpoint:
    """A model to score: display name, the stage that made it, path and cache fingerprint."""

    name: str
    stage: str
    path: str
    fingerprint: str
    primary: bool = True


def list_checkpoints(ctx: StageContext) -> list[Checkpoint]:
    """Base model first, then each upstream model stage's outputs named "model" or "model@...".

    ``model`` -> ``<stage>``; ``model@w0.75`` -> ``<stage>@w0.75`` (merge sweeps).
    """
    from astrosage.models import model_fingerprint

    recipe = ctx.recipe
    found = [
        Checkpoint(
            "base",
            "base",
            ctx.resolve_model(recipe.model.base),
            model_fingerprint(recipe.model.base, recipe.model.revision, recipe.run.seed),
        )
    ]
    seen: set[str] = set()
    for stage in MODEL_STAGES:
        manifest = ctx.upstream.get(stage)
        if manifest is None:
            continue
        for key in sorted(manifest.get("outputs", {}), key=lambda k: (k != "model", k)):
            if not key.startswith("model"):
                continue
            path = str(ctx.upstream_output(stage, key))
            if path in seen:  # a sweep's selected merge is both "model" and "model@<label>": score it once
                continue
            seen.add(path)
            fp = hashlib.sha256(f"{manifest.get('artifact_hash', '')}:{key}".encode()).hexdigest()
            name = stage + key[len("model"):]
            found.append(Checkpoint(name, stage, path, fp, primary=key == "model"))
    return found


def select_checkpoints(found: list[Checkpoint], choice: str | list[str]) -> list[Checkpoint]:
    """Apply ``eval.checkpoints``: 'all', 'final' (the last stage's main model), or names/stage names."""
    if choice == "all":
        return found
    if choice == "final":
        last = found[-1].stage
        mains = [c for c in found if c.stage == last and c.primary]
        return mains or [c for c in found if c.stage == last]
    names = {c.name for c in found} | {c.stage for c in found}
    unknown = [n for n in choice if n not in names]
    if unknown:
        raise ValueError(
            f"eval.checkpoints: {', '.join(unknown)} not produced by this run; available: {', '.join(c.name for c in found)}"
        )
    return [c for c in found if c.name in choice or c.stage in choice]


def comparison_rows(reports: list[tuple[Checkpoint, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per checkpoint x benchmark, with the accuracy change against the base model."""
    base_acc = {bench: rep["accuracy"] for ckpt, bench, rep in reports if ckpt.name == "base"}
    rows = []
    for ckpt, bench, rep in reports:
        acc, ref = rep["accuracy"], base_acc.get(bench)
        rows.append(
            {
                "checkpoint": ckpt.name,
                "benchmark": bench,
                "model": ckpt.path,
                "n": rep["n"],
                "accuracy": acc,
                "ci95": rep["accuracy_ci95"],
                "delta_vs_base": None if acc is None or ref is None or ckpt.name == "base" else acc - ref,
                "ece": rep["ece"],
                "brier": rep["brier"],
                "nll": rep["nll"],
                "report": f"{ckpt.name}/{bench}/report.md",
            }
        )
    return rows


def _fmt(x: float | None, pct: bool = False, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:+.1f} pts" if sign else f"{100 * x:.1f}%"
    return f"{x:.4f}"


def comparison_markdown(rows: list[dict[str, Any]], method: str) -> str:
    """The "did domain training help?" table."""
    lines = [
        f"# Checkpoint comparison (method `{method}`)",
        "",
        "| checkpoint | benchmark | n | accuracy | 95% CI | vs base | ECE | Brier | NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = f"{_fmt(r['ci95'][0], True)}–{_fmt(r['ci95'][1], True)}" if r["ci95"] else "n/a"
        lines.append(
            f"| {r['checkpoint']} | {r['benchmark']} | {r['n']} | {_fmt(r['accuracy'], True)} | {ci} | "
            f"{_fmt(r['delta_vs_base'], True, True)} | {_fmt(r['ece'])} | {_fmt(r['brier'])} | {_fmt(r['nll'])} |"
        )
    lines += ["", "Unlabelled benchmarks show n/a: their `submission.txt` files hold the predicted letters.", "", "![comparison](comparison.png)", ""]
    return "\n".join(lines)


def run(ctx: StageContext) -> StageResult:
    """Score every selected checkpoint on every benchmark and write the comparison."""
    from .plots import comparison_chart

    section = ctx.recipe.eval
    settings = EvalSettings(
        method=section.method,
        batch_size=section.batch_size,
        limit=section.limit,
        dtype=ctx.recipe.model.dtype,
        backend=section.backend,
        max_new_tokens=section.max_new_tokens,
        thinking=section.thinking,
        attn_implementation=ctx.recipe.model.attn_implementation,
        trust_remote_code=ctx.recipe.model.trust_remote_code,
    )
    checkpoints = select_checkpoints(list_checkpoints(ctx), section.checkpoints)
    reports: list[tuple[Checkpoint, str, dict[str, Any]]] = []
    for ckpt in checkpoints:
        for bench in section.benchmarks:
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
    rows = comparison_rows(reports)
    atomic_write_json(ctx.work_dir / "comparison.json", {"method": settings.method, "rows": rows})
    atomic_write_text(ctx.work_dir / "comparison.md", comparison_markdown(rows, settings.method))
    comparison_chart(rows, ctx.work_dir / "comparison.png")
    metrics: dict[str, Any] = {}
    for name in ("accuracy", "ece", "brier", "nll"):
        for r in rows:
            if r[name] is not None:
                metrics[f"{r['checkpoint']}/{r['benchmark']}/{name}"] = r[name]
    counts = {
        "checkpoints": len(checkpoints),
        "benchmarks": len(section.benchmarks),
        "questions": sum(rep["n"] for _, _, rep in reports),
        "scored_now": sum(rep["scored_now"] for _, _, rep in reports),
        "from_cache": sum(rep["from_cache"] for _, _, rep in reports),
    }
    return StageResult(counts=counts, metrics=metrics, outputs={"report": "comparison.json"})
