"""Any OpenAI-compatible chat server (vLLM / SGLang ``serve``, hosted APIs) over HTTP with httpx.

Requests run ``concurrency`` at a time. Timeouts, connection errors, 429 and 5xx are retried
with exponential backoff and jitter (a ``Retry-After`` header wins, capped at ``max_backoff_s``);
other 4xx answers fail that request only; 401/403/404 stop the stage (nothing would work).
The API key is read from the env variable named by ``api_key_env`` and never logged: it is
scrubbed from every error message a result can carry.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx

from ...http import retry_after_seconds as retry_after_s
from .base import Backend, BackendError, GenRequest, GenResult

log = logging.getLogger("astrosage")

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = {401: "unauthorized (check the API key)", 403: "forbidden (check the API key)", 404: "not found (check api_base and the model name)"}


class OpenAIBackend(Backend):
    """Client for ``POST {api_base}/chat/completions``."""

    name = "openai"

    def __init__(
        self,
        api_base: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ):
        self.model = model
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._key = os.environ.get(api_key_env) or None
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        else:
            log.info("synth: no API key in $%s; sending requests without an Authorization header", api_key_env)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._fatal: BackendError | None = None
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "timeouts": 0, "rate_limited": 0}

    # ------------------------------------------------------------------ public
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        self._fatal = None
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="synth-http") as pool:
            results = list(pool.map(self._one, requests))
        if self._fatal is not None:
            raise self._fatal
        return results

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ internals
    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = self.backoff_s * (2**attempt)
        return min(base * (0.5 + random.random() / 2), self.max_backoff_s)

    def _payload(self, req: GenRequest) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": req.messages,
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
        }

    def _one(self, req: GenRequest) -> GenResult:
        payload = self._payload(req)
        error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if self._fatal is not None:
                return GenResult(text=None, error="stopped: " + str(self._fatal), attempts=attempt, seed=req.seed)
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            try:
                resp = self._client.post(self.url, json=payload)
            except httpx.TimeoutException:
                self._count("timeouts")
                error = f"timeout after {self.timeout_s:g}s"
            except httpx.TransportError as exc:
                error = self._scrub(f"connection error: {type(exc).__name__}: {exc}")
            else:
                status = resp.status_code
                if status == 200:
                    result = self._parse(resp, attempt + 1, req.seed)
                    if result is not None:
                        return result
                    error = "malformed response body (not an OpenAI chat completion)"
                elif status in FATAL_STATUS:
                    self._fatal = BackendError(f"teacher server {self.url} answered {status}: {FATAL_STATUS[status]}")
                    return GenResult(text=None, error=str(self._fatal), attempts=attempt + 1, seed=req.seed)
                elif status in RETRY_STATUS:
                    if status == 429:
                        self._count("rate_limited")
                    retry_after = retry_after_s(resp.headers.get("Retry-After"))
                    error = f"HTTP {status}"
                else:
                    detail = self._scrub(resp.text[:200])
                    return GenResult(text=None, error=f"HTTP {status}: {detail}", attempts=attempt + 1, seed=req.seed)
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after)
                log.debug("synth: request failed (%s); retry %d/%d in %.1fs", error, attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        return GenResult(text=None, error=f"{error} (gave up after {self.max_retries + 1} attempts)", attempts=self.max_retries + 1, seed=req.seed)

    def _parse(self, resp: httpx.Response, attempts: int, seed: int) -> GenResult | None:
        try:
            body = resp.json()
            message = body["choices"][0]["message"]
            text = message.get("content")
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if not isinstance(text, str):
            return None
        usage = body.get("usage") or {}
        return GenResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            attempts=attempts,
            seed=seed,
        )
