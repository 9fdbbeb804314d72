"""Stripe-shaped test objects, built from Stripe's own example objects (fixtures3.json).

Every factory deep-copies the matching resource from the stripe-mock fixtures and
overrides only what a test is about, so the revenue rules always see the full objects
Stripe sends (with the example's stray values reset: the example subscription is paused,
cancelling and trialing all at once, and its price divides quantities by 1592560163).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

PRODUCT_ID = "prod_QXg1hqf4jFNsqG"
CUSTOMER_ID = "cus_QXg1o8vcGmoR32"
CREATED = 1_700_000_000


def _fixtures_path() -> Path:
    here = Path(__file__).resolve()
    candidates = [
        Path(os.environ["STRIPE_FIXTURES_JSON"]) if "STRIPE_FIXTURES_JSON" in os.environ else None,
        here.parents[1] / "fixtures" / "stripe" / "fixtures3.json",
        here.parents[3] / "shared" / "stripe-fixtures" / "fixtures3.json",
    ]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "Stripe's fixtures3.json was not found; set STRIPE_FIXTURES_JSON to its path "
        "(it ships with stripe-mock / stripe/openapi)"
    )


@cache
def _resources() -> Mapping[str, str]:
    # Kept as JSON text: decoding it again is several times faster than copy.deepcopy,
    # which matters to the property tests that build thousands of objects.
    with _fixtures_path().open(encoding="utf-8") as handle:
        resources: Mapping[str, Obj] = json.load(handle)["resources"]
    return {name: json.dumps(obj) for name, obj in resources.items()}


def fixture(name: str) -> Obj:
    """A private deep copy of one of Stripe's example objects."""
    obj: Obj = json.loads(_resources()[name])
    return obj


_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_T{next(_counter):012d}"


# -- prices and plans -----------------------------------------------------------------


def tier(
    up_to: int | None,
    *,
    unit_amount: int | None = None,
    flat_amount: int | None = None,
    unit_amount_decimal: str | None = None,
    flat_amount_decimal: str | None = None,
) -> Obj:
    """A price tier as Stripe returns it (both integer and decimal twins)."""
    return {
        "flat_amount": flat_amount,
        "flat_amount_decimal": flat_amount_decimal
        if flat_amount_decimal is not None
        else (str(flat_amount) if flat_amount is not None else None),
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal
        if unit_amount_decimal is not None
        else (str(unit_amount) if unit_amount is not None else None),
        "up_to": up_to,
    }


def make_price(
    unit_amount: int | None = 2000,
    *,
    unit_amount_decimal: str | None = None,
    interval: str = "month",
    interval_count: int = 1,
    usage_type: str = "licensed",
    tiers: Sequence[Obj] | None = None,
    tiers_mode: str | None = None,
    transform_quantity: Mapping[str, Any] | None = None,
    tax_behavior: str = "unspecified",
    product: str | Obj = PRODUCT_ID,
    currency: str = "usd",
    price_id: str | None = None,
) -> Obj:
    price = fixture("price")
    price["id"] = price_id or new_id("price")
    price["currency"] = currency
    price["product"] = product
    price["tax_behavior"] = tax_behavior
    price["transform_quantity"] = dict(transform_quantity) if transform_quantity else None
    price["recurring"].update(
        interval=interval,
        interval_count=interval_count,
        usage_type=usage_type,
        meter=new_id("mtr") if usage_type == "metered" else None,
    )
    if tiers is not None:
        price["billing_scheme"] = "tiered"
        price["tiers_mode"] = tiers_mode or "graduated"
        price["tiers"] = [dict(t) for t in tiers]
        price["unit_amount"] = None
        price["unit_amount_decimal"] = None
    else:
        price["billing_scheme"] = "per_unit"
        price["tiers_mode"] = None
        price["unit_amount"] = unit_amount
        price["unit_amount_decimal"] = (
            unit_amount_decimal
            if unit_amount_decimal is not None
            else (str(unit_amount) if unit_amount is not None else None)
        )
    return price


def plan_from_price(price: Mapping[str, Any]) -> Obj:
    """The legacy plan Stripe mirrors from a price on subscription items and lines."""
    plan = fixture("plan")
    recurring = price["recurring"]
    plan.update(
        id=price["id"],
        currency=price["currency"],
        product=price["product"],
        interval=recurring["interval"],
        interval_count=recurring["interval_count"],
        usage_type=recurring["usage_type"],
        meter=recurring.get("meter"),
        billing_scheme=price["billing_scheme"],
        tiers_mode=price["tiers_mode"],
        amount=price["unit_amount"],
        amount_decimal=price["unit_amount_decimal"],
        transform_usage=copy.deepcopy(price["transform_quantity"]),
    )
    if "tiers" in price:
        plan["tiers"] = copy.deepcopy(price["tiers"])
    return plan


# -- discounts ------------------------------------------------------------------------


def make_coupon(
    *,
    percent_off: float | None = None,
    amount_off: int | None = None,
    duration: str = "forever",
    duration_in_months: int | None = None,
    currency: str = "usd",
    applies_to: Iterable[str] | None = None,
    coupon_id: str | None = None,
) -> Obj:
    coupon = fixture("coupon")
    coupon.update(
        id=coupon_id or new_id("co"),
        percent_off=percent_off,
        amount_off=amount_off,
        currency=currency if amount_off is not None else None,
        duration=duration,
        duration_in_months=duration_in_months if duration == "repeating" else None,
        name=f"{percent_off}% off" if percent_off is not None else f"{amount_off} off",
        redeem_by=None,
    )
    if applies_to is not None:
        coupon["applies_to"] = {"products": list(applies_to)}
    return coupon


def make_discount(
    coupon: Obj | str,
    *,
    end: int | None = None,
    start: int = CREATED,
    legacy: bool = False,
    customer: str = CUSTOMER_ID,
    subscription: str | None = None,
    subscription_item: str | None = None,
    discount_id: str | None = None,
) -> Obj:
    """A discount; ``legacy`` gives the pre-2025-09 shape with ``coupon`` at the top."""
    discount = fixture("discount")
    discount.update(
        id=discount_id or new_id("di"),
        end=end,
        start=start,
        customer=customer,
        subscription=subscription,
        subscription_item=subscription_item,
    )
    if legacy:
        del discount["source"]
        discount["coupon"] = coupon
    else:
        discount["source"]["coupon"] = coupon
    return discount


def make_tax_rate(percentage: float, *, inclusive: bool) -> Obj:
    rate = fixture("tax_rate")
    rate.update(
        id=new_id("txr"),
        percentage=percentage,
        effective_percentage=percentage,
        inclusive=inclusive,
        rate_type="percentage",
        flat_amount=None,
    )
    return rate


def make_customer(*, discount: Obj | None = None, customer_id: str = CUSTOMER_ID) -> Obj:
    customer = fixture("customer")
    customer["id"] = customer_id
    customer["discount"] = discount
    return customer


# -- subscriptions --------------------------------------------------------------------


def make_item(
    price: Obj,
    *,
    quantity: int | None = 1,
    discounts: Sequence[Obj | str] = (),
    tax_rates: Sequence[Obj] = (),
    item_id: str | None = None,
    plan_only: bool = False,
) -> Obj:
    """A subscription item; ``plan_only`` gives the pre-2020 shape without ``price``."""
    item = fixture("subscription_item")
    item["id"] = item_id or new_id("si")
    item["price"] = price
    item["plan"] = plan_from_price(price)
    item["discounts"] = list(discounts)
    item["tax_rates"] = list(tax_rates)
    item["created"] = CREATED
    item["current_period_start"] = CREATED
    item["current_period_end"] = CREATED + 30 * 86400
    if price["recurring"]["usage_type"] == "metered":
        item.pop("quantity", None)  # Stripe sends no quantity on metered items
    else:
        item["quantity"] = quantity
    if plan_only:
        del item["price"]
    return item


def make_subscription(
    items: Sequence[Obj],
    *,
    status: str = "active",
    currency: str = "usd",
    discounts: Sequence[Obj | str] = (),
    default_tax_rates: Sequence[Obj] = (),
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    pause_collection: Mapping[str, Any] | None = None,
    created: int = CREATED,
    customer: str = CUSTOMER_ID,
    subscription_id: str | None = None,
) -> Obj:
    """A subscription in the current API shape (discounts list, no top-level plan)."""
    sub = fixture("subscription")
    sid = subscription_id or new_id("sub")
    sub.update(
        id=sid,
        status=status,
        currency=currency,
        customer=customer,
        created=created,
        start_date=created,
        billing_cycle_anchor=created,
        discounts=list(discounts),
        default_tax_rates=list(default_tax_rates),
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=cancel_at,
        canceled_at=created + 86400 if cancel_at_period_end or cancel_at else None,
        pause_collection=dict(pause_collection) if pause_collection else None,
        ended_at=None,
        pending_update=None,
        next_pending_invoice_item_invoice=None,
        trial_start=created if status == "trialing" else None,
        trial_end=created + 14 * 86400 if status == "trialing" else None,
    )
    for item in items:
        item["subscription"] = sid
    sub["items"]["data"] = list(items)
    sub["items"]["url"] = f"/v1/subscription_items?subscription={sid}"
    return sub


def make_legacy_subscription(
    items: Sequence[Obj],
    *,
    discount: Obj | None = None,
    with_items: bool = True,
    **kwargs: Any,
) -> Obj:
    """A subscription as API versions before 2024 sent it.

    One ``discount`` object instead of a ``discounts`` list, and the top-level ``plan`` /
    ``quantity`` pair (only, when ``with_items`` is False, as before 2016-07-06).
    """
    sub = make_subscription(items, **kwargs)
    del sub["discounts"]
    sub["discount"] = discount
    sub["current_period_start"] = sub["created"]
    sub["current_period_end"] = sub["created"] + 30 * 86400
    first = items[0]
    sub["plan"] = copy.deepcopy(first["plan"]) if len(items) == 1 else None
    sub["quantity"] = first.get("quantity") if len(items) == 1 else None
    if not with_items:
        del sub["items"]
    return sub


# -- invoices -------------------------------------------------------------------------


def make_line(
    price: Obj,
    *,
    amount: int,
    subscription_id: str,
    item_id: str | None = None,
    proration: bool = False,
    quantity: int = 1,
    legacy: bool = False,
) -> Obj:
    """An invoice line for a subscription item, current or (``legacy``) pre-2025-03 shape."""
    line = fixture("line_item")
    line.update(id=new_id("il"), amount=amount, subtotal=amount, quantity=quantity)
    line["period"] = {"start": CREATED, "end": CREATED + 30 * 86400}
    if legacy:
        for key in ("parent", "pricing", "pretax_credit_amounts", "quantity_decimal"):
            line.pop(key, None)
        line.update(
            type="subscription",
            proration=proration,
            price=price,
            plan=plan_from_price(price),
            subscription=subscription_id,
            subscription_item=item_id,
        )
    else:
        line["subscription"] = subscription_id
        line["parent"] = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": item_id,
            },
        }
        line["pricing"] = {
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
            "unit_amount_decimal": price["unit_amount_decimal"],
        }
    return line


def make_invoice(
    subscription: Obj,
    lines: Sequence[Obj],
    *,
    total_excluding_tax: int,
    tax: int = 0,
    billing_reason: str = "subscription_cycle",
    status: str = "paid",
    created: int = CREATED,
    legacy: bool = False,
) -> Obj:
    """A subscription invoice; ``legacy`` is the pre-2025-03-31 shape.

    ``legacy`` invoices also predate ``total_excluding_tax`` (2022), so the rules have to
    fall back on ``total`` minus ``tax``.
    """
    invoice = fixture("invoice")
    total = total_excluding_tax + tax
    invoice.update(
        id=new_id("in"),
        customer=subscription["customer"],
        currency=subscription["currency"],
        billing_reason=billing_reason,
        status=status,
        created=created,
        subtotal=total_excluding_tax,
        subtotal_excluding_tax=total_excluding_tax,
        total=total,
        total_excluding_tax=total_excluding_tax,
        amount_due=total,
        amount_paid=total if status == "paid" else 0,
        amount_remaining=0 if status == "paid" else total,
        period_start=created,
        period_end=created,
        amount_overpaid=0,
        shipping_cost=None,
    )
    invoice["status_transitions"]["paid_at"] = created + 60 if status == "paid" else None
    invoice["lines"]["data"] = list(lines)
    invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
    if legacy:
        del invoice["parent"]
        del invoice["total_excluding_tax"]
        del invoice["total_taxes"]
        invoice["subscription"] = subscription["id"]
        invoice["paid"] = status == "paid"
        invoice["tax"] = tax
        invoice["total_tax_amounts"] = (
            [{"amount": tax, "inclusive": False, "tax_rate": new_id("txr")}] if tax else []
        )
    else:
        invoice.pop("subscription", None)
        invoice["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription["id"]},
        }
        invoice["total_taxes"] = (
            [{"amount": tax, "tax_behavior": "exclusive", "taxability_reason": "standard_rated"}]
            if tax
            else []
        )
    return invoice
