"""Process-group setup that works on GPUs *and* on CPU-only machines (gloo).

accelerate's ``PartialState()`` without ``cpu=True`` on a machine with no GPU, launched by
torchrun / ``accelerate launch``, initializes a gloo process group but reports
``DistributedType.NO`` with one process: every rank then believes it is the main process.
:func:`init_state` creates the shared state correctly (``cpu=True`` when there is no GPU)
*before* anything else asks for it; the stage modules call it when they are imported, which
the run manager does before it builds its own rank helper. The Trainer recreates the state
from ``TrainingArguments(use_cpu=...)``, which the harness sets the same way.
"""

from __future__ import annotations

import os


def init_state() -> None:
    """Initialize accelerate's shared PartialState for a multi-process launch (no-op otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())
