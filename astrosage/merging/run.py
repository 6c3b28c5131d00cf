"""The merge stage's work: the trained model + model.base_instruct (+ model.base) -> a merged HF folder.

1. resolve the models (upstream checkpoint, instruct sibling, pretrained base);
2. check compatibility from config/tokenizer files only, before any weight is read
   (``compatibility.json``; errors stop here, naming the recipe field that fixes each);
3. build the mergekit configuration (see :mod:`astrosage.merging.config` for the weight convention)
   or take ``merge.mergekit_yaml``, validated as mergekit's ``MergeConfiguration``, and run
   mergekit's Python API on it;
4. for a sweep (``merge.sweep`` / ``merge.sweep_density``): one merge per setting, each scored on
   the dev benchmark by the evaluator, the best chosen by ``merge.select_metric``.

Outputs: ``model`` (the selected merged folder), ``mergekit_config`` (the exact YAML used),
``compatibility``; for sweeps also ``model@<label>``, ``mergekit_config@<label>``, ``sweep``
(json), ``sweep_table`` (md), ``sweep_plot`` (png).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..core.artifacts import atomic_write_json, atomic_write_text, read_json
from .check import CompatibilityReport, ModelInfo, check_models
from .config import TASK_VECTOR_METHODS, BuiltConfig, MergeInputs, MergePoint, build_config, load_raw_config
from .sweep import dev_benchmark, is_sweep, load_evaluator, metric_value, select_best, sweep_points, write_sweep_record
from ..core.stage import MODEL_STAGES, StageContext, StageResult
from ..core.recipe import BenchmarkRef, Recipe

log = logging.getLogger("astrosage")

CONFIG_NAME = "mergekit.yaml"
#: files mergekit does not carry over when it rebuilds the tokenizer; copied from the trained model
_TAGALONG = ("generation_config.json",)


def merge_run(ctx: StageContext) -> StageResult:
    """Run the merge stage (see the module docstring); called by astrosage/stages/merge.py."""
    recipe = ctx.recipe
    sweep = is_sweep(recipe)
    evaluator = load_evaluator() if sweep else None  # fail before any work if a sweep cannot be scored
    bench = dev_benchmark(recipe) if sweep else None
    _require_mergekit()
    inputs = _inputs(ctx)
    configs, report = _plan(ctx, inputs)
    atomic_write_json(ctx.work_dir / "compatibility.json", report.to_json())
    for warning in report.warnings:
        log.warning("merge: %s", warning.format())
    report.raise_for_errors()
    log.info("merge: %s", report.format().splitlines()[0])

    if not sweep:
        point, config = configs[0]
        _merge(config, ctx.work_dir / "model", ctx.work_dir / CONFIG_NAME, recipe, inputs)
        metrics: dict[str, Any] = {"method": config.method}
        if point is not None:
            metrics["weight"] = point.weight
            if point.density is not None:
                metrics["density"] = point.density
        return StageResult(
            counts={"merges": 1, "compatibility_warnings": len(report.warnings)},
            metrics=metrics,
            outputs={"model": "model", "mergekit_config": CONFIG_NAME, "compatibility": "compatibility.json"},
        )
    assert evaluator is not None and bench is not None
    return _run_sweep(ctx, inputs, configs, report, evaluator, bench)


# ------------------------------------------------------------------------------------ planning


def _inputs(ctx: StageContext) -> MergeInputs:
    recipe = ctx.recipe
    if not any(s in ctx.upstream for s in MODEL_STAGES):
        log.warning("merge: no trained model upstream (cpt/sft disabled); merging model.base with model.base_instruct")
    instruct = recipe.model.base_instruct
    return MergeInputs(
        trained=ctx.input_model(),
        instruct=ctx.resolve_model(instruct) if instruct else None,
        base=ctx.resolve_model(recipe.model.base),
        base_revision=recipe.model.revision,
    )


def _plan(ctx: StageContext, inputs: MergeInputs) -> tuple[list[tuple[MergePoint | None, BuiltConfig]], CompatibilityReport]:
    """The mergekit configs to run and the compatibility report of their models (no weights read)."""
    recipe = ctx.recipe
    m = recipe.merge
    if m.mergekit_yaml is not None:
        config = load_raw_config(m.mergekit_yaml, inputs)
        return [(None, config)], _check_raw(config, inputs, str(m.mergekit_yaml))
    models = [
        ModelInfo.load("trained", inputs.trained, field=""),
        ModelInfo.load("instruct", inputs.instruct or "", field="model.base_instruct"),
    ]
    if m.method in TASK_VECTOR_METHODS:
        models.append(ModelInfo.load("base", inputs.base, inputs.base_revision, field="model.base"))
    remaps = m.tokenizer_source != "base"
    report = check_models(models, remaps_vocab=remaps, chat_template_set=m.chat_template is not None)
    if report.errors:
        return [], report
    tokenizer_source = m.tokenizer_source if m.tokenizer_source in ("base", "union") else ctx.resolve_model(m.tokenizer_source)
    template = _chat_template(recipe, models, tokenizer_source)
    configs = [
        (p, build_config(m, inputs, p, tokenizer_source=tokenizer_source, chat_template=template)) for p in sweep_points(recipe)
    ]
    return configs, report


def _chat_template(recipe: Recipe, models: list[ModelInfo], tokenizer_source: str) -> str | None:
    """The chat_template value for mergekit (None: the tokenizer source's own template is right)."""
    by_role = {info.role: info for info in models}
    wanted = recipe.merge.chat_template
    if wanted in ("trained", "instruct"):
        text = by_role[wanted].chat_template
        if not text:
            raise ValueError(f"merge.chat_template is {wanted!r} but the {wanted} model ({by_role[wanted].ref}) has no chat template")
        return text
    if wanted is not None:
        return wanted
    agreed = by_role["trained"].chat_template or by_role["instruct"].chat_template
    if agreed is None:
        return None
    if tokenizer_source in ("base", "union"):
        donor = by_role["base"] if recipe.merge.method in TASK_VECTOR_METHODS else by_role["trained"]
    else:
        donor = ModelInfo.load("tokenizer", tokenizer_source)
    return None if donor.chat_template == agreed else agreed


def _check_raw(built: BuiltConfig, inputs: MergeInputs, source: str) -> CompatibilityReport:
    parsed = built.config
    names = {inputs.trained: "trained", inputs.instruct: "instruct", inputs.base: "base"}
    base_path = parsed.base_model.model.path if parsed.base_model else None
    models = []
    for i, ref in enumerate(sorted(parsed.referenced_models(), key=str)):
        role = names.get(ref.model.path) or f"model{i}"
        models.append(ModelInfo.load(role, ref.model.path, ref.model.revision, field=f"a model in {source}"))
    source_tok = parsed.tokenizer.source if parsed.tokenizer is not None else parsed.tokenizer_source
    chatty = tuple(m.role for m in models if m.ref != base_path) or tuple(m.role for m in models)
    return check_models(
        models,
        remaps_vocab=source_tok not in (None, "base"),
        chat_template_set=bool(parsed.chat_template),
        template_roles=chatty,
        tokenizer_field=f"tokenizer_source in {source}",
        template_field=f"chat_template in {source}",
    )


# ------------------------------------------------------------------------------------ merging


def _require_mergekit() -> None:
    try:
        import mergekit  # noqa: F401
    except ImportError:
        raise RuntimeError("the merge stage needs mergekit: pip install 'astrosage[merge]' (mergekit>=0.1.5)") from None


def _merge(built: BuiltConfig, out: Path, config_path: Path, recipe: Recipe, inputs: MergeInputs) -> bool:
    """Run mergekit into ``out`` (atomically); returns False when an identical merge is already there."""
    import torch
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import MergeOptions, run_merge

    text = built.text
    previous = out / "mergekit_config.yml"
    if out.is_dir() and previous.is_file() and previous.read_text(encoding="utf-8") == text:
        log.info("merge: %s already merged with this configuration (resumed)", out)
        atomic_write_text(config_path, text)
        return False
    atomic_write_text(config_path, text)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    options = MergeOptions(
        random_seed=recipe.run.seed,
        cuda=torch.cuda.is_available(),
        trust_remote_code=recipe.model.trust_remote_code,
        copy_tokenizer=True,
        write_model_card=True,
        quiet=True,
    )
    log.info("merge: running mergekit (%s) -> %s", built.method, out)
    try:
        run_merge(built.config, str(tmp), options=options, config_source=text)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written model behind
        raise
    finally:
        LoaderCache().flush_all()
        LoaderCache.loaders.clear()  # do not keep file handles / stale indexes across merges
    trained = Path(inputs.trained)
    for name in _TAGALONG:
        if trained.is_dir() and (trained / name).is_file() and not (tmp / name).exists():
            shutil.copy2(trained / name, tmp / name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return True


# ------------------------------------------------------------------------------------ sweeps


def _run_sweep(
    ctx: StageContext,
    inputs: MergeInputs,
    configs: list[tuple[MergePoint | None, BuiltConfig]],
    report: CompatibilityReport,
    evaluator: Callable[..., dict[str, Any]],
    bench: BenchmarkRef,
) -> StageResult:
    """One merge per point, each scored on ``bench``; the best by merge.select_metric is output 'model'."""
    recipe = ctx.recipe
    metric = recipe.merge.select_metric
    bench_path = str(Path(bench.path).resolve()) if Path(bench.path).exists() else bench.path
    dtype = recipe.model.dtype if recipe.model.dtype != "auto" else recipe.merge.dtype
    rows: list[dict[str, Any]] = []
    outputs: dict[str, str] = {"compatibility": "compatibility.json"}
    for point, config in configs:
        assert point is not None  # sweeps always use generated configs
        rel = Path("sweep") / point.label
        folder = ctx.work_dir / rel
        merged = _merge(config, folder / "model", folder / CONFIG_NAME, recipe, inputs)
        scores_path = folder / "eval.json"
        if merged or not scores_path.exists():
            log.info("merge: scoring %s on %s (%s)", point.label, bench.name, recipe.eval.method)
            scores = evaluator(
                str(folder / "model"),
                bench_path,
                folder / "eval",
                method=recipe.eval.method,
                batch_size=recipe.eval.batch_size,
                limit=recipe.eval.limit,
                name=bench.name,
                split=bench.split,
                dtype=dtype,
            )
            atomic_write_json(scores_path, scores)
        scores = read_json(scores_path)
        row = {"label": point.label, "weight": point.weight, "density": point.density, "model": str(rel / "model")}
        row.update({k: metric_value(scores, k) for k in ("accuracy", "ece", "brier", "nll")})
        row["n"] = scores.get("n")
        rows.append(row)
        outputs[f"model@{point.label}"] = str(rel / "model")
        outputs[f"mergekit_config@{point.label}"] = str(rel / CONFIG_NAME)
    best = select_best(rows, metric)
    log.info("merge: selected %s (%s = %s on %s)", best["label"], metric, best[metric], bench.name)
    outputs.update(write_sweep_record(ctx.work_dir, rows, metric, best, bench))
    outputs["model"] = best["model"]
    outputs["mergekit_config"] = str(Path(best["model"]).parent / CONFIG_NAME)
    if not recipe.merge.keep_sweep_models:
        for row in rows:
            if row is not best:
                shutil.rmtree(ctx.work_dir / row["model"], ignore_errors=True)
                outputs.pop(f"model@{row['label']}", None)
    metrics = {
        "method": recipe.merge.method,
        "selected": best["label"],
        "weight": best["weight"],
        "density": best["density"],
        "select_metric": metric,
        metric: best[metric],
        "benchmark": bench.name,
        "sweep": {r["label"]: r[metric] for r in rows},
    }
    return StageResult(
        counts={"merges": len(rows), "compatibility_warnings": len(report.warnings)},
        metrics={k: v for k, v in metrics.items() if v is not None},
        outputs=outputs,
    )
