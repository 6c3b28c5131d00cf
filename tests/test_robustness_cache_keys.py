"""Issue 12 #2: cache keys hash only result-affecting settings; unfinished checkpoints are never deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astrosage.core.stage import StageResult, StageSpec
from astrosage.stages import STAGES
from astrosage.core.recipe import load_recipe_dict, section_hash
from astrosage.runner import RunManager

ATTEMPTS: list[dict] = []
FAIL: set[str] = set()


def stage_train(ctx):
    """A training stand-in: saves checkpoint-N in its work folder, resumes from the newest one."""
    ckpts = ctx.work_dir / "checkpoints"
    found = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*")) if ckpts.exists() else []
    ATTEMPTS.append({"resumed_from": found[-1] if found else None, "logging_steps": ctx.recipe.cpt.logging_steps})
    step = (found[-1] if found else 0) + 1
    (ckpts / f"checkpoint-{step}").mkdir(parents=True)
    (ckpts / f"checkpoint-{step}" / "weights.bin").write_bytes(b"w" * step)
    if "train" in FAIL:
        FAIL.discard("train")
        raise RuntimeError("simulated preemption")
    (ctx.work_dir / "model.txt").write_text(f"trained to step {step}\n")
    return StageResult(metrics={"step": step}, outputs={"model": "model.txt"})


def registry() -> dict[str, StageSpec]:
    cpt = STAGES["cpt"]
    return {"cpt": StageSpec("cpt", "train", cpt.sections, lambda r: [], lambda r: {}, stage_train,
                             key_sections=cpt.key_sections)}


def recipe(tmp_path: Path, cpt: dict | None = None, model: dict | None = None, **sections):
    data = {
        "run": {"name": "t", "output_dir": str(tmp_path / "runs"), "seed": 1},
        "model": {"base": "tiny:base", **(model or {})},
        "corpus": {"enabled": False}, "synth": {"enabled": False}, "sft": {"enabled": True},
        "merge": {"enabled": False}, "eval": {"enabled": False}, "publish": {"enabled": False},
        "cpt": {"learning_rate": 0.1, **(cpt or {})},
        **sections,
    }
    return load_recipe_dict(data)


@pytest.fixture(autouse=True)
def _reset():
    ATTEMPTS.clear()
    FAIL.clear()


def run(tmp_path, **kw):
    return RunManager(recipe(tmp_path, **kw), registry=registry()).run()


@pytest.mark.parametrize(
    "edit",
    [
        {"cpt": {"logging_steps": 7}},
        {"cpt": {"save_steps": 3}},
        {"cpt": {"save_total_limit": 9}},
        {"cpt": {"keep_checkpoints": True}},
        {"cpt": {"num_proc": 4}},
        {"model": {"base_instruct": "tiny:instruct"}},
    ],
    ids=lambda e: next(iter(next(iter(e.values())))),
)
def test_editing_a_transport_field_resumes_the_checkpoints(tmp_path, edit):
    FAIL.add("train")
    with pytest.raises(RuntimeError, match="simulated preemption"):
        run(tmp_path)
    partial = tmp_path / "runs" / "t" / "cpt.partial"
    assert (partial / "checkpoints" / "checkpoint-1").is_dir()
    outcomes = run(tmp_path, **edit)
    assert [o.status for o in outcomes] == ["done"]
    assert ATTEMPTS[-1]["resumed_from"] == 1  # the checkpoint was resumed, not wiped
    assert json.loads((tmp_path / "runs" / "t" / "cpt" / "manifest.json").read_text())["metrics"]["step"] == 2
    assert not list((tmp_path / "runs" / "t").glob("cpt.partial*"))
    # and the finished result stays cached under the edit
    assert [o.status for o in run(tmp_path, **edit)] == ["cached"]


def test_a_real_recipe_change_moves_checkpoints_aside(tmp_path, caplog):
    FAIL.add("train")
    with pytest.raises(RuntimeError):
        run(tmp_path)
    with caplog.at_level("WARNING", logger="astrosage"):
        outcomes = run(tmp_path, cpt={"learning_rate": 0.5})
    assert [o.status for o in outcomes] == ["done"]
    assert ATTEMPTS[-1]["resumed_from"] is None  # a new configuration starts fresh
    aside = list((tmp_path / "runs" / "t").glob("cpt.partial.*"))
    assert len(aside) == 1
    assert (aside[0] / "checkpoints" / "checkpoint-1" / "weights.bin").read_bytes() == b"w"
    assert "moved it aside to" in caplog.text and str(aside[0]) in caplog.text


def test_force_also_moves_checkpoints_aside(tmp_path):
    FAIL.add("train")
    with pytest.raises(RuntimeError):
        run(tmp_path)
    RunManager(recipe(tmp_path), registry=registry()).run(force=True)
    assert ATTEMPTS[-1]["resumed_from"] is None
    assert len(list((tmp_path / "runs" / "t").glob("cpt.partial.*"))) == 1


def test_unfinished_work_without_checkpoints_is_discarded(tmp_path):
    def no_ckpt(ctx):
        (ctx.work_dir / "scratch.txt").write_text("x")
        raise RuntimeError("boom")

    import sys

    sys.modules[__name__].no_ckpt = no_ckpt
    reg = {"cpt": StageSpec("cpt", "t", ("cpt",), lambda r: [], lambda r: {}, no_ckpt)}
    with pytest.raises(RuntimeError):
        RunManager(recipe(tmp_path), registry=reg).run()
    with pytest.raises(RuntimeError):
        RunManager(recipe(tmp_path, cpt={"learning_rate": 0.7}), registry=reg).run()
    assert [p.name for p in (tmp_path / "runs" / "t").glob("cpt.partial*")] == ["cpt.partial"]


def _key(spec: str, r) -> str:
    return section_hash(r, *STAGES[spec].sections_for(r))


@pytest.mark.parametrize("stage", ["cpt", "sft"])
def test_training_keys_ignore_transport_but_not_results(tmp_path, stage):
    base = recipe(tmp_path)
    for field, value in [("logging_steps", 3), ("save_steps", 2), ("save_total_limit", 1), ("keep_checkpoints", True), ("num_proc", 8)]:
        assert _key(stage, recipe(tmp_path, **{stage: {field: value}})) == _key(stage, base), field
    assert _key(stage, recipe(tmp_path, model={"base_instruct": "tiny:other"})) == _key(stage, base)
    for field, value in [("learning_rate", 0.3), ("max_steps", 5), ("max_seq_len", 64), ("per_device_batch_size", 2)]:
        assert _key(stage, recipe(tmp_path, **{stage: {field: value}})) != _key(stage, base), field
    assert _key(stage, recipe(tmp_path, model={"dtype": "float16"})) != _key(stage, base)


def test_sft_key_includes_base_instruct_when_its_template_is_used(tmp_path):
    a = recipe(tmp_path, sft={"chat_template": "instruct"}, model={"base_instruct": "tiny:a"})
    b = recipe(tmp_path, sft={"chat_template": "instruct"}, model={"base_instruct": "tiny:b"})
    assert _key("sft", a) != _key("sft", b)
    assert STAGES["sft"].external(a)["base_instruct"] == "tiny:a"


def test_merge_key_includes_eval_settings_only_when_sweeping(tmp_path):
    m = {"base_instruct": "tiny:instruct"}
    bench = [{"name": "b", "path": "examples/mcq/astro_mcq_sample.json"}]
    plain = recipe(tmp_path, model=m, merge={"enabled": True}, eval={"enabled": False, "benchmarks": bench})
    plain_other = recipe(tmp_path, model=m, merge={"enabled": True}, eval={"enabled": False, "benchmarks": bench, "batch_size": 2, "limit": 5})
    assert _key("merge", plain) == _key("merge", plain_other)
    sweep = recipe(tmp_path, model=m, merge={"enabled": True, "sweep": [0.5, 0.75]}, eval={"enabled": False, "benchmarks": bench})
    sweep_other = recipe(tmp_path, model=m, merge={"enabled": True, "sweep": [0.5, 0.75]}, eval={"enabled": False, "benchmarks": bench, "limit": 5})
    assert _key("merge", sweep) != _key("merge", sweep_other)
