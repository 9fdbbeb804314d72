"""Properties of MRR that hold for every subscription Stripe could send."""

from __future__ import annotations

import copy
from collections import defaultdict
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stripesync.revenue import (
    RevenueRules,
    arr_from_exact,
    customer_revenue,
    explain_subscription_mrr,
    round_half_up,
    subscription_arr,
    subscription_mrr,
)
from tests.revenue.factories import (
    CREATED,
    Obj,
    make_coupon,
    make_customer,
    make_discount,
    make_item,
    make_price,
    make_subscription,
    make_tax_rate,
    tier,
)

NOW = CREATED + 100 * 86400
PRODUCTS = ["prod_PropA0000001", "prod_PropB0000001", "prod_PropC0000001"]
CURRENCIES = ["usd", "eur", "jpy"]

fast = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strategies are built once here: hypothesis spends more time constructing a strategy
# than drawing from it, and the composites below draw thousands of times per test.
amounts = st.integers(min_value=0, max_value=200_000)
percentages = st.integers(min_value=0, max_value=400).map(lambda quarter: quarter / 4)
small_amounts = st.integers(0, 5000)
optional_small_amounts = st.none() | small_amounts
tier_bounds = st.sets(st.integers(1, 40), max_size=3)
price_kinds = st.sampled_from(["per_unit", "decimal", "transform", "graduated", "volume"])
intervals = st.sampled_from(["day", "week", "month", "year"])
interval_counts = st.integers(1, 3)
usage_types = st.sampled_from(["licensed"] * 5 + ["metered"])
products = st.sampled_from(PRODUCTS)
tax_behaviors = st.sampled_from(["unspecified", "inclusive", "exclusive"])
decimal_cents = st.integers(0, 2_000_000)
divisors = st.integers(1, 12)
roundings = st.sampled_from(["up", "down"])
one_in_ten = st.integers(0, 9).map(lambda n: n == 0)
durations = st.sampled_from(["forever", "once", "repeating"])
applies_tos = st.none() | st.lists(products, max_size=2)
amounts_off = st.integers(0, 50_000)
ends = st.sampled_from([None, NOW - 1, NOW + 1])
quantities = st.integers(0, 30)
statuses = st.sampled_from(["active"] * 4 + ["past_due", "trialing", "canceled"])
creation_offsets = st.integers(0, 1000)
tax_rates = st.lists(
    st.builds(make_tax_rate, percentages.map(lambda p: p / 4), inclusive=st.booleans()),
    max_size=2,
)


@st.composite
def tiers(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [
        tier(up_to, unit_amount=draw(small_amounts), flat_amount=draw(optional_small_amounts))
        for up_to in [*sorted(draw(tier_bounds)), None]
    ]


@st.composite
def prices(draw: st.DrawFn, currency: str) -> dict[str, Any]:
    kind = draw(price_kinds)
    common: dict[str, Any] = {
        "currency": currency,
        "interval": draw(intervals),
        "interval_count": draw(interval_counts),
        "usage_type": draw(usage_types),
        "product": draw(products),
        "tax_behavior": draw(tax_behaviors),
    }
    if kind in ("graduated", "volume"):
        return make_price(tiers=draw(tiers()), tiers_mode=kind, **common)
    if kind == "decimal":
        cents = draw(decimal_cents)
        return make_price(
            cents // 100, unit_amount_decimal=f"{cents // 100}.{cents % 100:02d}", **common
        )
    if kind == "transform":
        transform = {"divide_by": draw(divisors), "round": draw(roundings)}
        return make_price(draw(amounts), transform_quantity=transform, **common)
    return make_price(draw(amounts), **common)


@st.composite
def discounts(draw: st.DrawFn, currency: str) -> dict[str, Any] | str:
    if draw(one_in_ten):
        return "di_OnlyAnId000001"
    duration = draw(durations)
    applies_to = draw(applies_tos)
    if draw(st.booleans()):
        coupon = make_coupon(
            percent_off=draw(percentages), duration=duration, applies_to=applies_to
        )
    else:
        coupon = make_coupon(
            amount_off=draw(amounts_off),
            currency=currency if draw(st.booleans()) else "gbp",
            duration=duration,
            duration_in_months=3,
            applies_to=applies_to,
        )
    return make_discount(coupon, end=draw(ends), legacy=draw(st.booleans()))


PRICES = {currency: prices(currency) for currency in CURRENCIES}
DISCOUNTS = {currency: discounts(currency) for currency in CURRENCIES}
ITEM_DISCOUNTS = {currency: st.lists(DISCOUNTS[currency], max_size=2) for currency in CURRENCIES}
SUBSCRIPTION_DISCOUNTS = {
    currency: st.lists(DISCOUNTS[currency], max_size=3) for currency in CURRENCIES
}


@st.composite
def items(draw: st.DrawFn, currency: str) -> dict[str, Any]:
    return make_item(
        draw(PRICES[currency]),
        quantity=draw(quantities),
        discounts=draw(ITEM_DISCOUNTS[currency]),
        tax_rates=draw(tax_rates),
        plan_only=draw(one_in_ten),
    )


ITEM_LISTS = {
    currency: st.lists(items(currency), min_size=1, max_size=4) for currency in CURRENCIES
}
currencies = st.sampled_from(CURRENCIES)


@st.composite
def subscriptions(draw: st.DrawFn) -> dict[str, Any]:
    currency = draw(currencies)
    return make_subscription(
        draw(ITEM_LISTS[currency]),
        status=draw(statuses),
        currency=currency,
        discounts=draw(SUBSCRIPTION_DISCOUNTS[currency]),
        default_tax_rates=draw(tax_rates),
        cancel_at_period_end=draw(st.booleans()),
        created=CREATED + draw(creation_offsets),
    )


revenue_rules = st.builds(
    RevenueRules,
    churn_at_cancellation_request=st.booleans(),
    subtract_repeating_discounts=st.booleans(),
    subtract_once_discounts=st.booleans(),
)


@st.composite
def customers(draw: st.DrawFn) -> dict[str, Any]:
    discount = draw(DISCOUNTS["usd"])
    if draw(st.booleans()) or isinstance(discount, str):
        return make_customer()
    return make_customer(discount=discount)


@fast
@given(subscriptions(), customers(), revenue_rules)
def test_mrr_is_never_negative(sub: Obj, customer: Obj, rules: RevenueRules) -> None:
    explanation = explain_subscription_mrr(sub, customer=customer, at=NOW, rules=rules)
    assert explanation.exact >= 0 and explanation.mrr >= 0 and explanation.arr >= 0
    for line in explanation.lines:
        assert line.monthly >= 0
        assert line.monthly == (
            line.monthly_before_discounts
            - sum((d.monthly_amount for d in line.discounts), Fraction(0))
            - line.tax_divided_out
        )
    assert explanation.exact == sum((line.monthly for line in explanation.lines), Fraction(0))
    assert (explanation.mrr == 0) == (explanation.reason is not None)


@fast
@given(subscriptions(), customers(), revenue_rules, st.data())
def test_mrr_does_not_depend_on_item_order(
    sub: Obj, customer: Obj, rules: RevenueRules, data: st.DataObject
) -> None:
    shuffled = copy.deepcopy(sub)
    shuffled["items"]["data"] = data.draw(st.permutations(sub["items"]["data"]))
    first = explain_subscription_mrr(sub, customer=customer, at=NOW, rules=rules)
    second = explain_subscription_mrr(shuffled, customer=customer, at=NOW, rules=rules)
    assert first.exact == second.exact
    assert first.mrr == second.mrr


@fast
@given(st.lists(subscriptions(), max_size=3), customers(), revenue_rules)
def test_customer_totals_add_up_subscriptions(
    subs: list[Obj], customer: Obj, rules: RevenueRules
) -> None:
    revenue = customer_revenue(customer, subs, [], at=NOW, rules=rules)
    expected_mrr: defaultdict[str, int] = defaultdict(int)
    expected_arr: defaultdict[str, int] = defaultdict(int)
    with_revenue: set[str] = set()
    for sub in subs:
        currency = sub["currency"]
        expected_mrr[currency] += subscription_mrr(sub, customer=customer, at=NOW, rules=rules)
        expected_arr[currency] += subscription_arr(sub, customer=customer, at=NOW, rules=rules)
        if explain_subscription_mrr(sub, customer=customer, at=NOW, rules=rules).exact > 0:
            with_revenue.add(currency)
    assert revenue.all_mrr == {c: expected_mrr[c] for c in with_revenue}
    assert revenue.arr == {c: expected_arr[c] for c in with_revenue}
    assert sum(revenue.all_mrr.values()) == sum(expected_mrr.values())
    assert revenue.subscription_paying_count == sum(
        1 for row in revenue.subscriptions if row.mrr > 0
    )
    assert revenue.subscription_trialing_count == sum(1 for s in subs if s["status"] == "trialing")
    assert revenue.mrr >= 0


@fast
@given(subscriptions(), customers(), revenue_rules)
def test_arr_is_twelve_times_exact_mrr_rounded_once(
    sub: Obj, customer: Obj, rules: RevenueRules
) -> None:
    explanation = explain_subscription_mrr(sub, customer=customer, at=NOW, rules=rules)
    assert explanation.mrr == round_half_up(explanation.exact)
    assert (
        explanation.arr
        == round_half_up(12 * explanation.exact)
        == arr_from_exact(explanation.exact)
    )
    assert subscription_arr(sub, customer=customer, at=NOW, rules=rules) == explanation.arr
    assert subscription_mrr(sub, customer=customer, at=NOW, rules=rules) == explanation.mrr


@fast
@given(subscriptions(), customers())
def test_subtracting_more_discounts_never_raises_mrr(sub: Obj, customer: Obj) -> None:
    default = explain_subscription_mrr(sub, customer=customer, at=NOW).exact
    everything = RevenueRules(subtract_once_discounts=True, subtract_repeating_discounts=True)
    assert (
        explain_subscription_mrr(sub, customer=customer, at=NOW, rules=everything).exact <= default
    )


@fast
@given(st.fractions(min_value=-(10**9), max_value=10**9))
def test_round_half_up_is_within_half(value: Fraction) -> None:
    rounded = round_half_up(value)
    assert abs(rounded - value) <= Fraction(1, 2)
    if abs(rounded - value) == Fraction(1, 2):
        assert abs(rounded) > abs(value)
