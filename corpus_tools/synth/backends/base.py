"""The teacher-backend interface: a batch of chat requests in, one result per request out.

Requests may carry a JSON schema (:mod:`..schemas`); every backend then constrains decoding to
it: transformers through an llguidance logits processor, vLLM through its structured outputs,
OpenAI-compatible servers through ``response_format``. A backend that cannot honour a schema says
so in the result's ``structured`` field (and the log) instead of failing silently.

A backend never raises for one bad request (its result carries ``error``); it raises
:class:`BackendError` only when nothing can work (missing package, bad credentials, unknown
model), so the stage stops with a clear message instead of burning through the corpus.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


class BackendError(RuntimeError):
    """The backend cannot serve any request (configuration, installation or credentials)."""


@dataclass(frozen=True)
class GenRequest:
    """One chat completion to produce."""

    messages: list[dict[str, str]]
    seed: int
    max_new_tokens: int
    temperature: float
    top_p: float
    #: JSON schema the reply must follow (structured outputs); None = free text
    schema: dict[str, Any] | None = field(default=None, compare=False)
    #: the schema's name where a server wants one (OpenAI ``json_schema.name``)
    schema_name: str = "reply"

    def sampling(self) -> dict[str, Any]:
        """Sampling parameters as recorded in provenance."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


@dataclass
class GenResult:
    """The text of one completion, or why there is none."""

    text: str | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    #: the seed that actually drove sampling (a batch-level seed for batched local backends)
    seed: int | None = None
    #: how the reply was constrained: "json_schema", "json_schema_portable" or "none"
    structured: str = "none"
    #: "stop" (the model ended) or "length" (cut off at max_new_tokens)
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


#: progress hook: called with each finished result (from a worker thread for the openai backend)
OnResult = Callable[[GenResult], None]


class Backend(ABC):
    """A teacher model. ``name`` and ``model`` go into every item's provenance."""

    name: str = "base"
    model: str = ""

    @abstractmethod
    def generate(self, requests: Sequence[GenRequest], on_result: OnResult | None = None) -> list[GenResult]:
        """One result per request, in order; ``on_result(result)`` as each one finishes (any order)."""

    def close(self) -> None:
        """Release resources (connections, GPU memory)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_backend(kind: str, model: str, section: Any, seed: int = 0, dtype: str = "auto") -> Backend:
    """Build the backend named ``kind`` (the recipe's ``synth.backend``) for ``model``.

    ``model`` is a local folder or Hub id for transformers/vllm, the served model name for openai.
    """
    if kind == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend(model, batch_size=section.batch_size, dtype=dtype, structured=section.structured_output)
    if kind == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(model, seed=seed, dtype=dtype, structured=section.structured_output)
    if kind == "openai":
        from .openai_backend import OpenAIBackend

        if not section.api_base:
            raise BackendError("synth.backend 'openai' needs synth.api_base (e.g. http://localhost:8000/v1)")
        return OpenAIBackend(
            section.api_base,
            model,
            api_key_env=section.api_key_env,
            concurrency=section.concurrency,
            timeout_s=section.timeout_s,
            max_retries=section.max_retries,
            backoff_s=section.retry_backoff_s,
            max_backoff_s=section.max_backoff_s,
            structured=section.structured_output,
        )
    raise BackendError(f"unknown synth backend {kind!r}; choose transformers, vllm or openai")
