"""Model references in recipes: Hub ids, local folders, and the offline ``tiny:`` models.

A reference is resolved in one place so every stage loads models the same way:

* ``tiny:base`` / ``tiny:instruct`` -> built once (seeded) under ``<output_dir>/.tiny-models/``;
* an existing local folder -> its absolute path (mergekit treats relative paths as Hub ids);
* anything else -> a Hub id, passed through unchanged.

:func:`is_local_reference` / :func:`is_hub_id` are the one rule for "is this a local path or a Hub
id", for models and for data files alike:

* ``tiny:...`` is neither; a URL (``s3://...``, ``https://...``) is neither;
* local: an existing file or folder, anything starting with ``.``, ``/`` or ``~``, a name ending in
  a data-file suffix (``.json``, ``.jsonl``, ``.csv``, ``.parquet``, ...), or anything that is not a
  valid Hub repository id (``a/b/c``);
* Hub: the rest, i.e. ``name`` or ``owner/name`` as ``huggingface_hub`` validates repository ids.
  A missing relative folder named like a Hub id (``data/train``) is therefore read as a Hub id:
  write ``./data/train`` to say it is local.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .artifacts import tree_fingerprint

TINY_PREFIX = "tiny:"
#: path prefixes that always mean a local file or folder
LOCAL_PREFIXES = (".", "/", "~")
#: file suffixes that always mean a local file (a Hub repository is never named like a data file)
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow", ".txt", ".yaml", ".yml", ".safetensors", ".bin")


def is_tiny(ref: str) -> bool:
    """True for ``tiny:base`` / ``tiny:instruct`` references."""
    return ref.startswith(TINY_PREFIX)


def _is_url(ref: str) -> bool:
    return "://" in ref


def _exists(ref: str) -> bool:
    try:
        return Path(ref).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a path here
        return False


def _valid_repo_id(ref: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def is_local_reference(ref: str | Path | None) -> bool:
    """True if ``ref`` names a local file or folder (existing or not), by the rule in this module's docstring."""
    if ref is None or str(ref) == "":
        return False
    if isinstance(ref, Path):
        return True
    if is_tiny(ref) or _is_url(ref):
        return False
    if ref.startswith(LOCAL_PREFIXES) or ref.lower().endswith(LOCAL_SUFFIXES) or _exists(ref):
        return True
    return not _valid_repo_id(ref)


def is_hub_id(ref: str | Path | None) -> bool:
    """True if ``ref`` is a Hugging Face Hub repository id (``name`` or ``owner/name``), not a local path or ``tiny:``."""
    if ref is None or isinstance(ref, Path) or not ref or is_tiny(ref) or _is_url(ref):
        return False
    return not is_local_reference(ref)


def tiny_dir(ref: str, output_dir: Path, seed: int) -> Path:
    """Where the tiny model for ``ref`` lives (or will be built)."""
    from .tiny import tiny_build_id

    variant = ref[len(TINY_PREFIX):]
    return Path(output_dir).resolve() / ".tiny-models" / f"{variant}-seed{seed}-{tiny_build_id()}"


def resolve_model(ref: str, output_dir: Path, seed: int = 0) -> str:
    """Resolve a recipe model reference to something ``from_pretrained`` accepts.

    Builds the tiny model on first use. Local folders become absolute paths.
    """
    if is_tiny(ref):
        from .tiny import VARIANT_SEED_OFFSET, build_tiny_model

        variant = ref[len(TINY_PREFIX):]
        if variant not in VARIANT_SEED_OFFSET:
            raise ValueError(f"unknown tiny model {ref!r}; use 'tiny:base' or 'tiny:instruct'")
        target = tiny_dir(ref, output_dir, seed)
        if not (target / "config.json").exists():
            build_tiny_model(target, variant=variant, seed=seed)  # type: ignore[arg-type]
        return str(target)
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model reference {ref!r} is a file; expected a model folder or a Hub id")
        return str(path.resolve())
    if is_local_reference(ref):
        raise FileNotFoundError(f"model folder {ref!r} does not exist (resolved to {path.resolve()})")
    return ref


def model_fingerprint(ref: str, revision: str | None = None, seed: int = 0) -> str:
    """A cache key for a model (or data) reference, computed without loading or downloading it.

    Local files and folders are fingerprinted by content; Hub ids by id and revision.
    """
    if is_tiny(ref):
        from .tiny import tiny_build_id

        return hashlib.sha256(f"{ref}|seed={seed}|{tiny_build_id()}".encode()).hexdigest()
    path = Path(ref).expanduser()
    if path.exists():  # a local model folder or data file: its content
        return tree_fingerprint(path)
    return hashlib.sha256(f"hub:{ref}@{revision or 'main'}".encode()).hexdigest()
