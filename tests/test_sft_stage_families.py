"""The sft stage end to end, default settings, on tiny models wearing real families' chat templates,
and a base model without a template that takes the instruct model's (as AstroSage-8B from Llama-3.1-8B)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chat_families import family_model, family_tokenizer, template_text
from astrosage.core.recipe import load_recipe_dict
from astrosage.runner import RunManager

REPO = Path(__file__).resolve().parents[1]
SFT_SAMPLE = REPO / "examples" / "sft_sample" / "astro_qa_sample.jsonl"


def _recipe(out: Path, base: Path, sft: dict | None = None, **model):
    return load_recipe_dict({
        "run": {"name": "fam", "output_dir": str(out), "seed": 0},
        "model": {"base": str(base), "dtype": "float32", **model},
        **{s: {"enabled": False} for s in ("corpus", "synth", "cpt", "merge", "eval", "publish")},
        # default SFT settings (assistant-only loss, bfd packing, reasoning modes), a short run; logging_steps
        # above max_steps: first_loss / final_loss must still be measured
        "sft": {"dataset": str(SFT_SAMPLE), "max_seq_len": 512, "max_steps": 3, "logging_steps": 50,
                "per_device_batch_size": 2, "gradient_checkpointing": False, "learning_rate": 1e-3, **(sft or {})},
    })


@pytest.mark.slow
@pytest.mark.parametrize("family, method, eot", [("llama-3.1-instruct", "derived", "<|eot_id|>"), ("chatml (dolphin)", "derived", "<|im_end|>")])
def test_sft_stage_default_settings_on_real_templates(tmp_path, family, method, eot):
    from transformers import AutoTokenizer, GenerationConfig

    base = family_model(family, tmp_path / "model")
    outcome = {o.stage: o for o in RunManager(_recipe(tmp_path / "runs", base)).run(["sft"])}["sft"]
    assert outcome.status == "done", outcome
    manifest = json.loads((tmp_path / "runs" / "fam" / "sft" / "manifest.json").read_text())
    metrics, counts = manifest["metrics"], manifest["counts"]
    assert metrics["mask_method"] == method and metrics["end_of_turn_token"] == eot
    assert metrics["first_loss"] is not None and metrics["final_loss"] is not None and metrics["steps"] == 3
    assert counts["conversations"] == 61 and counts["assistant_tokens"] > 0 and counts["rows_rejected"] == 0
    folder = tmp_path / "runs" / "fam" / "sft" / "model"
    saved = AutoTokenizer.from_pretrained(folder)
    assert saved.chat_template == template_text(family)  # the checkpoint renders chats as the model family does
    stops = GenerationConfig.from_pretrained(folder).eos_token_id
    assert saved.convert_tokens_to_ids(eot) in (stops if isinstance(stops, list) else [stops])


def _base_without_template(tmp_path: Path) -> tuple[Path, list[str]]:
    """A Llama-3.1-shaped *base* model: no chat template, EOS <|end_of_text|>, chat tokens' rows untrained (zero)."""
    from safetensors.torch import load_file, save_file

    base = family_model("llama-3.1-instruct", tmp_path / "base", seed=1)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    cfg["eos_token"] = "<|end_of_text|>"
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    tok = family_tokenizer("llama-3.1-instruct")
    gen = json.loads((base / "generation_config.json").read_text())
    gen["eos_token_id"] = tok.convert_tokens_to_ids("<|end_of_text|>")
    (base / "generation_config.json").write_text(json.dumps(gen))
    untrained = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    weights = load_file(base / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        for t in untrained:
            weights[name][tok.convert_tokens_to_ids(t)] = 0.0
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    return base, untrained


def test_untrained_rows_are_initialised_to_the_mean_of_trained_rows(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from astrosage.training.chat_setup import init_untrained_rows

    base, untrained = _base_without_template(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    ids = [tok.convert_tokens_to_ids(t) for t in untrained]
    emb = model.get_input_embeddings().weight.detach().clone()
    keep = torch.ones(emb.shape[0], dtype=torch.bool)
    keep[ids] = False
    expected = emb[keep].mean(dim=0)
    probe = ids + [tok.convert_tokens_to_ids("<|begin_of_text|>")]  # a trained special token is left alone
    fixed = init_untrained_rows(model, tok, probe)
    assert sorted(fixed) == sorted(untrained)
    new = model.get_input_embeddings().weight
    for i in ids:
        assert torch.allclose(new[i], expected, atol=1e-6)
        assert torch.count_nonzero(model.get_output_embeddings().weight[i]) > 0
    assert torch.equal(new[probe[-1]], emb[probe[-1]])
    with pytest.raises(ValueError, match="sft.init_untrained_tokens"):
        init_untrained_rows(AutoModelForCausalLM.from_pretrained(base), tok, probe, mode="error")


@pytest.mark.slow
def test_base_model_without_template_takes_the_instruct_template(tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    from astrosage.training.chat_masks import ChatTemplateError

    base, untrained = _base_without_template(tmp_path)
    instruct = family_model("llama-3.1-instruct", tmp_path / "instruct", seed=2)
    # with the default sft.chat_template ('model'), the missing template is refused before training, naming the fix
    with pytest.raises(ChatTemplateError, match="has no chat template; set sft.chat_template to 'instruct'"):
        RunManager(_recipe(tmp_path / "runs-model", base, base_instruct=str(instruct))).run(["sft"])
    recipe = _recipe(tmp_path / "runs", base, sft={"chat_template": "instruct"}, base_instruct=str(instruct))
    recipe.merge.enabled = True  # the merge with the instruct model sees one chat template (its check refuses mismatches)
    recipe.merge.dtype = "float32"
    outcomes = {o.stage: o for o in RunManager(recipe).run(["sft", "merge"])}
    assert outcomes["sft"].status == "done" and outcomes["merge"].status == "done", outcomes
    merged = AutoTokenizer.from_pretrained(tmp_path / "runs" / "fam" / "merge" / "model")
    assert merged.chat_template == template_text("llama-3.1-instruct")
    manifest = json.loads((tmp_path / "runs" / "fam" / "sft" / "manifest.json").read_text())
    assert sorted(manifest["metrics"]["embedding_rows_initialised"]) == sorted(untrained)
    assert manifest["metrics"]["mask_method"] == "derived" and manifest["metrics"]["end_of_turn_token"] == "<|eot_id|>"
    folder = tmp_path / "runs" / "fam" / "sft" / "model"
    saved = AutoTokenizer.from_pretrained(folder)
    assert saved.chat_template == template_text("llama-3.1-instruct") and saved.eos_token == "<|eot_id|>"
    stops = GenerationConfig.from_pretrained(folder).eos_token_id
    assert saved.convert_tokens_to_ids("<|eot_id|>") in stops and saved.convert_tokens_to_ids("<|end_of_text|>") in stops


@pytest.mark.slow
def test_the_tiny_recipe_runs_every_stage_on_a_chatml_chat_model(tmp_path):
    """The issue's report, replayed: `astrosage run recipes/tiny-cpu.yaml` with a ChatML chat model (no generation
    markers, turns end with '<|im_end|>\\n') as model.base and model.base_instruct, default SFT settings."""
    from astrosage.core.recipe import load_recipe

    base = family_model("chatml (dolphin)", tmp_path / "base", seed=0)
    instruct = family_model("chatml (dolphin)", tmp_path / "instruct", seed=1)
    recipe = load_recipe(REPO / "recipes" / "tiny-cpu.yaml", overrides=[
        f"run.output_dir={tmp_path / 'runs'}", f"model.base={base}", f"model.base_instruct={instruct}"])
    outcomes = RunManager(recipe).run()
    assert {o.stage: o.status for o in outcomes} == {s: "done" for s in ("corpus", "synth", "cpt", "sft", "merge", "eval", "publish")}
    sft = json.loads((tmp_path / "runs" / recipe.run.name / "sft" / "manifest.json").read_text())
    assert sft["metrics"]["mask_method"] == "derived" and sft["metrics"]["end_of_turn_token"] == "<|im_end|>"


@pytest.mark.slow
def test_lora_sft_on_a_template_less_base_keeps_the_initialised_rows(tmp_path):
    """LoRA leaves the embeddings frozen: the merged model must carry the rows initialised before training."""
    from safetensors.torch import load_file

    base, untrained = _base_without_template(tmp_path)
    instruct = family_model("llama-3.1-instruct", tmp_path / "instruct", seed=2)
    recipe = _recipe(tmp_path / "runs", base, sft={"chat_template": "instruct", "lora": {"enabled": True, "r": 4, "alpha": 8}},
                     base_instruct=str(instruct))
    outcome = {o.stage: o for o in RunManager(recipe).run(["sft"])}["sft"]
    assert outcome.status == "done", outcome
    tok = family_tokenizer("llama-3.1-instruct")
    ids = [tok.convert_tokens_to_ids(t) for t in untrained]
    before = load_file(base / "model.safetensors")["model.embed_tokens.weight"]
    keep = torch.ones(before.shape[0], dtype=torch.bool)
    keep[ids] = False
    merged = load_file(tmp_path / "runs" / "fam" / "sft" / "model" / "model.safetensors")["model.embed_tokens.weight"]
    for i in ids:
        assert torch.allclose(merged[i], before[keep].mean(dim=0), atol=1e-6)  # initialised, not the zero rows
