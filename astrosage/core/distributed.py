"""Distributed state for every layer: one place that asks accelerate's ``PartialState``.

Single-process runs (``WORLD_SIZE`` unset or 1) import neither torch nor accelerate here: rank 0,
one process, barriers are no-ops. Under torchrun / ``accelerate launch`` / srun, :func:`state`
creates the shared ``PartialState`` the first time anything asks, with ``cpu=True`` when there is
no GPU: accelerate's default on a GPU-less machine initializes a gloo process group but reports
one process, so every rank would believe it is the main one. The Trainer later builds its
``AcceleratorState`` over the same shared state (``TrainingArguments(use_cpu=...)`` is set the
same way by the training lifecycle).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launcher_rank() -> int:
    """The global rank the launcher assigned (``RANK``), read without starting a process group:
    for decisions taken before any (the run lock, per-rank log file names, the requeue marker)."""
    return int(os.environ.get("RANK", "0"))


def state() -> Any | None:
    """The shared ``accelerate.PartialState`` of a multi-process launch (None for one process)."""
    if not _launched():
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def world_size() -> int:
    """Number of processes in the launch (1 without a launcher)."""
    s = state()
    return s.num_processes if s is not None else 1


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    s = state()
    return s.process_index if s is not None else 0


def local_rank() -> int:
    """This process's rank on its node (0 without a launcher)."""
    s = state()
    return s.local_process_index if s is not None else 0


def is_main() -> bool:
    """True on the global main process (the one that writes stage folders and manifests)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op for one process)."""
    s = state()
    if s is not None:
        s.wait_for_everyone()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (e.g. fills a cache); the others after it."""
    s = state()
    if s is None:
        yield
        return
    with s.main_process_first():
        yield


def any_rank(flag: bool) -> bool:
    """Logical OR of ``flag`` over every process (just ``flag`` for one process)."""
    s = state()
    if s is None or s.num_processes == 1:
        return bool(flag)
    import torch
    from accelerate.utils import reduce

    return bool(reduce(torch.tensor([1.0 if flag else 0.0], device=s.device), reduction="sum").item() > 0)
