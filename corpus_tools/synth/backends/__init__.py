"""Teacher backends: transformers (local), vLLM (offline, GPU), OpenAI-compatible HTTP servers."""

from .base import Backend, BackendError, GenRequest, GenResult, make_backend

__all__ = ["Backend", "BackendError", "GenRequest", "GenResult", "make_backend"]
