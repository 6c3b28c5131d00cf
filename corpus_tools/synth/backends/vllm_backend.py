"""Offline vLLM teacher (``LLM.generate``) for GPU nodes; vllm is imported only when chosen.

Requests with a JSON schema get vLLM's guided decoding: ``SamplingParams(structured_outputs=
StructuredOutputsParams(json=schema))`` (vLLM >= 0.10.2), or ``guided_decoding=
GuidedDecodingParams(json=schema)`` on older releases.
"""

from __future__ import annotations

import logging
from typing import Sequence

from .base import Backend, BackendError, GenRequest, GenResult, OnResult

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


def structured_params(vllm):
    """``schema -> SamplingParams kwargs`` for this vLLM version's guided decoding."""
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return lambda schema: {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        pass
    try:
        from vllm.sampling_params import GuidedDecodingParams

        return lambda schema: {"guided_decoding": GuidedDecodingParams(json=schema)}
    except ImportError:
        raise BackendError(
            f"vLLM {getattr(vllm, '__version__', '?')} has no guided decoding (StructuredOutputsParams / GuidedDecodingParams); "
            "upgrade vllm or set synth.structured_output: false"
        ) from None


class VLLMBackend(Backend):
    """All requests of a call go to vLLM at once; it schedules and batches them itself."""

    name = "vllm"

    def __init__(self, model: str, seed: int = 0, dtype: str = "auto", structured: bool = True):
        vllm = import_vllm()
        self.model = model
        self._vllm = vllm
        self._guide = structured_params(vllm) if structured else None
        self.llm = vllm.LLM(model=model, seed=seed, dtype=dtype)
        self.tokenizer = self.llm.get_tokenizer()
        log.info("synth: teacher %s loaded with vLLM %s", model, getattr(vllm, "__version__", "?"))

    def generate(self, requests: Sequence[GenRequest], on_result: OnResult | None = None) -> list[GenResult]:
        prompts = [self.tokenizer.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in requests]
        params = []
        for r in requests:
            extra = self._guide(r.schema) if self._guide is not None and r.schema is not None else {}
            params.append(self._vllm.SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens, seed=r.seed, **extra))
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
                    structured="json_schema" if self._guide is not None and req.schema is not None else "none",
                    finish_reason=getattr(comp, "finish_reason", None),
                )
            )
        if on_result is not None:  # vLLM schedules the whole call at once: report when it returns
            for res in results:
                on_result(res)
        return results

    def close(self) -> None:
        self.llm = None
