"""Webhook endpoints and deliveries, verified with the SDK's own signature check."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import stripe

from stripesync.sim.core import DEFAULT_ACCOUNT, Knobs
from stripesync.sim.resources.webhook_endpoints import roll_secret
from stripesync.sim.server import SimServer
from stripesync.sim.webhooks import sign
from tests.sim.conftest import Receiver


def _fast_knobs(**overrides: object) -> Knobs:
    knobs = Knobs(rate_limits=False, webhook_retry_base_seconds=0.05)
    for name, value in overrides.items():
        setattr(knobs, name, value)
    return knobs


def test_secret_is_returned_once(receiver: Receiver) -> None:
    with SimServer(knobs=_fast_knobs()) as srv:
        client = srv.client()
        endpoint = client.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": ["customer.created"]}
        )
        assert endpoint.secret.startswith("whsec_")
        fetched = client.v1.webhook_endpoints.retrieve(endpoint.id)
        assert "secret" not in fetched.to_dict()
        assert fetched.enabled_events == ["customer.created"]


def test_bad_endpoint_params_are_400() -> None:
    with SimServer(knobs=_fast_knobs()) as srv:
        client = srv.client()
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.webhook_endpoints.create(params={"url": "ftp://x", "enabled_events": ["*"]})
        assert info.value.param == "url"
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:1/x"})
        assert info.value.param == "enabled_events"


def test_deliveries_are_signed_as_stripe_signs(receiver: Receiver) -> None:
    with SimServer(knobs=_fast_knobs()) as srv:
        client = srv.client()
        endpoint = client.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": ["customer.created", "customer.updated"]}
        )
        customer = client.v1.customers.create(params={"email": "hook@example.com"})
        client.v1.customers.update(customer.id, params={"name": "Hooked"})
        client.v1.products.create(params={"name": "not subscribed to"})
        requests = receiver.wait_for(2)
        assert len(requests) == 2
        types = []
        for headers, body in requests:
            event = stripe.Webhook.construct_event(
                body.decode(), headers["Stripe-Signature"], endpoint.secret
            )
            types.append(event.type)
            assert event.data.object.id == customer.id
            with pytest.raises(stripe.SignatureVerificationError):
                stripe.Webhook.construct_event(
                    body.decode(), headers["Stripe-Signature"], "whsec_wrong"
                )
        assert sorted(types) == ["customer.created", "customer.updated"]


def test_failed_deliveries_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.fail_next = 3
    with SimServer(knobs=_fast_knobs()) as srv:
        client = srv.client()
        client.v1.webhook_endpoints.create(params={"url": receiver.url, "enabled_events": ["*"]})
        client.v1.customers.create(params={"email": "retry@example.com"})
        requests = receiver.wait_for(1, timeout=15)
        assert len(requests) == 1
        # the receiver has the body before the simulator has read its 200
        deadline = time.monotonic() + 10
        rows = srv.sim.db.execute("SELECT attempts, status FROM deliveries")
        while rows != [(4, "delivered")] and time.monotonic() < deadline:
            time.sleep(0.02)
            rows = srv.sim.db.execute("SELECT attempts, status FROM deliveries")
        assert rows == [(4, "delivered")]


def test_rolled_secret_signs_with_both(receiver: Receiver) -> None:
    with SimServer(knobs=_fast_knobs()) as srv:
        client = srv.client()
        endpoint = client.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": ["*"]}
        )
        new_secret = roll_secret(srv.sim, srv.sim.context(), endpoint.id)
        client.v1.customers.create(params={"email": "roll@example.com"})
        headers, body = receiver.wait_for(1)[0]
        header = headers["Stripe-Signature"]
        assert header.count("v1=") == 2
        for secret in (endpoint.secret, new_secret):
            stripe.Webhook.construct_event(body.decode(), header, secret)


def test_sign_matches_the_sdk() -> None:
    payload = b'{"id": "evt_1", "object": "event"}'
    import time

    now = int(time.time())
    header = sign(payload, ["whsec_test"], now)
    stripe.WebhookSignature.verify_header(payload.decode(), header, "whsec_test", tolerance=300)


def test_chaos_knobs_duplicate_and_drop(receiver: Receiver) -> None:
    knobs = _fast_knobs(
        webhook_duplicate_rate=0.3, webhook_drop_rate=0.2, webhook_shuffle=True, seed=7
    )
    with SimServer(knobs=knobs) as srv:
        client = srv.client()
        client.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": ["customer.created"]}
        )
        for i in range(40):
            client.v1.customers.create(params={"email": f"chaos{i}@example.com"})

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = srv.sim.db.execute("SELECT count(*) FROM deliveries WHERE status='pending'")
            if pending[0][0] == 0:
                break
            time.sleep(0.05)
        ids = [json.loads(body)["id"] for _, body in receiver.requests]
        counts = Counter(ids)
        statuses = dict(
            srv.sim.db.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
        )
        assert statuses.get("dropped", 0) > 0
        assert any(n > 1 for n in counts.values()), "some events delivered twice"
        assert len(counts) == 40 - statuses["dropped"]


def test_endpoint_version_renders_events(receiver: Receiver) -> None:
    with SimServer(knobs=_fast_knobs()) as srv:
        client = srv.client()
        endpoint = client.v1.webhook_endpoints.create(
            params={
                "url": receiver.url,
                "enabled_events": ["customer.created"],
                "api_version": "2024-06-20",
            }
        )
        assert endpoint.api_version == "2024-06-20"
        client.v1.customers.create(params={"email": "v@example.com"})
        _, body = receiver.wait_for(1)[0]
        assert json.loads(body)["api_version"] == "2024-06-20"


def test_account_default_version_applies_to_new_events() -> None:
    with SimServer(knobs=_fast_knobs()) as srv:
        client = srv.client()
        srv.sim.set_account_version(DEFAULT_ACCOUNT, "2024-06-20")
        old = client.v1.customers.create(params={"email": "old@example.com"})
        srv.sim.set_account_version(DEFAULT_ACCOUNT, stripe.api_version)
        new = client.v1.customers.create(params={"email": "new@example.com"})
        versions = {e.data.object.id: e.api_version for e in client.v1.events.list().data}
        assert versions[old.id] == "2024-06-20"
        assert versions[new.id] == stripe.api_version
