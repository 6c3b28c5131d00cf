"""Run manager: stage order, manifests, caching, --force, --stages, failures and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astrosage.core.artifacts import atomic_write_json, atomic_write_text, tree_fingerprint
from astrosage.core.stage import StageResult, StageSpec
from astrosage.stages import STAGES
from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import PipelineError, RunManager

CALLS: list[str] = []
FAIL_ONCE: set[str] = set()


def stage_data(ctx):
    """Writes a small dataset whose content depends on the recipe's seed."""
    CALLS.append("data")
    (ctx.work_dir / "data.txt").write_text(f"seed={ctx.recipe.run.seed}\n")
    return StageResult(counts={"rows": 1}, outputs={"data": "data.txt"})


def stage_train(ctx):
    """Reads the upstream output; fails once (after writing progress) when asked to."""
    CALLS.append("train")
    text = ctx.upstream_output("data", "data").read_text()
    progress = ctx.work_dir / "progress.txt"
    resumed = progress.exists()
    progress.write_text("half done\n")
    if "train" in FAIL_ONCE:
        FAIL_ONCE.discard("train")
        raise RuntimeError("simulated crash")
    (ctx.work_dir / "model.txt").write_text(text.upper())
    return StageResult(metrics={"loss": 1.5, "resumed": resumed}, outputs={"model": "model.txt"})


def make_registry() -> dict[str, StageSpec]:
    return {
        "data": StageSpec("data", "make data", ("run.seed",), lambda r: [], lambda r: {}, stage_data),
        "train": StageSpec("train", "train", ("cpt",), lambda r: ["data"], lambda r: {}, stage_train),
    }


def recipe(tmp_path: Path, **changes):
    data = {
        "run": {"name": "t", "output_dir": str(tmp_path / "runs"), "seed": changes.pop("seed", 1)},
        "model": {"base": "tiny:base"},
        "corpus": {"enabled": False},
        "synth": {"enabled": False},
        "merge": {"enabled": False},
        "eval": {"enabled": False},
        "publish": {"enabled": False},
        "cpt": {"learning_rate": changes.pop("lr", 0.1)},
    }
    return load_recipe_dict(data)


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    FAIL_ONCE.clear()


def statuses(outcomes):
    return {o.stage: o.status for o in outcomes}


def manager(tmp_path, stages=("data", "train"), **changes):
    reg = make_registry()
    return RunManager(recipe(tmp_path, **changes), registry={k: reg[k] for k in stages})


def test_runs_in_order_then_caches(tmp_path):
    m = manager(tmp_path)
    assert statuses(m.run()) == {"data": "done", "train": "done"}
    assert CALLS == ["data", "train"]
    assert (m.run_dir / "train" / "model.txt").read_text() == "SEED=1\n"
    CALLS.clear()
    assert statuses(m.run()) == {"data": "cached", "train": "cached"}
    assert CALLS == []


def test_manifest_contents(tmp_path):
    m = manager(tmp_path)
    m.run()
    data = json.loads((m.run_dir / "data" / "manifest.json").read_text())
    train = json.loads((m.run_dir / "train" / "manifest.json").read_text())
    assert train["stage"] == "train" and train["status"] == "complete"
    assert train["inputs"] == {"stage:data": data["artifact_hash"]}
    assert data["artifact_hash"] == tree_fingerprint(m.run_dir / "data")
    assert train["metrics"] == {"loss": 1.5, "resumed": False}
    assert train["outputs"] == {"model": "model.txt"}
    assert train["sections"]["cpt"]["learning_rate"] == 0.1
    assert "transformers" in train["packages"] and "astrosage" in train["packages"]
    assert train["started_at"] <= train["finished_at"]
    assert set(train) >= {"section_hash", "cache_key", "git", "duration_s", "counts"}
    # no marker or partial folders are left behind; the (released) run lock file stays, by design:
    # deleting an flock'd file on release lets two later runs lock two different files
    assert sorted(p.name for p in m.run_dir.iterdir()) == [".astrosage.lock", "data", "train"]


def test_force_and_section_change_rerun(tmp_path):
    manager(tmp_path).run()
    CALLS.clear()
    assert statuses(manager(tmp_path).run(force=True)) == {"data": "done", "train": "done"}
    CALLS.clear()
    # a cpt change reruns only train; a seed change reruns data and, through its new artifact, train
    assert statuses(manager(tmp_path, lr=0.2).run()) == {"data": "cached", "train": "done"}
    CALLS.clear()
    assert statuses(manager(tmp_path, lr=0.2, seed=2).run()) == {"data": "done", "train": "done"}


def test_upstream_artifact_change_invalidates_downstream(tmp_path):
    m = manager(tmp_path)
    m.run()
    m.run(stages=["data"], force=True)  # same content: downstream stays valid
    assert statuses(m.run()) == {"data": "cached", "train": "cached"}
    # tamper with data's artifact + refresh its manifest hash, as a rerun with new output would
    manifest_path = m.run_dir / "data" / "manifest.json"
    (m.run_dir / "data" / "data.txt").write_text("other\n")
    manifest = json.loads(manifest_path.read_text())
    manifest["artifact_hash"] = tree_fingerprint(m.run_dir / "data")
    atomic_write_json(manifest_path, manifest)
    assert statuses(m.run()) == {"data": "cached", "train": "done"}


def test_stage_selection_and_missing_upstream(tmp_path):
    m = manager(tmp_path)
    with pytest.raises(PipelineError, match="stage 'train' needs the output of stage 'data'"):
        m.run(stages=["train"])
    assert not (m.run_dir / "train").exists()
    assert statuses(m.run(stages=["data"])) == {"data": "done", "train": "skipped"}
    assert statuses(m.run(stages=["train"])) == {"data": "skipped", "train": "done"}
    with pytest.raises(PipelineError, match="unknown stage"):
        m.select(["trian"])


def stage_forgetful(ctx):
    """Declares a model output but writes nothing."""
    CALLS.append("forgetful")
    return StageResult(outputs={"model": "model.txt"})


def test_a_stage_without_its_declared_outputs_is_never_sealed(tmp_path):
    reg = make_registry()
    reg["train"] = StageSpec("train", "train", ("cpt",), lambda r: ["data"], lambda r: {}, stage_forgetful, outputs={"model": "file"})
    m = RunManager(recipe(tmp_path), registry=reg)
    with pytest.raises(PipelineError, match=r"stage train finished without its outputs: 'model'.*model.txt is not a file"):
        m.run()
    assert not (m.run_dir / "train").exists() and (m.run_dir / "data" / "manifest.json").is_file()
    # a declared output the result does not even name is refused the same way
    reg["train"] = StageSpec("train", "train", ("cpt",), lambda r: ["data"], lambda r: {}, lambda ctx: StageResult(), outputs={"model": "file"})
    with pytest.raises(PipelineError, match="'model' \\(declared file\\) is not in the stage's outputs"):
        RunManager(recipe(tmp_path), registry=reg).run()


def test_disabled_stage_is_skipped_with_status(tmp_path):
    reg = make_registry()
    # a registry entry named like a recipe section picks up its `enabled` flag
    reg["sft"] = StageSpec("sft", "sft", ("sft",), lambda r: [], lambda r: {}, stage_forgetful)
    data = recipe(tmp_path).model_dump()
    data["sft"]["enabled"] = False
    m = RunManager(load_recipe_dict(data), registry={"data": reg["data"], "sft": reg["sft"]})
    assert statuses(m.run()) == {"data": "done", "sft": "disabled"}
    assert not (m.run_dir / "sft").exists()


def test_failure_keeps_previous_artifact_and_resumes(tmp_path):
    m = manager(tmp_path)
    m.run()
    good = (m.run_dir / "train" / "model.txt").read_text()
    FAIL_ONCE.add("train")
    m2 = manager(tmp_path, lr=0.3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        m2.run()
    # the previous complete artifact is untouched and still the only complete one
    assert (m.run_dir / "train" / "model.txt").read_text() == good
    assert json.loads((m.run_dir / "train" / "manifest.json").read_text())["sections"]["cpt"]["learning_rate"] == 0.1
    partial = m.run_dir / "train.partial"
    assert (partial / "progress.txt").exists() and not (partial / "manifest.json").exists()
    # same configuration: the unfinished work is resumed, not discarded
    # a kill in the middle of an atomic write leaves its temp file: the resumed stage never carries it into its result
    (partial / ".trainer_state.json.x1y2z3.tmp").write_text("{torn")
    outcomes = m2.run()
    assert statuses(outcomes)["train"] == "done"
    assert json.loads((m.run_dir / "train" / "manifest.json").read_text())["metrics"]["resumed"] is True
    assert not partial.exists() and not list((m.run_dir / "train").rglob("*.tmp"))


def test_partial_discarded_when_configuration_changes(tmp_path):
    FAIL_ONCE.add("train")
    with pytest.raises(RuntimeError):
        manager(tmp_path).run()
    outcomes = manager(tmp_path, lr=0.9).run()
    assert statuses(outcomes)["train"] == "done"
    manifest = json.loads((tmp_path / "runs" / "t" / "train" / "manifest.json").read_text())
    assert manifest["metrics"]["resumed"] is False


def test_failed_outcome_is_reported(tmp_path):
    FAIL_ONCE.add("train")
    seen = []
    with pytest.raises(RuntimeError):
        manager(tmp_path).run(on_event=seen.append)
    assert [(o.stage, o.status) for o in seen] == [("data", "done"), ("train", "failed")]
    assert "simulated crash" in seen[-1].detail


def test_atomic_writes_leave_old_content_on_failure(tmp_path, monkeypatch):
    import os

    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"new": 1})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_pipeline_registry_matches_recipe_sections():
    from astrosage.core.recipe import STAGE_SECTIONS

    assert tuple(STAGES) == STAGE_SECTIONS
    for spec in STAGES.values():
        assert spec.summary and spec.sections


def test_atomic_writes_use_the_usual_file_mode(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "m.txt", "x")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_synth_cache_key_ignores_transport_settings(tmp_path):
    from astrosage.core.recipe import section_hash

    base = recipe(tmp_path).model_dump()
    moved = dict(base, synth={**base["synth"], "api_base": "http://127.0.0.1:9999/v1", "concurrency": 3, "timeout_s": 5.0})
    changed = dict(base, synth={**base["synth"], "temperature": 0.1})
    sections = STAGES["synth"].sections
    h = lambda d: section_hash(load_recipe_dict(d), *sections)  # noqa: E731
    assert h(moved) == h(base)
    assert h(changed) != h(base)


def test_kill_between_manifest_and_swap_keeps_the_finished_result(tmp_path):
    m = manager(tmp_path)
    m.run()
    # simulate: the new result of `train` was sealed in .partial, then the process died before the swap
    final, partial = m.run_dir / "train", m.run_dir / "train.partial"
    import shutil

    shutil.copytree(final, partial)
    (partial / "model.txt").write_text("NEWER\n")
    manifest = json.loads((partial / "manifest.json").read_text())
    atomic_write_json(partial / "manifest.json", manifest)
    CALLS.clear()
    assert statuses(m.run()) == {"data": "cached", "train": "cached"}
    assert CALLS == [] and (final / "model.txt").read_text() == "NEWER\n" and not partial.exists()


def test_kill_after_moving_the_old_result_aside_restores_it(tmp_path):
    m = manager(tmp_path)
    m.run()
    final, old = m.run_dir / "train", m.run_dir / "train.old"
    final.rename(old)  # the swap moved the old result aside, then the process died
    CALLS.clear()
    assert statuses(m.run()) == {"data": "cached", "train": "cached"}
    assert CALLS == [] and (final / "model.txt").exists() and not old.exists()
