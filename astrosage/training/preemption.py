"""Preemption: a signal on any rank -> all ranks agree -> complete checkpoint -> distinct exit code.

Slurm (``--signal=B:USR1@N``), Kubernetes and most schedulers announce a preemption with
SIGTERM or SIGUSR1. The handler only sets a flag (nothing else is safe inside a signal
handler). At every optimizer-step boundary :class:`PreemptionCallback` all-reduces the flag
(a logical OR over ranks: ``core.distributed.any_rank``), so the signal may arrive on one rank only and every rank still stops at the
same step; the Trainer then writes a checkpoint, :mod:`.checkpoints` marks it complete, and the
stage raises :class:`Preempted` (a ``SystemExit`` with :data:`REQUEUE_EXIT_CODE`) so a wrapper
script can requeue the job. The next run resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from transformers import TrainerCallback

from ..core import distributed
from ..core.exitcodes import REQUEUE

log = logging.getLogger("astrosage")

#: Exit status of a preempted stage (EX_TEMPFAIL, 75): "checkpoint written, run me again".
REQUEUE_EXIT_CODE = REQUEUE

#: Signals that request a checkpoint-and-exit.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Raised after a preemption checkpoint is complete; exits the process with REQUEUE_EXIT_CODE."""

    def __init__(self, message: str):
        super().__init__(REQUEUE_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PreemptionHandler:
    """Installs flag-setting handlers for SIGTERM/SIGUSR1; restores the previous ones on exit."""

    def __init__(self, signals: tuple[int, ...] = PREEMPTION_SIGNALS):
        self.signals = signals
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "PreemptionHandler":
        if threading.current_thread() is not threading.main_thread():
            log.warning("preemption: not in the main thread; SIGTERM/SIGUSR1 handling disabled")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, SystemExit) and exc.code == REQUEUE_EXIT_CODE:
            # Leaving with "checkpoint written, requeue me": the process is on its way out, and the
            # requeue marker and exit code 75 are written further up (the CLI). A second SIGTERM now
            # (schedulers repeat it; launchers forward it again) must not kill it with -15 before
            # then, or Slurm does not requeue. Keep the flag-setting handlers to the end.
            log.info("preemption: keeping the SIGTERM/SIGUSR1 handlers until the process exits with %d", REQUEUE_EXIT_CODE)
            self._previous.clear()
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def agreed(self) -> bool:
        """True when any rank was signalled. A collective: every rank must call it at the same point."""
        return distributed.any_rank(self.requested)


class PreemptionCallback(TrainerCallback):
    """At each optimizer-step boundary: if any rank was signalled, save a checkpoint and stop."""

    def __init__(self, handler: PreemptionHandler):
        self.handler = handler
        self.preempted_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.handler.agreed():
            self.preempted_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            log.warning(
                "preemption (%s) at step %d: writing a checkpoint, then exiting with code %d for requeue",
                self.handler.signal_name or "signal on another rank", state.global_step, REQUEUE_EXIT_CODE,
            )
        return control
