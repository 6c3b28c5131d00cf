"""Checkpoints that are known to be complete, retention, and picking the one to resume from.

The Trainer writes ``checkpoint-<step>/`` piece by piece (weights, optimizer, scheduler, RNG
state per rank, trainer_state.json). A process killed mid-save leaves a folder that looks like
a checkpoint but is not one. :class:`CompleteCheckpointCallback` waits for every rank after a
save and only then writes :data:`COMPLETE_MARKER` (atomically); resume uses the newest folder
that has the marker and deletes newer unmarked ones. Retention (``save_total_limit``) counts
complete checkpoints only, so a half-written newest checkpoint never costs the last good one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from ..core import distributed
from ..core.artifacts import atomic_write_json

log = logging.getLogger("astrosage")

COMPLETE_MARKER = "astrosage-checkpoint-complete.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """All ``checkpoint-<step>`` folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CKPT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def is_complete(checkpoint: str | Path) -> bool:
    """True when the checkpoint carries the completeness marker."""
    return (Path(checkpoint) / COMPLETE_MARKER).is_file()


def newest_complete(root: str | Path) -> Path | None:
    """The newest checkpoint marked complete, or None."""
    complete = [path for _, path in list_checkpoints(root) if is_complete(path)]
    return complete[-1] if complete else None


def remove_incomplete(root: str | Path) -> list[Path]:
    """Delete checkpoints without the completeness marker (call on the main rank only)."""
    removed = []
    for _, path in list_checkpoints(root):
        if not is_complete(path):
            log.warning("checkpoint %s is incomplete (no %s): skipped and removed", path, COMPLETE_MARKER)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def mark_complete(checkpoint: str | Path, step: int) -> None:
    """Write the completeness marker (atomically) once every rank has saved."""
    atomic_write_json(Path(checkpoint) / COMPLETE_MARKER, {"step": step, "completed_at": time.time()})


def delete(checkpoint: str | Path) -> None:
    """Remove a checkpoint: its completeness marker first, so a kill mid-delete never leaves a
    half-deleted folder that still looks complete (resuming from it would silently skip the
    optimizer state the delete already removed)."""
    path = Path(checkpoint)
    with contextlib.suppress(FileNotFoundError):
        (path / COMPLETE_MARKER).unlink()
    shutil.rmtree(path, ignore_errors=True)


def rotate(root: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints; delete older ones (complete or not)."""
    checkpoints = list_checkpoints(root)
    complete = [path for _, path in checkpoints if is_complete(path)]
    if len(complete) <= keep:
        return
    oldest_kept = complete[-keep]
    for _, path in checkpoints:
        if path == oldest_kept:
            break
        delete(path)


class CompleteCheckpointCallback(TrainerCallback):
    """After every save: wait for all ranks, mark the checkpoint complete, apply retention."""

    def __init__(self, keep: int):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        distributed.barrier()  # every rank has written its shards / RNG state
        if state.is_world_process_zero and path.is_dir():
            mark_complete(path, state.global_step)
            rotate(args.output_dir, self.keep)
        distributed.barrier()  # the marker is visible before anyone may exit
        return control
