"""The simulator renders canonical objects the way older API versions showed them.

Every input starts as a deep copy of Stripe's own example objects (fixtures3.json), with
only the values a realistic account would hold filled in (ids that point at each other,
periods in order, a paid status). The fixtures' placeholders, such as a period ending
before it starts, are replaced, never the shapes.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from stripesync.sim.versions import (
    CURRENT_VERSION,
    LEGACY_VERSION,
    SUPPORTED_VERSIONS,
    invoice_payment_key,
    is_legacy,
    render,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "stripe-fixtures" / "fixtures3.json"

JAN_1 = 1_735_689_600  # 2025-01-01T00:00:00Z
FEB_1 = 1_738_368_000
MAR_1 = 1_740_787_200
DEC_1 = 1_733_011_200  # 2024-12-01


@cache
def _resources() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return data


def fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(_resources()[name])


class World:
    """A small consistent account: a subscription, its paid invoice, the payment."""

    def __init__(self) -> None:
        self.coupon = fixture("coupon")
        self.price = fixture("price")
        self.plan = fixture("plan")
        assert self.plan["id"] == self.price["id"]

        self.sub = fixture("subscription")
        sub_id = self.sub["id"]
        self.item = self.sub["items"]["data"][0]
        self.item.update(
            subscription=sub_id,
            plan=self.plan,
            price=self.price,
            quantity=3,
            current_period_start=JAN_1,
            current_period_end=FEB_1,
        )
        self.sub["metadata"] = {"tier": "pro"}

        self.discount = fixture("discount")
        self.discount["source"]["coupon"] = self.coupon["id"]
        self.discount.update(customer=self.sub["customer"], subscription=sub_id, end=None)
        self.sub["discounts"] = [self.discount["id"]]

        self.payment_intent = fixture("payment_intent")
        self.charge = fixture("charge")
        self.charge.update(payment_intent=self.payment_intent["id"], customer=self.sub["customer"])
        self.payment_intent.update(latest_charge=self.charge["id"], status="succeeded")

        self.invoice = fixture("invoice")
        inv_id = self.invoice["id"]
        self.invoice.update(
            status="paid",
            amount_paid=2400,
            amount_due=2400,
            amount_remaining=0,
            billing_reason="subscription_cycle",
            discounts=[self.discount["id"]],
            parent={
                "quote_details": None,
                "subscription_details": {"metadata": {"tier": "pro"}, "subscription": sub_id},
                "type": "subscription_details",
            },
            total_taxes=[self.tax(400)],
        )
        self.invoice["lines"]["data"] = [
            self.line("il_sub", "subscription_item_details", proration=False),
            self.line("il_pro_ii", "invoice_item_details", proration=True),
            self.line(
                "il_pro_si",
                "subscription_item_details",
                proration=True,
                invoice_item="ii_1Pgc6sB7WZ01zgkWrG16hkdl",
            ),
        ]

        self.invoice_payment = fixture("invoice_payment")
        self.invoice_payment.update(
            id="inpay_1Pgc7aB7WZ01zgkW",
            invoice=inv_id,
            is_default=True,
            status="paid",
            amount_paid=2400,
            payment={"type": "payment_intent", "payment_intent": self.payment_intent["id"]},
        )

        self.store: dict[str, dict[str, Any]] = {
            obj["id"]: obj
            for obj in (
                self.coupon,
                self.price,
                self.discount,
                self.payment_intent,
                self.charge,
                self.invoice,
                self.sub,
            )
        }
        for target in (inv_id, self.payment_intent["id"], self.charge["id"]):
            self.store[invoice_payment_key(target)] = self.invoice_payment

    def lookup(self, key: str) -> dict[str, Any] | None:
        return self.store.get(key)

    def tax(self, amount: int) -> dict[str, Any]:
        return {
            "amount": amount,
            "tax_behavior": "exclusive",
            "tax_rate_details": {"tax_rate": "txr_1PgcAbB7WZ01zgkW"},
            "taxability_reason": "standard_rated",
            "taxable_amount": amount * 5,
            "type": "tax_rate_details",
        }

    def line(
        self, line_id: str, kind: str, *, proration: bool, invoice_item: str | None = None
    ) -> dict[str, Any]:
        line = fixture("line_item")
        line.update(id=line_id, invoice=self.invoice["id"], taxes=[self.tax(200)])
        sub_id = self.sub["id"]
        credited = {"credited_items": None}
        if kind == "subscription_item_details":
            details: dict[str, Any] = {
                "invoice_item": invoice_item,
                "proration": proration,
                "proration_details": credited,
                "subscription": sub_id,
                "subscription_item": self.item["id"],
            }
            line["parent"] = {
                "invoice_item_details": None,
                "subscription_item_details": details,
                "type": kind,
            }
        else:
            details = {
                "invoice_item": "ii_1Pgc6sB7WZ01zgkWrG16hkdl",
                "proration": proration,
                "proration_details": credited,
                "subscription": sub_id,
            }
            line["parent"] = {
                "invoice_item_details": details,
                "subscription_item_details": None,
                "type": kind,
            }
        line["pricing"] = {
            "price_details": {"price": self.price["id"], "product": self.price["product"]},
            "type": "price_details",
            "unit_amount_decimal": self.price["unit_amount_decimal"],
        }
        return line

    def second_item(self) -> dict[str, Any]:
        """Another item on another period, as flexible billing mode allows."""
        item = fixture("subscription_item")
        item.update(
            subscription=self.sub["id"],
            plan=self.plan,
            price=self.price,
            current_period_start=JAN_1 + 86_400,
            current_period_end=MAR_1,
        )
        return item


@pytest.fixture
def world() -> World:
    return World()


# -- versions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "legacy"),
    [
        (LEGACY_VERSION, True),
        ("2023-10-16", True),
        ("2024-09-30.acacia", True),
        ("2025-02-24.acacia", True),
        ("2025-03-31.basil", False),
        ("2025-09-30.clover", False),
        (CURRENT_VERSION, False),
    ],
)
def test_is_legacy_follows_the_date(version: str, legacy: bool) -> None:
    assert is_legacy(version) is legacy


@pytest.mark.parametrize(
    "version",
    [
        "",
        "latest",
        "2024-6-20",
        "2024-02-30",
        "2025-03-31",
        "2024-06-20.acacia",
        "2027-01-01.zeta",
        "2026-10-28.basil",
        " 2024-06-20",
    ],
)
def test_unknown_versions_are_refused_by_name(version: str) -> None:
    with pytest.raises(ValueError, match="unknown Stripe API version") as caught:
        is_legacy(version)
    assert repr(version) in str(caught.value)
    with pytest.raises(ValueError):
        render(fixture("subscription"), version)


def test_supported_versions_are_valid() -> None:
    assert [is_legacy(v) for v in SUPPORTED_VERSIONS] == [True, False]


def test_current_version_is_an_unshared_copy(world: World) -> None:
    out = render(world.invoice, CURRENT_VERSION, lookup=world.lookup)
    assert out == world.invoice
    out["lines"]["data"][0]["parent"]["type"] = "changed"
    assert world.invoice["lines"]["data"][0]["parent"]["type"] == "subscription_item_details"


# -- subscriptions ---------------------------------------------------------------------


def test_subscription_gets_its_period_plan_and_discount(world: World) -> None:
    out = render(world.sub, LEGACY_VERSION, lookup=world.lookup)

    assert (out["current_period_start"], out["current_period_end"]) == (JAN_1, FEB_1)
    assert out["plan"] == world.plan
    assert out["quantity"] == 3
    assert out["discounts"] == [world.discount["id"]]
    discount = out["discount"]
    assert discount["id"] == world.discount["id"]
    assert discount["coupon"] == world.coupon
    assert "source" not in discount
    (item,) = out["items"]["data"]
    assert "current_period_start" not in item and "current_period_end" not in item
    assert item["price"] == world.price and item["plan"] == world.plan


def test_subscription_with_several_items_spans_them_and_has_no_plan(world: World) -> None:
    world.sub["items"]["data"].append(world.second_item())
    out = render(world.sub, LEGACY_VERSION, lookup=world.lookup)

    assert (out["current_period_start"], out["current_period_end"]) == (JAN_1, MAR_1)
    assert out["plan"] is None
    assert out["quantity"] is None


def test_subscription_without_lookup_keeps_the_discount_id(world: World) -> None:
    out = render(world.sub, LEGACY_VERSION)
    assert out["discount"] == world.discount["id"]


def test_subscription_without_discounts_has_none(world: World) -> None:
    world.sub["discounts"] = []
    assert render(world.sub, LEGACY_VERSION, lookup=world.lookup)["discount"] is None


# -- invoices --------------------------------------------------------------------------


def test_invoice_gets_subscription_payment_and_tax_fields(world: World) -> None:
    out = render(world.invoice, LEGACY_VERSION, lookup=world.lookup)

    assert out["subscription"] == world.sub["id"]
    assert out["subscription_details"] == {"metadata": {"tier": "pro"}}
    assert out["quote"] is None
    assert out["paid"] is True
    assert out["paid_out_of_band"] is False
    assert out["payment_intent"] == world.payment_intent["id"]
    assert out["charge"] == world.charge["id"]
    assert out["discount"]["coupon"] == world.coupon
    assert out["tax"] == 400
    assert out["total_tax_amounts"] == [
        {
            "amount": 400,
            "inclusive": False,
            "tax_rate": "txr_1PgcAbB7WZ01zgkW",
            "taxability_reason": "standard_rated",
            "taxable_amount": 2000,
        }
    ]
    for replaced in ("parent", "total_taxes", "payments"):
        assert replaced not in out
    assert out["amount_overpaid"] == world.invoice["amount_overpaid"]  # additive: kept


def test_invoice_lines_get_type_price_and_proration(world: World) -> None:
    out = render(world.invoice, LEGACY_VERSION, lookup=world.lookup)
    sub_line, ii_line, si_line = out["lines"]["data"]

    assert (sub_line["type"], sub_line["proration"]) == ("subscription", False)
    assert sub_line["subscription_item"] == world.item["id"]
    assert sub_line["invoice_item"] is None
    assert (ii_line["type"], ii_line["proration"]) == ("invoiceitem", True)
    assert ii_line["invoice_item"] == "ii_1Pgc6sB7WZ01zgkWrG16hkdl"
    assert ii_line["subscription_item"] is None
    assert (si_line["type"], si_line["proration"]) == ("invoiceitem", True)
    assert si_line["subscription_item"] == world.item["id"]
    for line in (sub_line, ii_line, si_line):
        assert line["subscription"] == world.sub["id"]
        assert line["price"] == world.price
        assert line["plan"]["id"] == world.price["id"]
        assert line["plan"]["amount"] == world.price["unit_amount"]
        assert line["plan"]["interval"] == world.price["recurring"]["interval"]
        assert line["tax_amounts"][0]["amount"] == 200
        assert line["proration_details"] == {"credited_items": None}
        for replaced in ("parent", "pricing", "taxes"):
            assert replaced not in line


def test_invoice_without_lookup_leaves_links_empty_and_ids_unexpanded(world: World) -> None:
    out = render(world.invoice, LEGACY_VERSION)

    assert (out["charge"], out["payment_intent"]) == (None, None)
    assert out["discount"] == world.discount["id"]
    line = out["lines"]["data"][0]
    assert line["price"] == world.price["id"]
    assert line["plan"] is None


def test_invoice_uses_included_payments_first(world: World) -> None:
    payment = copy.deepcopy(world.invoice_payment)
    payment["payment"] = {"type": "charge", "charge": "ch_3PgcOtherCharge"}
    world.invoice["payments"] = {
        "object": "list",
        "data": [payment],
        "has_more": False,
        "url": f"/v1/invoices/{world.invoice['id']}/payments",
    }
    out = render(world.invoice, LEGACY_VERSION)
    assert (out["charge"], out["payment_intent"]) == ("ch_3PgcOtherCharge", None)
    assert "payments" not in out


def test_invoice_paid_out_of_band(world: World) -> None:
    world.invoice["amount_paid_off_stripe"] = 2400
    del world.store[invoice_payment_key(world.invoice["id"])]
    out = render(world.invoice, LEGACY_VERSION, lookup=world.lookup)
    assert (out["paid"], out["paid_out_of_band"], out["charge"]) == (True, True, None)


def test_open_invoice_is_not_paid(world: World) -> None:
    world.invoice.update(status="open", amount_paid=0, amount_remaining=2400)
    out = render(world.invoice, LEGACY_VERSION, lookup=world.lookup)
    assert (out["paid"], out["paid_out_of_band"]) == (False, False)


def test_invoice_from_a_quote(world: World) -> None:
    world.invoice["parent"] = {
        "quote_details": {"quote": "qt_1PgcQuote"},
        "subscription_details": None,
        "type": "quote_details",
    }
    world.invoice["total_taxes"] = []
    out = render(world.invoice, LEGACY_VERSION, lookup=world.lookup)
    assert (out["subscription"], out["subscription_details"]) == (None, None)
    assert out["quote"] == "qt_1PgcQuote"
    assert (out["tax"], out["total_tax_amounts"]) == (None, [])


# -- payments --------------------------------------------------------------------------


def test_charge_and_payment_intent_point_at_their_invoice(world: World) -> None:
    charge = render(world.charge, LEGACY_VERSION, lookup=world.lookup)
    intent = render(world.payment_intent, LEGACY_VERSION, lookup=world.lookup)
    assert charge["invoice"] == world.invoice["id"]
    assert intent["invoice"] == world.invoice["id"]
    assert render(world.charge, LEGACY_VERSION)["invoice"] is None


def test_private_fields_of_looked_up_objects_stay_private(world: World) -> None:
    world.price["_tiers"] = [{"up_to": None, "unit_amount": 2000}]
    out = render(world.invoice, LEGACY_VERSION, lookup=world.lookup)
    assert "_tiers" not in out["lines"]["data"][0]["price"]


# -- events ----------------------------------------------------------------------------


def subscription_event(world: World, previous: dict[str, Any]) -> dict[str, Any]:
    event = fixture("event")
    event.update(
        type="customer.subscription.updated",
        api_version=CURRENT_VERSION,
        data={"object": world.sub, "previous_attributes": previous},
    )
    return event


def test_event_period_roll_over_reads_as_old_top_level_period(world: World) -> None:
    old_items = copy.deepcopy(world.sub["items"])
    old_items["data"][0].update(current_period_start=DEC_1, current_period_end=JAN_1)
    event = subscription_event(world, {"items": old_items})

    out = render(event, LEGACY_VERSION, lookup=world.lookup)

    assert out["api_version"] == LEGACY_VERSION
    assert out["data"]["object"]["current_period_end"] == FEB_1
    previous = out["data"]["previous_attributes"]
    assert (previous["current_period_start"], previous["current_period_end"]) == (DEC_1, JAN_1)
    assert "current_period_start" not in previous["items"]["data"][0]
    assert set(previous) == {"items", "current_period_start", "current_period_end"}


def test_event_previous_attributes_add_nothing_unchanged(world: World) -> None:
    event = subscription_event(world, {"metadata": {"tier": "basic"}})
    out = render(event, LEGACY_VERSION, lookup=world.lookup)
    assert out["data"]["previous_attributes"] == {"metadata": {"tier": "basic"}}


def test_event_for_an_invoice_payment(world: World) -> None:
    event = fixture("event")
    event.update(
        type="invoice.paid",
        data={
            "object": world.invoice,
            "previous_attributes": {"status": "open", "amount_paid": 0, "amount_remaining": 2400},
        },
    )
    out = render(event, LEGACY_VERSION, lookup=world.lookup)
    assert out["data"]["object"]["paid"] is True
    assert out["data"]["previous_attributes"] == {
        "status": "open",
        "amount_paid": 0,
        "amount_remaining": 2400,
        "paid": False,
    }


# -- dated changes ---------------------------------------------------------------------


def test_a_basil_version_keeps_periods_on_items_but_discounts_show_coupon(world: World) -> None:
    version = "2025-06-30.basil"
    sub = render(world.sub, version, lookup=world.lookup)
    assert sub["items"] == world.sub["items"]
    assert "current_period_start" not in sub and "discount" not in sub
    assert "coupon" in sub["pending_update"]["discount"]  # a nested discount object
    discount = render(world.discount, version, lookup=world.lookup)
    assert discount["coupon"] == world.coupon and "source" not in discount


def test_customer_discount_is_rendered_too() -> None:
    customer = fixture("customer")
    discount = fixture("discount")
    discount["source"]["coupon"] = fixture("coupon")
    customer["discount"] = discount
    out = render(customer, LEGACY_VERSION)
    assert out["discount"]["coupon"] == fixture("coupon")


def test_deleted_objects_pass_through() -> None:
    deleted = fixture("deleted_invoice")
    assert render(deleted, LEGACY_VERSION) == deleted


# -- purity ----------------------------------------------------------------------------


def test_inputs_are_never_mutated(world: World) -> None:
    old_items = copy.deepcopy(world.sub["items"])
    event = subscription_event(world, {"items": old_items})
    inputs = [world.sub, world.invoice, world.charge, world.payment_intent, world.discount, event]
    before = copy.deepcopy(inputs)
    store_before = copy.deepcopy(world.store)
    for obj in inputs:
        for version in (LEGACY_VERSION, "2025-06-30.basil", CURRENT_VERSION):
            out = render(obj, version, lookup=world.lookup)
            _scribble(out)
    assert inputs == before
    assert world.store == store_before


def _scribble(node: Any) -> None:
    """Mutate every container of an output, to prove none is shared with the input."""
    if isinstance(node, dict):
        for value in list(node.values()):
            _scribble(value)
        node["_scribbled"] = True
    elif isinstance(node, list):
        for value in node:
            _scribble(value)
        node.append("scribbled")
