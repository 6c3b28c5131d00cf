"""Resume-only folders (training checkpoints) are deleted only after the stage is sealed, and a
kill in the middle of any delete never leaves a checkpoint that looks complete but is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import astrosage.runner as runner_mod
from astrosage.core.artifacts import read_json, tree_fingerprint
from astrosage.core.stage import StageResult, StageSpec
from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager
from astrosage.training import checkpoints

CALLS: list[str] = []


def stage_with_checkpoints(ctx):
    CALLS.append("train")
    ckpt = ctx.work_dir / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "optimizer.pt").write_bytes(b"state")
    checkpoints.mark_complete(ckpt, 2)
    (ctx.work_dir / "model.txt").write_text("weights\n")
    return StageResult(outputs={"model": "model.txt"}, discard=("checkpoints",))


def _manager(tmp_path: Path) -> RunManager:
    data = {
        "run": {"name": "t", "output_dir": str(tmp_path / "runs")},
        "model": {"base": "tiny:base"},
        **{s: {"enabled": False} for s in ("corpus", "synth", "merge", "eval", "publish")},
    }
    spec = StageSpec("train", "train", ("cpt",), lambda r: [], lambda r: {}, stage_with_checkpoints)
    return RunManager(load_recipe_dict(data), registry={"train": spec})


def test_checkpoints_go_only_after_the_seal_and_the_hash_leaves_them_out(tmp_path):
    manager = _manager(tmp_path)
    manager.run()
    sealed = manager.run_dir / "train"
    manifest = read_json(sealed / "manifest.json")
    assert not (sealed / "checkpoints").exists()
    assert manifest["discard"] == ["checkpoints"]
    assert manifest["artifact_hash"] == tree_fingerprint(sealed, exclude=("manifest.json",))


def test_a_kill_between_seal_and_delete_is_finished_by_the_next_run(tmp_path, monkeypatch):
    manager = _manager(tmp_path)

    def killed(sealed, names):
        raise KeyboardInterrupt("killed right after the seal")

    monkeypatch.setattr(runner_mod, "_discard", killed)
    with pytest.raises(KeyboardInterrupt):
        manager.run()
    sealed = manager.run_dir / "train"
    assert (sealed / "manifest.json").is_file() and (sealed / "checkpoints").is_dir()
    monkeypatch.undo()
    # a later delete interrupted half-way leaves a renamed folder: cleaned up as well
    (sealed / ".discarding-old").mkdir()
    CALLS.clear()
    outcomes = _manager(tmp_path).run()
    assert CALLS == [] and [o.status for o in outcomes] == ["cached"]
    assert not (sealed / "checkpoints").exists() and not (sealed / ".discarding-old").exists()
    assert (sealed / "model.txt").read_text() == "weights\n"


def test_an_interrupted_checkpoint_delete_never_leaves_a_complete_looking_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        path = root / f"checkpoint-{step}"
        path.mkdir(parents=True)
        (path / "optimizer.pt").write_bytes(b"state")
        checkpoints.mark_complete(path, step)

    def rmtree_killed_midway(path, ignore_errors=False):
        (Path(path) / "optimizer.pt").unlink()  # part of the folder is gone, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.shutil, "rmtree", rmtree_killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.rotate(root, keep=1)
    monkeypatch.undo()
    # the half-deleted checkpoint-2 is not complete; resume still picks the newest good one
    assert not checkpoints.is_complete(root / "checkpoint-2")
    assert checkpoints.newest_complete(root) == root / "checkpoint-6"
    shutil.rmtree(root)
