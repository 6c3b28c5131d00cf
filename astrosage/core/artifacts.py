"""Artifacts on disk: atomic writes, content fingerprints, and stage manifests.

Artifacts are the only coupling between stages. Every stage folder ends with a
``manifest.json``; the manifest is written last and atomically, so a folder without one is
never mistaken for a finished stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

MANIFEST_NAME = "manifest.json"
#: Files above this size are fingerprinted by size + sampled blocks instead of a full read.
FULL_HASH_LIMIT = 256 * 1024 * 1024
_SAMPLE = 4 * 1024 * 1024

#: Packages whose versions are recorded in every manifest (read from metadata, never imported).
TRACKED_PACKAGES = (
    "astrosage", "torch", "transformers", "tokenizers", "accelerate", "datasets", "trl", "peft",
    "deepspeed", "mergekit", "lm_eval", "datatrove", "datasketch", "arxiv", "wandb", "vllm",
)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write pretty JSON (sorted keys, trailing newline)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; raise ValueError naming the file when it is corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt JSON ({exc})") from None


def file_fingerprint(path: Path) -> str:
    """sha256 of a file; large files hash their size plus sampled blocks (start, middle, end)."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as fh:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f"sampled:{size}".encode())
            for offset in (0, size // 2, size - _SAMPLE):
                fh.seek(offset)
                h.update(fh.read(_SAMPLE))
    return h.hexdigest()


def tree_fingerprint(root: str | Path, exclude: tuple[str, ...] = (MANIFEST_NAME,), exclude_dirs: tuple[str, ...] = ()) -> str:
    """Fingerprint of a file or folder: relative paths, sizes and contents of every file
    (``exclude``: relative file paths left out; ``exclude_dirs``: relative folders left out)."""
    root = Path(root)
    if root.is_file():
        return file_fingerprint(root)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel in exclude or any(rel.startswith(d.rstrip("/") + "/") for d in exclude_dirs):
            continue
        if any(part.startswith(".") and part.endswith(".tmp") for part in file.parts):
            continue
        h.update(rel.encode() + b"\0" + file_fingerprint(file).encode() + b"\n")
    return h.hexdigest()


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the tracked packages (missing ones are left out)."""
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_commit(where: str | Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout containing ``where`` (the package by default)."""
    where = Path(where) if where else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


@contextlib.contextmanager
def replacing_dir(final: Path) -> Iterator[Path]:
    """Yield ``<final>.partial``; on success swap it into place, keeping ``final`` intact on failure.

    The previous complete artifact is only removed after the new one is in place.
    """
    partial = final.with_name(final.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    yield partial
    old = final.with_name(final.name + ".old")
    if old.exists():
        _rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    if old.exists():
        _rmtree(old)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=False)
