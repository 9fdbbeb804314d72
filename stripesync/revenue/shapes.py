"""Reading Stripe objects across API versions, so the revenue rules see one shape.

Stripe moved fields between API versions, and a self-hosted store keeps whatever version
each object was fetched with. The readers here accept both sides of every move the
revenue rules care about:

- prices (2020 onwards) and legacy plans, on subscription items and invoice lines;
- ``subscription.discounts`` (a list) and the older single ``subscription.discount``;
- ``discount.source.coupon`` (2025-09-30.clover onwards) and the older ``discount.coupon``;
- ``invoice.parent.subscription_details.subscription`` (2025-03-31.basil onwards) and the
  older ``invoice.subscription``; line ``parent.*_details.proration`` and the older
  ``line.proration``; line ``pricing.price_details.price`` and the older ``line.price`` /
  ``line.plan``.

Anything the rules cannot read without guessing raises :class:`StripeShapeError`, whose
message says which ``expand[]`` or fetch fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from stripesync.errors import InvalidInput

#: A Stripe API object as JSON-decoded by the SDK or read back from the raw store.
StripeObject = Mapping[str, Any]

#: Months in one period of each interval: a month is 1/12 of a year (MRR.md conventions).
MONTHS_PER_INTERVAL: Mapping[str, Fraction] = {
    "day": Fraction(12, 365),
    "week": Fraction(12, 52),
    "month": Fraction(1),
    "year": Fraction(12),
}


class StripeShapeError(InvalidInput):
    """A Stripe object lacks what the revenue rules need, and guessing would skew MRR."""

    code = "stripe_shape"


def object_id(value: object) -> str | None:
    """Return the id of an expandable field, whether Stripe sent it expanded or not."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return None


def exact(value: object, *, what: str) -> Fraction:
    """Turn a Stripe number into an exact fraction.

    Stripe sends ``*_decimal`` fields as decimal strings and ``percent_off`` /
    ``percentage`` as JSON numbers that Python decodes to floats; a float goes through its
    shortest repr so that 25.5 stays 51/2 instead of the binary approximation.
    """
    if isinstance(value, bool):
        raise StripeShapeError(f"{what} is {value!r}, expected a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(repr(value))
    if isinstance(value, Decimal):
        return Fraction(value)
    if isinstance(value, str):
        try:
            return Fraction(value)
        except ValueError:
            pass
    raise StripeShapeError(f"{what} is {value!r}, expected a number")


def months_per_period(interval: str, interval_count: int) -> Fraction:
    """Months in one billing period, the divisor that normalizes an amount to a month."""
    try:
        per_interval = MONTHS_PER_INTERVAL[interval]
    except KeyError:
        raise StripeShapeError(
            f"billing interval {interval!r} is not one of day, week, month, year"
        ) from None
    if interval_count < 1:
        raise StripeShapeError(f"interval_count {interval_count!r} must be at least 1")
    return per_interval * interval_count


@dataclass(frozen=True)
class Tier:
    """One tier of a tiered price or plan; ``up_to`` None is Stripe's ``inf``."""

    up_to: int | None
    unit_amount: Fraction
    flat_amount: Fraction


@dataclass(frozen=True)
class Pricing:
    """A price, or a legacy plan, reduced to what the MRR rules read.

    Prices and plans carry the same facts under different names (``unit_amount`` vs
    ``amount``, ``recurring.interval`` vs ``interval``, ``transform_quantity`` vs
    ``transform_usage``); one record lets the rules ignore which one Stripe sent.
    """

    id: str | None
    product_id: str | None
    currency: str | None
    interval: str
    interval_count: int
    usage_type: str
    billing_scheme: str
    unit_amount: Fraction | None
    tiers_mode: str | None
    tiers: tuple[Tier, ...] | None
    divide_by: int | None
    round: Literal["up", "down"] | None
    tax_behavior: str | None
    source: Literal["price", "plan"]

    @property
    def months(self) -> Fraction:
        return months_per_period(self.interval, self.interval_count)

    @property
    def metered(self) -> bool:
        return self.usage_type == "metered"


def _amount(obj: StripeObject, decimal_key: str, int_key: str, *, what: str) -> Fraction | None:
    # The *_decimal twin carries sub-cent precision; the integer field is its rounding.
    decimal_value = obj.get(decimal_key)
    if decimal_value is not None:
        return exact(decimal_value, what=f"{what}.{decimal_key}")
    int_value = obj.get(int_key)
    if int_value is not None:
        return exact(int_value, what=f"{what}.{int_key}")
    return None


def _tiers(owner: StripeObject, *, what: str) -> tuple[Tier, ...]:
    raw = owner.get("tiers")
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise StripeShapeError(
            f"{what} is tiered but its tiers are not in the object; Stripe only sends them "
            "when expanded: fetch subscriptions with expand[]=data.items.data.price.tiers"
        )
    tiers: list[Tier] = []
    for index, tier in enumerate(raw):
        label = f"{what}.tiers[{index}]"
        if not isinstance(tier, Mapping):
            raise StripeShapeError(f"{label} is {tier!r}, expected a tier object")
        up_to = tier.get("up_to")
        if up_to == "inf":
            up_to = None
        if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
            raise StripeShapeError(f"{label}.up_to is {up_to!r}, expected an integer or null")
        tiers.append(
            Tier(
                up_to=up_to,
                unit_amount=_amount(tier, "unit_amount_decimal", "unit_amount", what=label)
                or Fraction(0),
                flat_amount=_amount(tier, "flat_amount_decimal", "flat_amount", what=label)
                or Fraction(0),
            )
        )
    # Stripe lists tiers ascending with the open-ended one last; sort anyway so a
    # hand-edited store cannot change the result.
    tiers.sort(key=lambda t: (t.up_to is None, t.up_to or 0))
    return tuple(tiers)


def _transform(raw: object, *, what: str) -> tuple[int | None, Literal["up", "down"] | None]:
    if not isinstance(raw, Mapping):
        return None, None
    divide_by = raw.get("divide_by")
    rounding = raw.get("round")
    if isinstance(divide_by, bool) or not isinstance(divide_by, int) or divide_by < 1:
        raise StripeShapeError(f"{what}.divide_by is {divide_by!r}, expected a positive integer")
    if rounding not in ("up", "down"):
        raise StripeShapeError(f"{what}.round is {rounding!r}, expected 'up' or 'down'")
    return divide_by, "up" if rounding == "up" else "down"


def _interval_count(raw: object, *, what: str) -> int:
    if raw is None:
        return 1
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise StripeShapeError(f"{what}.interval_count is {raw!r}, expected an integer")
    return raw


def _currency(raw: object) -> str | None:
    return raw.lower() if isinstance(raw, str) else None


def pricing_from_price(price: StripeObject) -> Pricing:
    """Read a (2020 onwards) price object."""
    what = f"price {price.get('id')}"
    recurring = price.get("recurring")
    if not isinstance(recurring, Mapping):
        raise StripeShapeError(f"{what} has no `recurring`; a subscription item needs one")
    interval = recurring.get("interval")
    if not isinstance(interval, str):
        raise StripeShapeError(f"{what}.recurring.interval is {interval!r}")
    usage_type = recurring.get("usage_type") or "licensed"
    # Billing-meter prices (2024 onwards) are metered whatever usage_type says.
    if recurring.get("meter"):
        usage_type = "metered"
    return _pricing(
        price,
        what=what,
        interval=interval,
        interval_count=_interval_count(recurring.get("interval_count"), what=what),
        usage_type=str(usage_type),
        unit_amount=_amount(price, "unit_amount_decimal", "unit_amount", what=what),
        transform=price.get("transform_quantity"),
        transform_name="transform_quantity",
        tax_behavior=price.get("tax_behavior"),
        source="price",
    )


def pricing_from_plan(plan: StripeObject) -> Pricing:
    """Read a legacy plan object (the only pricing before 2020, a mirror of the price after)."""
    what = f"plan {plan.get('id')}"
    interval = plan.get("interval")
    if not isinstance(interval, str):
        raise StripeShapeError(f"{what}.interval is {interval!r}")
    return _pricing(
        plan,
        what=what,
        interval=interval,
        interval_count=_interval_count(plan.get("interval_count"), what=what),
        usage_type=str(plan.get("usage_type") or "licensed"),
        unit_amount=_amount(plan, "amount_decimal", "amount", what=what),
        transform=plan.get("transform_usage"),
        transform_name="transform_usage",
        tax_behavior=None,
        source="plan",
    )


def _pricing(
    obj: StripeObject,
    *,
    what: str,
    interval: str,
    interval_count: int,
    usage_type: str,
    unit_amount: Fraction | None,
    transform: object,
    transform_name: str,
    tax_behavior: object,
    source: Literal["price", "plan"],
) -> Pricing:
    billing_scheme = str(obj.get("billing_scheme") or "per_unit")
    tiers: tuple[Tier, ...] | None = None
    tiers_mode = obj.get("tiers_mode")
    metered = usage_type == "metered"
    if billing_scheme == "tiered" and not metered:
        if tiers_mode not in ("graduated", "volume"):
            raise StripeShapeError(f"{what}.tiers_mode is {tiers_mode!r} on a tiered {source}")
        tiers = _tiers(obj, what=what)
    elif billing_scheme == "per_unit" and unit_amount is None and not metered:
        raise StripeShapeError(f"{what} is per_unit but has no unit amount")
    elif billing_scheme not in ("per_unit", "tiered"):
        raise StripeShapeError(f"{what}.billing_scheme is {billing_scheme!r}")
    divide_by, rounding = (None, None)
    if not metered:
        divide_by, rounding = _transform(transform, what=f"{what}.{transform_name}")
    return Pricing(
        id=object_id(obj.get("id")),
        product_id=object_id(obj.get("product")),
        currency=_currency(obj.get("currency")),
        interval=interval,
        interval_count=interval_count,
        usage_type=usage_type,
        billing_scheme=billing_scheme,
        unit_amount=unit_amount,
        tiers_mode=tiers_mode if isinstance(tiers_mode, str) else None,
        tiers=tiers,
        divide_by=divide_by,
        round=rounding,
        tax_behavior=tax_behavior if isinstance(tax_behavior, str) else None,
        source=source,
    )


def item_pricing(item: StripeObject) -> Pricing:
    """The pricing of a subscription item: its price when expanded, else its legacy plan.

    Current API versions still send ``item.plan`` next to ``item.price`` as a mirror, so
    the price wins whenever both are there.
    """
    price = item.get("price")
    if isinstance(price, Mapping):
        return pricing_from_price(price)
    plan = item.get("plan")
    if isinstance(plan, Mapping):
        return pricing_from_plan(plan)
    raise StripeShapeError(
        f"subscription item {item.get('id')} has neither an expanded price nor a plan; "
        "store subscriptions as Stripe returns them (items.data[].price is always expanded)"
    )


def subscription_items(subscription: StripeObject) -> list[StripeObject]:
    """The subscription's items, including the single implicit item of pre-2016 versions.

    Before multi-item subscriptions (API 2016-07-06) a subscription carried one ``plan``
    and a ``quantity`` and no ``items``; that pair is read as one item.
    """
    items = subscription.get("items")
    if isinstance(items, Mapping):
        if items.get("has_more"):
            sid = subscription.get("id")
            raise StripeShapeError(
                f"subscription {sid} embeds only part of its items (items.has_more); list "
                f"the rest with /v1/subscription_items?subscription={sid} and put them in "
                "items.data"
            )
        data = items.get("data")
        if isinstance(data, Sequence):
            return [item for item in data if isinstance(item, Mapping)]
        return []
    plan = subscription.get("plan")
    if isinstance(plan, Mapping):
        quantity = subscription.get("quantity")
        return [
            {
                "id": None,
                "object": "subscription_item",
                "plan": plan,
                "quantity": 1 if quantity is None else quantity,
                "discounts": [],
                "tax_rates": [],
            }
        ]
    return []


def discount_coupon(discount: StripeObject) -> StripeObject | str | None:
    """The discount's coupon: an object, an id when not expanded, or None."""
    source = discount.get("source")
    if isinstance(source, Mapping):
        coupon = source.get("coupon")
        if coupon is not None:
            return coupon if isinstance(coupon, Mapping | str) else None
    coupon = discount.get("coupon")
    return coupon if isinstance(coupon, Mapping | str) else None


def subscription_discount_entries(subscription: StripeObject) -> list[StripeObject | str]:
    """The subscription's own discounts in the order Stripe applies them.

    Versions from 2024 send both ``discounts`` (ids unless expanded) and the deprecated
    single ``discount`` (expanded); an id in the list is swapped for that object when they
    match, so a store holding either form loses nothing.
    """
    single = subscription.get("discount")
    known: dict[str, StripeObject] = {}
    if isinstance(single, Mapping) and isinstance(single.get("id"), str):
        known[single["id"]] = single
    listed = subscription.get("discounts")
    if isinstance(listed, Sequence) and not isinstance(listed, str) and listed:
        entries: list[StripeObject | str] = []
        for entry in listed:
            if isinstance(entry, str):
                entries.append(known.get(entry, entry))
            elif isinstance(entry, Mapping):
                entries.append(entry)
        return entries
    if isinstance(single, Mapping):
        return [single]
    return []


def item_discount_entries(item: StripeObject) -> list[StripeObject | str]:
    """The item's own discounts (ids unless the caller expanded them)."""
    listed = item.get("discounts")
    if not isinstance(listed, Sequence) or isinstance(listed, str):
        return []
    return [entry for entry in listed if isinstance(entry, Mapping | str)]


# -- invoices -------------------------------------------------------------------------


def _parent_details(obj: StripeObject) -> StripeObject | None:
    # A `parent` names its kind in `type`; only the details of that kind are meaningful.
    parent = obj.get("parent")
    if not isinstance(parent, Mapping):
        return None
    kind = parent.get("type")
    if isinstance(kind, str):
        details = parent.get(kind)
        return details if isinstance(details, Mapping) else None
    return None


def invoice_subscription_id(invoice: StripeObject) -> str | None:
    """The id of the subscription that issued the invoice, in any API version."""
    parent = invoice.get("parent")
    if isinstance(parent, Mapping):
        details = _parent_details(invoice)
        if details is None and parent.get("type") is None:
            raw = parent.get("subscription_details")
            details = raw if isinstance(raw, Mapping) else None
        if details is not None:
            found = object_id(details.get("subscription"))
            if found is not None:
                return found
    return object_id(invoice.get("subscription"))


def invoice_lines(invoice: StripeObject) -> list[StripeObject]:
    lines = invoice.get("lines")
    if not isinstance(lines, Mapping):
        return []
    data = lines.get("data")
    if not isinstance(data, Sequence):
        return []
    return [line for line in data if isinstance(line, Mapping)]


def line_is_proration(line: StripeObject) -> bool:
    details = _parent_details(line)
    if details is not None and "proration" in details:
        return bool(details.get("proration"))
    return bool(line.get("proration"))


def line_is_subscription_charge(line: StripeObject) -> bool:
    """True for a line a subscription item produced (not a one-off invoice item)."""
    parent = line.get("parent")
    if isinstance(parent, Mapping) and isinstance(parent.get("type"), str):
        return parent.get("type") == "subscription_item_details"
    return line.get("type") == "subscription"


def line_pricing_ref(line: StripeObject) -> StripeObject | str | None:
    """The line's price (or legacy plan): an object when expanded, else its id."""
    pricing = line.get("pricing")
    if isinstance(pricing, Mapping):
        details = pricing.get("price_details")
        if isinstance(details, Mapping):
            price = details.get("price")
            if isinstance(price, Mapping | str):
                return price
    for key in ("price", "plan"):
        value = line.get(key)
        if isinstance(value, Mapping | str):
            return value
    return None


def line_subscription_item_id(line: StripeObject) -> str | None:
    details = _parent_details(line)
    if details is not None:
        found = object_id(details.get("subscription_item"))
        if found is not None:
            return found
    return object_id(line.get("subscription_item"))


def invoice_tax(invoice: StripeObject) -> int:
    """All tax on the invoice, inclusive and exclusive, in any API version."""
    for key in ("total_taxes", "total_tax_amounts"):
        entries = invoice.get(key)
        if isinstance(entries, Sequence) and not isinstance(entries, str):
            return sum(
                int(entry.get("amount") or 0) for entry in entries if isinstance(entry, Mapping)
            )
    legacy = invoice.get("tax")
    return int(legacy) if isinstance(legacy, int) and not isinstance(legacy, bool) else 0


def invoice_is_paid(invoice: StripeObject) -> bool:
    status = invoice.get("status")
    if isinstance(status, str):
        return status == "paid"
    return invoice.get("paid") is True


def pricing_months(obj: StripeObject) -> Fraction | None:
    """Months per period of a price or plan object, reading nothing else.

    Invoice lines expand prices without their tiers; this reads only the interval, so a
    line can name its period even when its price could not be priced from the line alone.
    """
    recurring = obj.get("recurring")
    source: StripeObject = recurring if isinstance(recurring, Mapping) else obj
    interval = source.get("interval")
    count = source.get("interval_count")
    if not isinstance(interval, str) or interval not in MONTHS_PER_INTERVAL:
        return None
    if count is None:
        count = 1
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return None
    return months_per_period(interval, count)
