"""Polite HTTP for arXiv: one connection, >= N seconds between requests, timeouts, backoff, cache.

arXiv's terms (API, OAI-PMH, e-prints): at most one request every 3 seconds over one
connection, and a User-Agent that identifies you. :class:`PoliteSession` enforces that for every
request it makes (including retries), retries 429/5xx/timeouts/truncated bodies as the shared
:class:`~corpus_tools.retry.RetryPolicy` says (exponential backoff; ``Retry-After`` wins), and can
cache successful bodies on disk so a rerun repeats no query. The clock and sleep are injectable so tests can check the
spacing without waiting.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from astrosage.core.artifacts import atomic_write_bytes

from .retry import RetryPolicy

log = logging.getLogger("astrosage")


class HarvestError(RuntimeError):
    """A request failed after all retries (or with a non-retryable status)."""

    def __init__(self, url: str, message: str, status: int | None = None):
        super().__init__(f"{url}: {message}")
        self.url = url
        self.status = status


class RateLimiter:
    """Spaces calls by at least ``interval`` seconds (monotonic clock), thread-safe.

    ``wait()`` before a request; ``mark()`` when its response has arrived, so the interval runs
    from the end of one request to the start of the next (never less than the terms allow).
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._last: float | None = None
        self._lock = threading.Lock()

    def wait(self, at_least: float = 0.0) -> None:
        """Block until ``interval`` (or ``at_least``, if longer) has passed since the previous call."""
        with self._lock:
            if self._last is not None:
                due = self._last + max(self.interval, at_least)
                now = self.clock()
                if now < due:
                    self.sleep(due - now)
            self._last = self.clock()

    def mark(self) -> None:
        """Restart the interval now (call when a response has finished: spacing is end-to-start)."""
        with self._lock:
            self._last = self.clock()


def user_agent(contact_email: str | None) -> str:
    """User-Agent naming the tool and a contact address (arXiv asks for one)."""
    from astrosage import __version__

    contact = f"; mailto:{contact_email}" if contact_email else ""
    return f"astrosage/{__version__} (+https://github.com/astrosage/astrosage{contact})"


@dataclass
class Reply:
    """What a request returned (from the network or the cache)."""

    url: str
    status: int
    content: bytes
    headers: dict[str, str]


class ResponseCache:
    """Successful response bodies on disk, keyed by sha256 of the URL (written atomically)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.folder / digest[:2] / digest

    def get(self, url: str) -> bytes | None:
        p = self.path(url)
        return p.read_bytes() if p.exists() else None

    def put(self, url: str, content: bytes) -> None:
        atomic_write_bytes(self.path(url), content)

    def drop(self, url: str) -> None:
        self.path(url).unlink(missing_ok=True)


class PoliteSession:
    """A requests.Session wrapper with rate limiting, timeouts, retries and an optional cache.

    ``get(url, headers=...)`` returns a ``requests.Response``-like object, so it can replace the
    session of ``arxiv.Client`` (whose own code has no timeout and no backoff).
    """

    def __init__(
        self,
        contact_email: str | None = None,
        interval: float = 3.0,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 2.0,
        max_backoff: float = 600.0,
        cache: ResponseCache | None = None,
        limiter: RateLimiter | None = None,
        session: requests.Session | None = None,
    ):
        self.limiter = limiter or RateLimiter(interval)
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, backoff, max_backoff)
        self.cache = cache
        self.session = session or requests.Session()
        # one connection at a time: a single pooled connection per host
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent(contact_email)

    def fetch(self, url: str, params: dict[str, str] | None = None, use_cache: bool = True,
              ok_status: tuple[int, ...] = (200,)) -> Reply:
        """GET with retries; raise :class:`HarvestError` when retries are exhausted or the status is final."""
        full = requests.Request("GET", url, params=params).prepare().url or url
        if use_cache and self.cache is not None:
            cached = self.cache.get(full)
            if cached is not None:
                return Reply(full, 200, cached, {})
        wait_extra = 0.0
        last_error = ""
        retries = self.retry.max_retries
        for attempt in range(retries + 1):
            self.limiter.wait(wait_extra)
            try:
                resp = self.session.get(full, timeout=self.timeout)
                content = resp.content  # raises on a truncated body (Content-Length mismatch)
            except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                self.limiter.mark()
                last_error = f"{type(exc).__name__}: {exc}"
                wait_extra = self.retry.delay(attempt)
                log.warning("arXiv request failed (%s), retry %d/%d in >= %.0fs", last_error[:120], attempt + 1, retries, wait_extra)
                continue
            self.limiter.mark()
            if resp.status_code in ok_status:
                if use_cache and self.cache is not None and resp.status_code == 200:
                    self.cache.put(full, content)
                return Reply(full, resp.status_code, content, dict(resp.headers))
            if self.retry.retries(resp.status_code):
                wait_extra = self.retry.delay(attempt, resp.headers.get("Retry-After"))
                last_error = f"HTTP {resp.status_code}"
                log.warning("arXiv answered %s, retry %d/%d in >= %.0fs", resp.status_code, attempt + 1, retries, wait_extra)
                continue
            raise HarvestError(full, f"HTTP {resp.status_code}", resp.status_code)
        raise HarvestError(full, f"gave up after {retries + 1} attempts ({last_error})")

    # --- the subset of requests.Session that arxiv.Client uses
    def get(self, url: str, headers: dict[str, str] | None = None, **_: object) -> requests.Response:
        """requests-compatible GET (for ``arxiv.Client._session``): cached, rate-limited, retried."""
        reply = self.fetch(url)
        resp = requests.Response()
        resp.status_code = reply.status
        resp._content = reply.content
        resp.url = reply.url
        return resp
