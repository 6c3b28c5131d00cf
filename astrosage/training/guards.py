"""Guards that fail a training stage instead of letting it report garbage as success.

:class:`NonFiniteGuard` (a ``TrainerCallback``) stops training with :class:`NonFiniteTrainingError`,
naming the optimizer step, as soon as

* a logged ``loss`` is NaN/inf (``logging_nan_inf_filter`` hides single bad steps from the log; it
  cannot hide a run whose loss is non-finite at every step), or
* a trainable weight is NaN/inf: a sample of the trainable tensors (the first and the last) after
  every step, and all of them before every checkpoint save and at the end of training, so no
  checkpoint and no final model with non-finite weights is ever written.

A non-finite ``grad_norm`` alone is not an error: fp16 loss scaling skips such steps on purpose.

:func:`mean_train_loss` is the mean of the logged training losses of the whole run, over every
attempt of a resumed stage (the Trainer's own ``train_loss`` covers the last attempt only).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from transformers import TrainerCallback


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss or weight; the message names the step."""


def _local(param):
    """The part of a parameter this rank holds (DeepSpeed ZeRO-3 keeps it in ``ds_tensor``)."""
    return getattr(param, "ds_tensor", param)


def _first_bad(named: Iterable[tuple[str, Any]]) -> str | None:
    import torch

    for name, param in named:
        data = _local(param).detach()
        if data.numel() and not bool(torch.isfinite(data).all()):
            return name
    return None


class NonFiniteGuard(TrainerCallback):
    """Fail the stage with the step number on a non-finite loss or weight (see the module docstring)."""

    def __init__(self, stage: str = "training"):
        self.stage = stage

    def _fail(self, step: int, what: str) -> None:
        raise NonFiniteTrainingError(
            f"{self.stage}: {what} at optimizer step {step}; training stopped, no checkpoint of this step was saved "
            "(lower the learning rate, check the data and dtype, then rerun: training resumes from the last good checkpoint)"
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            self._fail(state.global_step, f"the training loss is {loss}")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            return
        full = bool(control.should_save or control.should_training_stop)
        bad = _first_bad(trainable if full else [trainable[0], trainable[-1]])
        if bad is not None:
            control.should_save = False
            self._fail(state.global_step, f"the weight {bad!r} holds NaN/inf values")


def mean_train_loss(log_history: Iterable[dict[str, Any]]) -> float | None:
    """Mean of the logged training losses of a whole run (every attempt), one value per logged step.

    ``trainer_state.json``'s ``log_history`` keeps the entries of earlier attempts when a run
    resumes; an entry logged again for a step (after a resume from an earlier checkpoint) replaces
    the earlier one. Each entry is the mean over its logging interval, so the mean is weighted by
    the steps each entry covers.
    """
    by_step: dict[int, float] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry and isinstance(entry["loss"], (int, float)):
            by_step[int(entry["step"])] = float(entry["loss"])
    if not by_step:
        return None
    total = steps = 0.0
    previous = 0
    for step in sorted(by_step):
        width = step - previous
        total += by_step[step] * width
        steps += width
        previous = step
    return total / steps if steps else None


__all__ = ["NonFiniteGuard", "NonFiniteTrainingError", "mean_train_loss"]
