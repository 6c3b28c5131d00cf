"""One retry policy for the HTTP clients: the arXiv session (:mod:`corpus_tools.http`) and the
teacher client (:mod:`corpus_tools.synth.backends.openai_backend`).

A failed attempt ``n`` (0-based) waits ``backoff_s * 2**n`` seconds (times a random factor in
[0.5, 1) with ``jitter``), or what the server's ``Retry-After`` header asks (seconds or an HTTP
date), never more than ``max_backoff_s``. Which HTTP statuses are worth another attempt is part
of the policy. The clients keep their own loops because each waits its own way: the arXiv session
hands the delay to its rate limiter (arXiv's spacing counts retries too), the teacher sleeps in
its worker thread. (urllib3's ``Retry`` would bypass that limiter, httpx's transport retries only
failed connections, and tenacity is not a dependency; none of them is needed for this arithmetic.)
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

#: statuses a server may answer when it is overloaded or restarting
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_EXPONENT = 64  # 2**64 backoff units is past any cap; keeps the float finite


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date; None if absent/unparsable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts (``max_retries`` + 1 attempts in all)."""

    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    jitter: bool = False
    retry_status: frozenset[int] = TRANSIENT_STATUS

    def retries(self, status: int) -> bool:
        """Whether an answer with this HTTP status deserves another attempt."""
        return status in self.retry_status

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based); ``retry_after`` is the header's raw value."""
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return min(asked, self.max_backoff_s)
        base = self.backoff_s * 2.0 ** min(attempt, _MAX_EXPONENT)
        if self.jitter:
            base *= 0.5 + random.random() / 2
        return min(base, self.max_backoff_s)
