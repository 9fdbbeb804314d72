"""MRR, ARR, paying and trialing counts, movements and rates, as MRR.md defines them.

Everything here is a pure function of Stripe objects (or plain numbers) and a
:class:`~stripesync.revenue.rules.RevenueRules`: no I/O, no clock unless ``at`` is left
out. Amounts are exact fractions of the currency's minor unit until the one rounding per
subscription, half up, that MRR.md prescribes.

Choices this module makes where MRR.md is silent are written where they are made and
summarized here so they can be found:

- Rule 2 (paused collection) applies to every status rule 1 counts, ``past_due`` too:
  collection is what is paused, whatever the status.
- Rule 6: item discounts apply first, then the subscription's, then the customer's
  (Stripe documents the first two in that order). An ``amount_off`` comes off once per
  invoice that contains an eligible item, so it is divided by the *shortest* period among
  the items it is eligible for: that is how often such an invoice is issued (every item
  of a classic subscription shares one period, so this only matters for mixed intervals).
  A subscription-wide ``amount_off`` is shared among its eligible items in proportion to
  what is left of each, so the per-item explanation adds up exactly.
- Rule 6: the customer's discount applies to an item when the subscription has no current
  discount of its own and the item has none either. A discount given only as an id cannot
  be read: it is ignored (and listed as ignored), but it still counts as the subscription's
  or item's own discount, because Stripe would apply it instead of the customer's.
- Rule 7: inclusive tax rates (``inclusive: true``) are divided out of an item after its
  discounts, unless the price says ``tax_behavior = exclusive``; Stripe computes inclusive
  tax on the discounted amount. A tax-inclusive price with no known rate (Stripe Tax
  computes it per invoice) has nothing divided out.
- Rule 9: *paying* means the rounded MRR is above 0.
- Rule 10: a customer's ARR per currency is the sum of its subscriptions' ARRs, each
  ``round_half_up(12 × exact MRR)``, so figures are rounded once per subscription
  everywhere and the customer total always equals the sum of the rows shown beside it.
- Rule 13: see :func:`customer_revenue`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Literal

from stripesync.errors import InvalidInput
from stripesync.revenue.rules import RevenueRules
from stripesync.revenue.shapes import (
    Pricing,
    StripeObject,
    StripeShapeError,
    Tier,
    discount_coupon,
    exact,
    invoice_is_paid,
    invoice_lines,
    invoice_subscription_id,
    invoice_tax,
    item_discount_entries,
    item_pricing,
    line_is_proration,
    line_is_subscription_charge,
    line_pricing_ref,
    line_subscription_item_id,
    object_id,
    pricing_months,
    subscription_discount_entries,
    subscription_items,
)

#: Rule 1: the only statuses whose subscriptions count towards MRR.
COUNTING_STATUSES = frozenset({"active", "past_due"})
#: Rule 13: the invoices that bill a subscription's regular amount.
RECURRING_BILLING_REASONS = frozenset({"subscription_cycle", "subscription_create"})

DiscountLevel = Literal["item", "subscription", "customer"]
Movement = Literal["new", "reactivation", "expansion", "contraction", "churn"]
Timestamp = datetime | int | float


def round_half_up(value: Fraction | int) -> int:
    """Round to the nearest integer, halves away from zero (Decimal's ROUND_HALF_UP).

    Python's round() sends halves to the even neighbour, which would make 0.5 cent of MRR
    vanish on every other subscription.
    """
    value = Fraction(value)
    if value >= 0:
        return math.floor(value + Fraction(1, 2))
    return -math.floor(-value + Fraction(1, 2))


def arr_from_exact(exact_mrr: Fraction | int) -> int:
    """Rule 10: ARR is 12 × the exact MRR, rounded once, so a yearly plan keeps its price."""
    return round_half_up(12 * Fraction(exact_mrr))


# -- explanation records --------------------------------------------------------------


@dataclass(frozen=True)
class AppliedDiscount:
    """How much one discount took off one item's monthly amount."""

    discount_id: str | None
    coupon_id: str | None
    level: DiscountLevel
    percent_off: Fraction | None
    #: Per invoice, in the subscription's currency minor units.
    amount_off: int | None
    #: Taken off this item per month, exact.
    monthly_amount: Fraction


@dataclass(frozen=True)
class IgnoredDiscount:
    """A discount the subscription carries that did not reduce MRR, and why."""

    discount_id: str | None
    coupon_id: str | None
    level: DiscountLevel
    reason: str


@dataclass(frozen=True)
class ItemLine:
    """One subscription item's part of the MRR, step by step (rules 4 to 7).

    ``monthly`` is what the item adds: ``monthly_before_discounts`` minus the discounts'
    ``monthly_amount`` minus ``tax_divided_out``.
    """

    item_id: str | None
    price_id: str | None
    product_id: str | None
    quantity: int
    #: Quantity Stripe bills after ``transform_quantity`` (per-unit prices only).
    billed_quantity: int
    #: False for items rule 4 excludes (metered usage).
    counted: bool
    amount_per_period: Fraction
    months_per_period: Fraction
    monthly_before_discounts: Fraction
    discounts: tuple[AppliedDiscount, ...]
    #: Sum of the inclusive tax rates' percentages divided out (rule 7).
    inclusive_tax_percentage: Fraction
    tax_divided_out: Fraction
    monthly: Fraction
    note: str | None = None


@dataclass(frozen=True)
class MrrExplanation:
    """Why a subscription has the MRR it has: every item, discount and factor used."""

    subscription_id: str | None
    currency: str
    status: str
    #: Whether rules 1 to 3 let the subscription count at all.
    counts: bool
    lines: tuple[ItemLine, ...]
    ignored_discounts: tuple[IgnoredDiscount, ...]
    #: Exact MRR in minor units, before the single rounding.
    exact: Fraction
    #: ``round_half_up(exact)``: the subscription's MRR.
    mrr: int
    #: Set when ``mrr`` is 0, saying which rule made it so.
    reason: str | None

    @property
    def arr(self) -> int:
        return arr_from_exact(self.exact)

    @property
    def paying(self) -> bool:
        """Rule 9: counted by rule 1 and worth more than 0."""
        return self.counts and self.mrr > 0

    @property
    def trialing(self) -> bool:
        return self.status == "trialing"


# -- rules 1 to 3 ---------------------------------------------------------------------


def _timestamp(at: Timestamp | None) -> float:
    if at is None:
        return time.time()
    if isinstance(at, datetime):
        # Stripe timestamps are UTC; a naive datetime is read as UTC, not local time.
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return float(at)


def _status_reason(subscription: StripeObject, status: str, rules: RevenueRules) -> str | None:
    if status not in COUNTING_STATUSES:
        return f"status {status or 'unknown'} does not count (rule 1)"
    if subscription.get("pause_collection"):
        return "payment collection is paused (pause_collection is set, rule 2)"
    if rules.churn_at_cancellation_request and (
        subscription.get("cancel_at_period_end") or subscription.get("cancel_at") is not None
    ):
        return "a cancellation is scheduled and churn_at_cancellation_request is on (rule 3)"
    return None


def _subscription_currency(subscription: StripeObject, items: Sequence[StripeObject]) -> str:
    currency = subscription.get("currency")
    if isinstance(currency, str) and currency:
        return currency.lower()
    # Subscriptions fetched before Stripe added `currency` carry it on the price or plan.
    for item in items:
        found = item_pricing(item).currency
        if found:
            return found
    raise StripeShapeError(
        f"subscription {subscription.get('id')} names no currency and has no priced item"
    )


# -- rule 4: what one period of an item costs -----------------------------------------


def _tiered_amount(tiers: Sequence[Tier], mode: str | None, quantity: int, what: str) -> Fraction:
    if quantity == 0:
        return tiers[0].flat_amount
    if mode == "volume":
        for tier in tiers:
            if tier.up_to is None or quantity <= tier.up_to:
                return tier.unit_amount * quantity + tier.flat_amount
    else:
        total = Fraction(0)
        lower = 0
        for tier in tiers:
            upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
            if upper > lower:
                total += tier.unit_amount * (upper - lower) + tier.flat_amount
            if tier.up_to is None or tier.up_to >= quantity:
                return total
            lower = tier.up_to
    raise StripeShapeError(f"{what}: quantity {quantity} is beyond its last tier's up_to")


def _period_amount(pricing: Pricing, quantity: int) -> tuple[int, Fraction]:
    what = f"{pricing.source} {pricing.id}"
    if pricing.tiers is not None:
        return quantity, _tiered_amount(pricing.tiers, pricing.tiers_mode, quantity, what)
    billed = quantity
    if pricing.divide_by is not None:
        share = Fraction(quantity, pricing.divide_by)
        billed = math.ceil(share) if pricing.round == "up" else math.floor(share)
    unit_amount = pricing.unit_amount if pricing.unit_amount is not None else Fraction(0)
    return billed, unit_amount * billed


def _quantity(item: StripeObject) -> int:
    raw = item.get("quantity")
    if raw is None:
        return 1
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise StripeShapeError(
            f"subscription item {item.get('id')} has quantity {raw!r}, expected an integer >= 0"
        )
    return raw


def _inclusive_tax_percentage(
    item: StripeObject, subscription: StripeObject, pricing: Pricing
) -> Fraction:
    if pricing.tax_behavior == "exclusive":
        return Fraction(0)
    # An item's own tax rates replace the subscription's defaults, as on Stripe invoices.
    rates = item.get("tax_rates")
    if not rates:
        rates = subscription.get("default_tax_rates")
    if not isinstance(rates, Sequence) or isinstance(rates, str):
        return Fraction(0)
    total = Fraction(0)
    for rate in rates:
        if isinstance(rate, Mapping) and rate.get("inclusive") is True:
            percentage = rate.get("percentage")
            if percentage is not None:
                total += exact(percentage, what=f"tax rate {rate.get('id')}.percentage")
    return total


# -- rule 6: discounts ----------------------------------------------------------------


@dataclass(frozen=True)
class _Discount:
    discount_id: str | None
    coupon_id: str | None
    level: DiscountLevel
    percent_off: Fraction | None
    amount_off: int | None
    products: frozenset[str] | None


def _is_current(entry: StripeObject | str, now: float) -> bool:
    if isinstance(entry, str):
        return True
    end = entry.get("end")
    return end is None or end > now


def _read_discount(
    entry: StripeObject | str,
    level: DiscountLevel,
    currency: str,
    rules: RevenueRules,
    now: float,
) -> _Discount | IgnoredDiscount:
    if isinstance(entry, str):
        return IgnoredDiscount(
            entry, None, level, "given only as an id; expand discounts to read its coupon"
        )
    discount_id = object_id(entry.get("id"))
    coupon = discount_coupon(entry)
    coupon_id = object_id(coupon)
    if not _is_current(entry, now):
        return IgnoredDiscount(discount_id, coupon_id, level, "its end has passed (rule 6)")
    if not isinstance(coupon, Mapping):
        return IgnoredDiscount(
            discount_id,
            coupon_id,
            level,
            "its coupon is not expanded; expand discounts.source.coupon to read it",
        )
    duration = coupon.get("duration")
    if not rules.subtracts(duration):
        setting = f"subtract_{duration}_discounts" if duration in ("once", "repeating") else None
        why = f"{setting} is off" if setting else "its duration is unknown"
        return IgnoredDiscount(
            discount_id, coupon_id, level, f"a {duration} coupon and {why} (rule 6)"
        )
    products: frozenset[str] | None = None
    applies_to = coupon.get("applies_to")
    if isinstance(applies_to, Mapping) and isinstance(applies_to.get("products"), Sequence):
        products = frozenset(p for p in (object_id(x) for x in applies_to["products"]) if p)
    percent_off = coupon.get("percent_off")
    if percent_off is not None:
        percent = exact(percent_off, what=f"coupon {coupon_id}.percent_off")
        percent = min(max(percent, Fraction(0)), Fraction(100))
        return _Discount(discount_id, coupon_id, level, percent, None, products)
    amount_off = _amount_off_in(coupon, currency)
    if amount_off is None:
        return IgnoredDiscount(
            discount_id,
            coupon_id,
            level,
            f"its coupon has no percent_off and no amount_off in {currency.upper()}",
        )
    return _Discount(discount_id, coupon_id, level, None, amount_off, products)


def _amount_off_in(coupon: StripeObject, currency: str) -> int | None:
    amount_off = coupon.get("amount_off")
    coupon_currency = coupon.get("currency")
    if amount_off is not None and (
        not isinstance(coupon_currency, str) or coupon_currency.lower() == currency
    ):
        return int(amount_off)
    # Multi-currency coupons keep each currency's amount under currency_options.
    options = coupon.get("currency_options")
    if isinstance(options, Mapping):
        option = options.get(currency)
        if isinstance(option, Mapping) and option.get("amount_off") is not None:
            return int(option["amount_off"])
    return None


@dataclass
class _Work:
    """An item on its way through rules 4 to 7."""

    item: StripeObject
    pricing: Pricing
    quantity: int
    billed_quantity: int
    counted: bool
    amount_per_period: Fraction
    monthly_before_discounts: Fraction
    remaining: Fraction
    has_own_discount: bool
    discounts: list[AppliedDiscount] = field(default_factory=list)
    note: str | None = None

    def take(self, discount: _Discount, amount: Fraction) -> None:
        self.remaining -= amount
        self.discounts.append(
            AppliedDiscount(
                discount.discount_id,
                discount.coupon_id,
                discount.level,
                discount.percent_off,
                discount.amount_off,
                amount,
            )
        )


def _apply(discount: _Discount, targets: Sequence[_Work], ignored: list[IgnoredDiscount]) -> None:
    eligible = [
        work
        for work in targets
        if discount.products is None or work.pricing.product_id in discount.products
    ]
    if not eligible:
        ignored.append(
            IgnoredDiscount(
                discount.discount_id,
                discount.coupon_id,
                discount.level,
                "it applies to no counted item (coupon applies_to, rule 6)",
            )
        )
        return
    if discount.percent_off is not None:
        factor = discount.percent_off / 100
        for work in eligible:
            work.take(discount, work.remaining * factor)
        return
    # Once per invoice, and an eligible invoice comes every shortest eligible period.
    months = min(work.pricing.months for work in eligible)
    wanted = Fraction(discount.amount_off or 0) / months
    pool = sum((work.remaining for work in eligible), Fraction(0))
    taken = min(pool, max(wanted, Fraction(0)))
    for work in eligible:
        work.take(discount, taken * work.remaining / pool if pool else Fraction(0))


def _apply_discounts(
    works: Sequence[_Work],
    subscription: StripeObject,
    customer: StripeObject | None,
    currency: str,
    rules: RevenueRules,
    now: float,
) -> list[IgnoredDiscount]:
    ignored: list[IgnoredDiscount] = []
    counted = [work for work in works if work.counted]

    def run(
        entries: Iterable[StripeObject | str], level: DiscountLevel, targets: list[_Work]
    ) -> None:
        for entry in entries:
            read = _read_discount(entry, level, currency, rules, now)
            if isinstance(read, IgnoredDiscount):
                ignored.append(read)
            else:
                _apply(read, targets, ignored)

    for work in counted:
        run(item_discount_entries(work.item), "item", [work])
    sub_entries = subscription_discount_entries(subscription)
    run(sub_entries, "subscription", counted)

    customer_discount = customer.get("discount") if customer is not None else None
    if isinstance(customer_discount, Mapping):
        read = _read_discount(customer_discount, "customer", currency, rules, now)
        if isinstance(read, IgnoredDiscount):
            ignored.append(read)
        elif any(_is_current(entry, now) for entry in sub_entries):
            ignored.append(
                IgnoredDiscount(
                    read.discount_id,
                    read.coupon_id,
                    "customer",
                    "the subscription has a discount of its own (rule 6)",
                )
            )
        else:
            targets = [work for work in counted if not work.has_own_discount]
            if targets:
                _apply(read, targets, ignored)
            else:
                ignored.append(
                    IgnoredDiscount(
                        read.discount_id,
                        read.coupon_id,
                        "customer",
                        "every counted item has a discount of its own (rule 6)",
                    )
                )
    return ignored


# -- the explanation ------------------------------------------------------------------


def _work_for(item: StripeObject, now: float) -> _Work:
    pricing = item_pricing(item)
    quantity = _quantity(item)
    own = any(_is_current(entry, now) for entry in item_discount_entries(item))
    if pricing.metered:
        nothing = Fraction(0)
        return _Work(
            item=item,
            pricing=pricing,
            quantity=quantity,
            billed_quantity=0,
            counted=False,
            amount_per_period=nothing,
            monthly_before_discounts=nothing,
            remaining=nothing,
            has_own_discount=own,
            note="metered usage is excluded (rule 4)",
        )
    billed, amount = _period_amount(pricing, quantity)
    monthly = amount / pricing.months
    return _Work(item, pricing, quantity, billed, True, amount, monthly, monthly, own)


def _line(work: _Work, subscription: StripeObject) -> ItemLine:
    percentage = Fraction(0)
    note = work.note
    net = work.remaining
    if work.counted:
        percentage = _inclusive_tax_percentage(work.item, subscription, work.pricing)
        if percentage:
            net = work.remaining / (1 + percentage / 100)
        elif work.pricing.tax_behavior == "inclusive":
            note = "tax-inclusive price without a known inclusive tax rate: nothing divided out"
    return ItemLine(
        item_id=object_id(work.item.get("id")),
        price_id=work.pricing.id,
        product_id=work.pricing.product_id,
        quantity=work.quantity,
        billed_quantity=work.billed_quantity,
        counted=work.counted,
        amount_per_period=work.amount_per_period,
        months_per_period=work.pricing.months,
        monthly_before_discounts=work.monthly_before_discounts,
        discounts=tuple(work.discounts),
        inclusive_tax_percentage=percentage,
        tax_divided_out=work.remaining - net,
        monthly=net,
        note=note,
    )


def _zero_reason(works: Sequence[_Work], exact_mrr: Fraction) -> str:
    if not works:
        return "the subscription has no items"
    counted = [work for work in works if work.counted]
    if not counted:
        return "every item is metered, and metered usage is excluded (rule 4)"
    if sum(work.monthly_before_discounts for work in counted) == 0:
        return "its licensed items cost 0"
    if exact_mrr == 0:
        return "discounts bring it to 0 (rule 6)"
    return f"the exact MRR {exact_mrr} rounds half up to 0"


def explain_subscription_mrr(
    subscription: StripeObject,
    *,
    customer: StripeObject | None = None,
    at: Timestamp | None = None,
    rules: RevenueRules | None = None,
) -> MrrExplanation:
    """Compute a subscription's MRR with every step kept, so any figure can be shown.

    ``subscription`` is a Stripe subscription of any API version, with its items' prices
    expanded as Stripe sends them (plus ``price.tiers`` for tiered prices and, to count
    them, ``discounts`` and ``coupon.applies_to``). ``customer`` supplies the customer's
    own discount. ``at`` (datetime or unix time, default now) decides which discounts have
    ended. The result's ``mrr`` is in the subscription currency's minor units.
    """
    rules = rules or RevenueRules()
    now = _timestamp(at)
    subscription_id = object_id(subscription.get("id"))
    status = str(subscription.get("status") or "")
    items = subscription_items(subscription)
    currency = _subscription_currency(subscription, items)
    reason = _status_reason(subscription, status, rules)
    if reason is not None:
        return MrrExplanation(
            subscription_id, currency, status, False, (), (), Fraction(0), 0, reason
        )
    works = [_work_for(item, now) for item in items]
    ignored = _apply_discounts(works, subscription, customer, currency, rules, now)
    lines = tuple(_line(work, subscription) for work in works)
    exact_mrr = sum((line.monthly for line in lines), Fraction(0))
    mrr = round_half_up(exact_mrr)
    return MrrExplanation(
        subscription_id=subscription_id,
        currency=currency,
        status=status,
        counts=True,
        lines=lines,
        ignored_discounts=tuple(ignored),
        exact=exact_mrr,
        mrr=mrr,
        reason=None if mrr > 0 else _zero_reason(works, exact_mrr),
    )


def subscription_mrr(
    subscription: StripeObject,
    *,
    customer: StripeObject | None = None,
    at: Timestamp | None = None,
    rules: RevenueRules | None = None,
) -> int:
    """The subscription's MRR in its currency's minor units (rules 1 to 7).

    A shortcut for ``explain_subscription_mrr(...).mrr``, so the figure and its
    explanation can never disagree.
    """
    return explain_subscription_mrr(subscription, customer=customer, at=at, rules=rules).mrr


def subscription_arr(
    subscription: StripeObject,
    *,
    customer: StripeObject | None = None,
    at: Timestamp | None = None,
    rules: RevenueRules | None = None,
) -> int:
    """The subscription's ARR: 12 × its exact MRR, rounded half up (rule 10)."""
    return explain_subscription_mrr(subscription, customer=customer, at=at, rules=rules).arr


# -- customer totals (rules 8 to 10, 13) ----------------------------------------------


@dataclass(frozen=True)
class SubscriptionRevenue:
    """One subscription's figures inside a :class:`CustomerRevenue`."""

    id: str | None
    currency: str
    status: str
    created: int | None
    mrr: int
    arr: int
    exact_mrr: Fraction
    paying: bool
    trialing: bool
    explanation: MrrExplanation


@dataclass(frozen=True)
class CustomerRevenue:
    """A customer's revenue traits, each traceable to the subscriptions listed with it.

    ``all_mrr`` and ``arr`` hold one entry per currency in which some subscription has
    an exact MRR above 0 (so an entry can be 0 when that MRR rounds down to 0).
    ``mrr`` is the single-subscription trait of rule 13, in ``mrr_currency``; its parts
    are ``primary_subscription_mrr`` (S) and ``last_invoice_mrr`` (L, from
    ``last_invoice_id``). ``reporting_mrr`` and ``reporting_arr`` are set when the rules
    name a reporting currency.
    """

    customer_id: str | None
    all_mrr: dict[str, int]
    arr: dict[str, int]
    subscription_paying_count: int
    subscription_trialing_count: int
    mrr: int
    mrr_currency: str | None
    primary_subscription_id: str | None
    primary_subscription_mrr: int
    last_invoice_mrr: int | None
    last_invoice_id: str | None
    subscriptions: list[SubscriptionRevenue]
    reporting_currency: str | None = None
    reporting_mrr: int | None = None
    reporting_arr: int | None = None


def to_reporting_currency(amounts: Mapping[str, int], rules: RevenueRules) -> int:
    """Rule 8: convert each currency's total with the rate table, half up, then add.

    Raises :class:`~stripesync.revenue.rules.MissingExchangeRate` naming the first
    currency (alphabetically) without a rate.
    """
    return sum(
        round_half_up(amounts[currency] * rules.conversion_factor(currency))
        for currency in sorted(amounts)
    )


def _invoice_months(
    invoice: StripeObject, priced: Sequence[tuple[str | None, Pricing]]
) -> Fraction | None:
    by_price = {pricing.id: pricing.months for _, pricing in priced if pricing.id}
    by_item = {item_id: pricing.months for item_id, pricing in priced if item_id}
    months: list[Fraction] = []
    for line in invoice_lines(invoice):
        if not line_is_subscription_charge(line) or line_is_proration(line):
            continue
        ref = line_pricing_ref(line)
        found = pricing_months(ref) if isinstance(ref, Mapping) else None
        if found is None:
            found = by_price.get(object_id(ref) or "")
        if found is None:
            found = by_item.get(line_subscription_item_id(line) or "")
        if found is not None:
            months.append(found)
    if months:
        # Mixed intervals: the longest period is the one this invoice closes; dividing by
        # a shorter one would count the long item's whole price as monthly.
        return max(months)
    # Lines not embedded (or none matched): the subscription's own longest period.
    fallback = [pricing.months for _, pricing in priced if not pricing.metered]
    return max(fallback) if fallback else None


def _prorations_only(invoice: StripeObject) -> bool:
    lines = invoice_lines(invoice)
    return bool(lines) and all(line_is_proration(line) for line in lines)


def _invoice_amount(invoice: StripeObject) -> int | None:
    excluding = invoice.get("total_excluding_tax")
    if isinstance(excluding, int) and not isinstance(excluding, bool):
        return excluding
    total = invoice.get("total")
    if isinstance(total, int) and not isinstance(total, bool):
        return total - invoice_tax(invoice)
    return None


def _last_invoice_mrr(
    subscription: StripeObject,
    currency: str,
    invoices: Iterable[StripeObject],
) -> tuple[int, str | None] | None:
    subscription_id = object_id(subscription.get("id"))
    candidates = [
        invoice
        for invoice in invoices
        if subscription_id is not None
        and invoice_subscription_id(invoice) == subscription_id
        and invoice_is_paid(invoice)
        and invoice.get("billing_reason") in RECURRING_BILLING_REASONS
        and str(invoice.get("currency") or currency).lower() == currency
        and not _prorations_only(invoice)
        and _invoice_amount(invoice) is not None
    ]
    if not candidates:
        return None
    latest = max(candidates, key=lambda inv: (inv.get("created") or 0, inv.get("id") or ""))
    priced: list[tuple[str | None, Pricing]] = []
    for item in subscription_items(subscription):
        try:
            priced.append((object_id(item.get("id")), item_pricing(item)))
        except StripeShapeError:
            continue
    months = _invoice_months(latest, priced)
    amount = _invoice_amount(latest)
    if months is None or amount is None:
        return None
    return max(round_half_up(Fraction(amount) / months), 0), object_id(latest.get("id"))


def customer_revenue(
    customer: StripeObject,
    subscriptions: Iterable[StripeObject],
    invoices: Iterable[StripeObject],
    *,
    at: Timestamp | None = None,
    rules: RevenueRules | None = None,
) -> CustomerRevenue:
    """A customer's revenue traits from its subscriptions and invoices.

    ``all_mrr`` sums the rounded subscription MRRs per currency (rule 10) and ``arr`` the
    per-subscription ARRs (see the module docstring). Paying and trialing counts follow
    rule 9.

    ``mrr`` is rule 13's single-subscription trait, max(L, S) for the *primary*
    subscription: the most recently created one that rules 1 to 3 let count, else the most
    recently created one. S is its MRR; L is its latest paid ``subscription_cycle`` or
    ``subscription_create`` invoice (proration-only invoices skipped) — total excluding
    tax, after discounts — divided by the invoice period in months, rounded half up. When
    the primary subscription does not count, ``mrr`` is 0 and L is not used: a canceled
    customer's last invoice is not revenue.

    ``reporting_mrr`` / ``reporting_arr`` convert the per-currency totals (rule 8) and
    raise :class:`~stripesync.revenue.rules.MissingExchangeRate` when a rate is missing.
    """
    rules = rules or RevenueRules()
    now = _timestamp(at)
    invoice_list = list(invoices)
    rows: list[SubscriptionRevenue] = []
    sources: list[tuple[SubscriptionRevenue, StripeObject]] = []
    for subscription in subscriptions:
        explanation = explain_subscription_mrr(subscription, customer=customer, at=now, rules=rules)
        created = subscription.get("created")
        row = SubscriptionRevenue(
            id=explanation.subscription_id,
            currency=explanation.currency,
            status=explanation.status,
            created=created if isinstance(created, int) else None,
            mrr=explanation.mrr,
            arr=explanation.arr,
            exact_mrr=explanation.exact,
            paying=explanation.paying,
            trialing=explanation.trialing,
            explanation=explanation,
        )
        sources.append((row, subscription))
        rows.append(row)

    all_mrr: dict[str, int] = {}
    arr: dict[str, int] = {}
    for row in rows:
        # Exact, not rounded, MRR decides: 1/3 cent a month rounds to an MRR of 0 but to
        # an ARR of 4, and the customer's ARR must still be the sum of its rows.
        if row.exact_mrr > 0:
            all_mrr[row.currency] = all_mrr.get(row.currency, 0) + row.mrr
            arr[row.currency] = arr.get(row.currency, 0) + row.arr

    primary: SubscriptionRevenue | None = None
    trait_mrr = 0
    last: tuple[int, str | None] | None = None
    if sources:
        pool = [pair for pair in sources if pair[0].explanation.counts] or sources
        primary, primary_source = max(
            pool, key=lambda pair: (pair[0].created or 0, pair[0].id or "")
        )
        if primary.explanation.counts:
            last = _last_invoice_mrr(primary_source, primary.currency, invoice_list)
            trait_mrr = max(primary.mrr, last[0] if last else 0)

    reporting_mrr: int | None = None
    reporting_arr: int | None = None
    if rules.reporting_currency is not None:
        reporting_mrr = to_reporting_currency(all_mrr, rules)
        reporting_arr = to_reporting_currency(arr, rules)

    return CustomerRevenue(
        customer_id=object_id(customer.get("id")),
        all_mrr=all_mrr,
        arr=arr,
        subscription_paying_count=sum(1 for row in rows if row.paying),
        subscription_trialing_count=sum(1 for row in rows if row.trialing),
        mrr=trait_mrr,
        mrr_currency=primary.currency if primary is not None else None,
        primary_subscription_id=primary.id if primary is not None else None,
        primary_subscription_mrr=primary.mrr if primary is not None else 0,
        last_invoice_mrr=last[0] if last else None,
        last_invoice_id=last[1] if last else None,
        subscriptions=rows,
        reporting_currency=rules.reporting_currency,
        reporting_mrr=reporting_mrr,
        reporting_arr=reporting_arr,
    )


# -- rule 11: movements ---------------------------------------------------------------


def _non_negative(name: str, value: int | Fraction) -> None:
    if value < 0:
        raise InvalidInput(f"{name} is {value}; MRR amounts are never below 0")


def classify_movement(before: int, after: int, *, paid_before: bool) -> Movement | None:
    """Rule 11: name one change of a customer's MRR (in one currency, or in the reporting
    currency at constant rates), or None when nothing moved.

    ``paid_before`` says whether the customer ever had MRR above 0 before ``before``; it
    turns a 0 → x change into a reactivation instead of a new customer.
    """
    _non_negative("before", before)
    _non_negative("after", after)
    if after == before:
        return None
    if before == 0:
        return "reactivation" if paid_before else "new"
    if after == 0:
        return "churn"
    return "expansion" if after > before else "contraction"


def fx_movement(
    mrr_before: Mapping[str, int],
    *,
    rules_before: RevenueRules,
    rules_after: RevenueRules,
) -> int:
    """Rule 8: the reporting-currency change that comes from exchange rates alone.

    A reporting change from ``mrr_before`` (at ``rules_before``'s rates) to ``mrr_after``
    (at ``rules_after``'s) splits into this fx movement plus a business change,
    ``to_reporting_currency(mrr_after, rules_after) - to_reporting_currency(mrr_before,
    rules_after)``, which is what :func:`classify_movement` sees; so a rate change is never
    mistaken for expansion or contraction.
    """
    if rules_before.reporting_currency != rules_after.reporting_currency:
        raise InvalidInput(
            f"the reporting currency changed from {rules_before.reporting_currency} to "
            f"{rules_after.reporting_currency}; an fx movement compares the same currency"
        )
    return to_reporting_currency(mrr_before, rules_after) - to_reporting_currency(
        mrr_before, rules_before
    )


# -- rule 12: rates -------------------------------------------------------------------
# Rates are exact Fractions (0.05 is Fraction(1, 20), not 5 %), and None where the base
# is 0: "no churn out of nothing" and "100 % churn" would both be inventions.


def subscriber_churn_rate(
    churned: int, active_at_start: int, new_in_window: int
) -> Fraction | None:
    """Churned subscribers ÷ (active subscribers at the window's start + new ones in it)."""
    for name, value in (
        ("churned", churned),
        ("active_at_start", active_at_start),
        ("new_in_window", new_in_window),
    ):
        if value < 0:
            raise InvalidInput(f"{name} is {value}; subscriber counts are never below 0")
    base = active_at_start + new_in_window
    return Fraction(churned, base) if base else None


def gross_mrr_churn_rate(churn: int, contraction: int, mrr_at_start: int) -> Fraction | None:
    """(Churned + contracted MRR) ÷ MRR at the start; movements given as amounts ≥ 0."""
    for name, value in (("churn", churn), ("contraction", contraction)):
        _non_negative(name, value)
    _non_negative("mrr_at_start", mrr_at_start)
    return Fraction(churn + contraction, mrr_at_start) if mrr_at_start else None


def net_mrr_churn_rate(
    churn: int, contraction: int, expansion: int, reactivation: int, mrr_at_start: int
) -> Fraction | None:
    """Gross MRR churn minus expansion and reactivation; below 0 when expansion wins."""
    for name, value in (
        ("churn", churn),
        ("contraction", contraction),
        ("expansion", expansion),
        ("reactivation", reactivation),
    ):
        _non_negative(name, value)
    _non_negative("mrr_at_start", mrr_at_start)
    if not mrr_at_start:
        return None
    return Fraction(churn + contraction - expansion - reactivation, mrr_at_start)


def arpu(mrr: int, paying_customers: int) -> Fraction | None:
    """Average revenue per paying customer, in the MRR's minor units."""
    _non_negative("mrr", mrr)
    if paying_customers < 0:
        raise InvalidInput(f"paying_customers is {paying_customers}; a count is never below 0")
    return Fraction(mrr, paying_customers) if paying_customers else None
