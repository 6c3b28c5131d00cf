"""One run at a time per run folder: the lock the main rank holds for a whole run.

The lock is ``<run dir>/.astrosage.lock`` (an ``flock`` through ``filelock``, released by the
kernel when its process dies); who holds it is recorded in ``.astrosage.lock.json``. A second
``astrosage run`` on the same folder fails at once naming the holder (pid, host, start time, Slurm
job id); the lock of a holder that died is taken over, with a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from .core.artifacts import atomic_write_json
from .run_state import PipelineError, utc_now

log = logging.getLogger("astrosage")

LOCK_NAME = ".astrosage.lock"
HOLDER_NAME = ".astrosage.lock.json"


class RunLockedError(PipelineError):
    """Another process holds the run folder's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_holder(holder: dict[str, Any] | None) -> str:
    """A holder record in words: pid, host, start time, Slurm job, run name."""
    if not holder:
        return "a process that has not recorded itself yet (it is starting up)"
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}", f"started {holder.get('started_at', '?')}"]
    if holder.get("slurm_job_id"):
        parts.append(f"Slurm job {holder['slurm_job_id']}")
    if holder.get("recipe_name"):
        parts.append(f"run '{holder['recipe_name']}'")
    return ", ".join(parts)


class RunLock:
    """The lock on one run folder, held by the main rank for a whole run (re-entrant).

    ``filelock.FileLock`` is an ``flock`` on the lock file, so a holder that dies (SIGKILL, node
    reboot) releases it: its stale lock and holder record are taken over, with a log line. On a
    file system without ``flock`` filelock falls back to a marker file; a marker left by a dead
    process on this host is then removed here.
    """

    def __init__(self, run_dir: Path, recipe_name: str = ""):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self.holder_path = run_dir / HOLDER_NAME
        self.recipe_name = recipe_name
        self._lock: Any = None
        self._depth = 0

    def read_holder(self) -> dict[str, Any] | None:
        """The recorded holder, or None when there is no (readable) record."""
        try:
            data = json.loads(self.holder_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _make_folder(self) -> None:
        existing = self.run_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise PipelineError(
                f"run.output_dir: {existing} is a file, not a folder, so the run folder {self.run_dir} cannot be "
                "created; set run.output_dir to a folder"
            )
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PipelineError(f"run.output_dir: cannot create the run folder {self.run_dir}: {exc.strerror or exc}") from None

    def acquire(self) -> None:
        """Take the lock now or raise :class:`RunLockedError` naming the holder."""
        if self._depth:
            self._depth += 1
            return
        from filelock import FileLock, Timeout

        self._make_folder()
        if self._lock is None:
            self._lock = FileLock(str(self.path), timeout=0)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self.read_holder()
            if not self._take_over_dead_marker(holder):
                raise RunLockedError(
                    f"the run folder {self.run_dir} is in use by another astrosage run: {describe_holder(holder)} "
                    f"(lock {self.path}). Wait for it to finish or stop it, or give this run another run.name / run.output_dir."
                ) from None
        previous = self.read_holder()
        if previous and previous.get("pid") != os.getpid():
            log.warning("run folder %s: taking over the lock left by %s, which is no longer running",
                        self.run_dir, describe_holder(previous))
        atomic_write_json(self.holder_path, {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": utc_now(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "recipe_name": self.recipe_name,
        })
        self._depth = 1

    def _take_over_dead_marker(self, holder: dict[str, Any] | None) -> bool:
        """Soft-lock fallback only: remove a marker whose recorded holder is dead on this host, retry once."""
        from filelock import Timeout

        if not holder or holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        if _pid_alive(holder["pid"]):
            return False
        log.warning("run folder %s: removing the lock of %s, which is no longer running", self.run_dir, describe_holder(holder))
        with contextlib.suppress(OSError):
            self.path.unlink()
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        """Release one level; the last one removes the holder record and the ``flock``."""
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        holder = self.read_holder()
        if holder and holder.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.holder_path.unlink()
        self._lock.release()

    @contextlib.contextmanager
    def held(self) -> Iterator[RunLock]:
        """Hold the lock for the block."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()


__all__ = ["HOLDER_NAME", "LOCK_NAME", "RunLock", "RunLockedError", "describe_holder"]
