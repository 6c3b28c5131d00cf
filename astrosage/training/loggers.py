"""Metrics loggers from the recipe's ``logging`` section: wandb (online/offline), tensorboard, none.

The Trainer's own integrations do the logging; this module only translates the recipe into
``report_to`` plus the environment variables those integrations read, and keeps their files
inside the stage folder (``<stage>/wandb/``, ``<stage>/tensorboard/``).
"""

from __future__ import annotations

import os
from pathlib import Path


def configure(logging_section, work_dir: Path, run_name: str) -> list[str]:
    """Set up the chosen backend; returns the Trainer's ``report_to`` list."""
    backend = logging_section.backend
    if backend == "none":
        return []
    if backend == "tensorboard":
        log_dir = Path(work_dir) / "tensorboard" / logging_section.project
        log_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
        return ["tensorboard"]
    if backend == "wandb":
        wandb_dir = Path(work_dir)  # wandb creates <dir>/wandb/
        wandb_dir.mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_DIR"] = str(wandb_dir)
        os.environ["WANDB_PROJECT"] = logging_section.project
        os.environ["WANDB_MODE"] = logging_section.wandb_mode
        os.environ.setdefault("WANDB_LOG_MODEL", "false")
        os.environ.setdefault("WANDB_WATCH", "false")
        if logging_section.entity:
            os.environ["WANDB_ENTITY"] = logging_section.entity
        os.environ.setdefault("WANDB_NAME", run_name)
        # one wandb run per attempt of the stage: a preempted-and-resumed stage continues the same run
        os.environ.setdefault("WANDB_RUN_ID", _attempt_id(Path(work_dir)))
        os.environ.setdefault("WANDB_RESUME", "allow")
        return ["wandb"]
    raise ValueError(f"unknown logging backend {backend!r}")


def _attempt_id(work_dir: Path) -> str:
    """Stable id of this attempt of the stage: its folder plus the run manager's start time."""
    import hashlib

    marker = work_dir / ".astrosage-partial.json"
    started = marker.read_text() if marker.exists() else ""
    return hashlib.sha256(f"{work_dir.resolve()}|{started}".encode()).hexdigest()[:16]


def close() -> None:
    """Finish an open wandb run (writes its summary; the Trainer leaves it open). No-op otherwise."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
