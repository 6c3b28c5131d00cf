"""The astrosage command line: help, validate, schema, run, tiny-model, exit codes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astrosage.cli import EXIT_BAD_INPUT, app
from astrosage.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

from conftest import all_stages_off_yaml


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_top_level_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("validate", "schema", "run", "tiny-model", "slurm", *STAGES):
        assert command in result.output
    assert "section.field=value" in result.output


@pytest.mark.parametrize("command", ["run", "validate", "cpt", "merge", "tiny-model"])
def test_command_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and "astrosage 0." in result.output


def test_validate_ok(monkeypatch):
    monkeypatch.chdir(REPO)
    result = invoke("validate", "recipes/tiny-cpu.yaml")
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_validate_rejects_bad_value_and_unknown_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(all_stages_off_yaml("cli-test", tmp_path).replace("cpt: {enabled: false}", "cpt: {learning_rate: -1, enabled: false}"))
    result = invoke("validate", str(recipe))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "cpt.learning_rate: -1 is not > 0" in result.output
    assert "bad.yaml" in result.output
    result = invoke("validate", str(REPO / "recipes" / "tiny-cpu.yaml"), "cpt.warmup=0.1")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "cpt.warmup: unknown field" in result.output and "command line" in result.output


def test_schema_json_and_markdown(tmp_path):
    out = tmp_path / "schema.json"
    result = invoke("schema", "--json-schema", str(out))
    assert result.exit_code == 0
    assert "cpt" in json.loads(out.read_text())["properties"]
    result = invoke("schema", "--markdown")
    assert result.exit_code == 0 and "`merge.weight`" in result.output


def test_run_with_everything_disabled_prints_summary(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(all_stages_off_yaml("cli-test", tmp_path / "runs"))
    result = invoke("run", str(recipe))
    assert result.exit_code == 0, result.output
    assert "astrosage run 'cli-test'" in result.output
    assert result.output.count("disabled") >= len(STAGES)


def test_bad_stage_selection(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(all_stages_off_yaml("cli-test", tmp_path / "runs"))
    result = invoke("run", str(recipe), "--stages", "cpt,trian")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "unknown stage(s) trian" in result.output


def test_tiny_model_command(tmp_path):
    result = invoke("tiny-model", str(tmp_path / "m"), "--variant", "instruct", "--seed", "3")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "astrosage_tiny.json").read_text())
    assert meta["variant"] == "instruct" and meta["seed"] == 3
    again = invoke("tiny-model", str(tmp_path / "m"))
    assert again.exit_code == EXIT_BAD_INPUT and "refusing to overwrite" in again.output
    bad = invoke("tiny-model", str(tmp_path / "n"), "--variant", "huge")
    assert bad.exit_code == EXIT_BAD_INPUT


def test_cli_module_entry_point_runs(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "astrosage", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "astrosage" in out.stdout


def test_validate_command_imports_no_heavy_library():
    """`astrosage validate` answers before torch/transformers are even imported."""
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from astrosage.cli import app;"
        "r = CliRunner().invoke(app, ['validate', 'recipes/astrosage-70b.yaml']);"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl', 'mergekit', 'lm_eval', 'deepspeed') if m in sys.modules];"
        "print(r.exit_code, ','.join(heavy) or '-')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.split() == ["0", "-"], out.stdout + out.stderr
    # the tiny recipe names local SFT/CPT data and benchmarks, whose content validate reads: still no heavy import
    tiny = code.replace("recipes/astrosage-70b.yaml", "recipes/tiny-cpu.yaml")
    out = subprocess.run([sys.executable, "-c", tiny], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.split() == ["0", "-"], out.stdout + out.stderr


def test_run_writes_resolved_recipe_and_log(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETSECRET42")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(all_stages_off_yaml("cli-test", tmp_path / "runs"))
    result = invoke("run", str(recipe), "cpt.learning_rate=0.005")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "cli-test"
    import yaml

    resolved = yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text())
    assert resolved["cpt"]["learning_rate"] == 0.005 and resolved["run"]["name"] == "cli-test"
    # the resolved recipe is itself a valid recipe
    from astrosage.core.recipe import load_recipe

    assert load_recipe(run_dir / "recipe.resolved.yaml").cpt.learning_rate == 0.005
    logs = list((run_dir / "logs").glob("*-rank0.log"))
    assert len(logs) == 1 and "run 'cli-test'" in logs[0].read_text()


def leaky_stage(ctx):
    """A stage that logs a token and then fails with it in the exception (as a careless client might)."""
    import logging
    import os

    token = os.environ["HF_TOKEN"]
    logging.getLogger("astrosage").info("connecting with token %s", token)
    raise RuntimeError(f"401 Unauthorized for Authorization: Bearer {token}")


def test_secrets_never_reach_console_or_log_file(tmp_path, monkeypatch, capsys):
    import dataclasses

    token = "hf_SECRETSECRET42xyz"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setitem(STAGES, "cpt", dataclasses.replace(STAGES["cpt"], run=leaky_stage))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(all_stages_off_yaml("cli-test", tmp_path / "runs"))
    result = invoke("run", str(recipe), "cpt.enabled=true")
    assert result.exit_code == 1
    log_text = next((tmp_path / "runs" / "cli-test" / "logs").glob("*-rank0.log")).read_text()
    console = result.output + capsys.readouterr().err
    # the failure is reported (message, traceback, summary) ...
    assert "401 Unauthorized" in log_text and "Traceback" in log_text and "401 Unauthorized" in console
    # ... but the token is not, anywhere
    assert token not in log_text and token not in console
    assert "***" in log_text


def preempting_stage(ctx):
    """Stands in for a training stage that saved a complete checkpoint after SIGUSR1."""
    from astrosage.core.exitcodes import REQUEUE

    (ctx.work_dir / "checkpoint-3").mkdir()
    raise SystemExit(REQUEUE)


def test_preempted_stage_exits_with_requeue_code_and_marker(tmp_path, monkeypatch):
    import dataclasses

    from astrosage.core.exitcodes import REQUEUE

    monkeypatch.setitem(STAGES, "cpt", dataclasses.replace(STAGES["cpt"], run=preempting_stage))
    marker = tmp_path / "markers" / "requeue-1-0"
    monkeypatch.setenv("ASTROSAGE_REQUEUE_MARKER", str(marker))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(all_stages_off_yaml("cli-test", tmp_path / "runs"))
    result = invoke("run", str(recipe), "cpt.enabled=true")
    assert result.exit_code == REQUEUE, result.output
    assert "preempted" in result.output and marker.exists()
    assert (tmp_path / "runs" / "cli-test" / "cpt.partial" / "checkpoint-3").is_dir()
    assert not (tmp_path / "runs" / "cli-test" / "cpt").exists()
