"""The simulator's protocol, driven through the official SDK: keys, errors, lists, events."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import stripe

from stripesync.sim import forms
from stripesync.sim.core import DEFAULT_ACCOUNT, EVENT_RETENTION_SECONDS, Knobs
from stripesync.sim.errors import SimAPIError
from stripesync.sim.server import SimServer

# -- form encoding ------------------------------------------------------------------------


def test_form_parsing_nests_like_stripe() -> None:
    parsed = forms.parse(
        "items[0][price]=price_a&items[0][quantity]=2&items[1][price]=price_b"
        "&expand[]=customer&expand[]=latest_invoice&metadata[app_id]=u1&email="
    )
    assert parsed == {
        "items": [{"price": "price_a", "quantity": "2"}, {"price": "price_b"}],
        "expand": ["customer", "latest_invoice"],
        "metadata": {"app_id": "u1"},
        "email": "",
    }


def test_form_coercion_names_the_param() -> None:
    with pytest.raises(SimAPIError) as info:
        forms.as_int({"limit": "ten"}, "limit")
    assert info.value.param == "limit"
    assert info.value.status == 400


# -- keys, auth, permissions ------------------------------------------------------------


def test_unknown_key_is_401(server: SimServer) -> None:
    with pytest.raises(stripe.AuthenticationError) as info:
        server.client("sk_test_doesnotexist1234").v1.customers.list()
    assert "Invalid API Key provided" in str(info.value.user_message)
    assert "1234" in str(info.value.user_message)
    assert "doesnotexist" not in str(info.value.user_message)


def test_revoked_key_is_401(server: SimServer) -> None:
    key = server.sim.create_key(DEFAULT_ACCOUNT)
    server.client(key).v1.customers.list()
    server.sim.revoke_key(key)
    with pytest.raises(stripe.AuthenticationError):
        server.client(key).v1.customers.list()


def test_missing_key_is_401(server: SimServer) -> None:
    response = httpx.get(f"{server.url}/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_restricted_key_outside_its_permissions_is_403(server: SimServer) -> None:
    key = server.sim.create_key(
        DEFAULT_ACCOUNT, permissions={"customers": "read", "webhook_endpoints": "write"}
    )
    assert key.startswith("rk_test_")
    restricted = server.client(key)
    restricted.v1.customers.list()  # read granted
    with pytest.raises(stripe.PermissionError) as info:
        restricted.v1.customers.create(params={"email": "x@example.com"})  # write not granted
    assert "rak_customer_write" in str(info.value.user_message)
    with pytest.raises(stripe.PermissionError) as info:
        restricted.v1.products.list()
    assert "rak_product_read" in str(info.value.user_message)
    assert info.value.http_status == 403


def test_live_and_test_data_are_apart(server: SimServer) -> None:
    live = server.client(server.live_key)
    created = live.v1.customers.create(params={"email": "live@example.com"})
    assert created.livemode is True
    with pytest.raises(stripe.InvalidRequestError):
        server.client().v1.customers.retrieve(created.id)
    assert live.v1.customers.retrieve(created.id).email == "live@example.com"


# -- errors -----------------------------------------------------------------------------


def test_missing_object_is_404_resource_missing(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.retrieve("cus_missing")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing"
    assert info.value.param == "id"


def test_unknown_parameter_is_400_naming_it(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create(params={"nickname": "nope"})
    assert info.value.http_status == 400
    assert info.value.param == "nickname"


def test_bad_value_is_400_naming_it(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.list(params={"limit": 101})
    assert info.value.param == "limit"


def test_unknown_url_and_garbage_never_500(server: SimServer) -> None:
    headers = {"Authorization": f"Bearer {server.secret_key}"}
    response = httpx.get(f"{server.url}/v1/nothing_here", headers=headers)
    assert response.status_code == 404
    assert "Unrecognized request URL" in response.json()["error"]["message"]
    response = httpx.post(
        f"{server.url}/v1/customers",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        content=b"\xff\xfe[[[",
    )
    assert response.status_code == 400
    assert "error" in response.json()


def test_idempotency_key_replays_and_rejects_other_params(client: Any) -> None:
    first = client.v1.customers.create(
        params={"email": "idem@example.com"}, options={"idempotency_key": "idem-1"}
    )
    again = client.v1.customers.create(
        params={"email": "idem@example.com"}, options={"idempotency_key": "idem-1"}
    )
    assert again.id == first.id
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(
            params={"email": "other@example.com"}, options={"idempotency_key": "idem-1"}
        )


# -- lists ------------------------------------------------------------------------------


def test_lists_are_newest_first_with_cursors_and_created_filters() -> None:
    with SimServer(knobs=Knobs(rate_limits=False)) as srv:
        client = srv.client()
        start = 1_700_000_000
        ids = []
        for i in range(25):
            srv.sim.freeze(start + i * 10)
            ids.append(client.v1.customers.create(params={"email": f"c{i}@example.com"}).id)
        newest_first = list(reversed(ids))
        page = client.v1.customers.list(params={"limit": 10})
        assert [c.id for c in page.data] == newest_first[:10]
        assert page.has_more is True
        page2 = client.v1.customers.list(params={"limit": 10, "starting_after": page.data[-1].id})
        assert [c.id for c in page2.data] == newest_first[10:20]
        back = client.v1.customers.list(params={"limit": 5, "ending_before": page2.data[0].id})
        assert [c.id for c in back.data] == newest_first[5:10]
        everything = [
            c.id for c in client.v1.customers.list(params={"limit": 7}).auto_paging_iter()
        ]
        assert everything == newest_first
        window = client.v1.customers.list(
            params={"created": {"gte": start + 50, "lt": start + 100}, "limit": 100}
        )
        assert [c.id for c in window.data] == list(reversed(ids[5:10]))
        assert window.has_more is False
        by_email = client.v1.customers.list(params={"email": "c3@example.com"})
        assert [c.id for c in by_email.data] == [ids[3]]
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.customers.list(params={"starting_after": "cus_unknown"})
        assert info.value.param == "starting_after"


# -- events ------------------------------------------------------------------------------


def test_changes_record_events_with_previous_attributes_and_request(client: Any) -> None:
    customer = client.v1.customers.create(params={"email": "ev@example.com", "name": "Before"})
    client.v1.customers.update(customer.id, params={"name": "After", "metadata": {"k": "v"}})
    events = client.v1.events.list(params={"type": "customer.updated", "limit": 100}).data
    mine = [e for e in events if e.data.object.id == customer.id]
    assert len(mine) == 1
    event = mine[0]
    assert event.data.object.name == "After"
    assert event.data.previous_attributes.name == "Before"
    assert event.data.previous_attributes.to_dict()["metadata"] == {"k": None} or (
        event.data.previous_attributes.to_dict()["metadata"] == {}
    )
    assert event.request.id.startswith("req_")
    assert event.api_version == stripe.api_version
    fetched = client.v1.events.retrieve(event.id)
    assert fetched.id == event.id
    created = [
        e
        for e in client.v1.events.list(params={"types": ["customer.created"], "limit": 100}).data
        if e.data.object.id == customer.id
    ]
    assert len(created) == 1


def test_events_older_than_30_days_are_gone() -> None:
    with SimServer(knobs=Knobs(rate_limits=False)) as srv:
        client = srv.client()
        t0 = 1_700_000_000
        srv.sim.freeze(t0)
        old = client.v1.customers.create(params={"email": "old@example.com"})
        srv.sim.freeze(t0 + EVENT_RETENTION_SECONDS + 3600)
        client.v1.customers.create(params={"email": "new@example.com"})
        types = [(e.type, e.data.object.email) for e in client.v1.events.list().data]
        assert ("customer.created", "new@example.com") in types
        assert ("customer.created", "old@example.com") not in types
        assert client.v1.customers.retrieve(old.id).email == "old@example.com"


# -- rate limits and faults -------------------------------------------------------------


def test_rate_limit_answers_429_and_recovers() -> None:
    knobs = Knobs(rate_limit_test=5, rate_limit_endpoint=100)
    with SimServer(knobs=knobs) as srv:
        client = srv.client(max_network_retries=0)
        statuses = []
        for _ in range(8):
            try:
                client.v1.customers.list(params={"limit": 1})
                statuses.append(200)
            except stripe.RateLimitError as exc:
                assert exc.http_status == 429
                assert exc.error is not None and exc.error.code == "rate_limit"
                statuses.append(429)
        assert statuses.count(200) == 5
        assert statuses.count(429) == 3
        time.sleep(1.05)
        client.v1.customers.list(params={"limit": 1})


def test_per_endpoint_budget_is_separate() -> None:
    knobs = Knobs(rate_limit_test=100, rate_limit_endpoint=3)
    with SimServer(knobs=knobs) as srv:
        client = srv.client(max_network_retries=0)
        for _ in range(3):
            client.v1.customers.list()
        with pytest.raises(stripe.RateLimitError):
            client.v1.customers.list()
        client.v1.products.list()  # another endpoint still has budget


def test_transient_500s_are_retried_by_the_sdk() -> None:
    knobs = Knobs(rate_limits=False, error_rate=0.5, seed=3)
    with SimServer(knobs=knobs) as srv:
        client = srv.client(max_network_retries=8)
        for _ in range(10):
            client.v1.customers.create(params={"email": "retry@example.com"})
        srv.sim.knobs.error_rate = 0.0
        # Retries reuse the SDK's idempotency key, so nothing is created twice.
        assert (
            len(client.v1.customers.list(params={"email": "retry@example.com", "limit": 100}).data)
            == 10
        )


# -- ground truth ------------------------------------------------------------------------


def test_state_export_lists_every_object(server: SimServer, client: Any) -> None:
    customer = client.v1.customers.create(params={"email": "state@example.com"})
    rows = [json.loads(line) for line in httpx.get(f"{server.url}/_sim/state").text.splitlines()]
    found = [r for r in rows if r["object"]["id"] == customer.id]
    assert len(found) == 1
    assert found[0]["object"]["email"] == "state@example.com"
    assert found[0]["deleted"] is False
