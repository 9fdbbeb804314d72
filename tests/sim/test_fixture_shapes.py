"""Every resource the simulator serves has the field set of Stripe's own example object.

The reference is ../shared/stripe-fixtures/fixtures3.json (Stripe's openapi fixtures for
the API version the SDK pins). Deliberate differences are listed below with the reason;
anything else missing or extra fails.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from stripesync.sim.server import SimServer

#: field -> why the simulator leaves it out (or adds it), per resource.
OMISSIONS: dict[str, dict[str, str]] = {
    "customer": {},
    "subscription": {
        "billing_schedules": "flexible billing schedules are not simulated; Stripe omits the "
        "field unless the subscription uses them",
        "managed_payments": "Stripe-managed payments (merchant of record) are not simulated",
    },
    "invoice": {},
    "charge": {
        "refunds": "includable since 2022-11-15: returned only with expand[]=refunds",
    },
    "payment_intent": {
        "managed_payments": "Stripe-managed payments (merchant of record) are not simulated",
    },
}
#: Fields the simulator returns that the fixture lacks, with the reason.
ADDITIONS: dict[str, dict[str, str]] = {
    "discount": {"created": "kept so discounts list and page like other objects; Stripe's "
                 "discount has no `created`"},
}


def _raw(server: SimServer, method: str, path: str, **params: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.secret_key}"}
    data = _encode(params)
    if method == "GET":
        response = httpx.get(f"{server.url}{path}", params=data, headers=headers)
    else:
        response = httpx.post(f"{server.url}{path}", data=data, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _encode(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if isinstance(value, dict):
            out.update(_encode(value, name))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out.update(_encode(item, f"{name}[{i}]"))
                else:
                    out[f"{name}[{i}]"] = str(item)
        else:
            out[name] = str(value)
    return out


@pytest.fixture(scope="module")
def served(server: SimServer) -> dict[str, dict[str, Any]]:
    """One object of every resource, created through the HTTP API."""
    objs: dict[str, dict[str, Any]] = {}
    objs["customer"] = _raw(
        server, "POST", "/v1/customers", email="shape@example.com", payment_method="pm_card_visa",
        invoice_settings={"default_payment_method": "pm_card_visa"},
    )
    cus = objs["customer"]["id"]
    objs["product"] = _raw(server, "POST", "/v1/products", name="Shape")
    objs["price"] = _raw(
        server, "POST", "/v1/prices", product=objs["product"]["id"], currency="usd",
        unit_amount=1000, recurring={"interval": "month"},
    )
    objs["plan"] = _raw(
        server, "POST", "/v1/plans", product=objs["product"]["id"], currency="usd", amount=500,
        interval="month",
    )
    objs["coupon"] = _raw(server, "POST", "/v1/coupons", percent_off=10, duration="forever")
    objs["payment_method"] = _raw(server, "GET", f"/v1/customers/{cus}/payment_methods")["data"][0]
    objs["subscription"] = _raw(
        server, "POST", "/v1/subscriptions", customer=cus,
        items=[{"price": objs["price"]["id"]}], discounts=[{"coupon": objs["coupon"]["id"]}],
    )
    objs["subscription_item"] = objs["subscription"]["items"]["data"][0]
    objs["discount"] = _raw(
        server, "GET", f"/v1/subscriptions/{objs['subscription']['id']}", expand=["discounts"]
    )["discounts"][0]
    invoice = _raw(server, "GET", f"/v1/invoices/{objs['subscription']['latest_invoice']}")
    objs["invoice"] = invoice
    objs["line_item"] = invoice["lines"]["data"][0]
    objs["invoiceitem"] = _raw(
        server, "POST", "/v1/invoiceitems", customer=cus, amount=300, currency="usd"
    )
    charges = _raw(server, "GET", "/v1/charges", customer=cus)["data"]
    objs["charge"] = charges[0]
    objs["payment_intent"] = _raw(server, "GET", f"/v1/payment_intents/{charges[0]['payment_intent']}")
    objs["refund"] = _raw(server, "POST", "/v1/refunds", charge=charges[0]["id"], amount=100)
    # On a paid invoice Stripe requires the credit to be placed (refund, balance, outside).
    objs["credit_note"] = _raw(
        server, "POST", "/v1/credit_notes", invoice=invoice["id"], amount=100,
        out_of_band_amount=100,
    )
    objs["credit_note_line_item"] = objs["credit_note"]["lines"]["data"][0]
    objs["webhook_endpoint"] = _raw(
        server, "POST", "/v1/webhook_endpoints", url="http://127.0.0.1:9/x", enabled_events=["*"]
    )
    objs["webhook_endpoint"].pop("secret")  # returned once, on creation only
    objs["event"] = _raw(server, "GET", "/v1/events")["data"][0]
    return objs


RESOURCES = [
    "customer", "product", "price", "plan", "coupon", "discount", "payment_method",
    "subscription", "subscription_item", "invoice", "line_item", "invoiceitem", "charge",
    "payment_intent", "refund", "credit_note", "credit_note_line_item", "event",
    "webhook_endpoint",
]


@pytest.mark.parametrize("resource", RESOURCES)
def test_field_set_matches_stripe_fixture(
    resource: str, served: dict[str, dict[str, Any]], stripe_fixtures: dict[str, dict[str, Any]]
) -> None:
    expected = set(stripe_fixtures[resource]) - set(OMISSIONS.get(resource, {}))
    expected |= set(ADDITIONS.get(resource, {}))
    actual = set(served[resource])
    assert sorted(expected - actual) == [], f"{resource}: fields Stripe has and we lack"
    assert sorted(actual - expected) == [], f"{resource}: fields we add that Stripe lacks"
