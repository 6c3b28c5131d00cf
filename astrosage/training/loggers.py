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
        # one wandb run per stage, set (not setdefault) each time: cpt's id must not carry over into sft
        # in the same process. The id lives in the stage's work folder, so a requeued stage resumes its run.
        os.environ["WANDB_NAME"] = run_name
        os.environ["WANDB_RUN_ID"] = stage_run_id(Path(work_dir))
        os.environ["WANDB_RESUME"] = "allow"
        redact_argv()
        close()  # a wandb set up earlier in this process would ignore the variables above
        return ["wandb"]
    raise ValueError(f"unknown logging backend {backend!r}")


RUN_ID_FILE = "wandb_run_id.txt"


def stage_run_id(work_dir: Path) -> str:
    """This stage's wandb run id: made once per unfinished stage folder, read back on every resume."""
    import time
    import uuid

    path = Path(work_dir) / RUN_ID_FILE
    try:
        with open(path, "x", encoding="utf-8") as fh:  # exclusive create: ranks racing agree on one id
            run_id = uuid.uuid4().hex[:16]
            fh.write(run_id + "\n")
            return run_id
    except FileExistsError:
        for _ in range(50):  # another rank may be writing it right now
            text = path.read_text(encoding="utf-8").strip()
            if text:
                return text
            time.sleep(0.1)
        raise RuntimeError(f"{path} is empty; remove it to start a new wandb run for this stage") from None


def redact_argv() -> None:
    """wandb records ``sys.argv`` in its run files: token-shaped values and secret env values become ``***``."""
    import sys

    from ..core.logs import SecretRedactor

    sys.argv[:] = [SecretRedactor().redact(arg) for arg in sys.argv]


def close() -> None:
    """Finish an open wandb run (writes its summary; the Trainer leaves it open), then tear wandb's
    process-wide setup down: it caches the environment (run id, folder) of the first run, so without
    this the next stage in the same process would log into this stage's run. No-op without wandb."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    if getattr(wandb, "run", None) is not None:
        wandb.finish()
    wandb.teardown()
