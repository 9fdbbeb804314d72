"""The Stripe client against the simulator: pages, 429s, server errors, permissions, mapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from stripesync.errors import PermissionMissing, TerminalError, TransientError
from stripesync.sim.core import Knobs
from stripesync.sim.server import SimServer, free_port
from stripesync.stripe_api.budget import BudgetLimits, RequestBudget, RetryPolicy
from stripesync.stripe_api.client import StripeAPI, make_client
from stripesync.stripe_api.errors import (
    KeyRejected,
    RateLimited,
    StripePermissionMissing,
    StripeRequestRefused,
    StripeServerError,
    StripeUnreachable,
    map_stripe_error,
    permission_from_message,
)
from stripesync.stripe_api.permissions import PERMISSIONS, check_permissions

FAST = RetryPolicy(rate_limit_retries=2, backoff_base=0.01)


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with SimServer(knobs=Knobs(rate_limits=False), deliver_webhooks=False) as srv:
        sim, key = srv.sim, srv.secret_key
        for i in range(25):
            sim.request("POST", "/v1/customers", {"email": f"c{i}@example.com"}, key=key)
        yield srv


def _api(server: SimServer, key: str | None = None, **kwargs: Any) -> StripeAPI:
    client = make_client(key or server.secret_key, server.url, max_network_retries=0)
    return StripeAPI(
        client,
        key_hint="sk_test_…test",
        api_base=server.url,
        policy=kwargs.pop("policy", FAST),
        **kwargs,
    )


def test_pages_follow_the_cursor_and_keep_one_page_in_memory(server: SimServer) -> None:
    api = _api(server)
    pages = list(api.iter_list("/v1/customers", {"limit": 10}))
    assert [len(p.data) for p in pages] == [10, 10, 5]
    assert [p.has_more for p in pages] == [True, True, False]
    ids = [c["id"] for p in pages for c in p.data]
    assert len(set(ids)) == 25
    assert all(p.sent_ms <= p.received_ms for p in pages)
    assert isinstance(pages[0].data[0], dict)  # plain JSON, not StripeObjects


def test_a_429_is_retried_then_reported(server: SimServer) -> None:
    budget = RequestBudget(BudgetLimits(account=1000, endpoint=1000))
    api = _api(server, budget=budget)
    server.sim.knobs.rate_limits = True
    server.sim.knobs.burst_429_rate = 1.0
    try:
        with pytest.raises(RateLimited, match="429") as info:
            api.list_page("/v1/customers", {"limit": 1})
    finally:
        server.sim.knobs.burst_429_rate = 0.0
        server.sim.knobs.rate_limits = False
    assert isinstance(info.value, TransientError) and info.value.http_status == 429
    assert api.stats.rate_limited == 3  # the first try and two retries
    assert budget.stats.rate_limited == 3
    assert budget.rates()["GET /v1/customers"] < 1000


def test_server_errors_are_transient(server: SimServer) -> None:
    api = _api(server)
    server.sim.knobs.error_rate = 1.0
    try:
        with pytest.raises(StripeServerError, match="500") as info:
            api.list_page("/v1/customers", {"limit": 1})
    finally:
        server.sim.knobs.error_rate = 0.0
    assert isinstance(info.value, TransientError)
    assert info.value.request_id is None or info.value.request_id.startswith("req_")


def test_bad_requests_are_terminal_and_say_so(server: SimServer) -> None:
    api = _api(server)
    with pytest.raises(StripeRequestRefused, match="Received unknown parameter") as info:
        api.list_page("/v1/customers", {"limit": 1, "colour": "blue"})
    assert isinstance(info.value, TerminalError) and info.value.http_status == 400
    with pytest.raises(StripeRequestRefused, match="does not serve it"):
        api.list_page("/v1/nonexistent_things", {"limit": 1})


def test_unreachable_and_rejected(server: SimServer) -> None:
    dead = StripeAPI(
        make_client(server.secret_key, f"http://127.0.0.1:{free_port()}", max_network_retries=0),
        key_hint="sk_test_…test",
        api_base="http://dead",
    )
    with pytest.raises(StripeUnreachable, match="cannot reach the Stripe API at http://dead"):
        dead.list_page("/v1/customers", {"limit": 1})
    wrong = _api(server, key=server.secret_key[:-2] + "zz")
    with pytest.raises(KeyRejected, match="401"):
        wrong.list_page("/v1/customers", {"limit": 1})


def test_permission_errors_name_the_dashboard_permission(server: SimServer) -> None:
    key = server.sim.create_key(server.sim.context().account, permissions={"customers": "read"})
    api = _api(server, key=key)
    with pytest.raises(StripePermissionMissing) as info:
        api.list_page("/v1/invoices", {"limit": 1})
    assert isinstance(info.value, PermissionMissing)
    assert info.value.permission == "Invoices: Read"
    assert "lacks `Invoices: Read`" in str(info.value) and "Dashboard" in str(info.value)


def test_permission_probe_reports_each_permission_and_creates_nothing(server: SimServer) -> None:
    key = server.sim.create_key(
        server.sim.context().account,
        permissions={"customers": "read", "invoices": "read", "webhook_endpoints": "write"},
    )
    report = check_permissions(_api(server, key=key))
    granted = {c.permission.name for c in report.checks if c.granted}
    assert granted == {"Customers: Read", "Invoices: Read", "Webhook Endpoints: Write"}
    assert len(report.checks) == len(PERMISSIONS)
    assert report.webhooks is True
    assert {p.name for p in report.missing_required} == {
        "Subscriptions: Read",
        "Charges: Read",
        "Payment Intents: Read",
        "Refunds: Read",
        "Products: Read",
        "Prices: Read",
        "Coupons: Read",
        "Events: Read",
    }
    assert server.sim.db.counts().get("webhook_endpoint", 0) == 0
    full = check_permissions(_api(server))
    assert full.missing == [] and full.as_json()["Webhook Endpoints: Write"] == "granted"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Having the 'rak_invoice_read' permission would allow this", "Invoices: Read"),
        ("needs rak_webhook_write", "Webhook Endpoints: Write"),
        ("needs rak_payment_intent_read.", "Payment Intents: Read"),
        ("needs rak_tax_rate_read", "Tax Rate: Read"),
        ("no code here", None),
    ],
)
def test_permission_from_message(message: str, expected: str | None) -> None:
    assert permission_from_message(message) == expected


def test_mapping_keeps_the_cause_and_hides_the_key() -> None:
    exc = stripe.AuthenticationError("Invalid API Key provided: sk_test_****abcd", http_status=401)
    mapped = map_stripe_error(exc, key_hint="sk_test_…abcd", api_base="x", what="GET /v1/x")
    assert isinstance(mapped, KeyRejected) and mapped.http_status == 401
    assert "sk_test_…abcd" in str(mapped)
    with pytest.raises(KeyRejected) as info:
        try:
            raise exc
        except stripe.StripeError as err:
            raise map_stripe_error(err, key_hint="k", api_base="x", what="w") from err
    assert info.value.__cause__ is exc
