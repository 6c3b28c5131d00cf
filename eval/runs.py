"""The pipeline's `eval` stage: score the base model and every produced checkpoint.

Writes into the stage folder one ``<checkpoint>/<benchmark>/`` report folder each, one
``<checkpoint>/perplexity/<set>/`` folder per text set (the corpus's held-out papers as
``heldout``, plus ``eval.perplexity_sets``: perplexity and bits per byte, see
:mod:`eval.perplexity`), and ``comparison.md`` / ``comparison.json`` / ``comparison.png``
(did domain training help?). Scores are cached per checkpoint x benchmark (or text set) x
settings in ``<run>/eval.cache/`` (outside the stage folder, which is replaced on every rerun),
so a rerun only scores what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrosage.core.artifacts import atomic_write_json, atomic_write_text
from astrosage.core.stage import MODEL_STAGES, StageContext, StageResult

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
    from astrosage.core.models import model_fingerprint

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


def perplexity_rows(reports: list[tuple[Checkpoint, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per checkpoint x text set: bits per byte and perplexity, with the change against the base model."""
    base = {rep["set"]: rep["bits_per_byte"] for ckpt, rep in reports if ckpt.name == "base"}
    rows = []
    for ckpt, rep in reports:
        bpb, ref = rep["bits_per_byte"], base.get(rep["set"])
        delta = None if bpb is None or ref is None or ckpt.name == "base" else bpb - ref
        rows.append({
            "checkpoint": ckpt.name,
            "set": rep["set"],
            "model": ckpt.path,
            "n_docs": rep["n_docs"],
            "tokens": rep["tokens"],
            "bytes": rep["bytes"],
            "bits_per_byte": bpb,
            "perplexity": rep["perplexity"],
            "delta_bpb_vs_base": delta,
            "relative_bpb_change": delta / ref if delta is not None and ref else None,
            "report": f"{ckpt.name}/perplexity/{rep['set']}/report.md",
        })
    return rows


def perplexity_markdown(rows: list[dict[str, Any]], window: int, stride: int) -> list[str]:
    """The bits-per-byte table (lower is better) for comparison.md."""
    lines = [
        "## Bits per byte on held-out text (lower is better)",
        "",
        f"Token NLL over a sliding window of {window} tokens (stride {stride}), in bits per UTF-8 byte of the text: "
        "tokenizer-independent, so every checkpoint compares fairly. Perplexity is per token of each model's tokenizer.",
        "",
        "| checkpoint | text | documents | bytes | bits per byte | vs base | perplexity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = "" if r["delta_bpb_vs_base"] is None else f"{r['delta_bpb_vs_base']:+.4f} ({100 * r['relative_bpb_change']:+.1f}%)"
        lines.append(f"| {r['checkpoint']} | {r['set']} | {r['n_docs']} | {r['bytes']:,} | {_fmt(r['bits_per_byte'])} | {delta} | "
                     f"{_fmt(r['perplexity'])} |")
    return lines + [""]


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


def _fmt(x: float | None, pct: bool = False, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:+.1f} pts" if sign else f"{100 * x:.1f}%"
    return f"{x:.4f}"


def comparison_markdown(rows: list[dict[str, Any]], method: str, ppl: list[str] | None = None) -> str:
    """The "did domain training help?" tables: MCQ accuracy, then bits per byte (``ppl``, from perplexity_markdown)."""
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
    lines += ["", "Unlabelled benchmarks show n/a: their `submission.txt` files hold the predicted letters.", ""]
    lines += (ppl or []) + ["![comparison](comparison.png)", ""]
    return "\n".join(lines)


def evaluate_run(ctx: StageContext) -> StageResult:
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
    ppl_settings = perplexity_settings(ctx)  # bad settings or text sets fail before any scoring
    sets = text_sets(ctx)
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
    ppl_reports = _score_perplexity(ctx, checkpoints, sets, ppl_settings)
    rows = comparison_rows(reports)
    ppl = perplexity_rows(ppl_reports)
    comparison: dict[str, Any] = {"method": settings.method, "rows": rows}
    ppl_md: list[str] = []
    if ppl:
        ps = ppl_reports[0][1]["settings"]
        comparison["perplexity"] = ppl
        comparison["perplexity_settings"] = {"window": ps["window"], "stride": ps["stride"]}
        ppl_md = perplexity_markdown(ppl, ps["window"], ps["stride"])
    atomic_write_json(ctx.work_dir / "comparison.json", comparison)
    atomic_write_text(ctx.work_dir / "comparison.md", comparison_markdown(rows, settings.method, ppl_md))
    comparison_chart(rows, ctx.work_dir / "comparison.png", ppl)
    metrics: dict[str, Any] = {}
    for name in ("accuracy", "ece", "brier", "nll"):
        for r in rows:
            if r[name] is not None:
                metrics[f"{r['checkpoint']}/{r['benchmark']}/{name}"] = r[name]
    for name, key in (("bpb", "bits_per_byte"), ("perplexity", "perplexity"), ("delta_bpb", "delta_bpb_vs_base")):
        for r in ppl:
            if r[key] is not None:
                metrics[f"{r['checkpoint']}/{r['set']}/{name}"] = r[key]
    counts = {
        "checkpoints": len(checkpoints),
        "benchmarks": len(section.benchmarks),
        "questions": sum(rep["n"] for _, _, rep in reports),
        "scored_now": sum(rep["scored_now"] for _, _, rep in reports),
        "from_cache": sum(rep["from_cache"] for _, _, rep in reports),
        "text_sets": len({rep["set"] for _, rep in ppl_reports}),
        "perplexity_docs": sum(rep["n_docs"] for _, rep in ppl_reports),
        "perplexity_scored_now": sum(rep["scored_now"] for _, rep in ppl_reports),
        "perplexity_from_cache": sum(rep["from_cache"] for _, rep in ppl_reports),
    }
    return StageResult(counts=counts, metrics=metrics, outputs={"report": "comparison.json"})


def _score_perplexity(ctx: StageContext, checkpoints: list[Checkpoint], sets: list[Any], settings: Any) -> list[tuple[Checkpoint, dict[str, Any]]]:
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
