"""Every call stripesync makes to Stripe goes through here, on the official SDK.

`make_client` builds a ``StripeClient`` for a source's key and API base with the SDK's
own retries; `StripeAPI` adds what the SDK leaves to us: the request budget (pacing
under the rate limits), retries of 429 (`RetryPolicy`), and mapping errors onto
stripesync's (`stripe_api.errors`). Responses come back as plain dicts
(``raw_request``): the sync engine stores JSON, so building StripeObjects first would
only cost time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import stripe

from stripesync.stripe_api.budget import RequestBudget, RetryPolicy, endpoint_key
from stripesync.stripe_api.errors import StripeRequestRefused, map_stripe_error

__all__ = ["DEFAULT_API_BASE", "Page", "StripeAPI", "make_client"]

DEFAULT_API_BASE = "https://api.stripe.com"


def make_client(
    api_key: str,
    api_base: str = DEFAULT_API_BASE,
    *,
    max_network_retries: int = 3,
    timeout: float = 80.0,
) -> stripe.StripeClient:
    """A StripeClient on ``api_base`` (any Stripe-compatible server, the simulator too)."""
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base.rstrip("/")},
        max_network_retries=max_network_retries,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


@dataclass(frozen=True)
class Page:
    """One page of a list: its objects (plain dicts) and whether more follow."""

    data: list[dict[str, Any]]
    has_more: bool
    #: When the request was sent and its answer read (ms since the epoch): the window in
    #: which the page's objects were true, for the apply path's ordering guard.
    sent_ms: int
    received_ms: int


@dataclass
class CallStats:
    requests: int = 0
    rate_limited: int = 0


class StripeAPI:
    """A source's Stripe account as stripesync uses it."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        key_hint: str,
        api_base: str,
        budget: RequestBudget | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.key_hint = key_hint
        self.api_base = api_base
        self.budget = budget
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._lock = threading.Lock()
        self.stats = CallStats()

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        group: str = "",
    ) -> tuple[dict[str, Any], int, int]:
        """One call: (parsed JSON, sent ms, received ms). Paced, 429s retried, errors mapped."""
        endpoint = endpoint_key(method, path)
        what = f"{method.upper()} {path}"
        attempt = 0
        while True:
            if self.budget is not None:
                self.budget.acquire(endpoint, group)
            sent_ms = time.time_ns() // 1_000_000
            try:
                data = self._send(method.lower(), path, dict(params or {}))
            except stripe.RateLimitError as exc:
                with self._lock:
                    self.stats.requests += 1
                    self.stats.rate_limited += 1
                if self.budget is not None:
                    self.budget.rate_limited(endpoint)
                attempt += 1
                if attempt > self.policy.rate_limit_retries:
                    raise map_stripe_error(
                        exc, key_hint=self.key_hint, api_base=self.api_base, what=what
                    ) from exc
                self._sleep(self.policy.delay(attempt, _retry_after(exc)))
                continue
            except stripe.StripeError as exc:
                with self._lock:
                    self.stats.requests += 1
                raise map_stripe_error(
                    exc, key_hint=self.key_hint, api_base=self.api_base, what=what
                ) from exc
            with self._lock:
                self.stats.requests += 1
            received_ms = time.time_ns() // 1_000_000
            if not isinstance(data, dict):
                raise StripeRequestRefused(
                    f"{what} at {self.api_base} answered {type(data).__name__}, not a JSON "
                    "object; is --api-base a Stripe-compatible API?"
                )
            return data, sent_ms, received_ms

    def _send(self, method: str, path: str, params: dict[str, Any]) -> Any:
        """One request through the SDK; the parsed JSON body, or the SDK's exception.

        ``StripeClient.raw_request`` parses every answer into OrderedDicts, twice the cost
        of plain dicts, on pages of up to 100 objects the backfill then only stores. So the
        same requestor call ``raw_request`` makes (auth, Stripe-Version, the SDK's
        retries) is made here and the body parsed with orjson; errors still go through the
        SDK's own interpretation. If this SDK version lacks those internals, the public
        ``raw_request`` is used.
        """
        requestor = getattr(self.client, "_requestor", None)
        request_raw = getattr(requestor, "request_raw", None)
        interpret = getattr(requestor, "_interpret_response", None)
        if request_raw is None or interpret is None:
            return self.client.raw_request(method, path, **params).data
        body, code, headers = request_raw(
            method, path, params=params, base_address="api", api_mode="V1", usage=["stripesync"]
        )
        if 200 <= code < 300:
            try:
                return orjson.loads(body)  # type: ignore[arg-type]
            except (orjson.JSONDecodeError, TypeError):
                pass  # the SDK's interpretation names the problem
        return interpret(body, code, headers, "V1").data

    def list_page(self, path: str, params: Mapping[str, Any], *, group: str = "") -> Page:
        body, sent_ms, received_ms = self.request("get", path, params, group=group)
        data = body.get("data")
        if body.get("object") != "list" or not isinstance(data, list):
            raise _not_a_list(path, self)
        return Page(data, bool(body.get("has_more")), sent_ms, received_ms)

    def iter_list(self, path: str, params: Mapping[str, Any], *, group: str = "") -> Iterator[Page]:
        """Every page of a list, following ``starting_after``; one page in memory at a time."""
        cursor: str | None = None
        while True:
            page_params = dict(params)
            if cursor is not None:
                page_params["starting_after"] = cursor
            page = self.list_page(path, page_params, group=group)
            yield page
            if not page.has_more or not page.data:
                return
            cursor = str(page.data[-1]["id"])


def _retry_after(exc: stripe.StripeError) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _not_a_list(path: str, api: StripeAPI) -> StripeRequestRefused:
    return StripeRequestRefused(
        f"GET {path} at {api.api_base} did not answer a Stripe list; is --api-base a "
        "Stripe-compatible API?"
    )
