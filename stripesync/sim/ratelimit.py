"""Stripe's rate limits: a global budget per account and mode, and one per endpoint.

A sliding one-second window per bucket; over budget answers 429 as Stripe does. The
numbers are Stripe's defaults (100/s live, 25/s test, 25/s per endpoint) and are knobs.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from stripesync.sim.errors import SimAPIError


class SlidingWindow:
    def __init__(self) -> None:
        self._hits: dict[tuple[str, ...], deque[float]] = {}
        self._lock = threading.Lock()

    def try_hit(self, bucket: tuple[str, ...], limit: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(bucket, deque())
            while hits and hits[0] <= now - 1.0:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def undo(self, bucket: tuple[str, ...]) -> None:
        with self._lock:
            hits = self._hits.get(bucket)
            if hits:
                hits.pop()


def rate_limited(message: str | None = None) -> SimAPIError:
    return SimAPIError(
        429,
        message
        or "Request rate limit exceeded. You can learn more about rate limits here "
        "https://stripe.com/docs/rate-limits.",
        type="invalid_request_error",
        code="rate_limit",
    )


class RateLimiter:
    """Checks both budgets; a request refused by one does not consume the other."""

    def __init__(self) -> None:
        self.window = SlidingWindow()

    def check(
        self,
        acct: str,
        livemode: bool,
        endpoint: str,
        *,
        live_limit: int,
        test_limit: int,
        endpoint_limit: int,
    ) -> None:
        global_bucket = (acct, "*")
        if not self.window.try_hit(global_bucket, live_limit if livemode else test_limit):
            raise rate_limited()
        if not self.window.try_hit((acct, endpoint), endpoint_limit):
            self.window.undo(global_bucket)
            raise rate_limited()
