"""Loading a checkpoint for scoring: transformers model + tokenizer, eval mode, on the best device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and the device it runs on."""

    model: Any
    tokenizer: Any
    device: Any
    path: str


def pick_device() -> Any:
    """CUDA if available, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    path: str,
    dtype: str = "float32",
    revision: str | None = None,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load model + tokenizer with ``from_pretrained``; the tokenizer gets a pad token if it lacks one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    if attn_implementation == "sdpa_packed":  # a training kernel for packed rows; scoring forwards are plain sdpa
        attn_implementation = "sdpa"
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = pick_device()
    model = AutoModelForCausalLM.from_pretrained(
        path, revision=revision, dtype=torch_dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code
    )
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, path=path)
