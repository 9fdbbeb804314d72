"""Stripe objects and events for the activity, segment and trigger tests.

Every builder deep-copies Stripe's own example object from fixtures3.json and overrides
what the test is about, with values that point at each other (the customer's id on its
subscriptions, invoices, charges). The example subscription is paused, cancelling and
trialing all at once and its price divides quantities by 1592560163; those stray values
are reset here so each test states the one situation it exercises.

`updated_event` computes ``previous_attributes`` the way Stripe does (the old values of the
top-level fields that changed), and `legacy` renders any object or event as an account on
API version 2024-06-20 would receive it, through the simulator's renderer.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from stripesync.sim.versions import CURRENT_VERSION, LEGACY_VERSION, render

Obj = dict[str, Any]

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "stripe-fixtures" / "fixtures3.json"

DAY = 86_400
#: 2025-01-06T09:00:00Z, a Monday morning: the story's start.
T0 = 1_736_154_000
CUSTOMER_ID = "cus_RdQm4x8kTzLp2A"
PRODUCT_ID = "prod_RdQmStarterPlan"


@cache
def _resources() -> Mapping[str, str]:
    with FIXTURES.open(encoding="utf-8") as handle:
        resources: Mapping[str, Obj] = json.load(handle)["resources"]
    return {name: json.dumps(obj) for name, obj in resources.items()}


def fixture(name: str) -> Obj:
    """A private deep copy of one of Stripe's example objects."""
    obj: Obj = json.loads(_resources()[name])
    return obj


_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_1Qa{next(_counter):010d}"


# -- customers, prices, subscriptions -------------------------------------------------------


def make_customer(
    *,
    customer_id: str = CUSTOMER_ID,
    created: int = T0,
    email: str = "ada@lovelace.example",
    name: str = "Ada Lovelace",
    city: str = "London",
) -> Obj:
    customer = fixture("customer")
    customer.update(
        id=customer_id,
        created=created,
        email=email,
        name=name,
        phone="+44 20 7946 0958",
        discount=None,
        metadata={"account_id": "acct-4411"},
    )
    customer["address"].update(city=city, country="GB", line1="12 St James's Square")
    customer["address"]["postal_code"] = "SW1Y 4JH"
    return customer


def make_product(name: str = "Starter", *, product_id: str = PRODUCT_ID) -> Obj:
    product = fixture("product")
    product.update(id=product_id, name=name)
    return product


def make_price(
    unit_amount: int = 2000,
    *,
    interval: str = "month",
    interval_count: int = 1,
    product: str | Obj = PRODUCT_ID,
    price_id: str | None = None,
    currency: str = "usd",
) -> Obj:
    price = fixture("price")
    price.update(
        id=price_id or new_id("price"),
        product=product,
        currency=currency,
        unit_amount=unit_amount,
        unit_amount_decimal=str(unit_amount),
        transform_quantity=None,
        tax_behavior="exclusive",
        billing_scheme="per_unit",
        tiers_mode=None,
    )
    price["recurring"].update(interval=interval, interval_count=interval_count, meter=None)
    price["recurring"]["usage_type"] = "licensed"
    return price


def _plan_from(price: Obj) -> Obj:
    plan = fixture("plan")
    recurring = price["recurring"]
    plan.update(
        id=price["id"],
        amount=price["unit_amount"],
        amount_decimal=price["unit_amount_decimal"],
        currency=price["currency"],
        interval=recurring["interval"],
        interval_count=recurring["interval_count"],
        product=price["product"] if isinstance(price["product"], str) else price["product"]["id"],
        billing_scheme="per_unit",
        tiers_mode=None,
        transform_usage=None,
        usage_type="licensed",
        meter=None,
    )
    return plan


def make_item(
    price: Obj,
    *,
    quantity: int = 1,
    period: tuple[int, int] | None = None,
    item_id: str | None = None,
) -> Obj:
    start, end = period or (T0, T0 + 31 * DAY)
    item = fixture("subscription_item")
    item.update(
        id=item_id or new_id("si"),
        price=price,
        plan=_plan_from(price),
        quantity=quantity,
        discounts=[],
        tax_rates=[],
        created=T0,
        current_period_start=start,
        current_period_end=end,
        billing_thresholds=None,
    )
    return item


def make_subscription(
    items: Sequence[Obj] | None = None,
    *,
    status: str = "active",
    created: int = T0,
    trial_days: int | None = None,
    customer: str = CUSTOMER_ID,
    subscription_id: str | None = None,
    trial_end_behavior: str = "create_invoice",
) -> Obj:
    """A subscription; ``trial_days`` gives it a trial starting at ``created``."""
    sub = fixture("subscription")
    sid = subscription_id or new_id("sub")
    if items is None:
        end = created + (trial_days or 31) * DAY
        items = [make_item(make_price(), period=(created, end))]
    trial_start = created if trial_days else None
    trial_end = created + trial_days * DAY if trial_days else None
    sub.update(
        id=sid,
        status=status,
        created=created,
        start_date=created,
        billing_cycle_anchor=trial_end or created,
        customer=customer,
        currency="usd",
        cancel_at=None,
        canceled_at=None,
        cancel_at_period_end=False,
        ended_at=None,
        pause_collection=None,
        pending_update=None,
        next_pending_invoice_item_invoice=None,
        latest_invoice=None,
        discounts=[],
        trial_start=trial_start,
        trial_end=trial_end,
        transfer_data=None,
        billing_thresholds=None,
        cancellation_details={"comment": None, "feedback": None, "reason": None},
    )
    sub["trial_settings"]["end_behavior"]["missing_payment_method"] = trial_end_behavior
    for item in items:
        item["subscription"] = sid
    sub["items"]["data"] = [copy.deepcopy(item) for item in items]
    sub["items"]["url"] = f"/v1/subscription_items?subscription={sid}"
    return sub


def evolve(sub: Obj, **changes: Any) -> Obj:
    """A copy of ``sub`` with top-level fields changed (the object after an update)."""
    out = copy.deepcopy(sub)
    out.update(copy.deepcopy(changes))
    return out


def with_items(sub: Obj, items: Sequence[Obj]) -> Obj:
    out = copy.deepcopy(sub)
    for item in items:
        item["subscription"] = sub["id"]
    out["items"]["data"] = [copy.deepcopy(item) for item in items]
    return out


def roll_period(sub: Obj, start: int, end: int) -> Obj:
    out = copy.deepcopy(sub)
    for item in out["items"]["data"]:
        item["current_period_start"], item["current_period_end"] = start, end
    return out


# -- invoices and payments --------------------------------------------------------------------


def make_invoice(
    sub: Obj | None = None,
    *,
    status: str = "paid",
    total: int = 2000,
    created: int = T0,
    billing_reason: str = "subscription_cycle",
    paid_at: int | None = None,
    attempt_count: int = 1,
    number: str | None = None,
    customer: str = CUSTOMER_ID,
    invoice_id: str | None = None,
) -> Obj:
    invoice = fixture("invoice")
    paid = status == "paid"
    invoice.update(
        id=invoice_id or new_id("in"),
        customer=sub["customer"] if sub is not None else customer,
        number=number or f"7FE1103-{next(_counter):04d}",
        status=status,
        created=created,
        billing_reason=billing_reason,
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        amount_due=total,
        amount_paid=total if paid else 0,
        amount_remaining=0 if paid else total,
        amount_overpaid=0,
        attempt_count=attempt_count,
        attempted=attempt_count > 0,
        period_start=created,
        period_end=created,
        shipping_cost=None,
        last_finalization_error=None,
        from_invoice=None,
        due_date=None,
        collection_method="charge_automatically",
    )
    invoice.pop("subscription", None)
    invoice["status_transitions"] = {
        "finalized_at": created + 3600 if status != "draft" else None,
        "paid_at": (paid_at or created + 3600) if paid else None,
        "voided_at": created + 7200 if status == "void" else None,
        "marked_uncollectible_at": created + 7200 if status == "uncollectible" else None,
    }
    invoice["parent"] = (
        {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub["id"]},
        }
        if sub is not None
        else None
    )
    invoice["lines"]["data"] = []
    return invoice


def make_payment_intent(
    *,
    status: str = "succeeded",
    amount: int = 2000,
    created: int = T0,
    intent_id: str | None = None,
) -> Obj:
    intent = fixture("payment_intent")
    intent.update(
        id=intent_id or new_id("pi"),
        customer=CUSTOMER_ID,
        status=status,
        amount=amount,
        amount_received=amount if status == "succeeded" else 0,
        created=created,
        canceled_at=None,
        last_payment_error=None,
        next_action=None,
        description="Subscription update",
    )
    return intent


def make_charge(
    *,
    status: str = "succeeded",
    amount: int = 2000,
    created: int = T0,
    payment_intent: str | None = None,
    refunds: Sequence[Obj] = (),
    customer: str | None = CUSTOMER_ID,
    charge_id: str | None = None,
) -> Obj:
    charge = fixture("charge")
    refunded = sum(refund["amount"] for refund in refunds)
    charge.update(
        id=charge_id or new_id("ch"),
        customer=customer,
        status=status,
        amount=amount,
        amount_captured=amount if status == "succeeded" else 0,
        captured=status == "succeeded",
        paid=status == "succeeded",
        amount_refunded=refunded,
        refunded=refunded == amount and amount > 0,
        created=created,
        payment_intent=payment_intent,
        description="Subscription creation",
        receipt_email=None,
        failure_code="card_declined" if status == "failed" else None,
        failure_message="Your card was declined." if status == "failed" else None,
    )
    charge["billing_details"]["email"] = "ada@lovelace.example"
    charge["refunds"]["data"] = [copy.deepcopy(refund) for refund in refunds]
    charge["refunds"]["url"] = f"/v1/charges/{charge['id']}/refunds"
    return charge


def make_refund(
    charge: Obj,
    *,
    amount: int | None = None,
    created: int | None = None,
    status: str = "succeeded",
    reason: str | None = "requested_by_customer",
    refund_id: str | None = None,
) -> Obj:
    refund = fixture("refund")
    refund.update(
        id=refund_id or new_id("re"),
        charge=charge["id"],
        payment_intent=charge.get("payment_intent"),
        amount=charge["amount"] if amount is None else amount,
        created=charge["created"] + DAY if created is None else created,
        status=status,
        reason=reason,
        customer=None,
    )
    return refund


# -- events -----------------------------------------------------------------------------------


def make_event(
    event_type: str,
    obj: Obj,
    *,
    created: int,
    previous_attributes: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> Obj:
    event = fixture("event")
    event.update(
        id=event_id or new_id("evt"),
        type=event_type,
        created=created,
        api_version=CURRENT_VERSION,
        livemode=False,
        pending_webhooks=1,
    )
    event["request"] = {"id": new_id("req"), "idempotency_key": None}
    event["data"] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        event["data"]["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
    return event


def previous_attributes(before: Mapping[str, Any], after: Mapping[str, Any]) -> Obj:
    """The old values of the top-level fields that changed, as Stripe reports an update."""
    return {
        key: copy.deepcopy(before.get(key))
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def updated_event(
    event_type: str, before: Obj, after: Obj, *, created: int, event_id: str | None = None
) -> Obj:
    return make_event(
        event_type,
        after,
        created=created,
        previous_attributes=previous_attributes(before, after),
        event_id=event_id,
    )


def legacy(obj: Mapping[str, Any]) -> Obj:
    """``obj`` (an object or an event) as Stripe renders it for API version 2024-06-20."""
    return render(obj, LEGACY_VERSION)
