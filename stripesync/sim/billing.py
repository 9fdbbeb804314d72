"""Invoice arithmetic, as Stripe does it: price amounts, prorations, discounts, totals.

Everything here is pure: Stripe-shaped dicts in, plain values or new dicts out, no
database and no clock. The request handlers (``resources/subscriptions.py`` and
``resources/invoices.py``) and the fast data generator share it, so an invoice written
straight into the store adds up exactly like one made through the API.

Builders for the generator
--------------------------
``line_amount(price, quantity) -> int``
    What ``quantity`` units of a price cost for one period, in the minor unit: per-unit
    prices (``unit_amount_decimal`` honoured, ``transform_quantity`` applied), tiered
    prices in ``graduated`` or ``volume`` mode with flat amounts and an ``inf`` last tier
    (tiers are read from the price's private ``_tiers`` or a public ``tiers``).
``prorate(amount, period_start, period_end, at) -> int``
    The part of ``amount`` for the time left in the period after ``at``, by seconds,
    rounded half up to the minor unit (Stripe's proration).
``invoice_totals(lines, discounts, coupons) -> dict``
    ``subtotal``, ``subtotal_excluding_tax``, ``total``, ``total_excluding_tax``,
    ``total_discount_amounts`` and, per line, its ``discount_amounts``
    (``line_discount_amounts``, in the order of ``lines``).
``apply_balance(total, starting_balance) -> (amount_due, ending_balance)``
    A customer's credit (negative balance) or debt applied at finalization.
``describe_price(...)``, ``format_amount(...)``, ``proration_description(...)``
    The line descriptions Stripe writes (``1 × Gold (at $10.00 / month)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

#: Currencies without a minor unit (amounts are whole units).
ZERO_DECIMAL = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$", "inr": "₹"}


def round_half_up(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def _decimal(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    return Decimal(str(value))


def price_tiers(price: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tiers = price.get("_tiers")
    if tiers is None:
        tiers = price.get("tiers")
    return list(tiers or [])


def transformed_quantity(price: Mapping[str, Any], quantity: int) -> int:
    """``transform_quantity``: units divided (e.g. per 1000 API calls) and rounded."""
    transform = price.get("transform_quantity")
    if not transform:
        return quantity
    divided = Decimal(quantity) / Decimal(int(transform["divide_by"]))
    rounding = ROUND_CEILING if transform.get("round", "up") == "up" else ROUND_FLOOR
    return int(divided.to_integral_value(rounding=rounding))


def _tier_unit(tier: Mapping[str, Any]) -> Decimal:
    return _decimal(
        tier.get("unit_amount_decimal")
        if tier.get("unit_amount_decimal") is not None
        else tier.get("unit_amount")
    )


def _tier_flat(tier: Mapping[str, Any]) -> Decimal:
    return _decimal(
        tier.get("flat_amount_decimal")
        if tier.get("flat_amount_decimal") is not None
        else tier.get("flat_amount")
    )


def line_amount_decimal(price: Mapping[str, Any], quantity: int) -> Decimal:
    """The exact (unrounded) amount of ``quantity`` units of ``price``."""
    if quantity <= 0:
        return Decimal(0)
    if price.get("billing_scheme") == "tiered":
        tiers = price_tiers(price)
        if price.get("tiers_mode") == "volume":
            for tier in tiers:
                if tier.get("up_to") is None or quantity <= int(tier["up_to"]):
                    return _tier_unit(tier) * quantity + _tier_flat(tier)
            return Decimal(0)
        total = Decimal(0)
        remaining, floor = quantity, 0
        for tier in tiers:
            upper = tier.get("up_to")
            size = remaining if upper is None else int(upper) - floor
            used = min(remaining, size)
            if used <= 0:
                continue
            total += _tier_unit(tier) * used + _tier_flat(tier)
            remaining -= used
            floor = int(upper) if upper is not None else floor
            if remaining == 0:
                break
        return total
    unit = price.get("unit_amount_decimal")
    if unit is None:
        unit = price.get("unit_amount")
    return _decimal(unit) * transformed_quantity(price, quantity)


def line_amount(price: Mapping[str, Any], quantity: int) -> int:
    """What ``quantity`` of ``price`` costs for one period, in the minor unit."""
    return round_half_up(line_amount_decimal(price, quantity))


def prorate(amount: int, period_start: int, period_end: int, at: int) -> int:
    """The share of ``amount`` for the rest of the period after ``at`` (by seconds)."""
    length = period_end - period_start
    if length <= 0:
        return 0
    left = min(max(period_end - at, 0), length)
    return round_half_up(Decimal(amount) * left / length)


# -- discounts and totals -------------------------------------------------------------


def _line_product(line: Mapping[str, Any]) -> str | None:
    pricing = line.get("pricing") or {}
    details = pricing.get("price_details") if isinstance(pricing, Mapping) else None
    if isinstance(details, Mapping):
        product = details.get("product")
        return product if isinstance(product, str) else None
    return None


def _coupon_of(discount: Mapping[str, Any], coupons: Mapping[str, Mapping[str, Any]]) -> Any:
    source = discount.get("source") or {}
    coupon_id = source.get("coupon") if isinstance(source, Mapping) else None
    if coupon_id is None and isinstance(discount.get("coupon"), Mapping):
        return discount["coupon"]
    return coupons.get(str(coupon_id))


def _allocate(
    remaining: list[int],
    eligible: list[int],
    coupon: Mapping[str, Any],
    currency: str | None,
) -> dict[int, int]:
    """Amounts one coupon takes off each eligible line (percent per line, or an amount
    spread over the lines in proportion, largest remainders first)."""
    taken: dict[int, int] = {}
    if coupon.get("percent_off") is not None:
        percent = Decimal(str(coupon["percent_off"]))
        for i in eligible:
            taken[i] = min(remaining[i], round_half_up(Decimal(remaining[i]) * percent / 100))
        return taken
    amount_off = coupon.get("amount_off")
    if amount_off is None:
        return taken
    if currency is not None and coupon.get("currency") not in (None, currency):
        return taken
    base = sum(remaining[i] for i in eligible)
    if base <= 0:
        return taken
    total = min(int(amount_off), base)
    shares = [(i, Decimal(total) * remaining[i] / base) for i in eligible]
    for i, share in shares:
        taken[i] = int(share)
    leftover = total - sum(taken.values())
    by_fraction = sorted(shares, key=lambda s: (-(s[1] - int(s[1])), s[0]))
    for i, _ in by_fraction[:leftover]:
        taken[i] += 1
    return taken


def invoice_totals(
    lines: Sequence[Mapping[str, Any]],
    discounts: Sequence[Mapping[str, Any]],
    coupons: Mapping[str, Mapping[str, Any]],
    *,
    currency: str | None = None,
) -> dict[str, Any]:
    """Totals of an invoice without taxes.

    ``discounts`` are discount objects, applied in order; one marked ``_line_only``
    applies only to the lines that list its id in their own ``discounts`` (a discount on a
    subscription item), and those go first. ``coupons`` maps coupon id to coupon (its
    private ``_applies_to`` restricts it to some products). Lines with ``discountable``
    false (prorations) and credits (negative lines) take no discount; an ``amount_off``
    in another currency takes nothing.
    """
    remaining = [
        max(int(line.get("amount") or 0), 0) if line.get("discountable", True) else 0
        for line in lines
    ]
    per_line: list[list[dict[str, Any]]] = [[] for _ in lines]
    totals: list[dict[str, Any]] = []
    ordered = sorted(discounts, key=lambda d: 0 if d.get("_line_only") else 1)
    for discount in ordered:
        coupon = _coupon_of(discount, coupons)
        if coupon is None:
            continue
        products = (coupon.get("_applies_to") or coupon.get("applies_to") or {}).get("products")
        eligible = [
            i
            for i, line in enumerate(lines)
            if remaining[i] > 0
            and (not products or _line_product(line) in products)
            and (not discount.get("_line_only") or discount["id"] in (line.get("discounts") or []))
        ]
        taken = _allocate(remaining, eligible, coupon, currency)
        for i, amount in taken.items():
            remaining[i] -= amount
            per_line[i].append({"amount": amount, "discount": discount["id"]})
        totals.append({"amount": sum(taken.values()), "discount": discount["id"]})
    subtotal = sum(int(line.get("amount") or 0) for line in lines)
    discount_total = sum(t["amount"] for t in totals)
    total = subtotal - discount_total
    return {
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "total": total,
        "total_excluding_tax": total,
        "total_discount_amounts": totals,
        "line_discount_amounts": per_line,
    }


def apply_balance(total: int, starting_balance: int) -> tuple[int, int]:
    """(amount_due, ending_balance) once the customer's balance is applied.

    A negative balance is credit: it reduces what is due; a negative total adds to it.
    A positive balance is money owed and is added to the invoice.
    """
    applied = total + starting_balance
    return max(applied, 0), min(applied, 0)


# -- descriptions ---------------------------------------------------------------------


def format_amount(amount: Decimal | int, currency: str) -> str:
    """``$10.00``, ``¥1,000``, ``12.50 CHF``: how Stripe writes amounts in descriptions."""
    value = Decimal(amount)
    if currency not in ZERO_DECIMAL:
        value = value / 100
        text = f"{value:,.2f}"
    else:
        text = f"{value:,.0f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def interval_text(recurring: Mapping[str, Any] | None) -> str:
    if not recurring:
        return ""
    count = int(recurring.get("interval_count") or 1)
    interval = str(recurring.get("interval"))
    return interval if count == 1 else f"every {count} {interval}s"


def describe_price(price: Mapping[str, Any], quantity: int, product_name: str) -> str:
    """``1 × Gold (at $10.00 / month)``, as on a subscription invoice line."""
    if price.get("billing_scheme") == "tiered":
        return f"{quantity} × {product_name}"
    unit = price.get("unit_amount_decimal")
    if unit is None:
        unit = price.get("unit_amount") or 0
    at = format_amount(_decimal(unit), str(price.get("currency")))
    transform = price.get("transform_quantity")
    if transform:
        at = f"{at} per {transform['divide_by']}"
    recurring = price.get("recurring")
    suffix = f" / {interval_text(recurring)}" if recurring else ""
    return f"{quantity} × {product_name} (at {at}{suffix})"


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y")


def proration_description(kind: str, product_name: str, quantity: int, at: int) -> str:
    """``Unused time on Gold after 15 Jan 2026`` / ``Remaining time on 2 × Gold after ...``."""
    label = product_name if quantity == 1 else f"{quantity} × {product_name}"
    verb = "Unused time on" if kind == "credit" else "Remaining time on"
    return f"{verb} {label} after {_day(at)}"
