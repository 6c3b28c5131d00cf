"""Model references in recipes: Hub ids, local folders, and the offline ``tiny:`` models.

A reference is resolved in one place so every stage loads models the same way:

* ``tiny:base`` / ``tiny:instruct`` -> built once (seeded) under ``<output_dir>/.tiny-models/``;
* an existing local folder -> its absolute path (mergekit treats relative paths as Hub ids);
* anything else -> a Hub id, passed through unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .artifacts import tree_fingerprint

TINY_PREFIX = "tiny:"


def is_tiny(ref: str) -> bool:
    """True for ``tiny:base`` / ``tiny:instruct`` references."""
    return ref.startswith(TINY_PREFIX)


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
    if ref.startswith((".", "/", "~")):
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
