"""Any OpenAI-compatible chat server (vLLM / SGLang ``serve``, hosted APIs) over HTTP with httpx.

Requests run ``concurrency`` at a time. Timeouts, connection errors, 408/409/425, 429 and 5xx are
retried by the shared :class:`~corpus_tools.retry.RetryPolicy`: exponential backoff with jitter (a
``Retry-After`` header wins), capped at ``max_backoff_s``;
other 4xx answers fail that request only; 401/403/404 stop the stage (nothing would work).
The API key is read from the env variable named by ``api_key_env`` and never logged: it is
scrubbed from every error message a result can carry.

Structured outputs: a request with a schema is sent with
``response_format: {"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``
(vLLM, SGLang and hosted APIs enforce it). A server that refuses it (HTTP 400/422 to such a
request) is asked again with the portable schema (no length/count keywords, which strict-mode
hosted APIs reject), then without ``response_format``; each step down is logged once with the
server's words, kept for the rest of the run and reported in every result's ``structured``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx

from ...retry import TRANSIENT_STATUS, RetryPolicy
from .base import Backend, BackendError, GenRequest, GenResult, OnResult

log = logging.getLogger("astrosage")

#: structured-output modes, strongest first; a refusal moves the backend one step down
FORMAT_MODES = ("json_schema", "json_schema_portable", "none")
REFUSED_STATUS = frozenset({400, 422})
RETRY_STATUS = TRANSIENT_STATUS | {408, 409, 425}
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
        structured: bool = True,
    ):
        self.model = model
        #: index into FORMAT_MODES, shared by all request threads (only ever moves down)
        self._mode = 0 if structured else len(FORMAT_MODES) - 1
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(max_retries, backoff_s, max_backoff_s, jitter=True, retry_status=RETRY_STATUS)
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
        self.stats = {"requests": 0, "retries": 0, "timeouts": 0, "rate_limited": 0, "format_refused": 0}

    # ------------------------------------------------------------------ public
    def generate(self, requests: Sequence[GenRequest], on_result: OnResult | None = None) -> list[GenResult]:
        self._fatal = None

        def one(req: GenRequest) -> GenResult:
            res = self._one(req)
            if on_result is not None:
                on_result(res)
            return res

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="synth-http") as pool:
            results = list(pool.map(one, requests))
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

    @property
    def structured_mode(self) -> str:
        """The structured-output mode requests are sent with now."""
        return FORMAT_MODES[self._mode]

    def _payload(self, req: GenRequest, mode: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages,
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
        }
        if req.schema is not None and FORMAT_MODES[mode] != "none":
            from ..schemas import portable_schema

            schema = req.schema if FORMAT_MODES[mode] == "json_schema" else portable_schema(req.schema)
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": req.schema_name, "schema": schema, "strict": True},
            }
        return payload

    def _refused(self, mode: int, resp: httpx.Response) -> None:
        """The server refused ``response_format`` in ``mode``: step down (once per mode, logged)."""
        with self._lock:
            self.stats["format_refused"] += 1
            if self._mode != mode:  # another thread already stepped down
                return
            self._mode = mode + 1
        detail = self._scrub(" ".join(resp.text.split())[:300])
        log.warning(
            "synth: teacher server %s refused response_format %s (HTTP %d: %s); sending %s from now on%s",
            self.url, FORMAT_MODES[mode], resp.status_code, detail,
            FORMAT_MODES[mode + 1] if FORMAT_MODES[mode + 1] != "none" else "no response_format",
            "" if FORMAT_MODES[mode + 1] != "none" else " (JSON is asked for in the prompt only; expect malformed_json rejections)",
        )

    def _one(self, req: GenRequest) -> GenResult:
        error = "no attempt made"
        refusals = 0
        attempt = 0
        retries = self.retry.max_retries
        while attempt <= retries:
            mode = self._mode if req.schema is not None else len(FORMAT_MODES) - 1
            payload = self._payload(req, mode)
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
                        result.structured = FORMAT_MODES[mode] if "response_format" in payload else "none"
                        return result
                    error = "malformed response body (not an OpenAI chat completion)"
                elif status in REFUSED_STATUS and "response_format" in payload and refusals < len(FORMAT_MODES):
                    self._refused(mode, resp)
                    refusals += 1
                    continue  # the same attempt again, one mode down (no backoff: not a transient error)
                elif status in FATAL_STATUS:
                    self._fatal = BackendError(f"teacher server {self.url} answered {status}: {FATAL_STATUS[status]}")
                    return GenResult(text=None, error=str(self._fatal), attempts=attempt + 1, seed=req.seed)
                elif self.retry.retries(status):
                    if status == 429:
                        self._count("rate_limited")
                    retry_after = resp.headers.get("Retry-After")
                    error = f"HTTP {status}"
                else:
                    detail = self._scrub(resp.text[:200])
                    return GenResult(text=None, error=f"HTTP {status}: {detail}", attempts=attempt + 1, seed=req.seed)
            if attempt < retries:
                delay = self.retry.delay(attempt, retry_after)
                log.debug("synth: request failed (%s); retry %d/%d in %.1fs", error, attempt + 1, retries, delay)
                time.sleep(delay)
            attempt += 1
        return GenResult(text=None, error=f"{error} (gave up after {retries + 1} attempts)", attempts=retries + 1, seed=req.seed)

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
        finish = body["choices"][0].get("finish_reason")
        return GenResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            attempts=attempts,
            seed=seed,
            finish_reason=finish if isinstance(finish, str) else None,
        )
