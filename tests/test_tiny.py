"""The offline tiny model: determinism, size, tokenizer, chat template, model references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astrosage.core.models import model_fingerprint, resolve_model
from astrosage.core.tiny import build_tiny_model, count_parameters


def test_same_seed_same_bytes(tmp_path, tiny_base):
    again = build_tiny_model(tmp_path / "again", variant="base", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_base / name).read_bytes(), name


def test_other_seed_and_instruct_differ_only_in_weights(tmp_path, tiny_base, tiny_instruct):
    other = build_tiny_model(tmp_path / "other", variant="base", seed=1)
    assert (other / "model.safetensors").read_bytes() != (tiny_base / "model.safetensors").read_bytes()
    assert (tiny_instruct / "model.safetensors").read_bytes() != (tiny_base / "model.safetensors").read_bytes()
    for name in ("tokenizer.json", "config.json", "chat_template.jinja"):
        assert (tiny_instruct / name).read_bytes() == (tiny_base / name).read_bytes(), name


def test_size_and_architecture(tiny_base):
    n = count_parameters(tiny_base)
    assert 100_000 <= n <= 900_000, n
    config = json.loads((tiny_base / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "precious"


def test_loads_like_a_hub_model_and_runs(tiny_base):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    batch = tok(["The Sun is a G2V star.", "Pulsars"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and logits.shape[-1] == len(tok)
    assert batch["input_ids"][0, 0].item() == tok.bos_token_id
    # astronomy words are real merges, not single bytes: the tokenizer was trained on the sample
    word = " galaxies"
    assert len(tok(word, add_special_tokens=False)["input_ids"]) <= len(word.encode()) // 2


def test_chat_template_marks_assistant_and_thinking(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    messages = [
        {"role": "system", "content": "You are an astronomer."},
        {"role": "user", "content": "What is a pulsar?"},
        {"role": "assistant", "content": "A rotating neutron star.", "reasoning_content": "Pulsars pulse."},
    ]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert trained == "<think>\nPulsars pulse.\n</think>\n\nA rotating neutron star.<|eot_id|>"
    untrained = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"]) if not m])
    assert "What is a pulsar?" in untrained and "rotating" not in untrained
    direct = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert direct.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n\n</think>\n\n")
    thinking = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert thinking.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    for special in ("<think>", "</think>", "<|eot_id|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


def test_generation_config_stops_on_eot(tiny_base):
    config = json.loads((tiny_base / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    assert tok.convert_tokens_to_ids("<|eot_id|>") in config["eos_token_id"]


def test_resolve_model_builds_tiny_once(tmp_path):
    path = Path(resolve_model("tiny:instruct", tmp_path, seed=0))
    assert (path / "model.safetensors").exists()
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny:instruct", tmp_path, seed=0) == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="unknown tiny model"):
        resolve_model("tiny:huge", tmp_path)


def test_resolve_local_and_hub_refs(tmp_path, tiny_base, monkeypatch):
    monkeypatch.chdir(tiny_base.parent)
    assert resolve_model(tiny_base.name, tmp_path) == str(tiny_base.resolve())
    assert resolve_model("meta-llama/Llama-3.1-8B", tmp_path) == "meta-llama/Llama-3.1-8B"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model("./missing-model", tmp_path)


def test_model_fingerprint(tmp_path, tiny_base):
    assert model_fingerprint(str(tiny_base)) == model_fingerprint(str(tiny_base))
    assert model_fingerprint("org/a") != model_fingerprint("org/a", revision="v2")
    assert model_fingerprint("tiny:base", seed=0) != model_fingerprint("tiny:base", seed=1)


def test_data_files_are_fingerprinted_by_content(tmp_path):
    data = tmp_path / "bench.json"
    data.write_text("[1]")
    first = model_fingerprint(str(data))
    data.write_text("[2]")
    assert model_fingerprint(str(data)) != first
