"""The exact upload folder and the Hub upload.

The upload folder holds only model files from the published checkpoint plus the card (hard links
where possible); anything that looks like corpus data (parquet / jsonl / archives, or a
byte-identical copy of a corpus/synth stage file) is skipped and listed in the plan, and checked
again right before upload. Secrets and token-shaped values are redacted from the card and the
folder's small text files. :func:`upload` creates the repository (private by default) and uploads
the folder with ``upload_folder``; the token comes from ``$<token_env>`` or the cached login and is
never printed, logged or written.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from ..core.artifacts import MANIFEST_NAME, atomic_write_text
from ..core.logs import REDACTED, SecretRedactor

log = logging.getLogger("astrosage")

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
#: files written by publishing itself (the checkpoint's own copies are replaced)
GENERATED = ("README.md", "mergekit_config.yml")
#: small text files of the upload folder scanned for token-shaped values before anything is written out
#: (the vocabulary files are model data, not prose: they are left alone)
REDACTED_TEXT_FILES = (
    "README.md", "mergekit_config.yml", "config.json", "generation_config.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "adapter_config.json",
)


class PublishError(RuntimeError):
    """Publishing cannot proceed safely."""


def prepare_upload(card: Any, model_dir: Path, folder: Path, run_dir: Path, redactor: SecretRedactor,
                   mergekit_yaml: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Write the exact upload folder: model files, the redacted card, the merge config.

    Returns the (redacted) card and the plan: ``skipped`` files with reasons, ``redacted`` file
    names, ``files`` in the folder.
    """
    text = redactor.redact(str(card))
    if text != str(card):
        log.warning("publish: the model card held token-shaped values; they are written as %s", REDACTED)
        card = type(card)(text)
    plan = stage_upload_folder(model_dir, folder, corpus_index(run_dir))
    atomic_write_text(folder / "README.md", text)
    if mergekit_yaml:
        atomic_write_text(folder / "mergekit_config.yml", mergekit_yaml)
    plan["redacted"] = redact_folder(folder, redactor)
    assert_no_corpus(folder)
    plan["files"] = sorted(p.name for p in folder.iterdir())
    for item in plan["skipped"]:
        log.warning("publish: not uploading %s (%s)", item["file"], item["reason"])
    return card, plan


# ------------------------------------------------------------------------------------ upload folder


def corpus_index(run_dir: Path) -> dict[int, list[Path]]:
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


def stage_upload_folder(model_dir: Path, folder: Path, index: dict[int, list[Path]]) -> dict[str, Any]:
    """Fill ``folder`` with the publishable files of ``model_dir``; returns {"skipped": [...]}."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    skipped = []
    for f in sorted(model_dir.iterdir()):
        if f.is_dir():
            skipped.append({"file": f.name + "/", "reason": "sub-folder (checkpoints and data are not published)"})
            continue
        reason = corpus_reason(f, index)
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


def folder_size(folder: Path) -> int:
    """Total bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ the Hub


def dataset_licences(ids: Iterable[str], token_env: str) -> dict[str, str]:
    """Licences of Hub datasets from their cards (only when the Hub is reachable; never fatal)."""
    from huggingface_hub import constants

    ids = sorted(set(ids))
    if not ids or constants.is_offline_mode():
        return {}
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get(token_env) or None)
    out = {}
    for ref in ids:
        try:
            data = api.dataset_info(ref).card_data
            licence = data.get("license") if data is not None else None
        except Exception as exc:  # network or permission problems must not stop publishing
            log.info("publish: licence of dataset %s unknown (%s)", ref, type(exc).__name__)
            continue
        if licence:
            out[ref] = ", ".join(licence) if isinstance(licence, list) else str(licence)
    return out


def upload(folder: Path, card: Any, repo_id: str, private: bool, token_env: str, message: str) -> dict[str, Any]:
    """Create the repository (private unless ``private`` is false) and upload ``folder``; returns the commit record."""
    from huggingface_hub import HfApi, get_token

    token = os.environ.get(token_env) or None
    if token is None and get_token() is None:
        raise PublishError(f"no Hugging Face token: set ${token_env} or log in with `hf auth login` (or use publish.dry_run=true)")
    api = HfApi(token=token)
    card.validate()
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.model_info(repo_id)
    if private and not info.private:
        raise PublishError(
            f"{repo_id} already exists and is public, but publish.private is true; refusing to upload "
            "(make the repository private on the Hub, or set publish.private=false)"
        )
    assert_no_corpus(folder)
    log.info("publish: uploading %d files to %s (%s)", sum(1 for _ in folder.iterdir()), repo_id, "private" if info.private else "public")
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=folder,
        commit_message=message,
        ignore_patterns=list(CORPUS_PATTERNS),
    )
    return {
        "repo_id": repo_id,
        "url": str(repo_url),
        "commit": commit.oid,
        "commit_url": commit.commit_url,
        "private": bool(info.private),
    }
