"""Two processes on CPU (gloo): DDP under torchrun (with a preemption signal on one rank only)
and DeepSpeed ZeRO-3 under `accelerate launch -m astrosage.cli`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from astrosage.training import REQUEUE_EXIT_CODE
from astrosage.training.checkpoints import newest_complete

from test_train_preemption import REPO, run_cli, write_recipe  # noqa: E402  (tests/ is on sys.path)

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0"]


def _losses(stage_dir: Path) -> list[float]:
    state = json.loads((stage_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.mark.slow
def test_ddp_two_ranks_signal_on_one_rank_then_resume(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", max_steps=6, save_steps=100)
    # SIGTERM reaches rank 1 only; both ranks must agree, checkpoint at the same step and exit
    first = run_cli(tmp_path, ["cpt", str(recipe)], signal_step=3, launcher=TORCHRUN, SIGNAL_RANK="1")
    # torchrun turns a child's exit code into its own failure (1); each rank exited with 75
    assert first.returncode != 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert f"exitcode  : {REQUEUE_EXIT_CODE}" in first.stderr, first.stderr[-3000:]
    partial = tmp_path / "out" / "p" / "cpt.partial"
    assert newest_complete(partial / "checkpoints").name == "checkpoint-3"
    assert (partial / "checkpoints" / "checkpoint-3" / "rng_state_1.pth").exists()  # every rank's RNG state
    assert json.loads((partial / "preempted.json").read_text())["step"] == 3
    second = run_cli(tmp_path, ["cpt", str(recipe)], launcher=TORCHRUN)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "p" / "cpt" / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from_step"] == 3 and manifest["counts"]["steps"] == 6
    assert manifest["counts"]["tokens_trained"] == 6 * 2 * 2 * 128  # two ranks x batch 2 x 128 tokens x 6 steps
    losses = _losses(tmp_path / "out" / "p" / "cpt")
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_deepspeed_zero3_two_processes_under_accelerate_launch(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", max_steps=6, save_steps=3,
                          deepspeed=str(REPO / "recipes/deepspeed/zero3.json"), keep_checkpoints=False)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes/accelerate/cpu-2proc.yaml"), "--main_process_port", "0",
           "-m", "astrosage.cli", "cpt", str(recipe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    stage = tmp_path / "out" / "p" / "cpt"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["counts"]["tokens_trained"] == 6 * 2 * 2 * 128
    losses = _losses(stage)
    assert len(losses) == 6 and losses[-1] < losses[0]
    # the ZeRO-3 shards were gathered into one full HF model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(stage / "model")
    assert model.model.embed_tokens.weight.shape[0] == 1024 and model.lm_head.weight.abs().sum() > 0
