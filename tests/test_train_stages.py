"""The cpt and sft stages through the run manager on the tiny model: outputs, chaining, caching, logging."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager

REPO = Path(__file__).resolve().parents[1]
CPT_SAMPLE = REPO / "examples" / "cpt_sample" / "astro_text_sample.jsonl"
SFT_SAMPLE = REPO / "examples" / "sft_sample" / "astro_qa_sample.jsonl"

TRAIN = {"learning_rate": 1e-3, "max_steps": 6, "per_device_batch_size": 2, "gradient_checkpointing": False,
         "save_steps": 3, "logging_steps": 1}


def tiny_recipe(out: Path, cpt: dict | None = None, sft: dict | None = None, **sections):
    data = {
        "run": {"name": "t", "output_dir": str(out), "seed": 0},
        "model": {"base": "tiny:base", "dtype": "float32"},
        "corpus": {"enabled": False}, "synth": {"enabled": False}, "merge": {"enabled": False},
        "eval": {"enabled": False}, "publish": {"enabled": False},
        "cpt": {"dataset": str(CPT_SAMPLE), "max_seq_len": 128, "tokenize_shard_docs": 16, **TRAIN, **(cpt or {})},
        "sft": {"dataset": str(SFT_SAMPLE), "max_seq_len": 256, **TRAIN, **(sft or {})},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return load_recipe_dict(data)


@pytest.mark.slow
def test_cpt_then_sft_through_run_manager_then_cached(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = tiny_recipe(tmp_path / "runs")
    outcomes = {o.stage: o for o in RunManager(recipe).run(["cpt", "sft"])}
    assert outcomes["cpt"].status == "done" and outcomes["sft"].status == "done"
    run_dir = tmp_path / "runs" / "t"
    cpt = json.loads((run_dir / "cpt" / "manifest.json").read_text())
    sft = json.loads((run_dir / "sft" / "manifest.json").read_text())
    assert cpt["outputs"] == {"model": "model"} and sft["outputs"] == {"model": "model", "rejected": "rejected.jsonl"}
    assert cpt["counts"]["documents"] == 40 and cpt["counts"]["steps"] == 6
    assert cpt["counts"]["tokens_trained"] == 6 * 2 * 128  # packed rows: every token is a real token
    assert cpt["metrics"]["final_loss"] < cpt["metrics"]["first_loss"]
    assert cpt["metrics"]["tokens_per_s"] > 0 and "padding_fraction" not in cpt["metrics"]  # packed rows: no padding to measure
    assert sft["counts"]["conversations"] == 61 and 0 < sft["counts"]["conversations_with_reasoning"] < 26
    # conversations whose first answer does not fit max_seq_len=256 are dropped and listed, never cut mid-turn
    dropped = [json.loads(line) for line in (run_dir / "sft" / "rejected.jsonl").read_text().splitlines()]
    assert sft["counts"]["examples"] + sft["counts"].get("dropped_too_long", 0) == 61
    assert len(dropped) == sft["counts"].get("dropped_too_long", 0) and all(d["reason"] == "too_long" for d in dropped)
    assert sft["metrics"]["mask_method"] == "markers" and sft["metrics"]["end_of_turn_token"] == "<|eot_id|>"
    assert "stage:cpt" in sft["inputs"]  # sft started from the cpt checkpoint
    assert sft["metrics"]["final_loss"] < sft["metrics"]["first_loss"]
    # the cached tokenization lives outside the stage folder; checkpoints are dropped after success
    assert len(list((run_dir / "tokenized.cache").iterdir())) == 1
    assert not (run_dir / "cpt" / "checkpoints").exists() and (run_dir / "cpt" / "trainer_state.json").exists()
    for stage in ("cpt", "sft"):
        folder = run_dir / stage / "model"
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert model.config.use_cache is True  # restored for inference after training without a cache
        assert "{%- generation -%}" in tok.chat_template and (folder / "model.safetensors").exists()
        assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [1, 4]
    # the same recipe again: both stages are cached
    again = {o.stage: o.status for o in RunManager(recipe).run(["cpt", "sft"])}
    assert again["cpt"] == "cached" and again["sft"] == "cached"


@pytest.mark.slow
def test_sft_refuses_template_eos_mismatch_before_training(tiny_base, tmp_path):
    from astrosage.training.chat import ChatTemplateError

    bad = tmp_path / "bad-model"
    shutil.copytree(tiny_base, bad)
    gen = json.loads((bad / "generation_config.json").read_text())
    gen["eos_token_id"] = 1  # <|end_of_text|> only; turns end with <|eot_id|>
    (bad / "generation_config.json").write_text(json.dumps(gen))
    recipe = tiny_recipe(tmp_path / "runs", model={"base": str(bad)}, cpt={"enabled": False})
    with pytest.raises(ChatTemplateError, match="EOS mismatch"):
        RunManager(recipe).run(["sft"])
    partial = tmp_path / "runs" / "t" / "sft.partial"
    assert not (partial / "checkpoints").exists() and not (tmp_path / "runs" / "t" / "sft").exists()


@pytest.mark.slow
def test_lora_cpt_writes_a_merged_full_model(tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = tiny_recipe(tmp_path / "runs", cpt={"lora": {"enabled": True, "r": 4, "alpha": 8}, "max_steps": 3})
    RunManager(recipe).run(["cpt"])
    folder = tmp_path / "runs" / "t" / "cpt"
    model = AutoModelForCausalLM.from_pretrained(folder / "model")  # plain transformers, no peft needed
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert (folder / "adapter" / "adapter_config.json").exists()
    # the trained adapter really was merged in: adapted weights moved away from the base model's
    from astrosage.core.models import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny:base", tmp_path / "runs", recipe.run.seed))
    merged, original = dict(model.named_parameters()), dict(base.named_parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (merged[q] - original[q]).abs().max().item() > 0
    assert torch.equal(merged["model.norm.weight"], original["model.norm.weight"])  # not a LoRA target: untouched


@pytest.mark.slow
def test_wandb_offline_and_tensorboard_record_training_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    for key in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_MODE", "WANDB_NAME", "WANDB_RESUME", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(key, raising=False)
    recipe = tiny_recipe(tmp_path / "wb", cpt={"max_steps": 4}, logging={"backend": "wandb", "wandb_mode": "offline"})
    RunManager(recipe).run(["cpt"])
    runs = list((tmp_path / "wb" / "t" / "cpt" / "wandb").glob("offline-run-*"))
    records = list(runs[0].glob("*.wandb")) if len(runs) == 1 else []
    assert records, runs
    # the offline transaction log (protobuf records; `wandb sync` uploads it) holds every logged step's metrics
    raw = records[0].read_bytes()
    for key in (b"train/loss", b"train/learning_rate", b"train/grad_norm", b"train/tokens_per_s"):
        assert raw.count(key) >= 4, key  # one history row per optimizer step (logging_steps=1, max_steps=4)

    for key in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_MODE", "WANDB_NAME", "WANDB_RESUME", "WANDB_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    recipe = tiny_recipe(tmp_path / "tb", cpt={"max_steps": 4}, logging={"backend": "tensorboard"})
    RunManager(recipe).run(["cpt"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tmp_path / "tb" / "t" / "cpt" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/tokens_per_s", "train/grad_norm"} <= set(tags), tags
    assert len(acc.Scalars("train/loss")) == 4


@pytest.mark.slow
def test_recipe_can_pick_packed_sdpa_and_several_data_processes(tmp_path):
    """model.attn_implementation=sdpa_packed and cpt/sft.num_proc=2 reach the stages (and eval falls back to sdpa)."""
    recipe = tiny_recipe(tmp_path / "runs", cpt={"num_proc": 2, "max_steps": 2}, sft={"num_proc": 2, "max_steps": 2},
                         model={"attn_implementation": "sdpa_packed"})
    outcomes = {o.stage: o.status for o in RunManager(recipe).run(["cpt", "sft"])}
    assert outcomes["cpt"] == "done" and outcomes["sft"] == "done"
    from eval.modeling import load_model

    loaded = load_model(str(tmp_path / "runs" / "t" / "sft" / "model"), attn_implementation="sdpa_packed")
    assert loaded.model.config._attn_implementation == "sdpa"
