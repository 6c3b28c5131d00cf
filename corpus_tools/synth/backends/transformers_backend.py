"""Local teacher with transformers ``generate`` (CPU or one GPU); batched with left padding.

Sampling in a batch shares one random stream, seeded with the batch's first request seed
(reported as the result's ``seed``); batches are deterministic, so runs are reproducible.
"""

from __future__ import annotations

import logging
from typing import Sequence

from .base import Backend, BackendError, GenRequest, GenResult

log = logging.getLogger("astrosage")


class TransformersBackend(Backend):
    """A chat model loaded with ``AutoModelForCausalLM``; uses the tokenizer's chat template."""

    name = "transformers"

    def __init__(self, model: str, batch_size: int = 8, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.batch_size = batch_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the teacher tokenizer {model!r}: {exc}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"teacher {model!r} has no chat template; use an instruct/chat model")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = _torch_dtype(dtype, self.device)
        try:
            self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the teacher model {model!r}: {exc}") from None
        log.info("synth: teacher %s loaded with transformers on %s (%s)", model, self.device, torch_dtype)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        results: list[GenResult] = []
        for start in range(0, len(requests), self.batch_size):
            results.extend(self._batch(list(requests[start : start + self.batch_size])))
        return results

    def _batch(self, batch: list[GenRequest]) -> list[GenResult]:
        import torch

        first = batch[0]
        texts = [self.tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in batch]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = first.temperature > 0
        kwargs = dict(max_new_tokens=max(r.max_new_tokens for r in batch), do_sample=sample, pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
        torch.manual_seed(first.seed)
        with torch.inference_mode():
            out = self.lm.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        eos = _eos_ids(self.lm, self.tokenizer)
        results = []
        for row, req, mask in zip(new.tolist(), batch, enc["attention_mask"].tolist()):
            n = next((i for i, t in enumerate(row) if t in eos), len(row))
            text = self.tokenizer.decode(row[:n], skip_special_tokens=False)
            for tok in (self.tokenizer.pad_token, self.tokenizer.eos_token):
                if tok:
                    text = text.replace(tok, "")
            results.append(GenResult(text=text, prompt_tokens=int(sum(mask)), completion_tokens=n, seed=first.seed))
        return results

    def close(self) -> None:
        self.lm = None  # type: ignore[assignment]


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def _eos_ids(lm, tokenizer) -> set[int]:
    ids = lm.generation_config.eos_token_id if lm.generation_config is not None else None
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is not None:
        found.add(tokenizer.pad_token_id)
    return found
