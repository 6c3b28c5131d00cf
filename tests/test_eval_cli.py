"""`astrosage eval run|model|export-lm-eval`, exit code 2 on bad input, and the old forms pointed at the new ones."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from astrosage.cli import app
from astrosage.core.models import tiny_dir
from test_eval_support import make_rows, read_jsonl, write_json

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args])


@pytest.fixture
def bench(tmp_path):
    return write_json(tmp_path / "bench.json", make_rows(8))


def test_standalone_form(tmp_path, tiny_base, bench):
    out = tmp_path / "out"
    result = invoke("model", "--model", str(tiny_base), "--benchmark", str(bench), "--out", str(out), "--method", "choices", "--batch-size", "4", "--limit", "5")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 5 and report["method"] == "choices" and report["settings"]["batch_size"] == 4
    assert len(read_jsonl(out / "predictions.jsonl")) == 5
    assert "accuracy" in result.output and "ece" in result.output  # the final table
    assert f"{100 * report['accuracy']:.1f}%" in result.output


def test_recipe_form_runs_the_stage(tmp_path, tiny_base, bench):
    out_root = tmp_path / "runs"
    recipe = {
        "run": {"name": "clirun", "output_dir": str(out_root), "seed": 0},
        "model": {"base": "tiny:base", "dtype": "float32"},
        **{s: {"enabled": False} for s in ("corpus", "synth", "cpt", "sft", "merge", "publish")},
        "eval": {"benchmarks": [{"name": "dev", "path": str(bench)}]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    shutil.copytree(tiny_base, tiny_dir("tiny:base", out_root, 0))  # same bytes the recipe would build
    result = invoke("run", str(path), "eval.batch_size=4", "eval.limit=3")
    assert result.exit_code == 0, result.output
    report = json.loads((out_root / "clirun" / "eval" / "base" / "dev" / "report.json").read_text())
    assert report["n"] == 3 and report["settings"]["batch_size"] == 4
    assert "eval" in result.output and "base/dev/accuracy" in result.output


def test_export_form(tmp_path, bench):
    result = invoke("export-lm-eval", "--benchmark", str(bench), "--out", str(tmp_path / "task"), "--name", "astro_dev")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "task" / "astro_dev.yaml").read_text())
    assert config["task"] == "astro_dev" and config["doc_to_choice"] == ["A", "B", "C", "D"]
    assert len(read_jsonl(tmp_path / "task" / "astro_dev.jsonl")) == 8
    assert "--include_path" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["model", "--model", "{model}", "--benchmark", "{tmp}/nope.json", "--out", "{tmp}/o"], "nope.json: benchmark file not found"),
        (["model", "--model", "{tmp}/missing-model", "--benchmark", "{bench}", "--out", "{tmp}/o"], "does not exist"),
        (["model", "--model", "{model}", "--benchmark", "{bad}", "--out", "{tmp}/o"], "row 1: field 'answer': 'E'"),
        (["model", "--model", "{model}", "--benchmark", "{bench}"], "needs --model PATH --benchmark FILE --out DIR"),
        (["model", "--benchmark", "{bench}", "--out", "{tmp}/o"], "needs --model PATH --benchmark FILE --out DIR"),
        (["model", "--model", "{model}", "--benchmark", "{bench}", "--out", "{tmp}/o", "--method", "generate", "--backend", "vllm"], "pip install vllm"),
        (["model", "--model", "{model}", "--benchmark", "{bench}", "--out", "{tmp}/o", "--method", "vote"], "vote"),
        (["export-lm-eval", "--benchmark", "{bench}"], "needs --benchmark FILE and --out DIR"),
        (["export-lm-eval", "--benchmark", "{bench}", "--out", "{tmp}/t", "--method", "generate"], "letter or choices"),
        (["export-lm-eval", "--benchmark", "{tmp}/x.txt", "--out", "{tmp}/t"], "unknown file type"),
        (["export-lm-eval", "--model", "{model}", "--benchmark", "{bench}", "--out", "{tmp}/t"], "No such option: --model"),
        (["run", "{tmp}/recipe-missing.yaml"], "not a valid recipe"),
        (["run", "{tmp}/recipe-missing.yaml", "--model", "{model}"], "No such option: --model"),
    ],
    ids=["missing-benchmark", "missing-model", "bad-answer", "no-out", "no-model", "no-vllm", "bad-method", "export-no-out",
         "export-generate", "export-bad-ext", "export-model", "missing-recipe", "run-model"],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, tiny_base, bench, args, message):
    import importlib.util

    if "vllm" in args and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    rows = make_rows(3)
    rows[1]["answer"] = "E"
    bad = write_json(tmp_path / "bad.json", rows)
    (tmp_path / "x.txt").write_text("hello")
    fill = {"model": str(tiny_base), "tmp": str(tmp_path), "bench": str(bench), "bad": str(bad)}
    result = invoke(*[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "o" / "report.json").exists()


def test_recipe_form_rejects_a_bad_benchmark_before_loading_models(tmp_path):
    rows = make_rows(3)
    rows[2].pop("D")
    bad = write_json(tmp_path / "bad.json", rows)
    recipe = {
        "run": {"name": "badrun", "output_dir": str(tmp_path / "runs")},
        "model": {"base": "tiny:base"},
        **{s: {"enabled": False} for s in ("corpus", "synth", "cpt", "sft", "merge", "publish")},
        "eval": {"benchmarks": [{"name": "dev", "path": str(bad)}]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = invoke("run", str(path))
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "eval.benchmarks[0].path" in flat and "row 2: missing field(s) 'D'" in flat, result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, hint",
    [
        (["{recipe}"], "astrosage eval run {recipe}"),
        (["{recipe}", "eval.batch_size=4", "--limit", "3", "--force"], "astrosage eval run {recipe} eval.batch_size=4 eval.limit=3 --force"),
        (["--limit", "3", "{recipe}"], "astrosage eval run {recipe} eval.limit=3"),
        (["--model", "{model}", "--benchmark", "{bench}", "--out", "{tmp}/o"],
         "astrosage eval model --model {model} --benchmark {bench} --out {tmp}/o"),
        (["--benchmark", "{bench}"], "astrosage eval model --benchmark {bench}"),
    ],
    ids=["recipe", "recipe-options", "options-first", "standalone", "standalone-partial"],
)
def test_old_forms_exit_2_naming_the_new_subcommand(tmp_path, tiny_base, bench, args, hint):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("run: {name: old}\n")
    fill = {"model": str(tiny_base), "tmp": str(tmp_path), "bench": str(bench), "recipe": str(recipe)}
    result = invoke(*[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert hint.format(**fill) in " ".join(result.output.split()), result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "runs").exists()


def test_eval_help_lists_the_three_subcommands():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    listed = [line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 1]
    assert [name for name in listed if name in ("run", "model", "export-lm-eval")] == ["run", "model", "export-lm-eval"]
