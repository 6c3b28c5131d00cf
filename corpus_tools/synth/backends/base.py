"""The teacher-backend interface: a batch of chat requests in, one result per request out.

A backend never raises for one bad request (its result carries ``error``); it raises
:class:`BackendError` only when nothing can work (missing package, bad credentials, unknown
model), so the stage stops with a clear message instead of burning through the corpus.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class Backend(ABC):
    """A teacher model. ``name`` and ``model`` go into every item's provenance."""

    name: str = "base"
    model: str = ""

    @abstractmethod
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """One result per request, in order."""

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

        return TransformersBackend(model, batch_size=section.batch_size, dtype=dtype)
    if kind == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(model, seed=seed, dtype=dtype)
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
        )
    raise BackendError(f"unknown synth backend {kind!r}; choose transformers, vllm or openai")
