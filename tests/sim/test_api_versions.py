"""API versions as Stripe has them, through the official SDK and raw HTTP.

The simulator stores every object in the shape of the version the SDK pins
(``2026-10-28.endive``) and renders each answer in the request's ``Stripe-Version``, each
event in the version in force when it was created (whatever the reader sends), and each
webhook in its endpoint's version (else the account's). ``2024-06-20`` stands for every
version before the 2025-03-31 split: periods on the subscription, ``invoice.subscription``
/ ``paid`` / ``charge`` / ``payment_intent``, ``charge.invoice``, an expanded
``discount.coupon``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from stripesync.sim.core import DEFAULT_ACCOUNT, Knobs
from stripesync.sim.server import SimServer
from tests.sim.conftest import Receiver

LEGACY = "2024-06-20"
PINNED = stripe.api_version
OLD = {"stripe_version": LEGACY}
NOW = 1_801_386_000  # 2027-01-31 09:00 UTC


@pytest.fixture
def sim_server() -> Iterator[SimServer]:
    with SimServer(knobs=Knobs(rate_limits=False, webhook_retry_base_seconds=0.05)) as srv:
        srv.sim.freeze(NOW)
        yield srv


def raw(server: SimServer, path: str, version: str | None = None, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {server.secret_key}"}
    if version is not None:
        headers["Stripe-Version"] = version
    return httpx.get(f"{server.url}{path}", headers=headers, params=params)


def account(client: Any) -> tuple[Any, Any, Any]:
    """A paying customer, a coupon and a 20 USD/month price."""
    cus = client.v1.customers.create(params={"email": "grace@example.com"})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    coupon = client.v1.coupons.create(
        params={"percent_off": 10, "duration": "forever", "name": "Friends"}
    )
    product = client.v1.products.create(params={"name": "Pro"})
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
        }
    )
    return cus, coupon, price


def subscribe(client: Any, cus: Any, coupon: Any, price: Any) -> Any:
    return client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price.id}],
            "discounts": [{"coupon": coupon.id}],
        }
    )


def assert_legacy_subscription(sub: dict[str, Any], price_id: str, coupon_id: str) -> None:
    item = sub["items"]["data"][0]
    assert sub["current_period_start"] == NOW
    assert sub["current_period_end"] == 1_803_805_200  # 2027-02-28 09:00
    assert "current_period_start" not in item and "current_period_end" not in item
    assert sub["plan"]["object"] == "plan" and sub["plan"]["id"] == price_id
    assert sub["quantity"] == 1
    assert sub["discount"]["object"] == "discount"
    assert sub["discount"]["coupon"]["object"] == "coupon"
    assert sub["discount"]["coupon"]["id"] == coupon_id
    assert "source" not in sub["discount"]


def assert_current_subscription(sub: dict[str, Any]) -> None:
    item = sub["items"]["data"][0]
    for name in ("current_period_start", "current_period_end", "plan", "quantity", "discount"):
        assert name not in sub, name
    assert (item["current_period_start"], item["current_period_end"]) == (NOW, 1_803_805_200)


# -- responses in the request's version -------------------------------------------------


def test_sdk_request_with_an_old_version_gets_the_old_shapes(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, coupon, price = account(client)
    sub = subscribe(client, cus, coupon, price)

    old_sub = client.v1.subscriptions.retrieve(sub.id, options=OLD)
    assert old_sub.last_response.headers.get("Request-Id")
    assert_legacy_subscription(old_sub.to_dict(), price.id, coupon.id)

    invoice = client.v1.invoices.retrieve(sub.latest_invoice, options=OLD)
    assert invoice.subscription == sub.id and invoice.paid is True
    assert invoice.amount_paid == 1800
    assert invoice.charge.startswith("ch_") and invoice.payment_intent.startswith("pi_")
    assert invoice.discount.coupon.id == coupon.id
    assert "parent" not in invoice
    line = invoice.lines.data[0]
    assert line.type == "subscription" and line.price.id == price.id
    assert line.plan.id == price.id and line.proration is False
    assert line.subscription_item == sub["items"].data[0].id

    charge = client.v1.charges.retrieve(invoice.charge, options=OLD)
    assert charge.invoice == invoice.id and charge.payment_intent == invoice.payment_intent
    intent = client.v1.payment_intents.retrieve(invoice.payment_intent, options=OLD)
    assert intent.invoice == invoice.id and intent.latest_charge == charge.id

    # several items: no single plan or quantity to show, as Stripe did
    extra = client.v1.prices.create(
        params={
            "product": price.product,
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
        }
    )
    client.v1.subscription_items.create(params={"subscription": sub.id, "price": extra.id})
    two = client.v1.subscriptions.retrieve(sub.id, options=OLD)
    assert two.plan is None and two.quantity is None
    assert two.current_period_end == 1_803_805_200


def test_old_version_expands_the_invoice_payment_intent(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, coupon, price = account(client)
    sub = subscribe(client, cus, coupon, price)
    old = client.v1.subscriptions.retrieve(
        sub.id, params={"expand": ["latest_invoice.payment_intent"]}, options=OLD
    )
    assert old.latest_invoice.payment_intent.status == "succeeded"
    assert old.latest_invoice.payment_intent.invoice == old.latest_invoice.id


def test_the_pinned_version_gets_the_current_shapes(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, coupon, price = account(client)
    sub = subscribe(client, cus, coupon, price)
    for current in (
        client.v1.subscriptions.retrieve(sub.id),
        client.v1.subscriptions.retrieve(sub.id, options={"stripe_version": PINNED}),
    ):
        assert_current_subscription(current.to_dict())
        assert current.discounts == sub.discounts

    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.parent.type == "subscription_details"
    assert invoice.parent.subscription_details.subscription == sub.id
    for name in ("paid", "charge", "payment_intent", "discount", "subscription_details"):
        assert name not in invoice, name
    line = invoice.lines.data[0]
    assert line.parent.subscription_item_details.subscription_item == sub["items"].data[0].id
    assert line.pricing.price_details.price == price.id
    assert "type" not in line and "price" not in line

    expanded = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["discounts"]})
    discount = expanded.discounts[0]
    assert discount.source.type == "coupon" and discount.source.coupon == coupon.id
    assert "coupon" not in discount
    charge = client.v1.charges.list(params={"customer": cus.id}).data[0]
    assert "invoice" not in charge
    intent = client.v1.payment_intents.retrieve(charge.payment_intent)
    assert "invoice" not in intent


def test_raw_http_stripe_version_header(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, coupon, price = account(client)
    sub = subscribe(client, cus, coupon, price)

    old = raw(sim_server, f"/v1/subscriptions/{sub.id}", LEGACY)
    assert old.status_code == 200
    assert_legacy_subscription(old.json(), price.id, coupon.id)
    listed = raw(sim_server, "/v1/subscriptions", LEGACY, customer=cus.id).json()
    assert_legacy_subscription(listed["data"][0], price.id, coupon.id)
    for version in (PINNED, None):  # no header: the account's version
        current = raw(sim_server, f"/v1/subscriptions/{sub.id}", version)
        assert_current_subscription(current.json())

    old_invoice = raw(sim_server, f"/v1/invoices/{sub.latest_invoice}", LEGACY).json()
    assert old_invoice["subscription"] == sub.id and old_invoice["paid"] is True
    charge = raw(sim_server, f"/v1/charges/{old_invoice['charge']}", LEGACY).json()
    assert charge["invoice"] == sub.latest_invoice
    current = raw(sim_server, f"/v1/invoices/{sub.latest_invoice}").json()
    assert current["parent"]["subscription_details"]["subscription"] == sub.id
    assert "paid" not in current and "charge" not in current

    # the account's default applies to requests without a header
    sim_server.sim.set_account_version(DEFAULT_ACCOUNT, LEGACY)
    defaulted = raw(sim_server, f"/v1/subscriptions/{sub.id}").json()
    assert_legacy_subscription(defaulted, price.id, coupon.id)
    pinned = raw(sim_server, f"/v1/subscriptions/{sub.id}", PINNED).json()
    assert_current_subscription(pinned)


@pytest.mark.parametrize(
    "version",
    ["banana", "2024-13-45", "2026-10-28", "2024-06-20.acacia", "2099-01-01.zebra", ""],
)
def test_an_invalid_version_is_a_400(sim_server: SimServer, version: str) -> None:
    client = sim_server.client()
    response = raw(sim_server, "/v1/customers", version)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and version in error["message"]
    if version:
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.customers.list(options={"stripe_version": version})
        assert info.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.webhook_endpoints.create(
            params={
                "url": "https://example.com/hook",
                "enabled_events": ["*"],
                "api_version": version or "nope",
            }
        )
    assert info.value.param == "api_version"


# -- events and webhooks ----------------------------------------------------------------


def test_events_keep_the_version_in_force_when_they_were_created(
    sim_server: SimServer,
) -> None:
    client = sim_server.client()
    cus, coupon, price = account(client)
    sim_server.sim.set_account_version(DEFAULT_ACCOUNT, LEGACY)
    old_sub = subscribe(client, cus, coupon, price)
    sim_server.sim.set_account_version(DEFAULT_ACCOUNT, PINNED)
    new_sub = subscribe(client, cus, coupon, price)

    def created_events(**options: Any) -> dict[str, Any]:
        listed = client.v1.events.list(
            params={"type": "customer.subscription.created"}, options=options
        )
        return {e.data.object.id: e for e in listed.data}

    for options in ({}, {"stripe_version": LEGACY}, {"stripe_version": PINNED}):
        found = created_events(**options)
        old, new = found[old_sub.id], found[new_sub.id]
        assert old.api_version == LEGACY and new.api_version == PINNED
        assert_legacy_subscription(old.data.object.to_dict(), price.id, coupon.id)
        assert_current_subscription(new.data.object.to_dict())
        # retrieving one event renders it the same way
        again = client.v1.events.retrieve(old.id, options=options)
        assert again.api_version == LEGACY
        assert again.data.object.current_period_end == old.data.object.current_period_end

    raw_list = raw(sim_server, "/v1/events", PINNED, type="invoice.paid").json()["data"]
    by_invoice = {e["data"]["object"]["id"]: e for e in raw_list}
    old_paid = by_invoice[old_sub.latest_invoice]
    assert old_paid["api_version"] == LEGACY
    assert old_paid["data"]["object"]["subscription"] == old_sub.id
    assert old_paid["data"]["object"]["paid"] is True
    new_paid = by_invoice[new_sub.latest_invoice]
    assert new_paid["api_version"] == PINNED and "paid" not in new_paid["data"]["object"]
    assert new_paid["data"]["object"]["parent"]["subscription_details"]["subscription"] == (
        new_sub.id
    )


def test_webhook_endpoints_receive_their_own_version(sim_server: SimServer) -> None:
    client = sim_server.client()
    pinned_receiver, account_receiver = Receiver(), Receiver()
    try:
        old_endpoint = client.v1.webhook_endpoints.create(
            params={
                "url": pinned_receiver.url,
                "enabled_events": ["customer.subscription.created"],
                "api_version": LEGACY,
            }
        )
        plain_endpoint = client.v1.webhook_endpoints.create(
            params={
                "url": account_receiver.url,
                "enabled_events": ["customer.subscription.created"],
            }
        )
        assert old_endpoint.api_version == LEGACY and plain_endpoint.api_version is None
        cus, coupon, price = account(client)
        first = subscribe(client, cus, coupon, price)
        sim_server.sim.set_account_version(DEFAULT_ACCOUNT, LEGACY)
        second = subscribe(client, cus, coupon, price)

        def payloads(receiver: Receiver, secret: str) -> dict[str, dict[str, Any]]:
            out = {}
            for headers, body in receiver.wait_for(2):
                stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], secret)
                event = json.loads(body)
                out[event["data"]["object"]["id"]] = event
            return out

        old = payloads(pinned_receiver, old_endpoint.secret)
        plain = payloads(account_receiver, plain_endpoint.secret)
        assert set(old) == set(plain) == {first.id, second.id}
        # the endpoint's version, whatever the account's was
        for sub_id in (first.id, second.id):
            assert old[sub_id]["api_version"] == LEGACY
            assert_legacy_subscription(old[sub_id]["data"]["object"], price.id, coupon.id)
        # no endpoint version: the account's version when the event happened
        assert plain[first.id]["api_version"] == PINNED
        assert_current_subscription(plain[first.id]["data"]["object"])
        assert plain[second.id]["api_version"] == LEGACY
        assert_legacy_subscription(plain[second.id]["data"]["object"], price.id, coupon.id)
    finally:
        pinned_receiver.close()
        account_receiver.close()


# -- previous_attributes and request ------------------------------------------------------


def _updated_events(client: Any, sub_id: str) -> list[Any]:
    """``customer.subscription.updated`` after the creation (which activates it), newest
    first."""
    listed = client.v1.events.list(params={"type": "customer.subscription.updated"}).data
    return [
        e
        for e in listed
        if e.data.object.id == sub_id and "status" not in e.data.previous_attributes
    ]


def test_quantity_change_records_previous_attributes_and_the_request(
    sim_server: SimServer,
) -> None:
    client = sim_server.client()
    cus, coupon, price = account(client)
    sub = subscribe(client, cus, coupon, price)
    item = sub["items"].data[0]
    updated = client.v1.subscriptions.update(
        sub.id,
        params={"items": [{"id": item.id, "quantity": 3}], "proration_behavior": "none"},
        options={"idempotency_key": "seat-change-1"},
    )
    assert updated["items"].data[0].quantity == 3
    request_id = updated.last_response.request_id
    (event,) = _updated_events(client, sub.id)
    assert event.request.id == request_id and request_id.startswith("req_")
    assert event.request.idempotency_key == "seat-change-1"
    previous = event.data.previous_attributes
    (old_item,) = previous["items"].data
    assert old_item.id == item.id and old_item.quantity == 1
    assert event.data.object["items"].data[0].quantity == 3
    assert "quantity" not in previous  # no top-level quantity in this version
    # replaying the request answers the first result and records nothing new
    replay = client.v1.subscriptions.update(
        sub.id,
        params={"items": [{"id": item.id, "quantity": 3}], "proration_behavior": "none"},
        options={"idempotency_key": "seat-change-1"},
    )
    assert replay.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(_updated_events(client, sub.id)) == 1
    # the SDK sends a key of its own on every POST
    client.v1.subscriptions.update(sub.id, params={"metadata": {"seats": "3"}})
    latest = _updated_events(client, sub.id)[0]
    assert latest.request.id.startswith("req_") and latest.request.id != request_id
    assert latest.request.idempotency_key not in (None, "", "seat-change-1")
    assert latest.data.previous_attributes.to_dict() == {"metadata": {"seats": None}}
    # a request without a key still names itself
    response = httpx.post(
        f"{sim_server.url}/v1/subscriptions/{sub.id}",
        headers={"Authorization": f"Bearer {sim_server.secret_key}"},
        data={"metadata[seats]": "4"},
    )
    assert response.status_code == 200
    keyless = _updated_events(client, sub.id)[0]
    assert keyless.request.id == response.headers["Request-Id"]
    assert keyless.request.idempotency_key is None
    assert keyless.data.previous_attributes.to_dict() == {"metadata": {"seats": "3"}}


def test_previous_attributes_in_an_old_version(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, coupon, price = account(client)
    sim_server.sim.set_account_version(DEFAULT_ACCOUNT, LEGACY)
    sub = subscribe(client, cus, coupon, price)
    item = sub["items"].data[0]
    client.v1.subscriptions.update(
        sub.id,
        params={"items": [{"id": item.id, "quantity": 2}], "proration_behavior": "none"},
    )
    sim_server.sim.set_account_version(DEFAULT_ACCOUNT, PINNED)
    (event,) = _updated_events(client, sub.id)
    assert event.api_version == LEGACY
    previous = event.data.previous_attributes
    assert previous.quantity == 1  # the single item's quantity, as old versions showed it
    assert previous["items"].data[0].quantity == 1
    assert "current_period_end" not in previous  # the period did not change
    assert event.data.object.quantity == 2
