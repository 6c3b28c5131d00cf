"""Issue 12 #5: secrets never land in recipes' *_env fields, model cards, upload folders, manifests or resolved recipes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from astrosage.cli import EXIT_BAD_INPUT, app
from astrosage.core.logs import looks_like_token, redact_tokens
from astrosage.core.stage import StageContext, StageResult, StageSpec
from astrosage.stages import STAGES
from astrosage.core.recipe import RecipeError, load_recipe_dict
from astrosage.runner import RunManager

REPO = Path(__file__).resolve().parents[1]
HF = "hf_pastedTOKENforTESTS0123456789abcdefg"
SK = "sk-proj-pastedKEYforTESTS0123456789abcdef"
WANDB = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("value", [HF, SK, WANDB, "ghp_" + "a1" * 18, "AKIAABCDEFGHIJKLMNOP"])
@pytest.mark.parametrize("field", ["synth.api_key_env", "publish.token_env"])
def test_a_token_in_an_env_field_is_refused_and_not_echoed(tmp_path, field, value):
    result = CliRunner().invoke(app, ["validate", str(REPO / "recipes" / "tiny-cpu.yaml"), f"run.output_dir={tmp_path}", f"{field}={value}"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert field in result.output and "looks like a secret token" in " ".join(result.output.split())
    assert value not in result.output


@pytest.mark.parametrize("value", ["MY TOKEN", "1TOKEN", "HF-TOKEN", "$HF_TOKEN", ""])
def test_env_fields_take_variable_names(value):
    with pytest.raises(RecipeError, match="not an environment variable name"):
        load_recipe_dict({"run": {"name": "t"}, "model": {"base": "tiny:base"}, "publish": {"token_env": value, "dry_run": True},
                          "merge": {"enabled": False}, "eval": {"enabled": False}})


def test_redaction_keeps_hashes_and_names():
    sha = "9c64d21" + "0" * 33
    assert redact_tokens(f"git {sha}, cache {'ab' * 32}, HF_TOKEN, meta-llama/Llama-3.1-8B") == f"git {sha}, cache {'ab' * 32}, HF_TOKEN, meta-llama/Llama-3.1-8B"
    assert redact_tokens(f"WANDB_API_KEY={WANDB} {HF} {SK}") == "WANDB_API_KEY=*** *** ***"
    assert redact_tokens('{"api_key": "' + WANDB + '"}') == '{"api_key": "***"}'
    assert not looks_like_token("HF_TOKEN") and looks_like_token(WANDB)


CALLS = []


def stage_with_secrets(ctx: StageContext) -> StageResult:
    CALLS.append(1)
    (ctx.work_dir / "out.txt").write_text("x")
    return StageResult(metrics={"note": f"teacher said {SK}", "loss": 1.0}, outputs={"out": "out.txt"})


def test_manifests_and_resolved_recipe_redact_token_shaped_values(tmp_path):
    recipe = load_recipe_dict({
        "run": {"name": "t", "output_dir": str(tmp_path / "runs")}, "model": {"base": "tiny:base"},
        "corpus": {"enabled": False}, "synth": {"enabled": False, "api_base": "https://me:s3cretpass@teacher.example/v1"},
        "sft": {"direct_system_prompt": f"key {HF}"}, "merge": {"enabled": False}, "eval": {"enabled": False}, "publish": {"enabled": False},
    })
    reg = {"sft": StageSpec("sft", "t", ("sft", "synth"), lambda r: [], lambda r: {}, stage_with_secrets)}
    m = RunManager(recipe, registry=reg)
    m.run()
    m.write_resolved_recipe("r.yaml", [f"sft.direct_system_prompt=key {HF}"])
    manifest_text = (m.run_dir / "sft" / "manifest.json").read_text()
    resolved = (m.run_dir / "recipe.resolved.yaml").read_text()
    for text in (manifest_text, resolved):
        assert HF not in text and "s3cretpass" not in text
    manifest = json.loads(manifest_text)
    assert manifest["sections"]["sft"]["direct_system_prompt"] == "key ***" and SK not in manifest_text
    assert manifest["sections"]["synth"]["api_base"] == "https://me:***@teacher.example/v1"
    assert "key ***" in resolved
    # hashes are intact: the next run is a cache hit
    assert [o.status for o in RunManager(recipe, registry=reg).run()] == ["cached"] and len(CALLS) == 1


def careless_merge(ctx: StageContext) -> StageResult:
    """A checkpoint whose config carries a pasted token (e.g. from a training script's metadata)."""
    src = Path(ctx.resolve_model(ctx.recipe.model.base))
    model = ctx.work_dir / "model"
    shutil.copytree(src, model)
    config = json.loads((model / "config.json").read_text())
    config["_hub_token"] = HF
    (model / "config.json").write_text(json.dumps(config))
    return StageResult(outputs={"model": "model"})


def test_publish_card_and_upload_folder_are_redacted(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from test_publish import _recipe

    recipe = _recipe(tmp_path, dry_run=True)
    recipe.synth.api_base = "https://me:s3cretpass@teacher.example/v1"
    recipe.sft.thinking_system_prompt = f"Think. {SK}"
    spec = StageSpec("merge", "careless", ("model",), lambda r: [], lambda r: {}, careless_merge)
    evals = StageSpec("eval", "fake eval", ("model",), lambda r: [], lambda r: {}, __import__("test_publish").fake_eval)
    manager = RunManager(recipe, registry={"merge": spec, "eval": evals, "publish": STAGES["publish"]})
    manager.run()
    upload = manager.run_dir / "publish" / "upload"
    card = (upload / "README.md").read_text()
    assert "Think. ***" in card  # the recipe is shown, its secrets are not
    for f in manager.run_dir.rglob("*"):
        if f.is_file() and "merge" not in f.relative_to(manager.run_dir).parts[:1]:
            data = f.read_bytes()
            assert HF.encode() not in data and SK.encode() not in data and b"s3cretpass" not in data, f
    assert json.loads((upload / "config.json").read_text())["_hub_token"] == "***"
    assert json.loads((manager.run_dir / "merge" / "model" / "config.json").read_text())["_hub_token"] == HF  # the checkpoint is untouched
    assert "config.json" in json.loads((manager.run_dir / "publish" / "publish_plan.json").read_text())["redacted"]
    ModelCard.load(upload / "README.md")  # still a valid card
