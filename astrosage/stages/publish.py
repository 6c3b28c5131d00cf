"""The publish stage: model card + the exact upload folder, then a Hub upload (unless dry-run).

A thin adapter over :mod:`astrosage.publishing`: it finds the published checkpoint (the last model
stage), the eval comparison, the manifests and the merge config in the run folder, and hands them
to the library. ``upload/`` in the stage folder is the exact folder that is (or would be)
uploaded, ``publish_plan.json`` lists what was skipped and why; ``publish.dry_run`` stops there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..core.artifacts import MANIFEST_NAME, atomic_write_json, read_json
from ..core.logs import SecretRedactor
from ..core.stage import MODEL_STAGES, StageContext, StageResult, StageSpec
from ..publishing import (
    CardInputs, PublishError, build_card, dataset_licences, hub_datasets, portable_merge_config, prepare_upload,
    read_comparison, resolve_license, upload,
)
from ..publishing.hub import folder_size
from .sections import enabled, last_model_stage

log = logging.getLogger("astrosage")

__all__ = ["SPEC", "PublishError", "run"]

UPLOAD_DIR = "upload"


def run(ctx: StageContext) -> StageResult:
    """Write the card and the upload folder; upload it unless publish.dry_run."""
    section = ctx.recipe.publish
    stage = _model_stage(ctx)
    model_dir = ctx.upstream_output(stage, "model")
    rows, method = read_comparison(_comparison_path(ctx))
    if "eval" in ctx.upstream and not rows:
        log.warning("publish: the eval stage left no readable comparison.json; the card will say no evaluation was run")
    inputs = CardInputs(
        recipe=ctx.recipe,
        model_stage=stage,
        model_path=str(model_dir),
        manifests=_manifests(ctx),
        eval_rows=rows,
        eval_method=method,
        mergekit_yaml=_merge_config(ctx, model_dir / "mergekit_config.yml"),
        sweep_table=_read_text(ctx.run_dir / stage / "sweep.md") if stage == "merge" else None,
        licences=dataset_licences(hub_datasets(ctx.recipe), section.token_env),
    )
    inputs.license, inputs.license_source = resolve_license(ctx.recipe, ctx.resolve_model(ctx.recipe.model.base))
    redactor = SecretRedactor((ctx.recipe.synth.api_key_env, section.token_env))
    folder = ctx.work_dir / UPLOAD_DIR
    card, plan = prepare_upload(build_card(inputs), model_dir, folder, ctx.run_dir, redactor, inputs.mergekit_yaml)
    n_results = len(card.data.eval_results or [])
    plan.update(repo_id=section.repo_id, private=section.private, dry_run=section.dry_run, model_stage=stage, eval_results=n_results)
    atomic_write_json(ctx.work_dir / "publish_plan.json", plan)
    outputs = {"upload": UPLOAD_DIR, "card": f"{UPLOAD_DIR}/README.md", "plan": "publish_plan.json"}
    metrics: dict[str, Any] = {"dry_run": section.dry_run, "eval_results": n_results, "model_stage": stage}
    counts = {"files": len(plan["files"]), "skipped": len(plan["skipped"]), "bytes": folder_size(folder)}
    if section.dry_run:
        log.info("publish: dry run; the folder that would be uploaded is %s", ctx.run_dir / ctx.stage / UPLOAD_DIR)
        return StageResult(counts=counts, metrics=metrics, outputs=outputs)
    assert section.repo_id is not None  # the recipe requires it unless dry_run
    record = upload(folder, card, section.repo_id, section.private, section.token_env,
                    message=f"astrosage: {ctx.recipe.run.name} ({stage} model)")
    atomic_write_json(ctx.work_dir / "published.json", record)
    metrics.update(repo_id=record["repo_id"], commit=record["commit"], private=record["private"])
    return StageResult(counts=counts, metrics=metrics, outputs={**outputs, "published": "published.json"})


def _model_stage(ctx: StageContext) -> str:
    stages = [s for s in MODEL_STAGES if s in ctx.upstream and "model" in ctx.upstream[s].get("outputs", {})]
    if not stages:
        raise PublishError("publish needs a trained or merged model: enable cpt, sft or merge (the base model is not republished)")
    return stages[-1]


def _comparison_path(ctx: StageContext) -> Path | None:
    manifest = ctx.upstream.get("eval")
    if manifest is None:
        return None
    outputs = manifest.get("outputs", {})
    for key in ("comparison", "report"):
        rel = outputs.get(key)
        if isinstance(rel, str) and rel.endswith(".json"):
            return ctx.run_dir / "eval" / rel
    return ctx.run_dir / "eval" / "comparison.json"


def _manifests(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """Manifests of the stages that made the model (upstream first, else the run folder)."""
    found: dict[str, dict[str, Any]] = {}
    for name in ("corpus", "synth", "cpt", "sft", "merge"):
        manifest = ctx.upstream.get(name)
        path = ctx.run_dir / name / MANIFEST_NAME
        if manifest is None and path.is_file() and getattr(ctx.recipe, name).enabled:
            try:
                manifest = read_json(path)
            except ValueError:
                manifest = None
        if manifest is not None and manifest.get("status", "complete") == "complete":
            found[name] = manifest
    return found


def _merge_config(ctx: StageContext, path: Path) -> str | None:
    """The merged model's mergekit config with local model paths replaced by their recipe references."""
    text = _read_text(path)
    if text is None:
        return None
    names = {f"{ctx.run_dir / s / 'model'}": f"<output of the {s} stage>" for s in MODEL_STAGES}
    for ref in (ctx.recipe.model.base, ctx.recipe.model.base_instruct):
        if ref:
            try:
                names[ctx.resolve_model(ref)] = ref
            except (OSError, ValueError):
                continue
    return portable_merge_config(text, names, ctx.output_dir)


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


SPEC = StageSpec(
    name="publish",
    summary="model card + Hugging Face Hub upload (or a --dry-run folder)",
    sections=("model", "publish"),
    upstream=lambda r: last_model_stage(r, "publish") + enabled(r, "eval"),
    external=lambda r: {},
    run=run,
    outputs={"upload": "dir", "card": "file", "plan": "file"},
)
