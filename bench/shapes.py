"""Model shapes for the benches: real model families' configs with random weights, built locally.

Nothing is downloaded. Each shape is a ``LlamaConfig`` written out here from the family's published
``config.json``; weights are random (``from_config``), so timings are those of the real shape while
scores are meaningless (which is fine: the benches compare speed and check identical predictions).

* ``tiny``: the offline tiny model (``astrosage.core.tiny``: 1,024-token vocabulary) -- the old default.
* ``llama-100m``: SmolLM-135M (a Llama: 30 layers, d=576, 9 heads / 3 KV heads, ffn 1536,
  49,152-token vocabulary, tied embeddings), ~135M parameters.
* ``llama-1b``: Llama-3.2-1B (16 layers, d=2048, 32 heads / 8 KV heads, ffn 8192, 128,256-token
  vocabulary, tied embeddings, llama3 RoPE scaling), ~1.24B parameters.

The tokenizer of a real shape is a byte-level BPE trained here on the AstroMLab-1 questions and the
bundled sample texts (up to 32k merges), so a question has about as many tokens as under a real
tokenizer; the model's embedding and LM head have the family's full vocabulary (ids above the
trained ones are never produced, but every logit is computed, as in the real model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PUBLIC = REPO.parent / "shared" / "data" / "astromlab1_public_mcq.json"

SHAPES: dict[str, dict[str, Any]] = {
    "llama-100m": dict(
        family="SmolLM-135M (Llama)", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
    ),
    "llama-1b": dict(
        family="Llama-3.2-1B", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    ),
    # for gpu_check --dry-run and tests: the same code path, a few seconds on CPU
    "llama-micro": dict(
        family="micro Llama (dry runs)", vocab_size=4096, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, rope_theta=500000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
    ),
}
NAMES = ("tiny", *SHAPES)
TOKENIZER_MERGES = 32000


def describe(shape: str) -> str:
    if shape == "tiny":
        return "tiny (astrosage.core.tiny, 1,024-token vocabulary)"
    s = SHAPES[shape]
    return (f"{shape} = {s['family']}: {s['num_hidden_layers']} layers, d={s['hidden_size']}, "
            f"{s['num_attention_heads']}/{s['num_key_value_heads']} heads, ffn {s['intermediate_size']}, vocab {s['vocab_size']:,}")


def _tokenizer_text() -> list[str]:
    lines: list[str] = []
    if PUBLIC.exists():
        for row in json.loads(PUBLIC.read_text()):
            lines.extend(str(row.get(k, "")) for k in ("question", "A", "B", "C", "D"))
    for path in (REPO / "examples").rglob("*.jsonl"):
        for line in path.open():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "text" in row:
                lines.append(row["text"])
            for m in row.get("messages", []) or []:
                lines.append(m.get("content", ""))
    for path in (REPO / "examples" / "sample_src").rglob("*.tex"):
        lines.extend(path.read_text(errors="replace").splitlines())
    from eval.prompts import PREAMBLE

    lines.append(PREAMBLE + " Answer with the letter of the correct option. Question: Answer: A. B. C. D.")
    return [x for x in lines if x.strip()]


def build_tokenizer(cache: Path, merges: int = TOKENIZER_MERGES):
    """Byte-level BPE (Llama-3 style specials, BOS added) trained on astronomy text; cached in ``cache``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cache = Path(cache)
    if (cache / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cache)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from astrosage.core.tiny import SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=merges, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_tokenizer_text(), trainer=trainer)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token="<|end_of_text|>", pad_token="<|finetune_right_pad_id|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<think>", "</think>"],
        model_max_length=131072, padding_side="right",
    )
    from astrosage.core.tiny import build_tiny_tokenizer

    fast.chat_template = build_tiny_tokenizer().chat_template
    cache.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(cache)
    return AutoTokenizer.from_pretrained(cache)


def config_for(shape: str, tokenizer) -> Any:
    from transformers import LlamaConfig

    spec = {k: v for k, v in SHAPES[shape].items() if k != "family"}
    assert len(tokenizer) <= spec["vocab_size"], (len(tokenizer), spec["vocab_size"])
    return LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, **spec)


def build_model(shape: str, work: Path, dtype: str = "float32", attn: str = "sdpa", seed: int = 0):
    """(model, tokenizer) for ``shape``, random weights (in memory; ``tiny`` is built on disk as usual)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    work = Path(work)
    if shape == "tiny":
        from astrosage.core.models import resolve_model

        path = resolve_model("tiny:base", work / "runs")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation=attn)
        return model.eval(), AutoTokenizer.from_pretrained(path)
    merges = min(TOKENIZER_MERGES, SHAPES[shape]["vocab_size"])
    tok = build_tokenizer(work / f"bench-tokenizer-{merges}", merges)
    cfg = config_for(shape, tok)
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.device("cpu"):
        model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    model.config.use_cache = False
    model.eval()
    model._bench_build_s = time.perf_counter() - t0
    return model, tok


def save_model(shape: str, out: Path, dtype: str = "float32") -> Path:
    """A checkpoint folder (safetensors + tokenizer) for stages that load from disk."""
    out = Path(out)
    if (out / "config.json").exists():
        return out
    model, tok = build_model(shape, out.parent, dtype)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def n_params(model, embeddings: bool = True) -> int:
    """Parameter count; ``embeddings=False`` leaves out the input embedding (the LM head counts: it is a matmul)."""
    total = sum(p.numel() for p in model.parameters())
    if not embeddings:
        total -= model.get_input_embeddings().weight.numel()
        if model.config.tie_word_embeddings:  # tied: the LM head is that same matrix, and it is a matmul
            total += model.get_input_embeddings().weight.numel()
    return total


def forward_flops(model, n_tokens: int, ctx_len: float) -> float:
    """Forward FLOPs: 2 * N_matmul * tokens + attention 4 * layers * d_attn * ctx per token (causal: ctx ~ L/2)."""
    cfg = model.config
    d_attn = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return 2.0 * n_params(model, embeddings=False) * n_tokens + 4.0 * cfg.num_hidden_layers * d_attn * ctx_len * n_tokens


def matmul_peak(dtype: str = "float32", n: int = 2048, seconds: float = 1.5, device: str = "cpu") -> float:
    """Measured dense matmul FLOP/s of this machine (``n`` x ``n`` @ ``n`` x ``n``, best of repeated runs)."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, dtype=dt, device=device)
    b = torch.randn(n, n, dtype=dt, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def machine() -> str:
    import os
    import platform

    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average {load:.2f}"
