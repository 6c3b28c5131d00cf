"""Preemption: SIGTERM mid-run -> complete checkpoint + exit 75; resume skips incomplete checkpoints
and reaches exactly the loss and weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from astrosage.training import REQUEUE_EXIT_CODE
from astrosage.training.checkpoints import COMPLETE_MARKER, list_checkpoints, newest_complete, rotate

REPO = Path(__file__).resolve().parents[1]

#: Runs the real CLI; a patched callback makes rank SIGNAL_RANK send itself SIGTERM at SIGNAL_STEP.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import astrosage.training.preemption as p

    step, rank = int(os.environ.get("SIGNAL_STEP", "0")), os.environ.get("SIGNAL_RANK", "0")
    original = p.PreemptionCallback.on_step_end

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == step and os.environ.get("RANK", "0") == rank:
            os.kill(os.getpid(), getattr(signal, os.environ.get("SIGNAL_NAME", "SIGTERM")))
        return original(self, args, state, control, **kw)

    p.PreemptionCallback.on_step_end = on_step_end
    from astrosage.cli import app
    app(sys.argv[1:], prog_name="astrosage")
    """
)


def write_recipe(path: Path, out: Path, **cpt) -> Path:
    recipe = {
        "run": {"name": "p", "output_dir": str(out), "seed": 0},
        "model": {"base": "tiny:base", "dtype": "float32"},
        "corpus": {"enabled": False}, "synth": {"enabled": False}, "sft": {"enabled": False},
        "merge": {"enabled": False}, "eval": {"enabled": False}, "publish": {"enabled": False},
        "cpt": {"dataset": str(REPO / "examples/cpt_sample/astro_text_sample.jsonl"), "max_seq_len": 128,
                "learning_rate": 1e-3, "max_steps": 8, "per_device_batch_size": 2, "gradient_checkpointing": False,
                "save_steps": 2, "save_total_limit": 2, "logging_steps": 1, "keep_checkpoints": True, **cpt},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(tmp_path: Path, args: list[str], signal_step: int = 0, launcher: list[str] | None = None, **env):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "SIGNAL_STEP": str(signal_step), **env}
    cmd = [*(launcher or [sys.executable]), str(driver), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=full_env, cwd=REPO)


def final_state(stage_dir: Path):
    from safetensors.torch import load_file

    manifest = json.loads((stage_dir / "manifest.json").read_text())
    return manifest, load_file(stage_dir / "model" / "model.safetensors")


@pytest.mark.slow
def test_sigterm_checkpoints_exits_75_and_resume_matches_uninterrupted_run(tmp_path):
    # reference: the same recipe without interruption (same CLI, same thread count)
    ref = run_cli(tmp_path, ["cpt", str(write_recipe(tmp_path / "ref.yaml", tmp_path / "ref"))])
    assert ref.returncode == 0, ref.stderr[-3000:]

    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out")
    first = run_cli(tmp_path, ["cpt", str(recipe)], signal_step=5)
    assert first.returncode == REQUEUE_EXIT_CODE, first.stderr[-3000:]
    partial = tmp_path / "out" / "p" / "cpt.partial"
    ckpts = partial / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpts)] == [4, 5]  # retention: 2 complete checkpoints kept
    assert (ckpts / "checkpoint-5" / COMPLETE_MARKER).exists()
    assert json.loads((ckpts / "checkpoint-5" / "trainer_state.json").read_text())["global_step"] == 5
    assert json.loads((partial / "preempted.json").read_text())["signal"] == "SIGTERM"
    assert not (tmp_path / "out" / "p" / "cpt").exists()

    # a newer checkpoint that was never marked complete (killed mid-save) must be skipped
    fake = ckpts / "checkpoint-7"
    shutil.copytree(ckpts / "checkpoint-5", fake)
    (fake / COMPLETE_MARKER).unlink()
    (fake / "model.safetensors").write_bytes(b"truncated")
    assert newest_complete(ckpts).name == "checkpoint-5"

    second = run_cli(tmp_path, ["cpt", str(recipe)])
    assert second.returncode == 0, second.stderr[-3000:]
    resumed, resumed_weights = final_state(tmp_path / "out" / "p" / "cpt")
    reference, reference_weights = final_state(tmp_path / "ref" / "p" / "cpt")
    assert resumed["metrics"]["resumed_from_step"] == 5 and resumed["counts"]["steps"] == 8
    assert abs(resumed["metrics"]["final_loss"] - reference["metrics"]["final_loss"]) < 1e-6
    losses = lambda d: [h["loss"] for h in json.loads((d / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    ref_losses, res_losses = losses(tmp_path / "ref" / "p" / "cpt"), losses(tmp_path / "out" / "p" / "cpt")
    assert len(ref_losses) == len(res_losses) == 8
    assert max(abs(a - b) for a, b in zip(ref_losses, res_losses)) < 1e-6  # data order and RNG resumed exactly
    for name, tensor in reference_weights.items():
        assert (tensor - resumed_weights[name]).abs().max().item() < 1e-6, name
    assert not (tmp_path / "out" / "p" / "cpt" / "checkpoints" / "checkpoint-7").exists()


@pytest.mark.slow
def test_sigusr1_during_sft_also_requeues(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", enabled=False)
    data = yaml.safe_load(recipe.read_text())
    data["sft"] = {"dataset": str(REPO / "examples/sft_sample/astro_qa_sample.jsonl"), "max_seq_len": 256,
                   "learning_rate": 1e-3, "max_steps": 4, "per_device_batch_size": 2, "gradient_checkpointing": False,
                   "save_steps": 100}
    recipe.write_text(yaml.safe_dump(data))
    first = run_cli(tmp_path, ["sft", str(recipe)], signal_step=2, SIGNAL_NAME="SIGUSR1")
    assert first.returncode == REQUEUE_EXIT_CODE, first.stderr[-3000:]
    ckpts = tmp_path / "out" / "p" / "sft.partial" / "checkpoints"
    assert newest_complete(ckpts).name == "checkpoint-2"
    second = run_cli(tmp_path, ["sft", str(recipe)])
    assert second.returncode == 0, second.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "p" / "sft" / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from_step"] == 2 and manifest["counts"]["steps"] == 4


def test_rotation_counts_only_complete_checkpoints(tmp_path):
    for step, complete in ((2, True), (4, True), (6, True), (8, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / COMPLETE_MARKER).write_text("{}")
    rotate(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6, 8]  # the unfinished newest never costs a good one
    assert newest_complete(tmp_path).name == "checkpoint-6"
