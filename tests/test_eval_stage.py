"""The pipeline's eval stage through the run manager: reports, comparison, caching, checkpoint choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from astrosage.core.models import tiny_dir
from astrosage.core.stage import StageContext, StageResult, StageSpec
from astrosage.stages import STAGES
from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager
from eval.checkpoints import Checkpoint, select_checkpoints
from test_eval_support import make_rows, write_json

OFF = {stage: {"enabled": False} for stage in ("corpus", "synth", "cpt", "sft", "merge", "publish")}


def _recipe(tmp_path: Path, tiny_base: Path, **eval_changes):
    labelled = write_json(tmp_path / "labelled.json", make_rows(12))
    unlabelled = write_json(tmp_path / "public.json", [{k: v for k, v in r.items() if k != "answer"} for r in make_rows(6)])
    data = {
        "run": {"name": "evalrun", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"base": "tiny:base", "dtype": "float32"},
        **OFF,
        "eval": {
            "benchmarks": [{"name": "dev", "path": str(labelled)}, {"name": "public", "path": str(unlabelled)}],
            "batch_size": 4,
            **eval_changes,
        },
    }
    recipe = load_recipe_dict(data)
    # "tiny:base" is built deterministically from (seed, build id); reuse the session's copy instead of rebuilding it
    target = tiny_dir("tiny:base", recipe.run.output_dir, 0)
    if not target.exists():
        shutil.copytree(tiny_base, target)
    return recipe


def test_eval_stage_reports_comparison_and_cache(tmp_path, tiny_base):
    recipe = _recipe(tmp_path, tiny_base)
    manager = RunManager(recipe)
    outcomes = {o.stage: o for o in manager.run(["eval"])}
    assert outcomes["eval"].status == "done"
    stage_dir = manager.run_dir / "eval"
    for bench in ("dev", "public"):
        for name in ("report.json", "report.md", "predictions.jsonl", "topics.png"):
            assert (stage_dir / "base" / bench / name).exists(), (bench, name)
    assert (stage_dir / "base" / "public" / "submission.txt").read_text().count("\n") == 6
    assert (stage_dir / "base" / "dev" / "reliability.png").exists()
    comparison = json.loads((stage_dir / "comparison.json").read_text())
    assert [(r["checkpoint"], r["benchmark"]) for r in comparison["rows"]] == [("base", "dev"), ("base", "public")]
    dev = json.loads((stage_dir / "base" / "dev" / "report.json").read_text())
    assert comparison["rows"][0]["accuracy"] == dev["accuracy"] and comparison["rows"][1]["accuracy"] is None
    assert (stage_dir / "comparison.png").stat().st_size > 0 and "| base | dev | 12 |" in (stage_dir / "comparison.md").read_text()
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["outputs"] == {"report": "comparison.json"}
    assert manifest["metrics"]["base/dev/accuracy"] == dev["accuracy"]
    assert list(manifest["metrics"])[0] == "base/dev/accuracy"
    assert manifest["counts"]["questions"] == 18 and manifest["counts"]["scored_now"] == 18
    assert list((manifest_dir := manager.run_dir / "eval.cache").glob("*.jsonl")) and manifest_dir.parent == manager.run_dir

    again = {o.stage: o for o in RunManager(recipe).run(["eval"])}
    assert again["eval"].status == "cached"

    forced = {o.stage: o for o in RunManager(recipe).run(["eval"], force=True)}
    assert forced["eval"].status == "done"
    counts = json.loads((stage_dir / "manifest.json").read_text())["counts"]
    assert counts["scored_now"] == 0 and counts["from_cache"] == 18  # per-checkpoint cache outside the stage folder


def fake_sft(ctx: StageContext) -> StageResult:
    """Stands in for training: two real checkpoints (copies of the instruct model), like a sweep."""
    src = Path(ctx.recipe.model.base_instruct)
    shutil.copytree(src, ctx.work_dir / "model")
    shutil.copytree(src, ctx.work_dir / "model-w0.5")
    return StageResult(outputs={"model": "model", "model@w0.5": "model-w0.5", "log": "model/config.json"})


def test_every_checkpoint_is_compared_with_the_base(tmp_path, tiny_base, tiny_instruct):
    recipe = _recipe(tmp_path, tiny_base)
    recipe.model.base_instruct = str(tiny_instruct)
    recipe.sft.enabled = True
    sft = StageSpec("sft", "fake sft", ("model",), lambda r: [], lambda r: {}, run=fake_sft)
    manager = RunManager(recipe, registry={"sft": sft, "eval": STAGES["eval"]})
    outcomes = {o.stage: o for o in manager.run()}
    assert outcomes["eval"].status == "done"
    rows = json.loads((manager.run_dir / "eval" / "comparison.json").read_text())["rows"]
    assert [r["checkpoint"] for r in rows if r["benchmark"] == "dev"] == ["base", "sft", "sft@w0.5"]
    by_name = {r["checkpoint"]: r for r in rows if r["benchmark"] == "dev"}
    assert by_name["sft"]["delta_vs_base"] == pytest.approx(by_name["sft"]["accuracy"] - by_name["base"]["accuracy"])
    assert by_name["base"]["delta_vs_base"] is None
    assert by_name["sft"]["model"] == str(manager.run_dir / "sft" / "model")
    assert (manager.run_dir / "eval" / "sft@w0.5" / "dev" / "report.json").exists()
    # identical weights at two paths: identical scores
    assert by_name["sft"]["accuracy"] == by_name["sft@w0.5"]["accuracy"]

    recipe.eval.checkpoints = "final"
    RunManager(recipe, registry={"sft": sft, "eval": STAGES["eval"]}).run()
    rows = json.loads((manager.run_dir / "eval" / "comparison.json").read_text())["rows"]
    assert {r["checkpoint"] for r in rows} == {"sft"}


def test_select_checkpoints():
    found = [
        Checkpoint("base", "base", "/b", "1"),
        Checkpoint("sft", "sft", "/s", "2"),
        Checkpoint("merge", "merge", "/m", "3"),
        Checkpoint("merge@w0.75", "merge", "/m75", "4", primary=False),
    ]
    assert select_checkpoints(found, "all") == found
    assert [c.name for c in select_checkpoints(found, "final")] == ["merge"]
    assert [c.name for c in select_checkpoints(found, ["base", "merge@w0.75"])] == ["base", "merge@w0.75"]
    assert [c.name for c in select_checkpoints(found, ["merge"])] == ["merge", "merge@w0.75"]
    with pytest.raises(ValueError, match="eval.checkpoints: cpt not produced by this run; available: base, sft, merge, merge@w0.75"):
        select_checkpoints(found, ["cpt"])


def test_a_sweeps_selected_model_is_listed_once(tmp_path):
    from astrosage.core.stage import StageContext
    from astrosage.core.recipe import load_recipe_dict
    from eval.checkpoints import list_checkpoints

    recipe = load_recipe_dict({
        "run": {"name": "d", "output_dir": str(tmp_path)}, "model": {"base": "org/base", "base_instruct": "org/inst"},
        "eval": {"benchmarks": [{"name": "b", "path": "b.json"}]},
        **{s: {"enabled": False} for s in ("corpus", "synth", "cpt", "sft", "publish")},
    })
    outputs = {"model": "sweep/w0.75/model", "model@w0.5": "sweep/w0.5/model", "model@w0.75": "sweep/w0.75/model"}
    ctx = StageContext(recipe, "eval", tmp_path / "d", tmp_path / "d" / "eval.partial", {"merge": {"outputs": outputs, "artifact_hash": "x"}})
    names = [c.name for c in list_checkpoints(ctx)]
    assert names == ["base", "merge", "merge@w0.5"]
