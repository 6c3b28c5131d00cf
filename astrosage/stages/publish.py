"""The publish stage: model card + the exact upload folder, then a Hub upload (unless dry-run).

The upload folder (``upload/`` in the stage folder, hard links where possible) holds only model
files from the published checkpoint plus the card; anything that looks like corpus data (parquet /
jsonl / archives, or a byte-identical copy of a corpus/synth stage file) is skipped and listed in
``publish_plan.json``, and checked again right before upload. ``publish.dry_run`` stops there.
Otherwise the repository is created (private by default) and the folder uploaded with
``upload_folder``; the token comes from ``$<publish.token_env>`` or the cached login and is never
printed, logged or written.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..core.artifacts import MANIFEST_NAME, atomic_write_json, atomic_write_text, read_json
from ..core.logs import REDACTED, SecretRedactor
from ..model_card import CardInputs, build_card, is_hub_id, read_comparison, resolve_license, sanitize
from ..core.stage import MODEL_STAGES, StageContext, StageResult, StageSpec
from .sections import enabled, last_model_stage

log = logging.getLogger("astrosage")

UPLOAD_DIR = "upload"
#: model files that may be published (anything else in the checkpoint folder is skipped)
MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",
)
#: files that look like corpus / dataset data: never uploaded
CORPUS_PATTERNS = (
    "*.parquet", "*.jsonl", "*.jsonl.*", "*.arrow", "*.csv", "*.tsv", "*.tar", "*.tar.*", "*.tgz", "*.zst", "*.gz",
)
#: stage folders whose files are corpus data
CORPUS_STAGES = ("corpus", "synth")
#: files the stage writes itself (the checkpoint's own copies are replaced)
GENERATED = ("README.md", "mergekit_config.yml")
#: small text files of the upload folder scanned for token-shaped values before anything is written out
#: (the vocabulary files are model data, not prose: they are left alone)
REDACTED_TEXT_FILES = (
    "README.md", "mergekit_config.yml", "config.json", "generation_config.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "adapter_config.json",
)


class PublishError(RuntimeError):
    """Publishing cannot proceed safely."""


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
        mergekit_yaml=_portable_merge_config(ctx, model_dir / "mergekit_config.yml"),
        sweep_table=_read_text(ctx.run_dir / stage / "sweep.md") if stage == "merge" else None,
        licences=_dataset_licences(ctx),
    )
    inputs.license, inputs.license_source = resolve_license(ctx.recipe, ctx.resolve_model(ctx.recipe.model.base))
    card = build_card(inputs)
    redactor = SecretRedactor((ctx.recipe.synth.api_key_env, section.token_env))
    text = redactor.redact(str(card))
    if text != str(card):
        log.warning("publish: the model card held token-shaped values; they are written as %s", REDACTED)
        card = type(card)(text)
    folder = ctx.work_dir / UPLOAD_DIR
    plan = stage_upload_folder(model_dir, folder, _corpus_index(ctx.run_dir))
    atomic_write_text(folder / "README.md", text)
    if inputs.mergekit_yaml:
        atomic_write_text(folder / "mergekit_config.yml", inputs.mergekit_yaml)
    plan["redacted"] = redact_folder(folder, redactor)
    assert_no_corpus(folder)
    n_results = len(card.data.eval_results or [])
    plan.update(
        repo_id=section.repo_id,
        private=section.private,
        dry_run=section.dry_run,
        model_stage=stage,
        eval_results=n_results,
        files=sorted(p.name for p in folder.iterdir()),
    )
    atomic_write_json(ctx.work_dir / "publish_plan.json", plan)
    for item in plan["skipped"]:
        log.warning("publish: not uploading %s (%s)", item["file"], item["reason"])
    outputs = {"upload": UPLOAD_DIR, "card": f"{UPLOAD_DIR}/README.md", "plan": "publish_plan.json"}
    metrics: dict[str, Any] = {"dry_run": section.dry_run, "eval_results": n_results, "model_stage": stage}
    counts = {"files": len(plan["files"]), "skipped": len(plan["skipped"]), "bytes": _size(folder)}
    if section.dry_run:
        log.info("publish: dry run; the folder that would be uploaded is %s", ctx.run_dir / ctx.stage / UPLOAD_DIR)
        return StageResult(counts=counts, metrics=metrics, outputs=outputs)
    record = upload(folder, card, ctx, message=f"astrosage: {ctx.recipe.run.name} ({stage} model)")
    atomic_write_json(ctx.work_dir / "published.json", record)
    metrics.update(repo_id=record["repo_id"], commit=record["commit"], private=record["private"])
    return StageResult(counts=counts, metrics=metrics, outputs={**outputs, "published": "published.json"})


# ------------------------------------------------------------------------------------ inputs


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


def _portable_merge_config(ctx: StageContext, path: Path) -> str | None:
    """The merged model's mergekit config with local model paths replaced by their recipe references."""
    text = _read_text(path)
    if text is None:
        return None
    model = ctx.recipe.model
    names = {f"{ctx.run_dir / s / 'model'}": f"<output of the {s} stage>" for s in MODEL_STAGES}
    for ref in (model.base, model.base_instruct):
        if ref:
            try:
                names[ctx.resolve_model(ref)] = ref
            except (OSError, ValueError):
                continue
    for local, ref in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if local != ref and Path(local).is_absolute():
            text = text.replace(local, ref)
    return sanitize(text, ctx.output_dir)


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _dataset_licences(ctx: StageContext) -> dict[str, str]:
    """Licences of Hub datasets from their cards (only when the Hub is reachable; never fatal)."""
    from huggingface_hub import constants

    r = ctx.recipe
    ids = {m.path for m in r.cpt.general_mix + r.sft.general_mix if is_hub_id(m.path)}
    if r.sft.dataset and is_hub_id(r.sft.dataset.path):
        ids.add(r.sft.dataset.path)
    if not ids or constants.is_offline_mode():
        return {}
    from huggingface_hub import HfApi

    out = {}
    for ref in sorted(ids):
        try:
            data = HfApi(token=os.environ.get(r.publish.token_env) or None).dataset_info(ref).card_data
            licence = data.get("license") if data is not None else None
        except Exception as exc:  # network or permission problems must not stop publishing
            log.info("publish: licence of dataset %s unknown (%s)", ref, type(exc).__name__)
            continue
        if licence:
            out[ref] = ", ".join(licence) if isinstance(licence, list) else str(licence)
    return out


# ------------------------------------------------------------------------------------ upload folder


def _corpus_index(run_dir: Path) -> dict[int, list[Path]]:
    """Files of the corpus/synth stages by size (to catch byte-identical copies cheaply)."""
    index: dict[int, list[Path]] = {}
    for stage in CORPUS_STAGES:
        for root in (run_dir / stage, run_dir / f"{stage}.partial"):
            if root.is_dir():
                for f in root.rglob("*"):
                    if f.is_file() and f.name != MANIFEST_NAME:
                        index.setdefault(f.stat().st_size, []).append(f)
    return index


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_reason(path: Path, index: dict[int, list[Path]]) -> str | None:
    """Why ``path`` looks like corpus data, or None."""
    name = path.name.lower()
    if any(fnmatch.fnmatch(name, pat) for pat in CORPUS_PATTERNS):
        return "looks like corpus/dataset data (never published)"
    same_size = index.get(path.stat().st_size, [])
    if same_size:
        digest = _sha(path)
        for other in same_size:
            if _sha(other) == digest:
                return f"identical to corpus data {other.parent.name}/{other.name} (never published)"
    return None


def stage_upload_folder(model_dir: Path, folder: Path, corpus_index: dict[int, list[Path]]) -> dict[str, Any]:
    """Fill ``folder`` with the publishable files of ``model_dir``; returns {"skipped": [...]}."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    skipped = []
    for f in sorted(model_dir.iterdir()):
        if f.is_dir():
            skipped.append({"file": f.name + "/", "reason": "sub-folder (checkpoints and data are not published)"})
            continue
        reason = corpus_reason(f, corpus_index)
        if reason is None and not any(fnmatch.fnmatch(f.name, pat) for pat in MODEL_FILE_PATTERNS):
            if f.name in GENERATED:
                continue
            reason = "not a model file"
        if reason is not None:
            skipped.append({"file": f.name, "reason": reason})
            continue
        _link_or_copy(f, folder / f.name)
    return {"skipped": skipped}


def redact_folder(folder: Path, redactor: SecretRedactor) -> list[str]:
    """Rewrite the upload folder's small text files with secrets and token-shaped values as ``***``.

    A rewritten file is a new file (temp + rename), so a hard link back into the checkpoint is never
    edited in place. Returns the names of the files that changed.
    """
    changed = []
    for name in REDACTED_TEXT_FILES:
        path = folder / name
        if not path.is_file() or path.stat().st_size > 4 * 1024 * 1024:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        clean = redactor.redact(text)
        if clean != text:
            atomic_write_text(path, clean)  # temp + rename: replaces the hard link, the checkpoint's file is untouched
            changed.append(name)
            log.warning("publish: %s held token-shaped values; the uploaded copy has them as %s", name, REDACTED)
    return changed


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def assert_no_corpus(folder: Path) -> None:
    """Last guard before anything leaves the machine."""
    bad = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and any(fnmatch.fnmatch(p.name.lower(), pat) for pat in CORPUS_PATTERNS)]
    if bad:
        raise PublishError(f"refusing to publish corpus-like files: {', '.join(bad)}")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ upload


def upload(folder: Path, card: Any, ctx: StageContext, message: str) -> dict[str, Any]:
    """Create the repository (private unless publish.private=false) and upload ``folder``."""
    from huggingface_hub import HfApi, get_token

    section = ctx.recipe.publish
    assert section.repo_id is not None  # the recipe requires it unless dry_run
    token = os.environ.get(section.token_env) or None
    if token is None and get_token() is None:
        raise PublishError(f"no Hugging Face token: set ${section.token_env} or log in with `hf auth login` (or use publish.dry_run=true)")
    api = HfApi(token=token)
    card.validate()
    repo_url = api.create_repo(section.repo_id, repo_type="model", private=section.private, exist_ok=True)
    info = api.model_info(section.repo_id)
    if section.private and not info.private:
        raise PublishError(
            f"{section.repo_id} already exists and is public, but publish.private is true; refusing to upload "
            "(make the repository private on the Hub, or set publish.private=false)"
        )
    assert_no_corpus(folder)
    log.info("publish: uploading %d files to %s (%s)", sum(1 for _ in folder.iterdir()), section.repo_id, "private" if info.private else "public")
    commit = api.upload_folder(
        repo_id=section.repo_id,
        repo_type="model",
        folder_path=folder,
        commit_message=message,
        ignore_patterns=list(CORPUS_PATTERNS),
    )
    return {
        "repo_id": section.repo_id,
        "url": str(repo_url),
        "commit": commit.oid,
        "commit_url": commit.commit_url,
        "private": bool(info.private),
    }


SPEC = StageSpec(
    name="publish",
    summary="model card + Hugging Face Hub upload (or a --dry-run folder)",
    sections=("model", "publish"),
    upstream=lambda r: last_model_stage(r, "publish") + enabled(r, "eval"),
    external=lambda r: {},
    run=run,
    outputs={"upload": "dir", "card": "file", "plan": "file"},
)
