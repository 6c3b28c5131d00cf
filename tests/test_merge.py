"""Merge stage: real mergekit merges of tiny models, early compatibility checks, sweeps, caching."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

import mergekit  # noqa: E402,F401  - a required library: a missing install must fail, not skip
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from astrosage.merging.check import MergeCompatibilityError, ModelInfo, check_models  # noqa: E402
from astrosage.merging.sweep import SweepError, select_best, write_sweep_record  # noqa: E402
from astrosage.core.stage import StageContext, StageResult, StageSpec
from astrosage.stages import STAGES  # noqa: E402
from astrosage.core.recipe import BenchmarkRef, load_recipe_dict  # noqa: E402
from astrosage.runner import RunManager  # noqa: E402
from astrosage.stages import merge as merge_stage  # noqa: E402

WEIGHTS = "model.safetensors"


def perturbed_copy(src: Path, dst: Path, seed: int = 1, scale: float = 0.02) -> Path:
    """A 'trained' model: a copy of ``src`` with seeded Gaussian noise added to every tensor."""
    shutil.copytree(src, dst)
    tensors = load_file(str(src / WEIGHTS))
    gen = torch.Generator().manual_seed(seed)
    noisy = {k: (v + scale * torch.randn(v.shape, generator=gen)).contiguous() for k, v in tensors.items()}
    save_file(noisy, str(dst / WEIGHTS), metadata={"format": "pt"})
    return dst


def recipe_for(tmp_path: Path, base: str, instruct: str, sft_enabled: bool = False, **merge) -> object:
    # a sweep is scored on a labelled dev benchmark (the recipe refuses a sweep without one)
    benchmarks = [{"name": "dev", "path": str(tmp_path / "dev.json")}] if merge.get("sweep") or merge.get("sweep_density") else []
    return load_recipe_dict(
        {
            "run": {"name": "mt", "output_dir": str(tmp_path / "runs"), "seed": 0},
            "model": {"base": str(base), "base_instruct": str(instruct), "dtype": "float32"},
            "corpus": {"enabled": False},
            "synth": {"enabled": False},
            "cpt": {"enabled": False},
            "sft": {"enabled": sft_enabled},
            "merge": {"dtype": "float32", **merge},
            "eval": {"enabled": False, "benchmarks": benchmarks},
            "publish": {"enabled": False},
        }
    )


def run_merge_stage(tmp_path: Path, trained: Path, base: Path, instruct: Path, **merge) -> tuple[StageResult, Path]:
    """Call the merge stage directly with an 'sft' upstream whose model is ``trained``."""
    recipe = recipe_for(tmp_path, str(base), str(instruct), **merge)
    run_dir = tmp_path / "runs" / "mt"
    (run_dir / "sft").mkdir(parents=True, exist_ok=True)
    if not (run_dir / "sft" / "model").exists():
        shutil.copytree(trained, run_dir / "sft" / "model")
    work = run_dir / "merge.partial"
    work.mkdir(exist_ok=True)
    ctx = StageContext(recipe, "merge", run_dir, work, {"sft": {"outputs": {"model": "model"}}})
    return merge_stage.run(ctx), work


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory) -> Path:
    return perturbed_copy(tiny_base, tmp_path_factory.mktemp("trained") / "model")


# ------------------------------------------------------------------------------ real merges


def test_linear_merge_is_the_weighted_sum(tmp_path, trained, tiny_base, tiny_instruct):
    result, work = run_merge_stage(tmp_path, trained, tiny_base, tiny_instruct, method="linear", weight=0.75)
    assert result.outputs["model"] == "model" and result.outputs["mergekit_config"] == "mergekit.yaml"
    merged = load_file(str(work / "model" / WEIGHTS))
    a, b = load_file(str(trained / WEIGHTS)), load_file(str(tiny_instruct / WEIGHTS))
    assert set(merged) == set(a)
    for name in a:
        torch.testing.assert_close(merged[name], 0.75 * a[name] + 0.25 * b[name], atol=1e-6, rtol=0)
    # the YAML written is the one mergekit ran (mergekit copies it into the model folder too)
    text = (work / "mergekit.yaml").read_text()
    assert text == (work / "model" / "mergekit_config.yml").read_text()
    cfg = yaml.safe_load(text)
    weights = {m["model"]: m["parameters"]["weight"] for m in cfg["models"]}
    run_trained = str(tmp_path / "runs" / "mt" / "sft" / "model")
    assert weights == {run_trained: 0.75, str(tiny_instruct): 0.25}
    # a loadable HF folder with tokenizer, chat template and generation config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "model")
    assert tok.chat_template and "<|start_header_id|>" in tok.chat_template
    assert (work / "model" / "generation_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(work / "model")
    with torch.no_grad():
        logits = model(**tok("The Sun", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    assert json.loads((work / "compatibility.json").read_text())["mismatches"] == []
    # a resumed stage (same work folder, same configuration) does not merge again
    before = (work / "model" / WEIGHTS).stat().st_mtime_ns
    run_merge_stage(tmp_path, trained, tiny_base, tiny_instruct, method="linear", weight=0.75)
    assert (work / "model" / WEIGHTS).stat().st_mtime_ns == before


def test_dare_ties_merge_uses_the_base_and_drops_deltas(tmp_path, trained, tiny_base, tiny_instruct):
    result, work = run_merge_stage(tmp_path, trained, tiny_base, tiny_instruct, method="dare_ties", weight=0.75, density=0.5)
    cfg = yaml.safe_load((work / "mergekit.yaml").read_text())
    assert cfg["merge_method"] == "dare_ties" and cfg["base_model"] == str(tiny_base)
    assert [m["parameters"] for m in cfg["models"]] == [{"weight": 0.75, "density": 0.5}, {"weight": 0.25, "density": 0.5}]
    merged = load_file(str(work / "model" / WEIGHTS))
    base = load_file(str(tiny_base / WEIGHTS))
    name = "model.embed_tokens.weight"
    unchanged = (merged[name] == base[name]).float().mean().item()
    # DARE keeps each delta with probability 0.5: an entry stays at the base value only when both drop (~25%)
    assert 0.15 < unchanged < 0.35, unchanged
    assert result.metrics["density"] == 0.5


@pytest.mark.parametrize("weight,expect", [(1.0, "trained"), (0.0, "instruct")])
def test_slerp_convention_weight_is_the_trained_share(tmp_path, trained, tiny_base, tiny_instruct, weight, expect):
    _, work = run_merge_stage(tmp_path, trained, tiny_base, tiny_instruct, method="slerp", weight=weight)
    assert yaml.safe_load((work / "mergekit.yaml").read_text())["parameters"] == {"t": 1 - weight}
    merged = load_file(str(work / "model" / WEIGHTS))
    target = load_file(str((trained if expect == "trained" else tiny_instruct) / WEIGHTS))
    for name in target:
        torch.testing.assert_close(merged[name], target[name], atol=1e-5, rtol=0)


def test_raw_mergekit_yaml_with_placeholders(tmp_path, trained, tiny_base, tiny_instruct):
    raw = tmp_path / "merge.yaml"
    raw.write_text(
        "merge_method: linear\nbase_model: ${trained}\nmodels:\n"
        "  - model: ${trained}\n    parameters: {weight: 0.5}\n"
        "  - model: ${instruct}\n    parameters: {weight: 0.5}\ndtype: float32\n"
    )
    _, work = run_merge_stage(tmp_path, trained, tiny_base, tiny_instruct, mergekit_yaml=str(raw))
    assert "${" not in (work / "mergekit.yaml").read_text()
    merged = load_file(str(work / "model" / WEIGHTS))
    a, b = load_file(str(trained / WEIGHTS)), load_file(str(tiny_instruct / WEIGHTS))
    for name in a:
        torch.testing.assert_close(merged[name], 0.5 * a[name] + 0.5 * b[name], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ early refusal


def _break_weights(folder: Path) -> None:
    """Make the weights unreadable: any attempt to load them would fail."""
    (folder / WEIGHTS).write_bytes(b"\x00not a safetensors file")


def _mismatch_vocab(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] += 16
    (folder / "config.json").write_text(json.dumps(cfg))
    tok = json.loads((folder / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first = next(iter(vocab))
    vocab[first + "_x"] = vocab.pop(first)
    (folder / "tokenizer.json").write_text(json.dumps(tok))


def _mismatch_hidden(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_size"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))


def _mismatch_template(folder: Path) -> None:
    (folder / "chat_template.jinja").write_text("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")


@pytest.mark.parametrize(
    "breaker,named,fix",
    [
        (_mismatch_vocab, "vocab_size", "merge.tokenizer_source"),
        (_mismatch_hidden, "hidden_size", "model.base_instruct"),
        (_mismatch_template, "chat template", "merge.chat_template"),
    ],
    ids=["vocab", "hidden_size", "chat_template"],
)
def test_mismatch_is_refused_before_any_weight_is_read(tmp_path, trained, tiny_base, tiny_instruct, breaker, named, fix):
    other = tmp_path / "other-instruct"
    shutil.copytree(tiny_instruct, other)
    breaker(other)
    _break_weights(other)  # proves the refusal comes from the small files, not from loading weights
    with pytest.raises(MergeCompatibilityError) as info:
        run_merge_stage(tmp_path, trained, tiny_base, other, method="linear")
    message = str(info.value)
    assert named in message and fix in message and "before reading any weight" in message
    work = tmp_path / "runs" / "mt" / "merge.partial"
    assert not (work / "model").exists() and not (work / ".model.tmp").exists()
    report = json.loads((work / "compatibility.json").read_text())
    assert any(m["check"] == named and m["severity"] == "error" for m in report["mismatches"])


def test_control_corrupt_weights_alone_fail_only_when_weights_are_read(tmp_path, trained, tiny_base, tiny_instruct):
    """Control for the test above: the corrupt file is noticed once mergekit reads weights, after the check passed."""
    other = tmp_path / "other-instruct"
    shutil.copytree(tiny_instruct, other)
    _break_weights(other)
    with pytest.raises(Exception) as info:
        run_merge_stage(tmp_path, trained, tiny_base, other, method="linear")
    assert not isinstance(info.value, MergeCompatibilityError)
    work = tmp_path / "runs" / "mt" / "merge.partial"
    assert json.loads((work / "compatibility.json").read_text())["mismatches"] == []
    assert not (work / "model").exists() and not (work / ".model.tmp").exists()


def test_explicit_chat_template_choice_allows_the_merge(tmp_path, trained, tiny_base, tiny_instruct):
    other = tmp_path / "other-instruct"
    shutil.copytree(tiny_instruct, other)
    _mismatch_template(other)
    _, work = run_merge_stage(tmp_path, trained, tiny_base, other, method="linear", chat_template="instruct")
    assert (work / "model" / "chat_template.jinja").read_text() == (other / "chat_template.jinja").read_text()


def test_union_tokenizer_turns_vocab_mismatch_into_a_warning(tmp_path, tiny_instruct):
    other = tmp_path / "other"
    shutil.copytree(tiny_instruct, other)
    _mismatch_vocab(other)
    models = [ModelInfo.load("trained", str(tiny_instruct)), ModelInfo.load("instruct", str(other), field="model.base_instruct")]
    strict = check_models(models, remaps_vocab=False, chat_template_set=False)
    relaxed = check_models(models, remaps_vocab=True, chat_template_set=False)
    assert {m.check for m in strict.errors} == {"vocab_size", "tokenizer vocabulary (token -> id)"}
    assert relaxed.errors == [] and {m.check for m in relaxed.warnings} >= {"vocab_size"}


def test_hub_models_are_checked_from_their_small_files_only(tmp_path, tiny_instruct, monkeypatch):
    """A Hub id is checked through hf_hub_download of config/tokenizer files (here: an offline cache without weights)."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--astro--tiny-instruct"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_instruct / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    local = ModelInfo.load("trained", str(tiny_instruct))
    hub = ModelInfo.load("instruct", "astro/tiny-instruct", field="model.base_instruct")
    assert hub.vocab_hash == local.vocab_hash and hub.chat_template == local.chat_template
    assert check_models([local, hub], remaps_vocab=False, chat_template_set=False).mismatches == []
    _mismatch_hidden(snapshot)
    report = check_models([local, ModelInfo.load("instruct", "astro/tiny-instruct", field="model.base_instruct")],
                          remaps_vocab=False, chat_template_set=False)
    assert [m.check for m in report.errors] == ["hidden_size"] and "model.base_instruct" in report.format()
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        ModelInfo.load("instruct", "astro/not-downloaded")


# ------------------------------------------------------------------------------ run manager


def fake_sft(ctx: StageContext) -> StageResult:
    """Stand-in training stage: writes a perturbed copy of the base model."""
    perturbed_copy(Path(ctx.resolve_model(ctx.recipe.model.base)), ctx.work_dir / "model", seed=7)
    return StageResult(outputs={"model": "model"})


def test_merge_stage_through_the_run_manager_then_cached(tmp_path):
    registry = {
        "sft": StageSpec(
            name="sft",
            summary="fake sft",
            sections=("model", "sft"),
            upstream=lambda r: [],
            external=lambda r: {"base": r.model.base},
            run=fake_sft,
        ),
        "merge": STAGES["merge"],
    }
    recipe = recipe_for(tmp_path, "tiny:base", "tiny:instruct", method="linear", weight=0.75, sft_enabled=True)
    manager = RunManager(recipe, registry=registry)
    first = manager.run()
    assert [(o.stage, o.status) for o in first] == [("sft", "done"), ("merge", "done")]
    manifest = json.loads((manager.run_dir / "merge" / "manifest.json").read_text())
    assert manifest["outputs"]["model"] == "model" and manifest["outputs"]["mergekit_config"] == "mergekit.yaml"
    assert "stage:sft" in manifest["inputs"]
    merged = load_file(str(manager.run_dir / "merge" / "model" / WEIGHTS))
    sft = load_file(str(manager.run_dir / "sft" / "model" / WEIGHTS))
    inst = load_file(str(Path(recipe_ctx_instruct(recipe)) / WEIGHTS))
    for name in sft:
        torch.testing.assert_close(merged[name], 0.75 * sft[name] + 0.25 * inst[name], atol=1e-6, rtol=0)
    cfg = yaml.safe_load((manager.run_dir / "merge" / "mergekit.yaml").read_text())
    assert cfg["models"][0]["model"] == str(manager.run_dir / "sft" / "model")
    second = RunManager(recipe, registry=registry).run()
    assert [(o.stage, o.status) for o in second] == [("sft", "cached"), ("merge", "cached")]


def recipe_ctx_instruct(recipe) -> str:
    from astrosage.core.models import resolve_model

    return resolve_model(recipe.model.base_instruct, Path(recipe.run.output_dir), recipe.run.seed)


# ------------------------------------------------------------------------------ sweeps


def test_sweep_without_evaluator_fails_before_merging(tmp_path, trained, tiny_base, tiny_instruct, monkeypatch):
    monkeypatch.setitem(sys.modules, "eval.api", None)  # import of eval.api now fails
    with pytest.raises(SweepError, match="needs the evaluator"):
        run_merge_stage(tmp_path, trained, tiny_base, tiny_instruct, method="linear", sweep=[0.5, 0.75])
    assert not (tmp_path / "runs" / "mt" / "merge.partial" / "sweep").exists()


def test_select_best_respects_metric_direction_and_writes_record(tmp_path):
    rows = [
        {"label": "w0.5", "weight": 0.5, "density": None, "accuracy": 0.40, "ece": 0.10, "brier": None, "nll": None, "n": 20},
        {"label": "w0.75", "weight": 0.75, "density": None, "accuracy": 0.55, "ece": 0.20, "brier": None, "nll": None, "n": 20},
        {"label": "w1", "weight": 1.0, "density": None, "accuracy": 0.50, "ece": 0.05, "brier": None, "nll": None, "n": 20},
    ]
    assert select_best(rows, "accuracy")["label"] == "w0.75"
    assert select_best(rows, "ece")["label"] == "w1"
    tied = [dict(rows[0], accuracy=0.5, nll=1.2), dict(rows[1], accuracy=0.5, nll=0.9), dict(rows[2], accuracy=0.5, nll=None)]
    assert select_best(tied, "accuracy")["label"] == "w0.75"  # equal accuracy: the lower NLL wins
    with pytest.raises(SweepError, match="labelled"):
        select_best(rows, "brier")
    best = select_best(rows, "accuracy")
    files = write_sweep_record(tmp_path, rows, "accuracy", best, BenchmarkRef(name="dev", path="dev.json"))
    record = json.loads((tmp_path / files["sweep"]).read_text())
    assert record["selected"] == "w0.75" and len(record["points"]) == 3
    assert "| w0.75 | 0.75 | - | 0.55 |" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _dev_benchmark(tmp_path: Path) -> Path:
    from conftest import SAMPLE_MCQ

    if SAMPLE_MCQ.exists():
        return SAMPLE_MCQ
    items = [
        {"question": f"Which body is number {i}?", "A": "Sun", "B": "Moon", "C": "Mars", "D": "Venus", "answer": "ABCD"[i % 4]}
        for i in range(8)
    ]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(items))
    return path


def test_sweep_merges_scores_and_selects(tmp_path, trained, tiny_base, tiny_instruct):
    bench = _dev_benchmark(tmp_path)
    recipe_extra = {"method": "linear", "sweep": [0.25, 0.75]}
    recipe = load_recipe_dict(
        {
            "run": {"name": "mt", "output_dir": str(tmp_path / "runs"), "seed": 0},
            "model": {"base": str(tiny_base), "base_instruct": str(tiny_instruct), "dtype": "float32"},
            "corpus": {"enabled": False},
            "synth": {"enabled": False},
            "cpt": {"enabled": False},
            "sft": {"enabled": False},
            "merge": {"dtype": "float32", **recipe_extra},
            "eval": {"enabled": False, "benchmarks": [{"name": "dev", "path": str(bench)}], "limit": 8, "batch_size": 4},
            "publish": {"enabled": False},
        }
    )
    run_dir = tmp_path / "runs" / "mt"
    shutil.copytree(trained, run_dir / "sft" / "model")
    work = run_dir / "merge.partial"
    work.mkdir()
    result = merge_stage.run(StageContext(recipe, "merge", run_dir, work, {"sft": {"outputs": {"model": "model"}}}))
    assert {"model@w0.25", "model@w0.75", "model", "sweep", "sweep_plot"} <= set(result.outputs)
    record = json.loads((work / "sweep.json").read_text())
    scores = {p["label"]: p["accuracy"] for p in record["points"]}
    assert all(isinstance(v, float) for v in scores.values())
    best = max(record["points"], key=lambda p: (p["accuracy"], -p["nll"]))["label"]  # ties: lower NLL
    assert record["selected"] == best and result.outputs["model"] == f"sweep/{best}/model"
    assert (work / "sweep.png").exists() and (work / result.outputs["model"] / WEIGHTS).exists()


def test_sweep_points_cross_weights_and_densities(tmp_path):
    from astrosage.merging.sweep import sweep_points

    recipe = recipe_for(tmp_path, "tiny:base", "tiny:instruct", method="dare_ties", sweep=[0.5, 0.75], sweep_density=[0.3, 0.6])
    assert [p.label for p in sweep_points(recipe)] == ["w0.5-d0.3", "w0.75-d0.3", "w0.5-d0.6", "w0.75-d0.6"]
    single = recipe_for(tmp_path, "tiny:base", "tiny:instruct", method="linear", weight=0.75)
    assert [p.label for p in sweep_points(single)] == ["w0.75"]
    with pytest.raises(Exception, match="only applies to ties / dare_ties"):
        recipe_for(tmp_path, "tiny:base", "tiny:instruct", method="linear", sweep_density=[0.5])
