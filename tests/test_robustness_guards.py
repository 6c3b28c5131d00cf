"""Issue 12 #3/#6: a non-finite loss or weight fails training with the step number; the whole run's mean loss."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from astrosage.training.guards import NonFiniteGuard, NonFiniteTrainingError, mean_train_loss


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        return {"loss": torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), y)}


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, generator=g)
        return {"x": x, "y": x.sum()}


class Poison(TrainerCallback):
    """Puts a NaN into the weights after optimizer step ``at``."""

    def __init__(self, at: int):
        self.at = at

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.at:  # global_step is incremented after this event
            with torch.no_grad():
                model.lin.weight[0, 0] = float("nan")


def trainer(tmp_path, *callbacks, **args):
    targs = TrainingArguments(
        output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=4, max_steps=8, save_steps=2,
        logging_steps=1, report_to=[], use_cpu=True, learning_rate=1e-2, **args,
    )
    t = Trainer(model=Tiny(), args=targs, train_dataset=Data())
    for cb in callbacks:
        t.add_callback(cb)
    return t


def test_clean_training_passes_the_guard(tmp_path):
    trainer(tmp_path, NonFiniteGuard("cpt")).train()
    assert (tmp_path / "ckpt" / "checkpoint-8").is_dir()


def test_a_nan_weight_fails_at_its_step_and_is_never_checkpointed(tmp_path):
    t = trainer(tmp_path, Poison(at=3), NonFiniteGuard("cpt"))
    with pytest.raises(NonFiniteTrainingError, match=r"cpt: the weight 'lin.weight' holds NaN/inf values at optimizer step 3"):
        t.train()
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint-*"))
    assert saved == ["checkpoint-2"]  # the last good one; nothing at or after the bad step


def test_a_nan_weight_before_a_save_step_blocks_that_checkpoint(tmp_path):
    t = trainer(tmp_path, Poison(at=4), NonFiniteGuard("sft"))
    with pytest.raises(NonFiniteTrainingError, match="optimizer step 4"):
        t.train()
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint-*")) == ["checkpoint-2"]


def test_a_logged_non_finite_loss_fails_with_the_step(tmp_path):
    # without the nan filter the logged loss itself is NaN from the poisoned step on
    t = trainer(tmp_path, Poison(at=5), NonFiniteGuard("cpt"), logging_nan_inf_filter=False)
    guard = t.callback_handler.callbacks[-1]
    with pytest.raises(NonFiniteTrainingError, match="step 5"):
        t.train()
    state = type("S", (), {"global_step": 7})()
    with pytest.raises(NonFiniteTrainingError, match="the training loss is inf at optimizer step 7"):
        guard.on_log(None, state, None, logs={"loss": float("inf")})
    guard.on_log(None, state, None, logs={"loss": 0.5, "grad_norm": float("inf")})  # fp16 skipped steps are fine


def test_mean_train_loss_covers_every_attempt():
    # attempt 1 logged steps 1-4 and was killed after checkpoint-2; attempt 2 resumed from step 2
    history = [
        {"step": 2, "loss": 4.0}, {"step": 4, "loss": 3.0},  # attempt 1 (step 4 logged again below)
        {"step": 4, "loss": 2.0}, {"step": 6, "loss": 1.0}, {"step": 8, "loss": 1.0},  # attempt 2
        {"step": 8, "train_loss": 1.0, "train_runtime": 1.0},  # the Trainer's last-attempt summary
    ]
    assert mean_train_loss(history) == pytest.approx((4.0 + 2.0 + 1.0 + 1.0) / 4)
    # uneven logging intervals weigh by the steps each entry covers
    assert mean_train_loss([{"step": 1, "loss": 3.0}, {"step": 4, "loss": 1.0}]) == pytest.approx((3.0 + 3 * 1.0) / 4)
    assert mean_train_loss([{"step": 3, "train_loss": 1.0}]) is None


def test_mean_train_loss_of_a_resumed_real_run(tmp_path):
    """A run killed after checkpoint-4 and resumed: log_history in the final state spans both attempts."""
    t = trainer(tmp_path, NonFiniteGuard())
    t.args.max_steps = 4
    t.train()
    first = json.loads((tmp_path / "ckpt" / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    t2 = trainer(tmp_path, NonFiniteGuard())
    out = t2.train(resume_from_checkpoint=str(tmp_path / "ckpt" / "checkpoint-4"))
    history = t2.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    assert len(losses) == 8 and [e["loss"] for e in first if "loss" in e] == losses[:4]
    assert mean_train_loss(history) == pytest.approx(sum(losses) / 8)
    assert not math.isclose(out.training_loss, mean_train_loss(history))  # the Trainer's covers only steps 5-8


def test_the_cpt_stage_fails_on_nan_weights_with_the_step(tiny_base, tmp_path):
    """Through the run manager: a base model with one NaN weight goes NaN at step 1; the stage fails there."""
    from safetensors.torch import load_file, save_file

    from astrosage.runner import RunManager
    from test_train_stages import tiny_recipe

    bad = tmp_path / "nan-model"
    import shutil

    shutil.copytree(tiny_base, bad)
    weights = next(bad.glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(n for n in tensors if "layers.0" in n and "q_proj" in n)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    recipe = tiny_recipe(tmp_path / "runs", model={"base": str(bad)}, sft={"enabled": False})
    with pytest.raises(NonFiniteTrainingError, match=r"cpt: the weight .* holds NaN/inf values at optimizer step 1"):
        RunManager(recipe).run(["cpt"])
    run_dir = tmp_path / "runs" / "t"
    assert not (run_dir / "cpt").exists()  # never reported done
    assert not list((run_dir / "cpt.partial").glob("checkpoints/checkpoint-*"))


def stage_resumed_training(ctx):
    """A training stage's outputs after a resume: the Trainer's train_loss covers the last attempt only."""
    from astrosage.core.stage import StageResult

    history = [{"step": 2, "loss": 4.0}, {"step": 4, "loss": 2.0}, {"step": 6, "loss": 1.0}, {"step": 6, "train_loss": 1.0}]
    (ctx.work_dir / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return StageResult(metrics={"mean_train_loss": 1.0, "final_loss": 1.0}, outputs={"state": "trainer_state.json"})


def test_the_manifest_mean_train_loss_covers_the_whole_run(tmp_path):
    from astrosage.core.stage import StageSpec
    from astrosage.runner import RunManager
    from test_train_stages import tiny_recipe

    spec = StageSpec("cpt", "t", ("cpt",), lambda r: [], lambda r: {}, stage_resumed_training)
    RunManager(tiny_recipe(tmp_path / "runs"), registry={"cpt": spec}).run()
    metrics = json.loads((tmp_path / "runs" / "t" / "cpt" / "manifest.json").read_text())["metrics"]
    assert metrics["mean_train_loss"] == pytest.approx((4.0 + 2.0 + 1.0) / 3) and metrics["final_loss"] == 1.0
