"""The product reads one shape whatever version Stripe rendered an object in.

Old-shape inputs come from the simulator's renderer (`stripesync.sim.versions.render`)
applied to Stripe's own example objects (fixtures3.json), so these tests also pin the
contract between the two: what the simulator sends for 2024-06-20, the product reads
back with the same periods, subscription ids, prices, proration flags and coupons.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from stripesync.sim.versions import LEGACY_VERSION, invoice_payment_key, render
from stripesync.stripe_api.shapes import (
    discount_coupon,
    discount_coupon_id,
    invoice_subscription_id,
    line_is_proration,
    line_price_id,
    line_subscription_item_id,
    normalize,
    object_id,
    subscription_period,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "stripe-fixtures" / "fixtures3.json"

DEC_1 = 1_733_011_200  # 2024-12-01T00:00:00Z
JAN_1 = 1_735_689_600
FEB_1 = 1_738_368_000
MAR_1 = 1_740_787_200
INVOICE_ITEM = "ii_1Pgc6sB7WZ01zgkWrG16hkdl"


@cache
def _resources() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return data


def fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(_resources()[name])


class Account:
    """Canonical objects of one account, filled with values that point at each other."""

    def __init__(self, *, items: int = 1) -> None:
        self.coupon = fixture("coupon")
        self.price = fixture("price")
        plan = fixture("plan")

        self.sub = fixture("subscription")
        sub_id = self.sub["id"]
        first = self.sub["items"]["data"][0]
        first.update(
            subscription=sub_id,
            plan=plan,
            price=self.price,
            current_period_start=JAN_1,
            current_period_end=FEB_1,
        )
        if items > 1:
            second = fixture("subscription_item")
            second.update(
                subscription=sub_id,
                plan=plan,
                price=self.price,
                current_period_start=JAN_1 + 86_400,
                current_period_end=MAR_1,
            )
            self.sub["items"]["data"].append(second)
        self.item_id = first["id"]

        self.discount = fixture("discount")
        self.discount["source"]["coupon"] = self.coupon["id"]
        self.discount.update(subscription=sub_id, end=None)
        self.sub["discounts"] = [self.discount["id"]]

        self.invoice = fixture("invoice")
        self.invoice.update(
            status="paid",
            amount_paid=2000,
            amount_remaining=0,
            amount_due=2000,
            discounts=[self.discount["id"]],
            parent={
                "quote_details": None,
                "type": "subscription_details",
                "subscription_details": {"metadata": {"tier": "pro"}, "subscription": sub_id},
            },
            total_taxes=[self.tax(160)],
        )
        self.invoice["lines"]["data"] = [
            self.line("il_sub", "subscription_item_details", proration=False),
            self.line("il_ii", "invoice_item_details", proration=True),
            self.line(
                "il_si", "subscription_item_details", proration=True, invoice_item=INVOICE_ITEM
            ),
        ]
        self.store = {obj["id"]: obj for obj in (self.coupon, self.price, self.discount)}
        payment = fixture("invoice_payment")
        payment.update(
            invoice=self.invoice["id"],
            is_default=True,
            status="paid",
            payment={
                "type": "payment_intent",
                "payment_intent": "pi_3PgcAbC",
                "charge": "ch_3PgcAbC",
            },
        )
        self.store[invoice_payment_key(self.invoice["id"])] = payment

    def lookup(self, key: str) -> dict[str, Any] | None:
        return self.store.get(key)

    def tax(self, amount: int) -> dict[str, Any]:
        return {
            "amount": amount,
            "tax_behavior": "exclusive",
            "tax_rate_details": {"tax_rate": "txr_1PgcAbB7WZ01zgkW"},
            "taxability_reason": "standard_rated",
            "taxable_amount": amount * 10,
            "type": "tax_rate_details",
        }

    def line(
        self, line_id: str, kind: str, *, proration: bool, invoice_item: str | None = None
    ) -> dict[str, Any]:
        line = fixture("line_item")
        line.update(id=line_id, invoice=self.invoice["id"], taxes=[self.tax(80)])
        sub_id = self.sub["id"]
        if kind == "subscription_item_details":
            line["parent"] = {
                "invoice_item_details": None,
                "type": kind,
                "subscription_item_details": {
                    "invoice_item": invoice_item,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": sub_id,
                    "subscription_item": self.item_id,
                },
            }
        else:
            line["parent"] = {
                "subscription_item_details": None,
                "type": kind,
                "invoice_item_details": {
                    "invoice_item": INVOICE_ITEM,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": sub_id,
                },
            }
        line["pricing"] = {
            "price_details": {"price": self.price["id"], "product": self.price["product"]},
            "type": "price_details",
            "unit_amount_decimal": self.price["unit_amount_decimal"],
        }
        return line

    def event(self, previous: dict[str, Any]) -> dict[str, Any]:
        event = fixture("event")
        event.update(
            type="customer.subscription.updated",
            data={"object": self.sub, "previous_attributes": previous},
        )
        return event

    def legacy(self, obj: dict[str, Any]) -> dict[str, Any]:
        return render(obj, LEGACY_VERSION, lookup=self.lookup)


def _discount_coupons(obj: dict[str, Any], store: dict[str, Any]) -> list[str | None]:
    """The coupon id of each discount, reading through ids the way the product will."""
    coupons = []
    for entry in obj["discounts"]:
        discount = entry if isinstance(entry, dict) else store[entry]
        coupons.append(discount_coupon_id(discount))
    return coupons


def _line_facts(invoice: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (line["id"], line_price_id(line), line_is_proration(line), line_subscription_item_id(line))
        for line in invoice["lines"]["data"]
    ]


# -- current shapes --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_resources()))
def test_every_current_fixture_comes_back_equal(name: str) -> None:
    obj = fixture(name)
    assert normalize(obj) == obj


# -- round trips through the old shape --------------------------------------------------


@pytest.mark.parametrize("items", [1, 2], ids=["one-item", "two-items"])
def test_subscription_round_trip(items: int) -> None:
    account = Account(items=items)
    legacy = account.legacy(account.sub)
    assert "current_period_start" not in legacy["items"]["data"][0]

    back = normalize(legacy)

    assert subscription_period(back) == subscription_period(account.sub)
    assert subscription_period(legacy) == subscription_period(account.sub)
    for item in back["items"]["data"]:
        assert (item["current_period_start"], item["current_period_end"]) == (
            subscription_period(account.sub)
        )
    assert [object_id(d) for d in back["discounts"]] == account.sub["discounts"]
    assert _discount_coupons(back, account.store) == [account.coupon["id"]]
    assert discount_coupon(back["discounts"][0]) == account.coupon
    for moved in ("current_period_start", "current_period_end", "plan", "quantity", "discount"):
        assert moved not in back


def test_one_item_subscription_keeps_its_exact_item_period() -> None:
    account = Account()
    back = normalize(account.legacy(account.sub))
    assert back["items"] == account.sub["items"]


def test_invoice_round_trip() -> None:
    account = Account()
    legacy = account.legacy(account.invoice)
    assert legacy["subscription"] == account.sub["id"]

    back = normalize(legacy)

    assert invoice_subscription_id(back) == account.sub["id"]
    assert invoice_subscription_id(legacy) == account.sub["id"]
    assert back["parent"] == account.invoice["parent"]
    assert back["total_taxes"] == account.invoice["total_taxes"]
    assert _line_facts(back) == _line_facts(account.invoice)
    assert _line_facts(legacy) == _line_facts(account.invoice)
    for line, original in zip(back["lines"]["data"], account.invoice["lines"]["data"], strict=True):
        assert line["parent"] == original["parent"]
        assert line["taxes"] == original["taxes"]
        assert object_id(line["pricing"]["price_details"]["price"]) == account.price["id"]
        assert line["pricing"]["price_details"]["product"] == account.price["product"]
    assert _discount_coupons(back, account.store) == [account.coupon["id"]]
    # No current home for these: they stay for whoever wants them.
    assert (back["paid"], back["charge"], back["payment_intent"]) == (
        True,
        "ch_3PgcAbC",
        "pi_3PgcAbC",
    )
    for moved in (
        "subscription",
        "subscription_details",
        "quote",
        "tax",
        "total_tax_amounts",
        "discount",
    ):
        assert moved not in back


def test_invoice_without_subscription_gets_a_null_parent() -> None:
    account = Account()
    account.invoice["parent"] = None
    back = normalize(account.legacy(account.invoice))
    assert back["parent"] is None
    assert invoice_subscription_id(back) is None


def test_invoice_item_round_trip() -> None:
    account = Account()
    item = fixture("invoiceitem")
    item.update(
        parent={
            "subscription_details": {
                "subscription": account.sub["id"],
                "subscription_item": account.item_id,
            },
            "type": "subscription_details",
        },
        pricing={
            "price_details": {"price": account.price["id"], "product": account.price["product"]},
            "type": "price_details",
            "unit_amount_decimal": "2000",
        },
    )
    legacy = account.legacy(item)
    assert (legacy["subscription"], legacy["unit_amount"]) == (account.sub["id"], 2000)

    back = normalize(legacy)

    assert back["parent"] == item["parent"]
    assert line_price_id(back) == line_price_id(item) == account.price["id"]
    assert back["pricing"]["unit_amount_decimal"] == "2000"


def test_discount_round_trip() -> None:
    account = Account()
    legacy = account.legacy(account.discount)
    assert legacy["coupon"] == account.coupon

    back = normalize(legacy)

    assert back["source"] == {"coupon": account.coupon, "type": "coupon"}
    assert discount_coupon_id(back) == discount_coupon_id(account.discount)
    assert discount_coupon(back) == account.coupon
    assert discount_coupon(account.discount) is None  # only the id, until expanded


def test_event_period_roll_over_round_trip() -> None:
    account = Account()
    old_items = copy.deepcopy(account.sub["items"])
    old_items["data"][0].update(current_period_start=DEC_1, current_period_end=JAN_1)
    event = account.event({"items": old_items})
    legacy = account.legacy(event)
    assert legacy["data"]["previous_attributes"]["current_period_end"] == JAN_1

    back = normalize(legacy)

    assert subscription_period(back["data"]["object"]) == (JAN_1, FEB_1)
    previous = back["data"]["previous_attributes"]
    assert set(previous) == {"items"}
    assert subscription_period(previous) == (DEC_1, JAN_1)
    assert previous["items"]["data"] == old_items["data"]


def test_event_with_only_an_old_top_level_period() -> None:
    """An old-shape payload whose previous period changed and nothing else."""
    account = Account()
    event = account.legacy(account.event({"metadata": {"tier": "basic"}}))
    event["data"]["previous_attributes"] = {
        "current_period_start": DEC_1,
        "current_period_end": JAN_1,
    }
    back = normalize(event)
    previous = back["data"]["previous_attributes"]
    assert set(previous) == {"items"}
    assert subscription_period(previous) == (DEC_1, JAN_1)
    assert "current_period_end" not in previous


def test_event_previous_attributes_stay_as_deep_as_the_event_went() -> None:
    account = Account()
    account.sub["metadata"] = {"tier": "pro", "seats": "5"}
    event = account.event({"metadata": {"tier": "basic"}})
    back = normalize(account.legacy(event))
    assert back["data"]["previous_attributes"] == {"metadata": {"tier": "basic"}}


# -- idempotence and purity ------------------------------------------------------------


def _samples() -> list[dict[str, Any]]:
    account = Account(items=2)
    old_items = copy.deepcopy(account.sub["items"])
    old_items["data"][0]["current_period_start"] = DEC_1
    canonical = [
        account.sub,
        account.invoice,
        account.discount,
        account.event({"items": old_items}),
        fixture("charge"),
    ]
    return canonical + [account.legacy(obj) for obj in canonical]


@pytest.mark.parametrize("index", range(len(_samples())))
def test_normalize_is_idempotent(index: int) -> None:
    once = normalize(_samples()[index])
    assert normalize(once) == once


def test_inputs_are_never_mutated() -> None:
    samples = _samples()
    before = copy.deepcopy(samples)
    for obj in samples:
        out = normalize(obj)
        _scribble(out)
    assert samples == before


def _scribble(node: Any) -> None:
    if isinstance(node, dict):
        for value in list(node.values()):
            _scribble(value)
        node["_scribbled"] = True
    elif isinstance(node, list):
        for value in node:
            _scribble(value)
        node.append("scribbled")


# -- readers ---------------------------------------------------------------------------


def test_object_id_reads_ids_and_expanded_objects() -> None:
    customer = fixture("customer")
    assert object_id(customer["id"]) == customer["id"]
    assert object_id(customer) == customer["id"]
    assert object_id(None) is None
    assert object_id({"object": "customer"}) is None
    assert object_id(42) is None


def test_readers_on_objects_without_links() -> None:
    line = fixture("line_item")
    line["parent"] = None
    line["pricing"] = None
    assert (line_price_id(line), line_is_proration(line), line_subscription_item_id(line)) == (
        None,
        False,
        None,
    )
    invoice = fixture("invoice")
    invoice["parent"] = None
    assert invoice_subscription_id(invoice) is None
    sub = fixture("subscription")
    sub["items"]["data"] = []
    assert subscription_period(sub) == (None, None)
