"""Stripe-shaped objects for the profile tests, built from Stripe's own example objects.

Each factory deep-copies a resource of fixtures3.json and overrides what a realistic
account would hold, resetting the example's placeholder values (its subscription is paused,
cancelling, ended and trialing at once; its price divides quantities by 1592560163; its
item's plan mirror is a tiered plan without tiers). `realistic_account` assembles a whole
customer: contact details, a card, three subscriptions in three states, invoices and a
charge, so the trait tests read the objects Stripe would really send.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from stripesync.profiles import compute_traits
from stripesync.revenue import RevenueRules

Obj = dict[str, Any]

DAY = 86400


def ts(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp())


#: The sync moment of every test, unless a test says otherwise.
NOW = ts(2026, 3, 15, 12)
CUSTOMER_ID = "cus_RlH7mUq2Zx4Acme"


def _fixtures_path() -> Path:
    here = Path(__file__).resolve()
    candidates = [
        Path(os.environ["STRIPE_FIXTURES_JSON"]) if "STRIPE_FIXTURES_JSON" in os.environ else None,
        here.parents[3] / "shared" / "stripe-fixtures" / "fixtures3.json",
    ]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    raise FileNotFoundError("fixtures3.json not found; set STRIPE_FIXTURES_JSON to its path")


@cache
def _resources() -> Mapping[str, str]:
    # Kept as JSON text: a private copy is one json.loads away, faster than deepcopy.
    with _fixtures_path().open(encoding="utf-8") as handle:
        resources: Mapping[str, Obj] = json.load(handle)["resources"]
    return {name: json.dumps(obj) for name, obj in resources.items()}


def fixture(name: str) -> Obj:
    """A private deep copy of one of Stripe's example objects."""
    obj: Obj = json.loads(_resources()[name])
    return obj


_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_P{next(_ids):014d}"


def reset_ids() -> None:
    """Restart generated ids, so an account built twice has the same ids both times."""
    global _ids
    _ids = itertools.count(1)


# -- catalogue --------------------------------------------------------------------------


def make_product(name: str, *, product_id: str | None = None) -> Obj:
    product = fixture("product")
    product.update(
        id=product_id or new_id("prod"),
        name=name,
        description=f"{name} for teams",
        created=ts(2024, 11, 1),
        updated=ts(2024, 11, 1),
        default_price=None,
        package_dimensions=None,
        type="service",
    )
    return product


def make_price(
    unit_amount: int | None,
    *,
    product: str | Obj,
    interval: str = "month",
    interval_count: int = 1,
    currency: str = "usd",
    nickname: str | None = None,
    price_id: str | None = None,
) -> Obj:
    price = fixture("price")
    price.update(
        id=price_id or new_id("price"),
        product=product,
        currency=currency,
        nickname=nickname,
        unit_amount=unit_amount,
        unit_amount_decimal=str(unit_amount) if unit_amount is not None else None,
        transform_quantity=None,
        created=ts(2024, 11, 1),
        lookup_key=None,
    )
    price["recurring"].update(interval=interval, interval_count=interval_count)
    return price


def plan_from_price(price: Mapping[str, Any]) -> Obj:
    """The legacy plan Stripe mirrors from a price onto items."""
    plan = fixture("plan")
    plan.update(
        id=price["id"],
        product=copy.deepcopy(price["product"]),
        currency=price["currency"],
        nickname=price["nickname"],
        amount=price["unit_amount"],
        amount_decimal=price["unit_amount_decimal"],
        interval=price["recurring"]["interval"],
        interval_count=price["recurring"]["interval_count"],
        transform_usage=None,
        created=price["created"],
    )
    return plan


def make_coupon(
    *,
    name: str,
    percent_off: float | None = None,
    amount_off: int | None = None,
    duration: str = "forever",
    duration_in_months: int | None = None,
    currency: str = "usd",
    coupon_id: str | None = None,
) -> Obj:
    coupon = fixture("coupon")
    coupon.update(
        id=coupon_id or new_id("co"),
        name=name,
        percent_off=percent_off,
        amount_off=amount_off,
        currency=currency if amount_off is not None else None,
        duration=duration,
        duration_in_months=duration_in_months if duration == "repeating" else None,
        redeem_by=None,
        times_redeemed=1,
        created=ts(2025, 1, 1),
    )
    return coupon


def make_discount(
    coupon: Obj,
    *,
    customer: str = CUSTOMER_ID,
    subscription: str | None = None,
    start: int = ts(2025, 6, 1),
    end: int | None = None,
    legacy: bool = False,
    expand_coupon: bool = False,
) -> Obj:
    """A discount; current versions name the coupon by id, ``legacy`` embeds it at the top."""
    discount = fixture("discount")
    discount.update(
        id=new_id("di"),
        customer=customer,
        subscription=subscription,
        start=start,
        end=end,
    )
    if legacy:
        del discount["source"]
        discount["coupon"] = coupon
    else:
        discount["source"]["coupon"] = coupon if expand_coupon else coupon["id"]
    return discount


# -- customers, cards -------------------------------------------------------------------


def make_customer(
    *,
    customer_id: str = CUSTOMER_ID,
    email: str | None = "ops@acme.test",
    name: str | None = "Acme Corp",
    phone: str | None = "+1-415-555-0134",
    description: str | None = "Acme Corp (enterprise pilot)",
    address: Mapping[str, Any] | None = None,
    currency: str | None = "usd",
    balance: int = -500,
    created: int = ts(2025, 1, 10, 9),
    metadata: Mapping[str, str] | None = None,
    discount: Obj | None = None,
    default_payment_method: str | Obj | None = None,
    default_source: str | None = None,
    delinquent: bool = False,
    cash_balance: Mapping[str, int] | None = None,
) -> Obj:
    customer = fixture("customer")
    customer.update(
        id=customer_id,
        email=email,
        name=name,
        phone=phone,
        description=description,
        currency=currency,
        balance=balance,
        created=created,
        metadata=dict(metadata or {}),
        discount=discount,
        delinquent=delinquent,
        default_source=default_source,
        invoice_prefix="ACME0042",
        next_invoice_sequence=7,
    )
    customer["address"] = dict(
        address
        or {
            "city": "San Francisco",
            "country": "US",
            "line1": "548 Market St",
            "line2": "Suite 400",
            "postal_code": "94104",
            "state": "CA",
        }
    )
    customer["invoice_settings"]["default_payment_method"] = default_payment_method
    if cash_balance is not None:
        # Only present when fetched with expand[]=cash_balance.
        cash = fixture("cash_balance")
        cash.update(customer=customer_id, available=dict(cash_balance))
        customer["cash_balance"] = cash
    return customer


def make_deleted_customer(customer_id: str = CUSTOMER_ID) -> Obj:
    deleted = fixture("deleted_customer")
    deleted["id"] = customer_id
    return deleted


def make_payment_method(
    *,
    customer: str = CUSTOMER_ID,
    brand: str = "visa",
    last4: str = "4242",
    exp_month: int = 8,
    exp_year: int = 2030,
    created: int = ts(2025, 1, 10, 9),
    pm_id: str | None = None,
) -> Obj:
    method = fixture("payment_method")
    method.update(id=pm_id or new_id("pm"), customer=customer, created=created, metadata={})
    method["card"].update(
        brand=brand, display_brand=brand, last4=last4, exp_month=exp_month, exp_year=exp_year
    )
    method["billing_details"].update(email="ops@acme.test", name="Acme Corp")
    return method


def make_legacy_card(
    *,
    customer: str = CUSTOMER_ID,
    brand: str = "MasterCard",
    last4: str = "4444",
    exp_month: int = 2,
    exp_year: int = 2028,
) -> Obj:
    """A card source (``card_...``) from before PaymentMethods, as ``customer.sources`` held it."""
    card = fixture("card")
    card.update(
        id=new_id("card"),
        customer=customer,
        brand=brand,
        last4=last4,
        exp_month=exp_month,
        exp_year=exp_year,
    )
    return card


# -- subscriptions ----------------------------------------------------------------------


def make_item(
    price: Obj,
    *,
    quantity: int = 1,
    period: tuple[int, int],
    subscription_id: str | None = None,
    plan_only: bool = False,
) -> Obj:
    """A subscription item; ``plan_only`` is the pre-2020 shape with a plan and no price."""
    item = fixture("subscription_item")
    item.update(
        id=new_id("si"),
        price=price,
        plan=plan_from_price(price),
        quantity=quantity,
        subscription=subscription_id,
        created=period[0],
        current_period_start=period[0],
        current_period_end=period[1],
        discounts=[],
        tax_rates=[],
        metadata={},
    )
    item.pop("billing_thresholds", None)
    if plan_only:
        del item["price"]
    return item


def make_subscription(
    items: Sequence[Obj],
    *,
    customer: str = CUSTOMER_ID,
    status: str = "active",
    created: int,
    trial: tuple[int, int] | None = None,
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    discounts: Sequence[Obj | str] = (),
    metadata: Mapping[str, str] | None = None,
    default_payment_method: str | None = None,
    currency: str = "usd",
    subscription_id: str | None = None,
) -> Obj:
    """A subscription in the pinned API version's shape (periods on the items)."""
    sub = fixture("subscription")
    sid = subscription_id or new_id("sub")
    sub.update(
        id=sid,
        customer=customer,
        status=status,
        currency=currency,
        created=created,
        start_date=created,
        billing_cycle_anchor=created,
        trial_start=trial[0] if trial else None,
        trial_end=trial[1] if trial else None,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=cancel_at,
        canceled_at=canceled_at,
        ended_at=ended_at,
        discounts=list(discounts),
        metadata=dict(metadata or {}),
        default_payment_method=default_payment_method,
        pause_collection=None,
        pending_update=None,
        pending_invoice_item_interval=None,
        next_pending_invoice_item_invoice=None,
        latest_invoice=None,
        transfer_data=None,
        billing_schedules=[],
        billing_cycle_anchor_config=None,
        days_until_due=None,
    )
    for item in items:
        item["subscription"] = sid
    sub["items"]["data"] = list(items)
    sub["items"]["url"] = f"/v1/subscription_items?subscription={sid}"
    return sub


def to_legacy_subscription(sub: Obj, *, discount: Obj | None = None) -> Obj:
    """The same subscription as an API version before 2024 rendered it.

    Periods at the top and none on the items, the ``plan``/``quantity`` pair of a
    single-item subscription, one ``discount`` object with its coupon embedded and no
    ``discounts`` list.
    """
    legacy = copy.deepcopy(sub)
    items = legacy["items"]["data"]
    legacy["current_period_start"] = min(i.pop("current_period_start") for i in items)
    legacy["current_period_end"] = max(i.pop("current_period_end") for i in items)
    legacy["plan"] = copy.deepcopy(items[0]["plan"]) if len(items) == 1 else None
    legacy["quantity"] = items[0]["quantity"] if len(items) == 1 else None
    del legacy["discounts"]
    legacy["discount"] = discount
    return legacy


# -- invoices, charges ------------------------------------------------------------------


def make_line(item: Obj, *, subscription_id: str, period: tuple[int, int]) -> Obj:
    price = item.get("price") or item["plan"]
    amount = (price.get("unit_amount") or price.get("amount") or 0) * item["quantity"]
    line = fixture("line_item")
    line.update(
        id=new_id("il"),
        amount=amount,
        subtotal=amount,
        quantity=item["quantity"],
        currency=price["currency"],
        description=f"{item['quantity']} × {price.get('nickname') or price['id']}",
        subscription=subscription_id,
        period={"start": period[0], "end": period[1]},
    )
    line["parent"] = {
        "type": "subscription_item_details",
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": subscription_id,
            "subscription_item": item["id"],
        },
    }
    line["pricing"] = {
        "type": "price_details",
        "price_details": {"price": price["id"], "product": price["product"]},
        "unit_amount_decimal": str(price.get("unit_amount") or price.get("amount") or 0),
    }
    return line


def make_invoice(
    subscription: Obj,
    *,
    total: int,
    created: int,
    status: str = "paid",
    billing_reason: str = "subscription_cycle",
    metadata: Mapping[str, str] | None = None,
    description: str | None = None,
    legacy: bool = False,
) -> Obj:
    """An invoice of a subscription, in the current shape or (``legacy``) the pre-2025-03-31 one."""
    invoice = fixture("invoice")
    iid = new_id("in")
    period = (created, created + 31 * DAY)
    paid = status == "paid"
    invoice.update(
        id=iid,
        number=f"ACME0042-{next(_ids):04d}",
        customer=subscription["customer"],
        currency=subscription["currency"],
        billing_reason=billing_reason,
        status=status,
        created=created,
        effective_at=created,
        due_date=None,
        description=description,
        metadata=dict(metadata or {}),
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        amount_due=total,
        amount_paid=total if paid else 0,
        amount_remaining=0 if paid else total,
        amount_overpaid=0,
        period_start=created,
        period_end=created,
        shipping_cost=None,
        from_invoice=None,
        last_finalization_error=None,
        next_payment_attempt=None,
        webhooks_delivered_at=created + 5,
        total_taxes=[],
    )
    invoice["status_transitions"].update(
        finalized_at=created, paid_at=created + 60 if paid else None
    )
    invoice["lines"]["data"] = [
        make_line(item, subscription_id=subscription["id"], period=period)
        for item in subscription["items"]["data"]
    ]
    invoice["lines"]["url"] = f"/v1/invoices/{iid}/lines"
    invoice.pop("subscription", None)
    invoice["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {
            "metadata": dict(subscription.get("metadata") or {}),
            "subscription": subscription["id"],
        },
    }
    if legacy:
        parent = invoice.pop("parent")
        del invoice["total_taxes"]
        invoice["subscription"] = subscription["id"]
        invoice["subscription_details"] = {"metadata": parent["subscription_details"]["metadata"]}
        invoice["paid"] = paid
        invoice["tax"] = None
        invoice["total_tax_amounts"] = []
    return invoice


def make_charge(
    *,
    amount: int,
    created: int,
    customer: str = CUSTOMER_ID,
    currency: str = "usd",
    description: str | None = "Subscription update",
    receipt_email: str | None = "billing@acme.test",
    metadata: Mapping[str, str] | None = None,
    status: str = "succeeded",
    payment_method: str | None = None,
) -> Obj:
    charge = fixture("charge")
    succeeded = status == "succeeded"
    charge.update(
        id=new_id("ch"),
        customer=customer,
        amount=amount,
        amount_captured=amount if succeeded else 0,
        captured=succeeded,
        paid=succeeded,
        status=status,
        currency=currency,
        created=created,
        description=description,
        receipt_email=receipt_email,
        metadata=dict(metadata or {}),
        payment_method=payment_method or new_id("pm"),
        failure_code=None if succeeded else "card_declined",
        failure_message=None if succeeded else "Your card was declined.",
        transfer_data=None,
        source=None,
    )
    return charge


# -- a whole account --------------------------------------------------------------------


@dataclass
class Account:
    """One Stripe customer and everything synced about it."""

    customer: Obj
    subscriptions: list[Obj]
    invoices: list[Obj] = field(default_factory=list)
    charges: list[Obj] = field(default_factory=list)
    payment_methods: list[Obj] = field(default_factory=list)
    products: dict[str, Obj] = field(default_factory=dict)
    coupons: dict[str, Obj] = field(default_factory=dict)

    def traits(
        self,
        mode: str = "single",
        *,
        at: int = NOW,
        rules: RevenueRules | None = None,
    ) -> dict[str, Any]:
        return compute_traits(
            self.customer,
            self.subscriptions,
            self.invoices,
            self.charges,
            self.payment_methods,
            mode=mode,  # type: ignore[arg-type]
            at=at,
            rules=rules,
            coupons=self.coupons,
            products=self.products,
        )

    def subscription(self, status: str) -> Obj:
        return next(s for s in self.subscriptions if s["status"] == status)


#: Periods and moments of the realistic account.
MARCH = (ts(2026, 3, 1), ts(2026, 4, 1))
STARTER_START = ts(2025, 1, 10, 9)
STARTER_END = ts(2025, 6, 1)
GROWTH_START = ts(2025, 6, 1)
TRIAL = (ts(2026, 3, 5), ts(2026, 3, 19))


def realistic_account(*, legacy: bool = False) -> Account:
    """Acme Corp: a cancelled Starter plan, an active Growth plan with extra seats and a
    20 %-off loyalty coupon, and an Analytics add-on in trial.

    Growth MRR: (9900 + 8 × 1500) × 0.8 = 17520 cents. ``legacy`` renders the same account
    the way API versions before 2024 did (subscription periods at the top, one embedded
    ``discount``; invoices with ``subscription`` and no ``parent``). Ids are the same on
    every call.
    """
    reset_ids()
    growth = make_product("Growth", product_id="prod_GrowthPlan01")
    seats = make_product("Extra seats", product_id="prod_ExtraSeats01")
    analytics = make_product("Analytics add-on", product_id="prod_Analytics01")
    starter_product = make_product("Starter", product_id="prod_StarterPlan1")
    products = {p["id"]: p for p in (growth, seats, analytics, starter_product)}

    starter_price = make_price(2900, product=starter_product["id"], nickname="Starter monthly")
    growth_price = make_price(9900, product=growth["id"], nickname="Growth monthly")
    seat_price = make_price(1500, product=seats["id"])  # no nickname: named by its product
    analytics_price = make_price(4900, product=analytics["id"], nickname="Analytics monthly")

    loyalty = make_coupon(name="Loyalty 20", percent_off=20.0, coupon_id="LOYALTY20")
    card = make_payment_method(pm_id="pm_1QAcmeVisa4242")

    starter = make_subscription(
        [make_item(starter_price, period=(ts(2025, 5, 10, 9), STARTER_END))],
        status="canceled",
        created=STARTER_START,
        canceled_at=ts(2025, 5, 28),
        ended_at=STARTER_END,
        subscription_id="sub_1QStarterAcme01",
    )
    growth_sub_id = "sub_1QGrowthAcme002"
    discount = make_discount(loyalty, subscription=growth_sub_id, legacy=legacy)
    growth_sub = make_subscription(
        [
            make_item(growth_price, period=MARCH),
            make_item(seat_price, quantity=8, period=MARCH),
        ],
        created=GROWTH_START,
        # Stored with expand[]=discounts, as the sync fetches them; the coupon stays an id
        # and comes from the coupons the raw store holds.
        discounts=[discount],
        metadata={"accountId": "acct_42"},
        default_payment_method=card["id"],
        subscription_id=growth_sub_id,
    )
    trial_sub = make_subscription(
        [make_item(analytics_price, period=TRIAL)],
        status="trialing",
        created=TRIAL[0],
        trial=TRIAL,
        subscription_id="sub_1QAnalyticsAc03",
    )
    invoices = [
        make_invoice(starter, total=2900, created=ts(2025, 5, 10, 9), legacy=legacy),
        make_invoice(
            growth_sub,
            total=17520,
            created=GROWTH_START,
            billing_reason="subscription_create",
            legacy=legacy,
        ),
        make_invoice(growth_sub, total=17520, created=MARCH[0], legacy=legacy),
        make_invoice(
            trial_sub,
            total=0,
            created=TRIAL[0],
            billing_reason="subscription_create",
            legacy=legacy,
        ),
    ]
    charges = [
        make_charge(amount=2900, created=ts(2025, 5, 10, 10), description="Subscription update"),
        make_charge(amount=17520, created=MARCH[0] + 3600, payment_method=card["id"]),
    ]
    customer = make_customer(
        metadata={"accountId": "acct_42", "Plan Tier": "growth", "csm": "dana@vendor.test"},
        default_payment_method=card["id"],
        cash_balance={"usd": 1000},
    )
    subscriptions = [starter, growth_sub, trial_sub]
    if legacy:
        subscriptions = [
            to_legacy_subscription(s, discount=discount if s is growth_sub else None)
            for s in subscriptions
        ]
    return Account(
        customer=customer,
        subscriptions=subscriptions,
        invoices=invoices,
        charges=charges,
        payment_methods=[card],
        products=products,
        coupons={loyalty["id"]: loyalty},
    )
