"""The webhook receiver: real deliveries from the simulator and crafted ones, on both backends.

The app runs in a real uvicorn (tests/web/conftest.py); the simulator plays Stripe,
signing deliveries to the endpoint that connecting registered, or giving the events
that a test then delivers itself, in the order it wants.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe
from typer.testing import CliRunner

from stripesync.secrets import secret_box
from stripesync.settings import Settings
from stripesync.sim.server import SimServer
from stripesync.store import Store
from stripesync.store.schema import RAW_TABLES, stripe_events, sync_refetch, webhook_secrets
from stripesync.sync.health import source_health
from stripesync.sync.sources import Source, disconnect, get_source
from stripesync.sync.webhooks import add_secret
from tests.sync.helpers import connect, stored
from tests.web.conftest import AppServer

SECRET = "whsec_" + "t" * 32
OTHER = "whsec_" + "o" * 32


def sign(payload: bytes, secrets: list[str], at: int | None = None) -> str:
    """A Stripe-Signature header: one v1 per secret (two while a secret is rolled)."""
    at = int(time.time()) if at is None else at
    signed = f"{at}.".encode() + payload
    parts = [f"t={at}"]
    parts += ["v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join(parts)


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ledger(store: Store) -> list[sa.Row[Any]]:
    with store.read() as conn:
        return list(conn.execute(sa.select(stripe_events).order_by(stripe_events.c.created)))


def call(server: SimServer, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
    status, body, _ = server.sim.request(method, path, params or {}, key=server.secret_key)
    assert status == 200, (path, body)
    return body


def sim_events(server: SimServer) -> list[dict[str, Any]]:
    """The account's events, oldest first, rendered as Stripe sends them."""
    events = call(server, "GET", "/v1/events", {"limit": "100"})["data"]
    return list(reversed(events))


@pytest.fixture
def manual(
    settings: Settings, store: Store, sim: SimServer, app_server: AppServer
) -> Iterator[tuple[Source, Callable[..., httpx.Response]]]:
    """A source without a registered endpoint, signed with SECRET (as `stripe listen` is),
    and a function posting a body to its webhook URL."""
    plain = settings.model_copy(update={"public_url": ""})
    source = connect(store, plain, sim)
    add_secret(store, secret_box(settings), source, SECRET)
    with httpx.Client(base_url=app_server.url, timeout=10) as client:

        def post(
            body: bytes | dict[str, Any],
            *,
            header: str | None = "sign",
            name: str = "acme",
            **headers: str,
        ) -> httpx.Response:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            if header == "sign":
                header = sign(payload, [SECRET])
            if header is not None:
                headers["Stripe-Signature"] = header
            return client.post(f"/webhooks/stripe/{name}", content=payload, headers=headers)

        yield source, post


def deliver(post: Callable[..., httpx.Response], events: list[dict[str, Any]]) -> None:
    for event in events:
        response = post(event)
        assert response.status_code == 200, response.text


# -- real deliveries from a registered endpoint ----------------------------------------------


def test_registered_endpoint_delivers_and_disconnect_removes_it(
    settings: Settings, store: Store, sim: SimServer, app_server: AppServer
) -> None:
    source = connect(store, settings, sim)
    acct = sim.sim.context().acct
    endpoint = sim.sim.db.get(acct, source.webhook_endpoint_id or "")
    assert endpoint is not None
    assert endpoint["url"] == f"{app_server.url}/webhooks/stripe/acme"
    assert endpoint["api_version"] == stripe.api_version
    assert endpoint["enabled_events"] == ["*"]

    customer = call(
        sim,
        "POST",
        "/v1/customers",
        {
            "email": "ada@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        },
    )
    product = call(sim, "POST", "/v1/products", {"name": "Pro"})
    price = call(
        sim,
        "POST",
        "/v1/prices",
        {
            "product": product["id"],
            "currency": "usd",
            "unit_amount": "900",
            "recurring": {"interval": "month"},
        },
    )
    call(sim, "POST", "/v1/customers/" + customer["id"], {"name": "Ada Lovelace"})
    call(
        sim,
        "POST",
        "/v1/subscriptions",
        {"customer": customer["id"], "items": [{"price": price["id"]}]},
    )

    def settled() -> bool:
        app_server.idle()
        got = stored(store, source.id, "customer").get(customer["id"])
        return got == sim.sim.db.get(acct, customer["id"]) and bool(
            stored(store, source.id, "subscription")
        )

    wait_for(settled, what="the customer and subscription to arrive")
    assert all(row.processed_at is not None for row in ledger(store))
    assert {row.received_via for row in ledger(store)} == {"webhook"}
    # The receiver adds to the health counters about once a second.
    wait_for(
        lambda: (
            source_health(store, get_source(store, "acme"))["webhooks"]["received"]
            >= len(ledger(store))
        ),
        what="the webhook counters",
    )
    health = source_health(store, get_source(store, "acme"))
    assert health["webhooks"]["mode"] == "endpoint"
    assert health["webhooks"]["last_received_at"] is not None
    assert health["objects"]["customer"] == 1

    result = disconnect(store, settings, secret_box(settings), "acme")
    assert any("deleted" in note for note in result.notes)
    assert sim.sim.db.get(acct, source.webhook_endpoint_id or "") is None
    with httpx.Client(base_url=app_server.url) as client:
        time.sleep(2.1)  # the receiver's cache of the source
        response = client.post(
            "/webhooks/stripe/acme", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}
        )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# -- what is refused, and changes nothing ---------------------------------------------------


def test_forged_stale_unsigned_oversized_and_malformed_change_nothing(
    manual: tuple[Source, Callable[..., httpx.Response]],
    store: Store,
    sim: SimServer,
    app_server: AppServer,
    settings: Settings,
) -> None:
    _, post = manual
    call(sim, "POST", "/v1/customers", {"email": "x@example.com"})
    event = sim_events(sim)[-1]
    payload = json.dumps(event).encode()
    limit = settings.webhook_max_body_bytes
    cases: list[tuple[str, httpx.Response, int, str]] = [
        ("forged", post(payload, header=sign(payload, [OTHER])), 401, "signature_invalid"),
        (
            "tampered",
            post(payload.replace(b"x@example", b"y@example"), header=sign(payload, [SECRET])),
            401,
            "signature_invalid",
        ),
        (
            "stale",
            post(payload, header=sign(payload, [SECRET], int(time.time()) - 301)),
            401,
            "signature_expired",
        ),
        ("unsigned", post(payload, header=None), 401, "signature_missing"),
        ("bad header", post(payload, header="v1=abc"), 400, "malformed_webhook"),
        ("not json", post(b"{nope", header=sign(b"{nope", [SECRET])), 400, "malformed_webhook"),
        ("not an event", post([1, 2]), 400, "malformed_webhook"),  # type: ignore[arg-type]
        ("no id", post({k: v for k, v in event.items() if k != "id"}), 400, "malformed_webhook"),
        ("live event", post({**event, "livemode": True}), 400, "malformed_webhook"),
        ("unknown source", post(payload, name="nobody"), 404, "not_found"),
    ]
    big = b"{" + b" " * limit + b"}"
    cases.append(("too large", post(big, header=sign(big, [SECRET])), 413, "payload_too_large"))

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    with httpx.Client(base_url=app_server.url) as client:
        streamed = client.post(
            "/webhooks/stripe/acme",
            content=chunks(),
            headers={"Stripe-Signature": sign(b"", [SECRET])},
        )
    cases.append(("too large, chunked", streamed, 413, "payload_too_large"))
    for what, response, status, code in cases:
        assert response.status_code == status, (what, response.text)
        body = response.json()
        assert body["error"]["status"] == status, what
        assert body["error"]["code"] == code, what
        assert SECRET not in response.text and SECRET[-8:] not in response.text
    assert ledger(store) == []
    assert stored(store, 1, "customer") == {}
    # ...and the genuine delivery still goes through
    assert post(payload).status_code == 200
    assert len(ledger(store)) == 1


def test_duplicates_and_unknown_types_are_acknowledged(
    manual: tuple[Source, Callable[..., httpx.Response]],
    store: Store,
    sim: SimServer,
    app_server: AppServer,
) -> None:
    source, post = manual
    call(sim, "POST", "/v1/customers", {"email": "d@example.com"})
    event = sim_events(sim)[-1]
    first, second = post(event), post(event)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == second.json() == {"received": True}
    unknown = {
        **event,
        "id": "evt_unknown1",
        "type": "climate.order.delivered",
        "data": {"object": {"id": "climorder_1", "object": "climate.order"}},
    }
    payment_method = {
        **event,
        "id": "evt_pm1",
        "type": "payment_method.attached",
        "data": {"object": {"id": "pm_1", "object": "payment_method"}},
    }
    assert post(unknown).status_code == 200
    assert post(payment_method).status_code == 200
    app_server.idle()
    rows = ledger(store)
    assert sorted(r.id for r in rows) == sorted([event["id"], "evt_unknown1", "evt_pm1"])
    assert all(r.processed_at is not None for r in rows)
    assert list(stored(store, source.id, "customer")) == [event["data"]["object"]["id"]]
    wait_for(
        lambda: source_health(store, get_source(store, "acme"))["webhooks"]["duplicates"] == 1,
        what="the duplicate to be counted",
    )
    health = source_health(store, get_source(store, "acme"))
    assert health["webhooks"]["received"] == 4
    assert health["events_behind"]["unprocessed"] == 0


def test_two_secrets_while_rotating_then_the_old_one_expires(
    manual: tuple[Source, Callable[..., httpx.Response]],
    store: Store,
    sim: SimServer,
    settings: Settings,
) -> None:
    _, post = manual
    for n in range(4):
        call(sim, "POST", "/v1/customers", {"email": f"r{n}@example.com"})
    events = sim_events(sim)
    payloads = [json.dumps(e).encode() for e in events]
    new = "whsec_" + "n" * 32
    runner = CliRunner()
    env = {
        "STRIPESYNC_DATABASE_URL": settings.resolved_database_url,
        "STRIPESYNC_SECRET_KEY": settings.secret_key.get_secret_value()
        if settings.secret_key
        else "",
        "STRIPESYNC_DATA_DIR": str(settings.data_dir),
    }
    from stripesync.cli import app

    result = runner.invoke(
        app, ["webhook-secret", "acme", new, "--rotate", "--keep-previous", "1h"], env=env
    )
    assert result.exit_code == 0, result.output
    assert new not in result.output and "whsec_…nnnn" in result.output
    time.sleep(2.1)  # the receiver's cache
    # During the rotation Stripe signs with both; either alone is accepted too.
    assert post(payloads[0], header=sign(payloads[0], [new, SECRET])).status_code == 200
    assert post(payloads[1], header=sign(payloads[1], [SECRET])).status_code == 200
    assert post(payloads[2], header=sign(payloads[2], [new])).status_code == 200
    with store.write() as conn:
        conn.execute(
            sa.update(webhook_secrets)
            .where(webhook_secrets.c.expires_at.is_not(None))
            .values(expires_at=sa.func.current_timestamp() - timedelta(seconds=5))
            if conn.dialect.name == "postgresql"
            else sa.update(webhook_secrets)
            .where(webhook_secrets.c.expires_at.is_not(None))
            .values(expires_at=sa.literal("2000-01-01 00:00:00"))
        )
    time.sleep(2.1)
    assert post(payloads[3], header=sign(payloads[3], [SECRET])).status_code == 401
    assert post(payloads[3], header=sign(payloads[3], [new])).status_code == 200
    listing = runner.invoke(app, ["webhook-secret", "acme", "--list"], env=env)
    assert listing.exit_code == 0 and "whsec_…nnnn" in listing.output
    assert new not in listing.output and SECRET not in listing.output
    with store.read() as conn:
        encrypted = [r.secret_encrypted for r in conn.execute(sa.select(webhook_secrets))]
    assert encrypted and all(new not in e and SECRET not in e for e in encrypted)


# -- what events do to objects --------------------------------------------------------------


def _subscription_with_upgrade(sim: SimServer, t0: int) -> tuple[dict[str, Any], str, str]:
    sim.sim.freeze(t0)
    product = call(sim, "POST", "/v1/products", {"name": "Plan"})
    prices = [
        call(
            sim,
            "POST",
            "/v1/prices",
            {
                "product": product["id"],
                "currency": "usd",
                "unit_amount": str(amount),
                "recurring": {"interval": "month"},
            },
        )
        for amount in (1000, 5000)
    ]
    customer = call(
        sim,
        "POST",
        "/v1/customers",
        {
            "email": "up@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        },
    )
    sim.sim.freeze(t0 + 1)
    sub = call(
        sim,
        "POST",
        "/v1/subscriptions",
        {"customer": customer["id"], "items": [{"price": prices[0]["id"]}]},
    )
    old_item = sub["items"]["data"][0]["id"]
    sim.sim.freeze(t0 + 4)
    upgraded = call(
        sim,
        "POST",
        f"/v1/subscriptions/{sub['id']}",
        {
            "items": [{"id": old_item, "deleted": "true"}, {"price": prices[1]["id"]}],
            "proration_behavior": "none",
        },
    )
    new_item = upgraded["items"]["data"][0]["id"]
    assert new_item != old_item
    return upgraded, old_item, new_item


def test_a_late_older_event_never_undoes_an_upgrade(
    manual: tuple[Source, Callable[..., httpx.Response]],
    store: Store,
    sim: SimServer,
    app_server: AppServer,
) -> None:
    source, post = manual
    upgraded, _, new_item = _subscription_with_upgrade(sim, int(time.time()) - 600)
    everything = sim_events(sim)
    events = [e for e in everything if e["type"].startswith("customer.subscription.")]
    deliver(post, [e for e in everything if e not in events])  # the customer, prices...
    updated = events[-1]
    older = events[:-1]
    assert updated["type"] == "customer.subscription.updated"
    assert "customer.subscription.created" in {e["type"] for e in older}
    assert all(e["created"] < updated["created"] for e in older)
    deliver(post, [updated])
    app_server.idle()
    deliver(post, older)  # late, older, still listing the replaced item
    app_server.idle()
    sub = stored(store, source.id, "subscription")[upgraded["id"]]
    assert [i["id"] for i in sub["items"]["data"]] == [new_item]
    items = stored(store, source.id, "subscription_item")
    assert set(items) == {new_item}
    table = RAW_TABLES["subscription_item"].table
    with store.read() as conn:
        assert conn.execute(sa.select(table.c.deleted)).scalars().all() == [False]
    # The derived state followed the upgrade, and the late event did not undo it.
    from stripesync.profiles.store import profile_customers

    with store.read() as conn:
        mrr = conn.execute(
            sa.select(profile_customers.c.mrr).where(
                profile_customers.c.customer_id == upgraded["customer"]
            )
        ).scalar_one()
    assert mrr == {"usd": 5000}


def test_same_second_events_are_resolved_by_a_refetch(
    manual: tuple[Source, Callable[..., httpx.Response]],
    store: Store,
    sim: SimServer,
    app_server: AppServer,
) -> None:
    source, post = manual
    t0 = int(time.time()) - 300
    sim.sim.freeze(t0)
    product = call(sim, "POST", "/v1/products", {"name": "Trial"})
    price = call(
        sim,
        "POST",
        "/v1/prices",
        {
            "product": product["id"],
            "currency": "usd",
            "unit_amount": "2000",
            "recurring": {"interval": "month"},
        },
    )
    customer = call(
        sim,
        "POST",
        "/v1/customers",
        {
            "email": "t@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        },
    )
    sub = call(
        sim,
        "POST",
        "/v1/subscriptions",
        {"customer": customer["id"], "items": [{"price": price["id"]}], "trial_period_days": "14"},
    )
    sim.sim.freeze(t0 + 60)
    call(sim, "POST", f"/v1/subscriptions/{sub['id']}", {"trial_end": "now"})
    events = [e for e in sim_events(sim) if e["data"]["object"].get("id") == sub["id"]]
    same = [e for e in events if e["created"] == t0 + 60]
    assert {e["type"] for e in same} >= {
        "customer.subscription.trial_will_end",
        "customer.subscription.updated",
    }
    # Worst order: the stale `trial_will_end` snapshot (still trialing) last.
    same.sort(key=lambda e: e["type"] == "customer.subscription.trial_will_end")
    deliver(post, [e for e in events if e["created"] < t0 + 60] + same)
    wait_for(lambda: (app_server.idle(), _refetches(store) == 0)[1], what="the refetch")
    truth = call(sim, "GET", f"/v1/subscriptions/{sub['id']}", {"expand": ["discounts"]})
    got = stored(store, source.id, "subscription")[sub["id"]]
    assert got["status"] == "active" == truth["status"]
    assert got == truth


def _refetches(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(sync_refetch)).scalar_one())


def test_payloads_in_another_api_version_are_refetched(
    manual: tuple[Source, Callable[..., httpx.Response]],
    store: Store,
    sim: SimServer,
    app_server: AppServer,
) -> None:
    source, post = manual
    account = sim.sim.context().account
    legacy = "2024-06-20"
    sim.sim.set_account_version(account, legacy)
    customer = call(sim, "POST", "/v1/customers", {"email": "v@example.com"})
    events = sim_events(sim)
    assert events[-1]["api_version"] == legacy
    deliver(post, events)
    wait_for(lambda: (app_server.idle(), _refetches(store) == 0)[1], what="the refetch")
    got = stored(store, source.id, "customer")[customer["id"]]
    _, truth, _ = sim.sim.request(
        "GET",
        f"/v1/customers/{customer['id']}",
        {},
        key=sim.secret_key,
        stripe_version=stripe.api_version,
    )
    assert got == truth
    assert ledger(store)[-1].api_version == legacy


def test_deletions_leave_tombstones(
    manual: tuple[Source, Callable[..., httpx.Response]],
    store: Store,
    sim: SimServer,
    app_server: AppServer,
) -> None:
    _, post = manual
    t0 = int(time.time()) - 120
    sim.sim.freeze(t0)
    customer = call(sim, "POST", "/v1/customers", {"email": "gone@example.com", "name": "Gone"})
    product = call(sim, "POST", "/v1/products", {"name": "Retired"})
    sim.sim.freeze(t0 + 5)
    call(sim, "DELETE", f"/v1/customers/{customer['id']}")
    call(sim, "DELETE", f"/v1/products/{product['id']}")
    deliver(post, sim_events(sim))
    app_server.idle()
    with store.read() as conn:
        for kind, obj in (("customer", customer), ("product", product)):
            table = RAW_TABLES[kind].table
            row = conn.execute(sa.select(table).where(table.c.id == obj["id"])).one()
            assert row.deleted is True, kind
            assert row.data["deleted"] is True
            assert row.data.get("name") == obj["name"], "the last full copy is kept"
