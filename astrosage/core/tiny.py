"""Offline tiny Llama models: random weights, a BPE tokenizer trained on bundled astronomy text.

The text (``resources/tiny_corpus.txt``) is a few hand-written paragraphs plus the bundled sample
papers and MCQs from ``examples/``, copied into the package so installs without a checkout work.

They are ordinary Hugging Face folders (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a chat template), so every stage treats them exactly like a Hub
model. ``base`` and ``instruct`` share architecture and tokenizer and differ only in their
random weights, which is what merge tests need.

    build_tiny_model("out/tiny-base", variant="base", seed=0)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Literal

#: Bump when the tiny model's construction changes (invalidates cached copies).
TINY_VERSION = 1

Variant = Literal["base", "instruct"]
VARIANT_SEED_OFFSET: dict[str, int] = {"base": 0, "instruct": 1000}

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "<think>",
    "</think>",
]

#: Llama-3-style chat template with {% generation %} markers (for assistant_only_loss) and
#: <think> reasoning: an assistant message's ``reasoning_content`` is rendered inside
#: <think>...</think>; ``enable_thinking=False`` at inference pre-fills an empty think block so
#: the model answers directly.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- generation -%}"
    "{%- if message['reasoning_content'] is defined and message['reasoning_content'] -%}"
    "{{- '<think>\\n' + message['reasoning_content'] | trim + '\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{{- message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)

ARCHITECTURE = dict(
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=500_000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    initializer_range=0.02,
)
VOCAB_SIZE = 1024


def tiny_training_text() -> str:
    """The bundled astronomy text the tiny tokenizer is trained on."""
    return resources.files("astrosage.resources").joinpath("tiny_corpus.txt").read_text(encoding="utf-8")


def tiny_build_id() -> str:
    """Identifies how tiny models are built: the code version plus a hash of the tokenizer text."""
    import hashlib

    digest = hashlib.sha256(tiny_training_text().encode()).hexdigest()[:10]
    return f"v{TINY_VERSION}-{digest}"


def build_tiny_tokenizer():
    """Train the deterministic byte-level BPE tokenizer; returns a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = tiny_training_text()
    lines = [line for line in text.splitlines() if line.strip()]
    tok.train_from_iterator(lines, trainer=trainer)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|end_of_text|>",
        pad_token="<|finetune_right_pad_id|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<think>", "</think>"],
        model_max_length=ARCHITECTURE["max_position_embeddings"],
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, variant: Variant = "base", seed: int = 0) -> Path:
    """Write a tiny Llama (random weights, seed-deterministic) + tokenizer to ``out_dir``.

    The folder is written to a temp sibling and renamed into place, so a killed build never
    leaves a folder that looks like a model.
    """
    if variant not in VARIANT_SEED_OFFSET:
        raise ValueError(f"unknown tiny model variant {variant!r}; choose 'base' or 'instruct'")
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; refusing to overwrite a model folder")
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=ids["<|end_of_text|>"],
        pad_token_id=ids["<|finetune_right_pad_id|>"],
        **ARCHITECTURE,
    )
    config.dtype = torch.float32
    devices_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed + VARIANT_SEED_OFFSET[variant])
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(devices_state)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]],
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "astrosage_tiny.json").write_text(
            json.dumps({"variant": variant, "seed": seed, "tiny_version": TINY_VERSION}, indent=2) + "\n"
        )
        if out_dir.exists() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / "config.json").exists():
                raise
            # another process (e.g. another rank) finished the same deterministic build first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def count_parameters(model_dir: str | Path) -> int:
    """Number of parameters stored in a model folder's safetensors files."""
    from safetensors import safe_open

    total = 0
    for file in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                total += _prod(fh.get_slice(key).get_shape())
    return total


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
