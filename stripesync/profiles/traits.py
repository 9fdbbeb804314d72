"""A Stripe customer's traits: everything the seed platforms show about it, as plain values.

`compute_traits` is a pure function of the customer's Stripe objects. Its result is one flat
dict in a single snake_case namespace (stored on a profile under `TRAIT_NAMESPACE`);
docs/traits.md maps every name Vitally, Encharge and Intempt use onto these keys, and a test
keeps the two in step.

Conventions, chosen once so the traits can be compared and segmented on without surprises:

- Every object goes through `stripesync.stripe_api.shapes.normalize` first, so objects
  stored from any API version (top-level ``current_period_end``, ``plan``, ``discount``,
  ``invoice.subscription``) give the same traits.
- Dates are ISO-8601 UTC strings, ``2024-07-05T22:10:00Z``; they sort as text.
- Amounts are integers in the currency's minor unit, as Stripe sends them. The two Encharge
  fields quoted in major units have their own ``*_major`` keys (floats, for display).
- Every revenue figure comes from `stripesync.revenue` (MRR.md); nothing here prices an item.
- The *primary* subscription is the revenue module's (MRR.md rule 13): the most recently
  created subscription that counts towards MRR, else the most recently created one. It
  supplies the single-subscription traits, so ``mrr`` and ``subscription_status`` always
  describe the same subscription.
- ``mode="multiple"`` drops the single-subscription traits (`SINGLE_SUBSCRIPTION_TRAITS`), as
  Vitally does: with several live subscriptions "the" subscription is an arbitrary pick, and
  a trait that silently follows the newest one misleads. Customer-level traits (contact,
  card, discount, last invoice, last payment) and the aggregates stay in both modes.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from stripesync.errors import InvalidInput
from stripesync.revenue import CustomerRevenue, RevenueRules, customer_revenue, minor_unit_exponent
from stripesync.revenue.shapes import subscription_discount_entries, subscription_items
from stripesync.stripe_api.shapes import (
    discount_coupon,
    discount_coupon_id,
    invoice_subscription_id,
    normalize,
    object_id,
    subscription_period,
)

__all__ = [
    "ENDED_STATUSES",
    "SINGLE_SUBSCRIPTION_TRAITS",
    "STATUS_PRECEDENCE",
    "TRAIT_NAMESPACE",
    "SubscriptionMode",
    "Timestamp",
    "compute_traits",
    "expand_coupons",
    "iso_utc",
    "metadata_trait_key",
]

SubscriptionMode = Literal["single", "multiple"]
Timestamp = datetime | int | float
StripeObject = Mapping[str, Any]

#: Where a profile keeps these traits, so other sources' traits never collide with them.
TRAIT_NAMESPACE = "stripe"

#: Statuses after which a subscription will never bill again.
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})

#: Which status describes a customer holding several subscriptions: the most alive one.
STATUS_PRECEDENCE: tuple[str, ...] = (
    "active",
    "past_due",
    "trialing",
    "unpaid",
    "incomplete",
    "paused",
    "incomplete_expired",
    "canceled",
)

#: Traits read off the primary subscription; absent in multiple-subscriptions mode.
SINGLE_SUBSCRIPTION_TRAITS = frozenset(
    {
        "mrr",
        "mrr_currency",
        "subscription_id",
        "subscription_status",
        "subscription_amount",
        "subscription_interval",
        "subscription_created",
        "current_period_start",
        "current_period_end",
        "trial_start",
        "trial_end",
        "cancel_at_period_end",
        "canceled_at",
        "cancel_at",
        "ended_at",
        "plan_id",
        "plan_amount",
        "plan_amount_major",
        "plan_currency",
        "plan_interval",
        "plan_interval_count",
        "plan_nickname",
        "product_id",
        "product_name",
    }
)

# Legacy card objects (card_...) spell brands for people; PaymentMethods use codes.
_LEGACY_BRANDS = {
    "american express": "amex",
    "diners club": "diners",
    "discover": "discover",
    "eftpos australia": "eftpos_au",
    "jcb": "jcb",
    "mastercard": "mastercard",
    "unionpay": "unionpay",
    "visa": "visa",
    "unknown": "unknown",
}
_ISSUED_INVOICE_STATUSES = frozenset({"open", "paid", "uncollectible"})


# -- small readers ----------------------------------------------------------------------


def iso_utc(value: Timestamp | None) -> str | None:
    """A Unix time (or datetime) as ``YYYY-MM-DDTHH:MM:SSZ``; None stays None.

    One text form for every date trait, so dates from Stripe, from ``at`` and from the card
    expiry compare as plain strings in segments and exports.
    """
    if value is None or isinstance(value, bool):
        return None
    moment = _moment(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(value: Timestamp) -> datetime:
    if isinstance(value, datetime):
        # A naive datetime is read as UTC: Stripe's clock is UTC, local time never is.
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value, UTC)


def _ts(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return _ts(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list_data(value: Any) -> list[Mapping[str, Any]]:
    data = _mapping(value).get("data")
    if not isinstance(data, Sequence) or isinstance(data, str):
        return []
    return [entry for entry in data if isinstance(entry, Mapping)]


def _created_key(obj: StripeObject) -> tuple[int, str]:
    return (_ts(obj.get("created")) or 0, str(obj.get("id") or ""))


def _belongs(obj: StripeObject, customer_id: str) -> bool:
    """False for objects another customer owns (a caller's mix-up must not leak traits)."""
    if obj.get("deleted") is True:
        return False
    owner = object_id(obj.get("customer"))
    return owner is None or owner == customer_id


def _major(amount: int | None, currency: str | None) -> float | None:
    if amount is None or currency is None:
        return None
    return float(Decimal(amount).scaleb(-minor_unit_exponent(currency)))


def metadata_trait_key(key: str) -> str | None:
    """The flat trait name of a metadata key: ``metadata_`` + the key in snake_case.

    ``planTier`` → ``metadata_plan_tier``, ``Seats (max)`` → ``metadata_seats_max``. None
    when nothing is left of the key (``"--"``), which then lives only in ``metadata``.
    """
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    snake = re.sub(r"[^0-9a-z]+", "_", spaced.lower()).strip("_")
    return f"metadata_{snake}" if snake else None


# -- products, prices, items ------------------------------------------------------------


def _product(ref: Any, products: Mapping[str, StripeObject]) -> dict[str, Any]:
    product_id = object_id(ref)
    found = ref if isinstance(ref, Mapping) else products.get(product_id or "", {})
    return {"id": product_id, "name": _str(_mapping(found).get("name"))}


def _item_view(item: StripeObject, products: Mapping[str, StripeObject]) -> dict[str, Any]:
    """One subscription item as Intempt's ``items[]`` shows it, from a price or a legacy plan."""
    price = item.get("price")
    if isinstance(price, Mapping):
        recurring = _mapping(price.get("recurring"))
        view = {
            "id": object_id(price.get("id")),
            "nickname": _str(price.get("nickname")),
            "unit_amount": _int(price.get("unit_amount")),
            "currency": _str(price.get("currency")),
            "product": _product(price.get("product"), products),
            "recurring": {
                "interval": _str(recurring.get("interval")),
                "interval_count": _int(recurring.get("interval_count")) or 1,
                "usage_type": _str(recurring.get("usage_type")) or "licensed",
            },
        }
    else:
        plan = _mapping(item.get("plan"))
        view = {
            "id": object_id(plan.get("id")),
            # Plans from before products existed carried their own display name.
            "nickname": _str(plan.get("nickname")) or _str(plan.get("name")),
            "unit_amount": _int(plan.get("amount")),
            "currency": _str(plan.get("currency")),
            "product": _product(plan.get("product"), products),
            "recurring": {
                "interval": _str(plan.get("interval")),
                "interval_count": _int(plan.get("interval_count")) or 1,
                "usage_type": _str(plan.get("usage_type")) or "licensed",
            },
        }
    quantity = item.get("quantity")
    return {
        "id": object_id(item.get("id")),
        "price": view,
        "quantity": _int(quantity),
    }


def _plan_name(view: Mapping[str, Any]) -> str | None:
    """A price's name for people: its nickname, else its product's name."""
    price = view["price"]
    return _str(price["nickname"]) or _str(price["product"]["name"])


def _items(
    subscription: StripeObject, products: Mapping[str, StripeObject]
) -> list[dict[str, Any]]:
    return [_item_view(item, products) for item in subscription_items(subscription)]


# -- discounts --------------------------------------------------------------------------


def _discount_view(
    entry: StripeObject | str, coupons: Mapping[str, StripeObject]
) -> dict[str, Any]:
    """A discount with its coupon read, from the object or the ``coupons`` lookup.

    Current API versions send ``subscription.discounts`` as ids and ``source.coupon`` as an
    id unless expanded; what cannot be read is None rather than a guess.
    """
    if isinstance(entry, str):
        discount: Mapping[str, Any] = {"id": entry}
        coupon: Mapping[str, Any] = {}
    else:
        discount = entry
        expanded = discount_coupon(entry)
        coupon = (
            expanded if expanded is not None else coupons.get(discount_coupon_id(entry) or "", {})
        )
    coupon_id = object_id(coupon.get("id")) or (
        None if isinstance(entry, str) else discount_coupon_id(entry)
    )
    percent_off = coupon.get("percent_off")
    if isinstance(percent_off, bool) or not isinstance(percent_off, int | float):
        percent_off = None
    return {
        # Discounts from before 2019 had no id of their own; the coupon's stands in.
        "id": object_id(discount.get("id")) or coupon_id,
        "coupon_id": coupon_id,
        "name": _str(coupon.get("name")),
        "percent_off": percent_off,
        "amount_off": _int(coupon.get("amount_off")),
        "currency": _str(coupon.get("currency")),
        "duration": _str(coupon.get("duration")),
        "duration_in_months": _int(coupon.get("duration_in_months")),
        "start": iso_utc(_ts(discount.get("start"))),
        "end": iso_utc(_ts(discount.get("end"))),
    }


def _with_coupon(entry: Any, coupons: Mapping[str, StripeObject]) -> Any:
    """The discount with its coupon object in place of its id, when the lookup has it."""
    if not isinstance(entry, Mapping) or discount_coupon(entry) is not None:
        return entry
    coupon = coupons.get(discount_coupon_id(entry) or "")
    if coupon is None:
        return entry
    out = dict(entry)
    if isinstance(entry.get("source"), Mapping):
        out["source"] = {**entry["source"], "coupon": dict(coupon)}
    else:
        out["coupon"] = dict(coupon)
    return out


def _expand_coupons(obj: dict[str, Any], coupons: Mapping[str, StripeObject]) -> dict[str, Any]:
    """Put known coupons into a customer's or subscription's discounts.

    Current API versions name a discount's coupon by id; the revenue rules need the coupon
    itself (MRR.md rule 6) and the traits need its name. The raw store holds coupons as
    objects of their own, so the id is resolved here, before anything reads the discounts.
    """
    if not coupons:
        return obj
    if isinstance(obj.get("discount"), Mapping):
        obj["discount"] = _with_coupon(obj["discount"], coupons)
    if isinstance(obj.get("discounts"), list):
        obj["discounts"] = [_with_coupon(entry, coupons) for entry in obj["discounts"]]
    items = obj.get("items")
    if isinstance(items, dict) and isinstance(items.get("data"), list):
        for item in items["data"]:
            if isinstance(item, dict) and isinstance(item.get("discounts"), list):
                item["discounts"] = [_with_coupon(e, coupons) for e in item["discounts"]]
    return obj


def expand_coupons(obj: dict[str, Any], coupons: Mapping[str, StripeObject]) -> dict[str, Any]:
    """Put known coupons (by id) into a customer's or subscription's discounts, in place.

    Public for the profile store, which resolves coupons once for traits and history.
    """
    return _expand_coupons(obj, coupons)


def _shallow(obj: StripeObject) -> dict[str, Any]:
    return dict(obj)


def _is_current(entry: StripeObject | str, now: float) -> bool:
    if isinstance(entry, str):
        return True
    end = _ts(entry.get("end"))
    return end is None or end > now


# -- cards ------------------------------------------------------------------------------


def _card_fields(method: StripeObject) -> tuple[str | None, str | None, int | None, int | None]:
    """(brand, last4, exp_month, exp_year) of a card PaymentMethod or a legacy card object."""
    if method.get("object") == "card" or "exp_month" in method:
        brand = _str(method.get("brand"))
        if brand is not None:
            brand = _LEGACY_BRANDS.get(brand.lower(), brand.lower())
        return (
            brand,
            _str(method.get("last4")),
            _int(method.get("exp_month")),
            _int(method.get("exp_year")),
        )
    card = _mapping(method.get("card"))
    if method.get("type") != "card" or not card:
        return None, None, None, None
    return (
        _str(card.get("brand")),
        _str(card.get("last4")),
        _int(card.get("exp_month")),
        _int(card.get("exp_year")),
    )


def _is_card(method: StripeObject) -> bool:
    return _card_fields(method)[3] is not None


def _primary_card(
    customer: StripeObject,
    subscriptions: Sequence[StripeObject],
    payment_methods: Sequence[StripeObject],
) -> StripeObject | None:
    """The card Stripe would charge: the customer's default, else a live subscription's
    default (Checkout sets it there, not on the customer), else the legacy default source,
    else the newest card on file."""
    by_id: dict[str, StripeObject] = {}
    for method in [*payment_methods, *_list_data(customer.get("sources"))]:
        method_id = object_id(method.get("id"))
        if method_id is not None:
            by_id.setdefault(method_id, method)
    refs: list[Any] = [_mapping(customer.get("invoice_settings")).get("default_payment_method")]
    live = [s for s in subscriptions if s.get("status") not in ENDED_STATUSES]
    refs += [s.get("default_payment_method") for s in sorted(live, key=_created_key, reverse=True)]
    refs.append(customer.get("default_source"))
    for ref in refs:
        chosen: Mapping[str, Any] | None = (
            ref if isinstance(ref, Mapping) else by_id.get(object_id(ref) or "")
        )
        if chosen is not None and _is_card(chosen):
            return chosen
    cards = [m for m in by_id.values() if _is_card(m)]
    return max(cards, key=_created_key) if cards else None


def _card_expiration(exp_month: int | None, exp_year: int | None) -> str | None:
    """The last second a card is valid: cards expire at the end of their expiry month."""
    if exp_month is None or exp_year is None or not 1 <= exp_month <= 12:
        return None
    last_day = calendar.monthrange(exp_year, exp_month)[1]
    return f"{exp_year:04d}-{exp_month:02d}-{last_day:02d}T23:59:59Z"


# -- invoices and payments --------------------------------------------------------------


def _is_issued(invoice: StripeObject) -> bool:
    """Drafts can still change and voided invoices never were owed."""
    return invoice.get("status") in _ISSUED_INVOICE_STATUSES


def _latest(objects: Iterable[StripeObject]) -> StripeObject | None:
    found = list(objects)
    return max(found, key=_created_key) if found else None


def _last_payment(
    charges: Sequence[StripeObject], invoices: Sequence[StripeObject]
) -> dict[str, Any]:
    """The latest money received: a successful captured charge, else a paid invoice.

    Charges are the payments; paid invoices stand in only when no charge was synced
    (a restricted key without Charges: Read), so one payment is never counted twice.
    """
    paid_charges = [
        charge
        for charge in charges
        if charge.get("status") == "succeeded"
        and charge.get("paid", True) is not False
        and charge.get("captured", True) is not False
    ]
    charge = _latest(paid_charges)
    if charge is not None:
        captured = _int(charge.get("amount_captured"))
        amount = captured if captured else _int(charge.get("amount"))
        currency = _str(charge.get("currency"))
        return {
            "last_amount_paid": amount,
            "last_amount_paid_major": _major(amount, currency),
            "last_payment_currency": currency,
            "last_payment_description": _str(charge.get("description")),
            "last_payment_at": iso_utc(_ts(charge.get("created"))),
        }
    paid_invoices = [
        inv
        for inv in invoices
        if inv.get("status") == "paid" and (_int(inv.get("amount_paid")) or 0)
    ]
    invoice = max(paid_invoices, key=_paid_at_key) if paid_invoices else None
    if invoice is None:
        return {
            "last_amount_paid": None,
            "last_amount_paid_major": None,
            "last_payment_currency": None,
            "last_payment_description": None,
            "last_payment_at": None,
        }
    amount = _int(invoice.get("amount_paid"))
    currency = _str(invoice.get("currency"))
    return {
        "last_amount_paid": amount,
        "last_amount_paid_major": _major(amount, currency),
        "last_payment_currency": currency,
        "last_payment_description": _str(invoice.get("description")),
        "last_payment_at": iso_utc(_paid_at_key(invoice)[0] or None),
    }


def _paid_at_key(invoice: StripeObject) -> tuple[int, str]:
    paid_at = _ts(_mapping(invoice.get("status_transitions")).get("paid_at"))
    return (paid_at or _ts(invoice.get("created")) or 0, str(invoice.get("id") or ""))


# -- subscriptions ----------------------------------------------------------------------


def _status(subscription: StripeObject) -> str | None:
    return _str(subscription.get("status"))


def _summary_status(statuses: Sequence[str | None], *, deleted: bool) -> str | None:
    if deleted:
        # Stripe cancels every subscription of a deleted customer.
        return "canceled"
    known = [s for s in statuses if s is not None]
    if not known:
        return None
    rank = {status: index for index, status in enumerate(STATUS_PRECEDENCE)}
    return min(known, key=lambda s: rank.get(s, len(rank)))


def _activated_at(subscription: StripeObject, now: float) -> int | None:
    """When the subscription last became active, as far as one snapshot can tell.

    An active subscription that had a trial became active when the trial ended; otherwise
    at its start. A resume after a pause is not visible in a snapshot (the activity feed
    has it).
    """
    if subscription.get("status") not in ("active", "past_due"):
        return None
    start = _ts(subscription.get("start_date")) or _ts(subscription.get("created"))
    trial_end = _ts(subscription.get("trial_end"))
    if trial_end is not None and trial_end <= now and (start is None or trial_end >= start):
        return trial_end
    return start


def _expires_at(subscription: StripeObject) -> int | None:
    """When the subscription ends or is set to end; None while it renews."""
    ended = _ts(subscription.get("ended_at"))
    if ended is not None:
        return ended
    cancel_at = _ts(subscription.get("cancel_at"))
    if cancel_at is not None:
        return cancel_at
    if subscription.get("cancel_at_period_end") is True:
        return subscription_period(subscription)[1]
    return None


def _subscription_view(
    subscription: StripeObject,
    mrr: int,
    arr: int,
    currency: str,
    now: float,
    products: Mapping[str, StripeObject],
    coupons: Mapping[str, StripeObject],
) -> dict[str, Any]:
    """One entry of Intempt's ``Subscriptions`` array (and its subscription-event fields)."""
    start, end = subscription_period(subscription)
    items = _items(subscription, products)
    trial_settings = _mapping(_mapping(subscription.get("trial_settings")).get("end_behavior"))
    return {
        "id": object_id(subscription.get("id")),
        "status": _status(subscription),
        "is_trial": subscription.get("status") == "trialing",
        "mrr": mrr,
        "arr": arr,
        "currency": currency,
        "created": iso_utc(_ts(subscription.get("created"))),
        "activated_at": iso_utc(_activated_at(subscription, now)),
        "current_term_start": iso_utc(start),
        "current_term_end": iso_utc(end),
        "trial_started_at": iso_utc(_ts(subscription.get("trial_start"))),
        "trial_ends_at": iso_utc(_ts(subscription.get("trial_end"))),
        "trial_end_action": _str(trial_settings.get("missing_payment_method")),
        "cancelled_at": iso_utc(_ts(subscription.get("canceled_at"))),
        "cancel_at": iso_utc(_ts(subscription.get("cancel_at"))),
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "expires_at": iso_utc(_expires_at(subscription)),
        "ended_at": iso_utc(_ts(subscription.get("ended_at"))),
        "days_until_due": _int(subscription.get("days_until_due")),
        "next_pending_invoice_item_invoice": iso_utc(
            _ts(subscription.get("next_pending_invoice_item_invoice"))
        ),
        "discounts": [
            _discount_view(entry, coupons) for entry in subscription_discount_entries(subscription)
        ],
        "plan_ids": [item["price"]["id"] for item in items],
        "product_names": _unique(item["price"]["product"]["name"] for item in items),
        "items": items,
        "metadata": dict(_mapping(subscription.get("metadata"))),
    }


def _unique(values: Iterable[str | None]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value is not None:
            seen.setdefault(value, None)
    return list(seen)


# -- the traits -------------------------------------------------------------------------


def compute_traits(
    customer: StripeObject,
    subscriptions: Iterable[StripeObject],
    invoices: Iterable[StripeObject],
    charges: Iterable[StripeObject],
    payment_methods: Iterable[StripeObject],
    *,
    mode: SubscriptionMode,
    at: Timestamp,
    rules: RevenueRules | None = None,
    coupons: Mapping[str, StripeObject] | None = None,
    products: Mapping[str, StripeObject] | None = None,
    normalized: bool = False,
) -> dict[str, Any]:
    """Every trait of one Stripe customer, keyed as docs/traits.md lists them.

    ``subscriptions``, ``invoices``, ``charges`` and ``payment_methods`` are the customer's
    own objects as stored (any API version; objects naming another customer, and deleted
    ones, are left out). Subscriptions need their items' prices (Stripe always expands
    them); ``coupons`` and ``products`` (by id) resolve what Stripe sends as ids, so
    discount and product names can be shown and coupons named by id reduce MRR too (the
    revenue rules read a discount only with its coupon). ``at`` is the sync moment: it
    decides which discounts have ended and becomes ``last_sync_at``; it is never read from
    a clock, so the same inputs always give the same traits. ``rules`` are the source's
    revenue settings (MRR.md).

    ``normalized=True`` says the objects are in the current API shape already (the raw
    store keeps them so: ``sync.apply`` normalizes on the way in), which skips the
    normalizing deep copy, the bulk of the cost when profiles are rebuilt. The customer
    and subscriptions are then copied shallowly; their discounts may get coupon objects
    put in place of coupon ids (`expand_coupons`).

    Raises `InvalidInput` for an unknown ``mode`` or a customer without an id, and the
    revenue module's `StripeShapeError` when a subscription lacks what MRR needs.
    """
    if mode not in ("single", "multiple"):
        raise InvalidInput(f"subscription mode is {mode!r}; use 'single' or 'multiple'")
    now = _moment(at).timestamp()
    product_lookup = products or {}
    coupon_lookup = coupons or {}
    shape = _shallow if normalized else normalize
    cust = _expand_coupons(shape(customer), coupon_lookup)
    customer_id = object_id(cust.get("id"))
    if customer_id is None:
        raise InvalidInput("the customer has no id; pass the Stripe customer object as stored")
    subs = sorted(
        (
            _expand_coupons(shape(s), coupon_lookup)
            for s in subscriptions
            if _belongs(s, customer_id)
        ),
        key=_created_key,
    )
    invs = [shape(i) for i in invoices if _belongs(i, customer_id)]
    chs = [shape(c) for c in charges if _belongs(c, customer_id)]
    methods = [shape(m) for m in payment_methods if _belongs(m, customer_id)]
    deleted = cust.get("deleted") is True

    revenue = customer_revenue(cust, subs, invs, at=now, rules=rules)
    rows = list(zip(subs, revenue.subscriptions, strict=True))
    primary = next((sub for sub, row in rows if row.id == revenue.primary_subscription_id), None)

    traits: dict[str, Any] = {}
    traits.update(_customer_traits(cust, customer_id, deleted))
    traits.update(_card_traits(cust, subs, methods))
    traits.update(_discount_traits(cust, primary if mode == "single" else None, coupon_lookup, now))
    traits.update(_invoice_traits(invs, subs))
    traits.update(_last_payment(chs, invs))
    traits["receipt_email"] = next(
        (
            _str(c.get("receipt_email"))
            for c in sorted(chs, key=_created_key, reverse=True)
            if _str(c.get("receipt_email"))
        ),
        None,
    )
    traits.update(_revenue_traits(cust, revenue))
    traits.update(_aggregate_traits(subs, mode, primary, deleted, product_lookup))
    traits["subscriptions"] = [
        _subscription_view(sub, row.mrr, row.arr, row.currency, now, product_lookup, coupon_lookup)
        for sub, row in rows
    ]
    if mode == "single":
        traits.update(_single_traits(primary, revenue, product_lookup))
    traits.update(_metadata_traits(cust))
    traits["last_sync_at"] = iso_utc(at)
    return traits


def _customer_traits(cust: StripeObject, customer_id: str, deleted: bool) -> dict[str, Any]:
    address = _mapping(cust.get("address"))
    balance = _int(cust.get("balance"))
    if balance is None:
        balance = _int(cust.get("account_balance"))  # before 2019-10-17
    cash = cust.get("cash_balance")
    available: dict[str, int] | None = None
    if isinstance(cash, Mapping):
        available = {
            str(currency).lower(): amount
            for currency, amount in _mapping(cash.get("available")).items()
            if _int(amount) is not None
        }
    return {
        "customer_id": customer_id,
        "deleted": deleted,
        "livemode": cust.get("livemode") if isinstance(cust.get("livemode"), bool) else None,
        "email": _str(cust.get("email")),
        "name": _str(cust.get("name")),
        "phone": _str(cust.get("phone")),
        "description": _str(cust.get("description")),
        "address_line1": _str(address.get("line1")),
        "address_line2": _str(address.get("line2")),
        "city": _str(address.get("city")),
        "state": _str(address.get("state")),
        "postal_code": _str(address.get("postal_code")),
        "country": _str(address.get("country")),
        "currency": _str(cust.get("currency")),
        "created": iso_utc(_ts(cust.get("created"))),
        "account_balance": balance,
        "available_cash_balance": available,
        "delinquent": cust.get("delinquent") if isinstance(cust.get("delinquent"), bool) else None,
    }


def _card_traits(
    cust: StripeObject, subs: Sequence[StripeObject], methods: Sequence[StripeObject]
) -> dict[str, Any]:
    card = _primary_card(cust, subs, methods)
    brand, last4, month, year = _card_fields(card) if card is not None else (None,) * 4
    return {
        "card_brand": brand,
        "card_last4": last4,
        "card_expiration": _card_expiration(month, year),
    }


def _discount_traits(
    cust: StripeObject,
    primary: StripeObject | None,
    coupons: Mapping[str, StripeObject],
    now: float,
) -> dict[str, Any]:
    """The customer's discount; in single mode, else the primary subscription's first one.

    Vitally names the customer's discount, but Stripe has long put coupons on
    subscriptions instead; falling back to the one subscription the single mode follows
    keeps the traits useful without picking among several subscriptions.
    """
    chosen: StripeObject | str | None = None
    own = cust.get("discount")
    if isinstance(own, Mapping) and _is_current(own, now):
        chosen = own
    elif primary is not None:
        chosen = next(
            (e for e in subscription_discount_entries(primary) if _is_current(e, now)), None
        )
    view = _discount_view(chosen, coupons) if chosen is not None else {}
    return {
        "discount_id": view.get("id"),
        "discount_coupon_id": view.get("coupon_id"),
        "discount_name": view.get("name"),
        "discount_percent_off": view.get("percent_off"),
        "discount_amount_off": view.get("amount_off"),
        "discount_duration_in_months": view.get("duration_in_months"),
    }


def _invoice_traits(
    invoices: Sequence[StripeObject], subs: Sequence[StripeObject]
) -> dict[str, Any]:
    issued = [inv for inv in invoices if _is_issued(inv)]
    last = _latest(issued)
    per_subscription: list[StripeObject | None] = []
    for sub in subs:
        sub_id = object_id(sub.get("id"))
        per_subscription.append(
            _latest(inv for inv in issued if invoice_subscription_id(inv) == sub_id)
        )
    return {
        "last_invoice_id": object_id(last.get("id")) if last else None,
        "last_invoice_amount": _int(last.get("total")) if last else None,
        "last_invoice_timestamp": iso_utc(_ts(last.get("created"))) if last else None,
        # Aligned with subscription_ids: None where a subscription has no issued invoice.
        "last_invoice_ids": [object_id(inv.get("id")) if inv else None for inv in per_subscription],
        "last_invoice_amounts": [
            _int(inv.get("total")) if inv else None for inv in per_subscription
        ],
    }


def _revenue_currency(cust: StripeObject, revenue: CustomerRevenue) -> str | None:
    if revenue.reporting_currency is not None:
        return revenue.reporting_currency
    if revenue.mrr_currency is not None:
        return revenue.mrr_currency
    currency = _str(cust.get("currency"))
    if currency is not None:
        return currency.lower()
    return next(iter(revenue.all_mrr)) if len(revenue.all_mrr) == 1 else None


def _revenue_traits(cust: StripeObject, revenue: CustomerRevenue) -> dict[str, Any]:
    currency = _revenue_currency(cust, revenue)
    if revenue.reporting_currency is not None:
        all_mrr = revenue.reporting_mrr or 0
        arr = revenue.reporting_arr or 0
    else:
        all_mrr = revenue.all_mrr.get(currency or "", 0)
        arr = revenue.arr.get(currency or "", 0)
    return {
        "revenue_currency": currency,
        "all_mrr": all_mrr,
        "arr": arr,
        "all_mrr_by_currency": dict(revenue.all_mrr),
        "arr_by_currency": dict(revenue.arr),
        "subscription_paying_count": revenue.subscription_paying_count,
        "subscription_trialing_count": revenue.subscription_trialing_count,
        # A subscription's amount is its MRR (MRR.md rule 13 reads Vitally that way), so
        # the total of the amounts is the customer's total MRR.
        "subscription_amounts_total": all_mrr,
    }


def _aggregate_traits(
    subs: Sequence[StripeObject],
    mode: SubscriptionMode,
    primary: StripeObject | None,
    deleted: bool,
    products: Mapping[str, StripeObject],
) -> dict[str, Any]:
    live = [s for s in subs if _status(s) not in ENDED_STATUSES]
    # A churned customer still shows what it was subscribed to: its primary subscription.
    shown = live or ([primary] if primary is not None else [])
    items = [item for sub in shown for item in _items(sub, products)]
    if mode == "single":
        renewing = (
            [primary] if primary is not None and _status(primary) not in ENDED_STATUSES else []
        )
    else:
        renewing = live
    ends = [end for end in (subscription_period(s)[1] for s in renewing) if end is not None]
    return {
        "subscription_ids": [object_id(s.get("id")) for s in subs],
        "subscription_statuses": [_status(s) for s in subs],
        "current_subscription_status": _summary_status([_status(s) for s in subs], deleted=deleted),
        "plan_ids": [item["price"]["id"] for item in items],
        "plan_names": [_plan_name(item) for item in items],
        "plan_amounts": [item["price"]["unit_amount"] for item in items],
        "product_ids": _unique(item["price"]["product"]["id"] for item in items),
        "product_names": _unique(item["price"]["product"]["name"] for item in items),
        "renewal_date": iso_utc(min(ends)) if ends else None,
    }


def _single_traits(
    primary: StripeObject | None,
    revenue: CustomerRevenue,
    products: Mapping[str, StripeObject],
) -> dict[str, Any]:
    sub = primary or {}
    items = _items(sub, products) if primary is not None else []
    first = items[0]["price"] if items else None
    start, end = subscription_period(sub) if primary is not None else (None, None)
    currency = revenue.mrr_currency
    plan_amount = first["unit_amount"] if first else None
    plan_currency = (first["currency"] if first else None) or currency
    return {
        "mrr": revenue.mrr,
        "mrr_currency": currency,
        "subscription_id": revenue.primary_subscription_id,
        "subscription_status": _status(sub),
        "subscription_amount": revenue.primary_subscription_mrr,
        "subscription_interval": first["recurring"]["interval"] if first else None,
        "subscription_created": iso_utc(_ts(sub.get("created"))),
        "current_period_start": iso_utc(start),
        "current_period_end": iso_utc(end),
        "trial_start": iso_utc(_ts(sub.get("trial_start"))),
        "trial_end": iso_utc(_ts(sub.get("trial_end"))),
        "cancel_at_period_end": bool(sub.get("cancel_at_period_end")) if primary else None,
        "canceled_at": iso_utc(_ts(sub.get("canceled_at"))),
        "cancel_at": iso_utc(_ts(sub.get("cancel_at"))),
        "ended_at": iso_utc(_ts(sub.get("ended_at"))),
        "plan_id": first["id"] if first else None,
        "plan_amount": plan_amount,
        "plan_amount_major": _major(plan_amount, plan_currency),
        "plan_currency": plan_currency if first else None,
        "plan_interval": first["recurring"]["interval"] if first else None,
        "plan_interval_count": first["recurring"]["interval_count"] if first else None,
        "plan_nickname": first["nickname"] if first else None,
        "product_id": first["product"]["id"] if first else None,
        "product_name": first["product"]["name"] if first else None,
    }


def _metadata_traits(cust: StripeObject) -> dict[str, Any]:
    """``metadata`` as Stripe has it, plus one flat ``metadata_<key>`` trait per key.

    Keys are taken in sorted order; when two keys snake_case to the same name (``planTier``
    and ``plan_tier``) the first keeps the flat trait and both stay in ``metadata``.
    """
    metadata = {str(k): v for k, v in _mapping(cust.get("metadata")).items()}
    out: dict[str, Any] = {"metadata": metadata}
    for key in sorted(metadata):
        flat = metadata_trait_key(key)
        if flat is not None and flat not in out:
            out[flat] = metadata[key]
    return out
