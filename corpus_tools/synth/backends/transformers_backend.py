"""Local teacher with transformers ``generate`` (CPU or one GPU); batched with left padding.

Sampling in a batch shares one random stream, seeded with the batch's first request seed
(reported as the result's ``seed``); batches are deterministic, so runs are reproducible.
Requests with a JSON schema are decoded under that schema's grammar (:mod:`.constrained`,
llguidance), row by row, so a batch may mix tasks.

A small model (< ``ONE_THREAD_PARAMS`` parameters) on CPU generates on one torch thread: its
matmuls gain nothing from more, and idle OpenMP workers spinning between steps starve the
grammar's mask computation on a busy machine (measured on 2 cores: 69 s on two threads vs 2.5 s
on one for the same constrained batch).
"""

from __future__ import annotations

import logging
from typing import Sequence

from .base import Backend, BackendError, GenRequest, GenResult, OnResult

log = logging.getLogger("astrosage")

ONE_THREAD_PARAMS = 50_000_000


class TransformersBackend(Backend):
    """A chat model loaded with ``AutoModelForCausalLM``; uses the tokenizer's chat template."""

    name = "transformers"

    def __init__(self, model: str, batch_size: int = 8, dtype: str = "auto", structured: bool = True):
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
        self.one_thread = self.device == "cpu" and sum(p.numel() for p in self.lm.parameters()) < ONE_THREAD_PARAMS
        self.grammars = None
        if structured:
            from .constrained import SchemaGrammars

            vocab = max(int(self.lm.config.get_text_config().vocab_size), len(self.tokenizer))
            self.grammars = SchemaGrammars(self.tokenizer, vocab, _eos_ids(self.lm, self.tokenizer))
        log.info(
            "synth: teacher %s loaded with transformers on %s (%s)%s", model, self.device, torch_dtype,
            "; replies constrained to the task's JSON schema (llguidance)" if structured else "",
        )

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult | None = None) -> list[GenResult]:
        results: list[GenResult] = []
        for start in range(0, len(requests), self.batch_size):
            batch = self._batch(list(requests[start : start + self.batch_size]))
            results.extend(batch)
            if on_result is not None:
                for res in batch:
                    on_result(res)
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
        processor = None
        if self.grammars is not None and any(r.schema is not None for r in batch):
            processor = self.grammars.processor([r.schema for r in batch])
            kwargs["logits_processor"] = [processor]
        torch.manual_seed(first.seed)
        threads = torch.get_num_threads()
        if self.one_thread:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                out = self.lm.generate(**enc, **kwargs)
        finally:
            torch.set_num_threads(threads)
        new = out[:, enc["input_ids"].shape[1] :]
        eos = _eos_ids(self.lm, self.tokenizer)
        results = []
        for i, (row, req, mask) in enumerate(zip(new.tolist(), batch, enc["attention_mask"].tolist())):
            n = next((j for j, t in enumerate(row) if t in eos), len(row))
            text = self.tokenizer.decode(row[:n], skip_special_tokens=False)
            for tok in (self.tokenizer.pad_token, self.tokenizer.eos_token):
                if tok:
                    text = text.replace(tok, "")
            structured = "json_schema" if processor is not None and req.schema is not None else "none"
            extra = {}
            if processor is not None and i in processor.errors:
                structured, extra = "none", {"grammar_error": processor.errors[i][:300]}
                log.warning("synth: grammar matcher failed for one request (left unconstrained): %s", processor.errors[i][:200])
            results.append(GenResult(
                text=text, prompt_tokens=int(sum(mask)), completion_tokens=n, seed=first.seed, structured=structured,
                finish_reason="stop" if n < len(row) else "length", extra=extra,
            ))
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
