"""Resuming from the final checkpoint trains nothing more (transformers would train one extra step)."""

from __future__ import annotations

from types import SimpleNamespace

import torch


def _trainer(tiny_base, out, max_steps):
    import datasets
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    rows = datasets.Dataset.from_list([{"input_ids": list(range(5, 37)), "labels": list(range(5, 37))}] * 32)
    args = TrainingArguments(str(out), max_steps=max_steps, save_steps=2, save_strategy="steps", per_device_train_batch_size=2,
                             learning_rate=1e-2, lr_scheduler_type="constant", report_to=[], use_cpu=True, logging_steps=1,
                             disable_tqdm=True, save_total_limit=None)
    return Trainer(model=model, args=args, train_dataset=rows)


def _run(work, trainer, handler):
    """The lifecycle's callbacks and resume around a hand-made trainer (setup's data/model parts skipped)."""
    from astrosage.core.stage import StageContext
    from astrosage.training.lifecycle import TrainingRun

    class HandMadeTrainerRun(TrainingRun):
        """The trainer is given; the data and trainer hooks are never reached."""

        def build_data(self, *args):
            raise AssertionError("not called: the trainer is hand-made")

        training_args = make_trainer = build_data

    recipe = SimpleNamespace(model=SimpleNamespace(dtype="float32"))
    run = HandMadeTrainerRun(StageContext(recipe, "cpt", work.parent, work, {}), SimpleNamespace(save_total_limit=3, max_seq_len=32))
    run.handler, run.trainer = handler, trainer
    run.attach_callbacks()
    return run


def test_resume_from_the_final_checkpoint_trains_no_extra_step(tiny_base, tmp_path):
    from astrosage.training.lifecycle import CHECKPOINTS_DIR
    from astrosage.training.preemption import PreemptionHandler

    work = tmp_path / "cpt.partial"
    with PreemptionHandler() as handler:
        first = _trainer(tiny_base, work / CHECKPOINTS_DIR, 4)
        assert _run(work, first, handler).train() is None  # a fresh run
        assert first.state.global_step == 4
        trained = {k: v.clone() for k, v in first.model.state_dict().items()}
        # the process dies after checkpoint-4 is complete, before the final model is written; the rerun:
        again = _trainer(tiny_base, work / CHECKPOINTS_DIR, 4)
        resumed = _run(work, again, handler).train()
    assert resumed.name == "checkpoint-4" and again.state.global_step == 4  # not 5
    for name, value in again.model.state_dict().items():
        assert torch.equal(value, trained[name]), name  # exactly the final checkpoint's weights
    assert any("loss" in h for h in again.state.log_history)  # the loaded state keeps the run's losses
