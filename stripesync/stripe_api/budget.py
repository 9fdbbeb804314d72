"""Pacing requests under Stripe's rate limits, and what to do when one is hit anyway.

Stripe allows about 100 requests/s per account in live mode and 25/s in test mode, and
about 25/s on any single endpoint; more are answered 429. The SDK retries connection
errors, 409 and 5xx, but not a plain 429 (only one carrying ``Stripe-Should-Retry:
true``), so pacing is stripesync's job. `RequestBudget` is one token bucket for the
account and one per endpoint (method + path template), set just under those limits. A
429 halves the endpoint's rate (and trims the account's); rates creep back linearly
over a few seconds (AIMD), so a budget shared with another client converges instead of
oscillating.

When more callers wait than the budget allows, the next request goes to the waiter with
the highest priority among those whose endpoint has a token: the backfill gives each
stream its estimated remaining pages as priority, so the largest stream runs at its
endpoint's full rate from the start and the smaller ones fill the rest of the account's
budget. That is what makes an import finish close to max(total pages / account rate,
largest stream's pages / endpoint rate).

`RetryPolicy` is the retry policy, as data, in one place.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "BudgetLimits",
    "RequestBudget",
    "RetryPolicy",
    "TokenBucket",
    "budget_for",
    "endpoint_key",
]


@dataclass(frozen=True)
class BudgetLimits:
    """Requests per second: the account's budget and each endpoint's."""

    account: float
    endpoint: float

    @classmethod
    def for_mode(
        cls, livemode: bool, *, live: float = 95.0, test: float = 23.0, endpoint: float = 23.0
    ) -> BudgetLimits:
        """Just under Stripe's defaults: 100/s live, 25/s test, 25/s per endpoint."""
        return cls(account=live if livemode else test, endpoint=endpoint)


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried, how often and how long to wait: the one place that says so.

    * connection errors, 409 and 5xx: the SDK's own retries (``max_network_retries``);
    * 429: ``rate_limit_retries`` more attempts per request, after ``delay(attempt)``
      (exponential from ``backoff_base`` to ``backoff_cap``, with jitter; a
      ``Retry-After`` header wins when Stripe sends one);
    * a slice whose request still failed with a transient error: ``slice_retries`` more
      runs of the slice, resumed from its checkpoint, ``slice_retry_delay`` apart;
    * everything else (401, 403, 400, 404): not retried; the stream fails with the reason.
    """

    rate_limit_retries: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    jitter: float = 0.5
    slice_retries: int = 2
    slice_retry_delay: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based) of a 429."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.backoff_cap)
        base = min(self.backoff_cap, self.backoff_base * float(2 ** max(0, attempt - 1)))
        return base * (1 - self.jitter * random.random())


def endpoint_key(method: str, path: str) -> str:
    """``GET /v1/invoices/in_123/lines`` → ``GET /v1/invoices/{id}/lines``.

    Stripe's paths alternate collection and id after the version (``/v1/coll/{id}/sub``),
    and its per-endpoint limit applies to the endpoint, not to each object's URL.
    """
    parts = path.split("?", 1)[0].strip("/").split("/")
    template = [p if i % 2 == 0 else "{id}" for i, p in enumerate(parts[1:])]
    return f"{method.upper()} /{'/'.join([parts[0], *template])}"


class TokenBucket:
    """A token bucket whose rate is halved on demand and recovers linearly."""

    def __init__(
        self,
        rate: float,
        *,
        capacity: float = 1.5,
        recovery_seconds: float = 10.0,
        min_rate: float = 0.5,
        now: float = 0.0,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.max_rate = rate
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self.min_rate = min(min_rate, rate)
        self.recover_per_second = rate / recovery_seconds
        self.tokens = 1.0
        self.stamp = now
        self.hold_until = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed <= 0:
            return
        if self.rate < self.max_rate and now > self.hold_until:
            grow_from = max(self.stamp, self.hold_until)
            self.rate = min(self.max_rate, self.rate + (now - grow_from) * self.recover_per_second)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.stamp = now

    def ready_at(self, now: float) -> float:
        """When one token is available (``now`` when one is)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return now
        return now + (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def slow_down(self, now: float, factor: float, hold: float = 1.0) -> None:
        """Multiply the rate by ``factor`` (a 429); no recovery for ``hold`` seconds."""
        self._refill(now)
        self.rate = max(self.min_rate, self.rate * factor)
        self.tokens = min(self.tokens, 0.0)
        self.hold_until = now + hold


@dataclass(eq=False)
class _Waiter:
    endpoint: str
    group: str
    seq: int
    cond: threading.Condition


@dataclass
class BudgetStats:
    requests: int = 0
    rate_limited: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)


class RequestBudget:
    """The request budget of one Stripe account (one source), shared by its threads."""

    def __init__(
        self,
        limits: BudgetLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        account_capacity: float | None = None,
        endpoint_capacity: float = 1.5,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        # A bucket lets capacity + rate requests through in any one second: keep that under
        # Stripe's limit (test: 23 + 1.5 < 25; live: 95 + 3 < 100).
        if account_capacity is None:
            account_capacity = min(3.0, max(1.0, limits.account * 0.065))
        self._account = TokenBucket(limits.account, capacity=account_capacity, now=clock())
        self._endpoint_capacity = endpoint_capacity
        self._endpoints: dict[str, TokenBucket] = {}
        self._waiters: list[_Waiter] = []
        self._priorities: dict[str, float] = {}
        self._seq = 0
        self.stats = BudgetStats()

    # -- priorities ---------------------------------------------------------------------

    def set_priority(self, group: str, priority: float) -> None:
        """Waiters of ``group`` (a stream) go first when their priority is highest."""
        with self._lock:
            self._priorities[group] = priority

    def priority(self, group: str) -> float:
        return self._priorities.get(group, float("inf"))

    # -- acquiring ----------------------------------------------------------------------

    def _bucket(self, endpoint: str, now: float) -> TokenBucket:
        bucket = self._endpoints.get(endpoint)
        if bucket is None:
            bucket = TokenBucket(self.limits.endpoint, capacity=self._endpoint_capacity, now=now)
            self._endpoints[endpoint] = bucket
        return bucket

    def _decide(self, now: float) -> tuple[_Waiter, float]:
        account_at = self._account.ready_at(now)
        best: _Waiter | None = None
        best_at = float("inf")
        ready: list[tuple[float, _Waiter]] = []
        for waiter in self._waiters:
            at = max(account_at, self._bucket(waiter.endpoint, now).ready_at(now))
            ready.append((at, waiter))
            best_at = min(best_at, at)
        for at, waiter in ready:
            if at > best_at + 1e-4:
                continue
            if best is None or (self.priority(waiter.group), -waiter.seq) > (
                self.priority(best.group),
                -best.seq,
            ):
                best = waiter
        assert best is not None
        return best, best_at

    def _wake_best(self, now: float) -> None:
        if self._waiters:
            best, _ = self._decide(now)
            best.cond.notify()

    def acquire(self, endpoint: str, group: str = "", timeout: float | None = None) -> bool:
        """Block until a request to ``endpoint`` fits the budget; False on timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            self._seq += 1
            me = _Waiter(endpoint, group, self._seq, threading.Condition(self._lock))
            self._waiters.append(me)
            try:
                while True:
                    now = self._clock()
                    best, at = self._decide(now)
                    if best is me and at <= now:
                        self._account.take(now)
                        self._bucket(endpoint, now).take(now)
                        self.stats.requests += 1
                        by_endpoint = self.stats.by_endpoint
                        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + 1
                        return True
                    if deadline is not None and now >= deadline:
                        return False
                    if best is not me:
                        best.cond.notify()
                    wait = (at - now) if best is me else 1.0
                    if deadline is not None:
                        wait = min(wait, deadline - now)
                    me.cond.wait(max(wait, 0.0005))
            finally:
                self._waiters.remove(me)
                self._wake_best(self._clock())

    # -- feedback -----------------------------------------------------------------------

    def rate_limited(self, endpoint: str) -> None:
        """A 429 came back: halve the endpoint's rate and trim the account's."""
        with self._lock:
            now = self._clock()
            self.stats.rate_limited += 1
            self._bucket(endpoint, now).slow_down(now, 0.5)
            self._account.slow_down(now, 0.75)

    def rates(self) -> dict[str, float]:
        """Current rates (requests/s): ``account`` and each endpoint seen."""
        with self._lock:
            now = self._clock()
            self._account.ready_at(now)
            out = {"account": self._account.rate}
            for name, bucket in self._endpoints.items():
                bucket.ready_at(now)
                out[name] = bucket.rate
            return out


_BUDGETS: dict[tuple[str, BudgetLimits], RequestBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def budget_for(account_key: str, limits: BudgetLimits) -> RequestBudget:
    """The process-wide budget of one account (all the threads of this process share it).

    Process-local by nature: when jobs run in several worker processes (issue 9), each
    needs a share of the account's limit, or a budget kept in PostgreSQL.
    """
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get((account_key, limits))
        if budget is None:
            budget = RequestBudget(limits)
            _BUDGETS[(account_key, limits)] = budget
        return budget
