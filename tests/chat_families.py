"""Tiny tokenizers (and models) wearing real model families' chat templates and special tokens.

The templates are the public Jinja text in ``tests/fixtures/chat_templates/`` (sources in
SOURCES.md there). Each family lists the special tokens its real tokenizer has, its BOS/EOS and the
ids its ``generation_config.json`` stops at, so the SFT code sees what it would see on the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"

FAMILIES: dict[str, dict] = {
    "llama-3.1-instruct": {
        "template": "llama3_1.jinja",
        "tokens": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
        "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "stops": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
    },
    "llama-3.2-instruct": {
        "template": "llama3_2.jinja",
        "tokens": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
        "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "stops": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
    },
    "qwen2.5-instruct": {
        "template": "qwen2_5.jinja",
        "tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"],
        "bos": None, "eos": "<|im_end|>", "stops": ["<|im_end|>", "<|endoftext|>"],
    },
    "qwen3": {
        "template": "qwen3.jinja",
        "tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<think>", "</think>"],
        "bos": None, "eos": "<|im_end|>", "stops": ["<|im_end|>", "<|endoftext|>"],
    },
    "chatml (dolphin)": {
        "template": "chatml_dolphin.jinja",
        "tokens": ["<|im_start|>", "<|im_end|>", "<s>", "</s>"],
        "bos": "<s>", "eos": "<|im_end|>", "stops": ["<|im_end|>"],
    },
    "mistral-7b-instruct-v0.3": {
        "template": "mistral_v0_3.jinja",
        "tokens": ["<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
        "bos": "<s>", "eos": "</s>", "stops": ["</s>"],
    },
    "gemma-3-it": {
        "template": "gemma3.jinja",
        "tokens": ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>"],
        "bos": "<bos>", "eos": "<eos>", "stops": ["<eos>", "<end_of_turn>"],
    },
    "phi-3-mini-instruct": {
        "template": "phi3.jinja",
        "tokens": ["<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        "bos": "<s>", "eos": "<|endoftext|>", "stops": ["<|endoftext|>", "<|assistant|>", "<|end|>"],
    },
}


def template_text(family: str) -> str:
    return (TEMPLATES / FAMILIES[family]["template"]).read_text(encoding="utf-8")


def family_tokenizer(family: str):
    """The tiny BPE tokenizer + the family's special tokens, BOS/EOS and real chat template."""
    from tokenizers import AddedToken

    from astrosage.core.tiny import build_tiny_tokenizer

    spec = FAMILIES[family]
    tok = build_tiny_tokenizer()
    new = [AddedToken(t, special=True, normalized=False) for t in spec["tokens"] if t not in tok.get_vocab()]
    tok.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
    tok.bos_token = spec["bos"]
    tok.eos_token = spec["eos"]
    tok.chat_template = template_text(family)
    return tok


def stop_ids(family: str, tok) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in FAMILIES[family]["stops"]]


def family_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """A tiny random Llama folder whose tokenizer is the family's (generation_config stops as the real one)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from astrosage.core.tiny import ARCHITECTURE

    tok = family_tokenizer(family)
    config = LlamaConfig(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **ARCHITECTURE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    ids = stop_ids(family, tok)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=ids, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "family.json").write_text(json.dumps({"family": family}))
    return out_dir
