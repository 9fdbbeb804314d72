"""The request budget: pacing under Stripe's limits, priorities, backing off and recovering."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stripesync.stripe_api.budget import (
    BudgetLimits,
    RequestBudget,
    RetryPolicy,
    TokenBucket,
    endpoint_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("get", "/v1/customers", "GET /v1/customers"),
        ("get", "/v1/invoices/in_123/lines", "GET /v1/invoices/{id}/lines"),
        ("post", "/v1/webhook_endpoints/we_1", "POST /v1/webhook_endpoints/{id}"),
        ("get", "/v1/subscription_items?subscription=sub_1", "GET /v1/subscription_items"),
    ],
)
def test_endpoint_key_is_the_template(method: str, path: str, key: str) -> None:
    assert endpoint_key(method, path) == key


def test_defaults_are_just_under_stripes_limits() -> None:
    assert BudgetLimits.for_mode(True) == BudgetLimits(account=95, endpoint=23)
    assert BudgetLimits.for_mode(False) == BudgetLimits(account=23, endpoint=23)


@given(
    rate=st.floats(1, 200),
    capacity=st.floats(1, 3),
    gaps=st.lists(st.floats(0, 0.2), min_size=1, max_size=400),
)
def test_a_bucket_never_lets_more_than_capacity_plus_rate_through_per_second(
    rate: float, capacity: float, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, capacity=capacity, now=0.0)
    now, taken = 0.0, []
    for gap in gaps:
        now = max(now + gap, bucket.ready_at(now + gap))
        bucket.take(now)
        taken.append(now)
    for i, start in enumerate(taken):
        in_window = sum(1 for t in taken[i:] if t < start + 1.0)
        assert in_window <= capacity + rate + 1e-6


def test_a_429_halves_the_rate_which_then_recovers() -> None:
    bucket = TokenBucket(20.0, recovery_seconds=10.0, now=0.0)
    bucket.slow_down(0.0, 0.5, hold=1.0)
    assert bucket.rate == 10.0
    bucket.ready_at(0.9)
    assert bucket.rate == 10.0  # held right after the 429
    bucket.ready_at(3.0)
    assert bucket.rate == pytest.approx(14.0)  # +2/s for 2 s
    bucket.ready_at(30.0)
    assert bucket.rate == 20.0


def test_budget_paces_real_threads_under_the_limits() -> None:
    budget = RequestBudget(BudgetLimits(account=60, endpoint=25))
    stamps: list[tuple[float, str]] = []
    lock = threading.Lock()

    def worker(endpoint: str) -> None:
        for _ in range(12):
            budget.acquire(endpoint)
            with lock:
                stamps.append((time.monotonic(), endpoint))

    threads = [threading.Thread(target=worker, args=(f"GET /v1/e{i % 3}",)) for i in range(6)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert len(stamps) == 72
    # 72 requests at 60/s (capacity 3) take over a second; no second holds more than 63.
    assert elapsed > (72 - 3) / 60 - 0.05
    for stamp, _ in stamps:
        assert sum(1 for s, _ in stamps if stamp <= s < stamp + 1.0) <= 63
    for endpoint in {e for _, e in stamps}:
        mine = [s for s, e in stamps if e == endpoint]
        for stamp in mine:
            assert sum(1 for s in mine if stamp <= s < stamp + 1.0) <= 26


def test_the_highest_priority_waiter_goes_first() -> None:
    clock = FakeClock()
    budget = RequestBudget(BudgetLimits(account=10, endpoint=100), clock=clock)
    budget.set_priority("small", 1.0)
    budget.set_priority("large", 50.0)
    assert budget.acquire("GET /v1/a", "small", timeout=0)  # the first token
    order: list[str] = []
    lock = threading.Lock()

    def wait(group: str, endpoint: str) -> None:
        budget.acquire(endpoint, group)
        with lock:
            order.append(group)

    threads = [threading.Thread(target=wait, args=("small", "GET /v1/a"))]
    threads[0].start()
    time.sleep(0.05)
    threads.append(threading.Thread(target=wait, args=("large", "GET /v1/b")))
    threads[1].start()
    time.sleep(0.05)
    clock.now += 0.1  # one token at 10/s: both wait for it
    deadline = time.monotonic() + 5
    while not order and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert order == ["large"]  # the larger stream (higher priority) got it, though later
    clock.now += 0.1
    for t in threads:
        t.join(timeout=5)
    assert order == ["large", "small"]


def test_rate_limited_feedback_slows_the_endpoint_and_trims_the_account() -> None:
    budget = RequestBudget(BudgetLimits(account=95, endpoint=23))
    budget.acquire("GET /v1/customers")
    budget.rate_limited("GET /v1/customers")
    rates = budget.rates()
    assert rates["GET /v1/customers"] == pytest.approx(11.5, rel=0.01)
    assert rates["account"] == pytest.approx(71.25, rel=0.01)
    assert budget.stats.rate_limited == 1 and budget.stats.requests == 1


def test_retry_policy_is_data() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=4.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(3, retry_after=1.5) == 1.5
    jittered = RetryPolicy(backoff_base=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.0 for _ in range(50))
