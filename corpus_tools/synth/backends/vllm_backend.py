"""Offline vLLM teacher (``LLM.generate``) for GPU nodes; vllm is imported only when chosen."""

from __future__ import annotations

import logging
from typing import Sequence

from .base import Backend, BackendError, GenRequest, GenResult

log = logging.getLogger("astrosage")

NOT_AVAILABLE = (
    "the 'vllm' synth backend is not available: pip install vllm (it needs a CUDA GPU); "
    "or use synth.backend=transformers, or serve the teacher with `vllm serve` and use synth.backend=openai"
)


def import_vllm():
    """The vllm module, or BackendError with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise BackendError(f"{NOT_AVAILABLE} ({exc})") from None
    return vllm


class VLLMBackend(Backend):
    """All requests of a call go to vLLM at once; it schedules and batches them itself."""

    name = "vllm"

    def __init__(self, model: str, seed: int = 0, dtype: str = "auto"):
        vllm = import_vllm()
        self.model = model
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, seed=seed, dtype=dtype)
        self.tokenizer = self.llm.get_tokenizer()
        log.info("synth: teacher %s loaded with vLLM %s", model, getattr(vllm, "__version__", "?"))

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        prompts = [self.tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests]
        params = [
            self._vllm.SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens, seed=r.seed)
            for r in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out, req in zip(outputs, requests):
            comp = out.outputs[0] if out.outputs else None
            if comp is None:
                results.append(GenResult(text=None, error="empty completion", seed=req.seed))
                continue
            results.append(
                GenResult(
                    text=comp.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(comp.token_ids or []),
                    seed=req.seed,
                )
            )
        return results

    def close(self) -> None:
        self.llm = None
