"""MRR.md, rule by rule and example by example, on Stripe-shaped objects."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import pytest

from stripesync.errors import ConfigError, InvalidInput
from stripesync.revenue import (
    MissingExchangeRate,
    RevenueRules,
    StripeShapeError,
    arpu,
    arr_from_exact,
    classify_movement,
    customer_revenue,
    explain_subscription_mrr,
    fx_movement,
    gross_mrr_churn_rate,
    net_mrr_churn_rate,
    round_half_up,
    subscriber_churn_rate,
    subscription_arr,
    subscription_mrr,
    to_reporting_currency,
)
from tests.revenue.factories import (
    CREATED,
    PRODUCT_ID,
    Obj,
    fixture,
    make_coupon,
    make_customer,
    make_discount,
    make_invoice,
    make_item,
    make_legacy_subscription,
    make_line,
    make_price,
    make_subscription,
    make_tax_rate,
    tier,
)

NOW = CREATED + 100 * 86400


def sub_of(*prices: Obj, quantity: int = 1, **kwargs: Any) -> Obj:
    return make_subscription([make_item(p, quantity=quantity) for p in prices], **kwargs)


def mrr(subscription: Obj, **kwargs: Any) -> int:
    return subscription_mrr(subscription, at=NOW, **kwargs)


# -- worked examples ------------------------------------------------------------------


class TestWorkedExamples:
    def test_monthly_2500_quantity_4(self) -> None:
        assert mrr(sub_of(make_price(2500), quantity=4)) == 10000

    def test_yearly_60000(self) -> None:
        sub = sub_of(make_price(60000, interval="year"))
        assert mrr(sub) == 5000
        assert subscription_arr(sub, at=NOW) == 60000

    def test_every_3_months_9000(self) -> None:
        assert mrr(sub_of(make_price(9000, interval="month", interval_count=3))) == 3000

    def test_weekly_2000(self) -> None:
        explanation = explain_subscription_mrr(sub_of(make_price(2000, interval="week")), at=NOW)
        assert explanation.exact == Fraction(2000 * 52, 12)
        assert explanation.mrr == 8667

    @pytest.mark.parametrize(("mode", "expected"), [("graduated", 5800), ("volume", 4800)])
    def test_tiers_quantity_12(self, mode: str, expected: int) -> None:
        price = make_price(
            tiers=[tier(10, unit_amount=500), tier(None, unit_amount=400)], tiers_mode=mode
        )
        assert mrr(sub_of(price, quantity=12)) == expected

    def test_20_percent_off_forever(self) -> None:
        discount = make_discount(make_coupon(percent_off=20))
        assert mrr(sub_of(make_price(5000), discounts=[discount])) == 4000

    def test_20_percent_off_once(self) -> None:
        sub = sub_of(
            make_price(5000),
            discounts=[make_discount(make_coupon(percent_off=20, duration="once"))],
        )
        assert mrr(sub) == 5000
        assert mrr(sub, rules=RevenueRules(subtract_once_discounts=True)) == 4000

    def test_1000_off_forever_on_yearly_24000(self) -> None:
        discount = make_discount(make_coupon(amount_off=1000))
        explanation = explain_subscription_mrr(
            sub_of(make_price(24000, interval="year"), discounts=[discount]), at=NOW
        )
        assert explanation.exact == Fraction(2000) - Fraction(1000, 12)
        assert explanation.mrr == 1917

    def test_trialing_5000(self) -> None:
        sub = sub_of(make_price(5000), status="trialing")
        assert mrr(sub) == 0
        revenue = customer_revenue(make_customer(), [sub], [], at=NOW)
        assert revenue.subscription_trialing_count == 1
        assert revenue.subscription_paying_count == 0
        assert revenue.all_mrr == {}

    def test_past_due_5000(self) -> None:
        assert mrr(sub_of(make_price(5000), status="past_due")) == 5000

    def test_arr_of_yearly_100000_is_not_99996(self) -> None:
        sub = sub_of(make_price(100000, interval="year"))
        assert mrr(sub) == 8333
        assert subscription_arr(sub, at=NOW) == 100000


# -- rules 1 to 3: whether a subscription counts --------------------------------------


class TestStatus:
    @pytest.mark.parametrize(
        "status", ["trialing", "incomplete", "incomplete_expired", "unpaid", "canceled", "paused"]
    )
    def test_statuses_that_give_zero(self, status: str) -> None:
        explanation = explain_subscription_mrr(sub_of(make_price(5000), status=status), at=NOW)
        assert explanation.mrr == 0
        assert not explanation.counts
        assert explanation.reason == f"status {status} does not count (rule 1)"
        assert explanation.lines == ()

    @pytest.mark.parametrize("status", ["active", "past_due"])
    def test_statuses_that_count(self, status: str) -> None:
        explanation = explain_subscription_mrr(sub_of(make_price(5000), status=status), at=NOW)
        assert explanation.counts and explanation.paying
        assert explanation.reason is None

    @pytest.mark.parametrize("status", ["active", "past_due"])
    def test_paused_collection_gives_zero(self, status: str) -> None:
        sub = sub_of(
            make_price(5000),
            status=status,
            pause_collection={"behavior": "mark_uncollectible", "resumes_at": None},
        )
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 0
        assert explanation.reason is not None and "rule 2" in explanation.reason

    @pytest.mark.parametrize(
        "schedule",
        [{"cancel_at_period_end": True}, {"cancel_at": NOW + 86400}],
        ids=["cancel_at_period_end", "cancel_at"],
    )
    def test_scheduled_cancellation(self, schedule: Obj) -> None:
        sub = sub_of(make_price(5000), **schedule)
        assert mrr(sub) == 5000
        explanation = explain_subscription_mrr(
            sub, at=NOW, rules=RevenueRules(churn_at_cancellation_request=True)
        )
        assert explanation.mrr == 0
        assert explanation.reason is not None and "rule 3" in explanation.reason

    def test_no_cancellation_with_the_setting_still_counts(self) -> None:
        sub = sub_of(make_price(5000))
        assert mrr(sub, rules=RevenueRules(churn_at_cancellation_request=True)) == 5000


# -- rule 4: items --------------------------------------------------------------------


class TestItems:
    def test_metered_items_are_excluded(self) -> None:
        sub = make_subscription(
            [make_item(make_price(5000)), make_item(make_price(7, usage_type="metered"))]
        )
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 5000
        metered = explanation.lines[1]
        assert not metered.counted and metered.monthly == 0
        assert metered.note is not None and "metered" in metered.note

    def test_only_metered_gives_zero_with_reason(self) -> None:
        sub = make_subscription([make_item(make_price(7, usage_type="metered"))])
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 0 and explanation.counts and not explanation.paying
        assert explanation.reason is not None and "rule 4" in explanation.reason

    @pytest.mark.parametrize(("rounding", "packs"), [("up", 3), ("down", 2)])
    def test_transform_quantity(self, rounding: str, packs: int) -> None:
        price = make_price(1000, transform_quantity={"divide_by": 10, "round": rounding})
        explanation = explain_subscription_mrr(sub_of(price, quantity=25), at=NOW)
        assert explanation.lines[0].billed_quantity == packs
        assert explanation.mrr == packs * 1000

    def test_unit_amount_decimal_wins_and_rounds_once(self) -> None:
        price = make_price(1251, unit_amount_decimal="1250.5")
        one = explain_subscription_mrr(sub_of(price), at=NOW)
        assert one.exact == Fraction(2501, 2) and one.mrr == 1251
        two_items = make_subscription([make_item(price), make_item(price)])
        # Rounded once per subscription: 2501, not 1251 + 1251.
        assert mrr(two_items) == 2501

    @pytest.mark.parametrize(
        ("mode", "quantity", "expected"),
        [
            ("graduated", 7, 1000 + 5 * 100 + 500 + 2 * 50),
            ("volume", 7, 7 * 50 + 500),
            ("graduated", 5, 1000 + 5 * 100),
            ("volume", 5, 1000 + 5 * 100),
            ("graduated", 0, 1000),
            ("volume", 0, 1000),
        ],
    )
    def test_tier_flat_amounts(self, mode: str, quantity: int, expected: int) -> None:
        price = make_price(
            tiers=[
                tier(5, unit_amount=100, flat_amount=1000),
                tier(None, unit_amount=50, flat_amount=500),
            ],
            tiers_mode=mode,
        )
        assert mrr(sub_of(price, quantity=quantity)) == expected

    def test_tier_decimal_amounts(self) -> None:
        price = make_price(
            tiers=[
                tier(2, unit_amount_decimal="0.5", flat_amount_decimal="100.25"),
                tier(None, unit_amount_decimal="0.25", flat_amount_decimal="0.25"),
            ],
            tiers_mode="graduated",
        )
        explanation = explain_subscription_mrr(sub_of(price, quantity=4), at=NOW)
        assert explanation.exact == Fraction("100.25") + 1 + Fraction("0.5") + Fraction("0.25")

    def test_tiers_not_expanded_is_a_clear_error(self) -> None:
        price = make_price(tiers=[tier(None, unit_amount=1)], tiers_mode="volume")
        del price["tiers"]
        with pytest.raises(StripeShapeError, match=r"expand\[\]=data\.items\.data\.price\.tiers"):
            mrr(sub_of(price))

    def test_quantity_zero_per_unit(self) -> None:
        explanation = explain_subscription_mrr(sub_of(make_price(5000), quantity=0), at=NOW)
        assert explanation.mrr == 0
        assert explanation.reason == "its licensed items cost 0"

    def test_no_items(self) -> None:
        explanation = explain_subscription_mrr(make_subscription([]), at=NOW)
        assert explanation.mrr == 0 and explanation.reason == "the subscription has no items"

    def test_expanded_product(self) -> None:
        product = fixture("product")
        sub = sub_of(make_price(5000, product=product))
        line = explain_subscription_mrr(sub, at=NOW).lines[0]
        assert line.product_id == PRODUCT_ID


# -- rule 5: normalization ------------------------------------------------------------


class TestNormalization:
    def test_mixed_intervals(self) -> None:
        sub = make_subscription(
            [
                make_item(make_price(1000)),
                make_item(make_price(12000, interval="year")),
                make_item(make_price(100, interval="day")),
            ]
        )
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert [line.months_per_period for line in explanation.lines] == [
            1,
            12,
            Fraction(12, 365),
        ]
        assert explanation.exact == 1000 + 1000 + Fraction(100 * 365, 12)
        assert explanation.mrr == 5042


# -- rule 6: discounts ----------------------------------------------------------------


class TestDiscounts:
    def test_repeating_needs_the_setting(self) -> None:
        coupon = make_coupon(percent_off=50, duration="repeating", duration_in_months=3)
        sub = sub_of(make_price(5000), discounts=[make_discount(coupon, end=NOW + 86400)])
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 5000
        assert "subtract_repeating_discounts is off" in explanation.ignored_discounts[0].reason
        assert mrr(sub, rules=RevenueRules(subtract_repeating_discounts=True)) == 2500

    def test_ended_discount_is_ignored(self) -> None:
        coupon = make_coupon(percent_off=50, duration="repeating", duration_in_months=3)
        sub = sub_of(make_price(5000), discounts=[make_discount(coupon, end=NOW - 1)])
        rules = RevenueRules(subtract_repeating_discounts=True)
        explanation = explain_subscription_mrr(sub, at=NOW, rules=rules)
        assert explanation.mrr == 5000
        assert explanation.ignored_discounts[0].reason == "its end has passed (rule 6)"
        # The same subscription before the end, with `at` as a datetime.
        before = datetime.fromtimestamp(NOW - 2, tz=UTC)
        assert subscription_mrr(sub, at=before, rules=rules) == 2500

    def test_discounts_apply_in_list_order(self) -> None:
        percent = make_discount(make_coupon(percent_off=50))
        amount = make_discount(make_coupon(amount_off=1000))
        price = make_price(5000)
        assert mrr(sub_of(price, discounts=[percent, amount])) == 1500  # 5000/2 - 1000
        assert mrr(sub_of(price, discounts=[amount, percent])) == 2000  # (5000-1000)/2

    def test_never_below_zero(self) -> None:
        sub = sub_of(make_price(5000), discounts=[make_discount(make_coupon(amount_off=9000))])
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.exact == 0 and explanation.mrr == 0
        assert explanation.reason == "discounts bring it to 0 (rule 6)"

    def test_item_level_discount_applies_to_its_item_only(self) -> None:
        discounted = make_item(
            make_price(5000), discounts=[make_discount(make_coupon(percent_off=10))]
        )
        plain = make_item(make_price(3000))
        explanation = explain_subscription_mrr(make_subscription([discounted, plain]), at=NOW)
        assert explanation.mrr == 4500 + 3000
        assert explanation.lines[0].discounts[0].level == "item"
        assert explanation.lines[0].discounts[0].monthly_amount == 500
        assert explanation.lines[1].discounts == ()

    def test_item_amount_off_uses_the_item_period(self) -> None:
        yearly = make_item(
            make_price(12000, interval="year"),
            discounts=[make_discount(make_coupon(amount_off=1200))],
        )
        monthly = make_item(make_price(1000))
        assert mrr(make_subscription([yearly, monthly])) == 1000 - 100 + 1000

    def test_subscription_discount_applies_to_all_items(self) -> None:
        sub = make_subscription(
            [make_item(make_price(5000)), make_item(make_price(3000))],
            discounts=[make_discount(make_coupon(percent_off=25))],
        )
        assert mrr(sub) == 6000

    def test_subscription_amount_off_is_shared_in_proportion(self) -> None:
        sub = make_subscription(
            [make_item(make_price(3000)), make_item(make_price(1000))],
            discounts=[make_discount(make_coupon(amount_off=2000))],
        )
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert [line.discounts[0].monthly_amount for line in explanation.lines] == [1500, 500]
        assert explanation.mrr == 2000

    def test_item_discounts_come_before_subscription_discounts(self) -> None:
        item = make_item(make_price(5000), discounts=[make_discount(make_coupon(amount_off=1000))])
        sub = make_subscription([item], discounts=[make_discount(make_coupon(percent_off=50))])
        assert mrr(sub) == 2000  # (5000 - 1000) / 2, not 5000 / 2 - 1000

    def test_applies_to_restricts_to_products(self) -> None:
        other = make_price(3000, product="prod_OtherProduct1")
        coupon = make_coupon(percent_off=50, applies_to=[PRODUCT_ID])
        sub = make_subscription(
            [make_item(make_price(5000)), make_item(other)], discounts=[make_discount(coupon)]
        )
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 2500 + 3000
        assert explanation.lines[1].discounts == ()

    def test_applies_to_matching_nothing_is_reported(self) -> None:
        coupon = make_coupon(percent_off=50, applies_to=["prod_Nothing"])
        sub = sub_of(make_price(5000), discounts=[make_discount(coupon)])
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 5000
        assert "applies_to" in explanation.ignored_discounts[0].reason

    def test_amount_off_divided_by_the_shortest_eligible_period(self) -> None:
        monthly = make_price(1000, product="prod_Monthly00001")
        yearly = make_price(12000, interval="year", product="prod_Yearly000001")
        both = make_discount(make_coupon(amount_off=600))
        yearly_only = make_discount(make_coupon(amount_off=600, applies_to=["prod_Yearly000001"]))
        items = [make_item(monthly), make_item(yearly)]
        # Comes off every monthly invoice.
        assert mrr(make_subscription(items, discounts=[both])) == 2000 - 600
        # Comes off the yearly invoice only.
        assert mrr(make_subscription(items, discounts=[yearly_only])) == 2000 - 50

    def test_customer_discount_applies_when_the_subscription_has_none(self) -> None:
        customer = make_customer(discount=make_discount(make_coupon(percent_off=10)))
        sub = sub_of(make_price(5000))
        explanation = explain_subscription_mrr(sub, customer=customer, at=NOW)
        assert explanation.mrr == 4500
        assert explanation.lines[0].discounts[0].level == "customer"

    def test_customer_discount_yields_to_the_subscription_discount(self) -> None:
        customer = make_customer(discount=make_discount(make_coupon(percent_off=10)))
        sub = sub_of(make_price(5000), discounts=[make_discount(make_coupon(percent_off=20))])
        explanation = explain_subscription_mrr(sub, customer=customer, at=NOW)
        assert explanation.mrr == 4000
        assert explanation.ignored_discounts[0].level == "customer"

    def test_customer_discount_yields_even_to_a_once_coupon_not_subtracted(self) -> None:
        customer = make_customer(discount=make_discount(make_coupon(percent_off=10)))
        once = make_discount(make_coupon(percent_off=20, duration="once"))
        assert mrr(sub_of(make_price(5000), discounts=[once]), customer=customer) == 5000

    def test_customer_discount_applies_after_the_subscription_discount_ended(self) -> None:
        customer = make_customer(discount=make_discount(make_coupon(percent_off=10)))
        ended = make_discount(
            make_coupon(percent_off=20, duration="repeating", duration_in_months=1), end=NOW - 1
        )
        assert mrr(sub_of(make_price(5000), discounts=[ended]), customer=customer) == 4500

    def test_customer_discount_skips_items_with_their_own(self) -> None:
        customer = make_customer(discount=make_discount(make_coupon(percent_off=10)))
        own = make_item(make_price(5000), discounts=[make_discount(make_coupon(percent_off=20))])
        sub = make_subscription([own, make_item(make_price(3000))])
        assert mrr(sub, customer=customer) == 4000 + 2700

    def test_discount_given_as_id_is_ignored_but_blocks_customer_discount(self) -> None:
        customer = make_customer(discount=make_discount(make_coupon(percent_off=10)))
        sub = sub_of(make_price(5000), discounts=["di_NotExpanded0001"])
        explanation = explain_subscription_mrr(sub, customer=customer, at=NOW)
        assert explanation.mrr == 5000
        assert explanation.ignored_discounts[0].discount_id == "di_NotExpanded0001"
        assert "only as an id" in explanation.ignored_discounts[0].reason

    def test_coupon_given_as_id_is_ignored(self) -> None:
        sub = sub_of(make_price(5000), discounts=[make_discount("co_NotExpanded")])
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 5000
        assert explanation.ignored_discounts[0].coupon_id == "co_NotExpanded"

    def test_multi_currency_coupon(self) -> None:
        coupon = make_coupon(amount_off=1000, currency="usd")
        coupon["currency_options"] = {"eur": {"amount_off": 900}}
        sub = sub_of(make_price(5000, currency="eur"), currency="eur")
        sub["discounts"] = [make_discount(coupon)]
        assert mrr(sub) == 4100

    def test_coupon_in_another_currency_is_ignored(self) -> None:
        sub = sub_of(make_price(5000, currency="eur"), currency="eur")
        sub["discounts"] = [make_discount(make_coupon(amount_off=1000, currency="usd"))]
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.mrr == 5000
        assert "EUR" in explanation.ignored_discounts[0].reason


# -- rule 7: tax ----------------------------------------------------------------------


class TestTax:
    def test_inclusive_price_divides_out_the_item_rate(self) -> None:
        item = make_item(
            make_price(11900, tax_behavior="inclusive"),
            tax_rates=[make_tax_rate(19, inclusive=True)],
        )
        explanation = explain_subscription_mrr(make_subscription([item]), at=NOW)
        assert explanation.mrr == 10000
        assert explanation.lines[0].tax_divided_out == 1900
        assert explanation.lines[0].inclusive_tax_percentage == 19

    def test_subscription_default_tax_rates(self) -> None:
        sub = sub_of(
            make_price(10725, tax_behavior="inclusive"),
            default_tax_rates=[make_tax_rate(7.25, inclusive=True)],
        )
        assert explain_subscription_mrr(sub, at=NOW).exact == 10000

    def test_item_rates_replace_the_defaults(self) -> None:
        item = make_item(
            make_price(11000, tax_behavior="inclusive"),
            tax_rates=[make_tax_rate(10, inclusive=True)],
        )
        sub = make_subscription([item], default_tax_rates=[make_tax_rate(19, inclusive=True)])
        assert mrr(sub) == 10000

    def test_tax_is_divided_after_discounts(self) -> None:
        item = make_item(
            make_price(12000, tax_behavior="inclusive"),
            tax_rates=[make_tax_rate(20, inclusive=True)],
        )
        sub = make_subscription([item], discounts=[make_discount(make_coupon(amount_off=1200))])
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.exact == 9000  # (12000 - 1200) / 1.2

    def test_exclusive_rates_divide_nothing(self) -> None:
        item = make_item(
            make_price(10000, tax_behavior="exclusive"),
            tax_rates=[make_tax_rate(19, inclusive=False)],
        )
        assert mrr(make_subscription([item])) == 10000

    def test_inclusive_price_without_a_known_rate(self) -> None:
        explanation = explain_subscription_mrr(
            sub_of(make_price(11900, tax_behavior="inclusive")), at=NOW
        )
        assert explanation.mrr == 11900
        assert explanation.lines[0].note is not None
        assert "nothing divided out" in explanation.lines[0].note

    def test_legacy_inclusive_rate_without_tax_behavior(self) -> None:
        item = make_item(make_price(11900), tax_rates=[make_tax_rate(19, inclusive=True)])
        assert mrr(make_subscription([item])) == 10000


# -- pre-2025 shapes ------------------------------------------------------------------


class TestLegacyShapes:
    def test_plan_only_items(self) -> None:
        item = make_item(make_price(60000, interval="year"), plan_only=True)
        assert "price" not in item
        assert mrr(make_subscription([item])) == 5000

    def test_plan_only_tiered(self) -> None:
        price = make_price(
            tiers=[tier(10, unit_amount=500), tier(None, unit_amount=400)], tiers_mode="volume"
        )
        item = make_item(price, quantity=12, plan_only=True)
        assert mrr(make_subscription([item])) == 4800

    def test_plan_transform_usage(self) -> None:
        price = make_price(1000, transform_quantity={"divide_by": 10, "round": "up"})
        item = make_item(price, quantity=11, plan_only=True)
        assert mrr(make_subscription([item])) == 2000

    def test_single_discount_with_top_level_coupon(self) -> None:
        discount = make_discount(make_coupon(percent_off=20), legacy=True)
        sub = make_legacy_subscription([make_item(make_price(5000))], discount=discount)
        assert "discounts" not in sub
        assert mrr(sub) == 4000

    def test_before_multi_item_subscriptions(self) -> None:
        item = make_item(make_price(2500), quantity=4, plan_only=True)
        sub = make_legacy_subscription([item], with_items=False)
        assert "items" not in sub
        assert mrr(sub) == 10000

    def test_discounts_ids_resolved_from_the_single_discount(self) -> None:
        discount = make_discount(make_coupon(percent_off=20))
        sub = make_subscription([make_item(make_price(5000))], discounts=[discount["id"]])
        sub["discount"] = discount
        assert mrr(sub) == 4000

    def test_legacy_customer_discount(self) -> None:
        customer = make_customer(discount=make_discount(make_coupon(amount_off=500), legacy=True))
        sub = make_legacy_subscription([make_item(make_price(5000))])
        assert mrr(sub, customer=customer) == 4500

    def test_currency_from_the_plan_when_the_subscription_has_none(self) -> None:
        sub = make_legacy_subscription(
            [make_item(make_price(5000, currency="eur"), plan_only=True)]
        )
        del sub["currency"]
        explanation = explain_subscription_mrr(sub, at=NOW)
        assert explanation.currency == "eur" and explanation.mrr == 5000


# -- the explanation ------------------------------------------------------------------


def test_explanation_shows_every_factor() -> None:
    item = make_item(
        make_price(36000, interval="month", interval_count=3, tax_behavior="inclusive"),
        quantity=2,
        tax_rates=[make_tax_rate(20, inclusive=True)],
        discounts=[make_discount(make_coupon(percent_off=50))],
    )
    sub = make_subscription([item])
    explanation = explain_subscription_mrr(sub, at=NOW)
    (line,) = explanation.lines
    assert line.item_id == item["id"]
    assert line.price_id == item["price"]["id"]
    assert line.product_id == PRODUCT_ID
    assert (line.quantity, line.billed_quantity) == (2, 2)
    assert line.amount_per_period == 72000
    assert line.months_per_period == 3
    assert line.monthly_before_discounts == 24000
    assert line.discounts[0].percent_off == 50 and line.discounts[0].monthly_amount == 12000
    assert line.tax_divided_out == 2000
    assert line.monthly == 10000
    assert explanation.exact == 10000 and explanation.mrr == 10000 and explanation.arr == 120000
    assert explanation.subscription_id == sub["id"] and explanation.currency == "usd"


def test_rounds_to_zero_reason() -> None:
    explanation = explain_subscription_mrr(sub_of(make_price(1, interval="year")), at=NOW)
    assert explanation.exact == Fraction(1, 12) and explanation.mrr == 0
    assert explanation.reason is not None and "rounds half up to 0" in explanation.reason
    assert not explanation.paying


# -- customers: rules 8 to 10 and 13 --------------------------------------------------


class TestCustomerRevenue:
    def test_totals_and_counts(self) -> None:
        subs = [
            sub_of(make_price(5000), created=CREATED),
            sub_of(make_price(60000, interval="year"), created=CREATED + 1),
            sub_of(make_price(4000, currency="eur"), currency="eur", created=CREATED + 2),
            sub_of(make_price(9000), status="trialing", created=CREATED + 3),
            sub_of(make_price(9000), status="canceled", created=CREATED + 4),
        ]
        revenue = customer_revenue(make_customer(), subs, [], at=NOW)
        assert revenue.all_mrr == {"usd": 10000, "eur": 4000}
        assert revenue.arr == {"usd": 120000, "eur": 48000}
        assert revenue.subscription_paying_count == 3
        assert revenue.subscription_trialing_count == 1
        assert [row.mrr for row in revenue.subscriptions] == [5000, 5000, 4000, 0, 0]
        assert revenue.customer_id == "cus_QXg1o8vcGmoR32"
        assert revenue.reporting_mrr is None

    def test_arr_is_the_sum_of_subscription_arrs(self) -> None:
        subs = [sub_of(make_price(1, interval="week")), sub_of(make_price(1, interval="week"))]
        revenue = customer_revenue(make_customer(), subs, [], at=NOW)
        # Each: exact 13/3 → MRR 4, ARR 52.
        assert revenue.all_mrr == {"usd": 8}
        assert revenue.arr == {"usd": 104}

    def test_mrr_rounding_to_zero_still_has_arr(self) -> None:
        tiny = sub_of(make_price(4, interval="year"))  # 1/3 cent a month
        revenue = customer_revenue(make_customer(), [tiny], [], at=NOW)
        assert (revenue.subscriptions[0].mrr, revenue.subscriptions[0].arr) == (0, 4)
        assert revenue.all_mrr == {"usd": 0} and revenue.arr == {"usd": 4}
        assert revenue.subscription_paying_count == 0

    def test_reporting_currency(self) -> None:
        subs = [
            sub_of(make_price(10000)),
            sub_of(make_price(10001, currency="eur"), currency="eur"),
            sub_of(make_price(1000, currency="jpy"), currency="jpy"),
        ]
        rules = RevenueRules(
            reporting_currency="USD", exchange_rates={"EUR": "1.085", "jpy": Decimal("0.0067")}
        )
        revenue = customer_revenue(make_customer(), subs, [], at=NOW, rules=rules)
        # 10001 × 1.085 = 10851.085 → 10851; 1000 yen × 0.0067 = 6.70 USD = 670 cents.
        assert revenue.reporting_mrr == 10000 + 10851 + 670
        assert revenue.reporting_currency == "usd"
        assert (
            revenue.reporting_arr
            == 120000 + round_half_up(Fraction("120012") * Fraction("1.085")) + 8040
        )

    def test_missing_rate_names_the_currency(self) -> None:
        subs = [sub_of(make_price(10000, currency="gbp"), currency="gbp")]
        rules = RevenueRules(reporting_currency="usd", exchange_rates={"eur": "1.08"})
        with pytest.raises(MissingExchangeRate, match="GBP") as caught:
            customer_revenue(make_customer(), subs, [], at=NOW, rules=rules)
        assert caught.value.currency == "gbp"
        assert isinstance(caught.value, ConfigError)

    def test_no_subscriptions(self) -> None:
        revenue = customer_revenue(make_customer(), [], [], at=NOW)
        assert revenue.mrr == 0 and revenue.primary_subscription_id is None
        assert revenue.all_mrr == {} and revenue.subscriptions == []


class TestMrrTrait:
    """Rule 13: max(L, S) for the primary subscription."""

    def setup_method(self) -> None:
        self.price = make_price(5000)
        self.item = make_item(self.price)
        self.sub = make_subscription([self.item])

    def invoice(self, amount: int, **kwargs: Any) -> Obj:
        proration = bool(kwargs.pop("proration", False))
        legacy = bool(kwargs.get("legacy", False))
        line = make_line(
            self.price,
            amount=amount,
            subscription_id=self.sub["id"],
            item_id=self.item["id"],
            proration=proration,
            legacy=legacy,
        )
        return make_invoice(self.sub, [line], total_excluding_tax=amount, **kwargs)

    def test_invoice_above_subscription_wins(self) -> None:
        revenue = customer_revenue(make_customer(), [self.sub], [self.invoice(6000)], at=NOW)
        assert (revenue.mrr, revenue.last_invoice_mrr, revenue.primary_subscription_mrr) == (
            6000,
            6000,
            5000,
        )

    def test_subscription_above_invoice_wins(self) -> None:
        revenue = customer_revenue(make_customer(), [self.sub], [self.invoice(3000)], at=NOW)
        assert revenue.mrr == 5000

    def test_latest_paid_recurring_invoice(self) -> None:
        invoices = [
            self.invoice(7000, created=CREATED + 10),
            self.invoice(5500, created=CREATED + 20),
            self.invoice(9000, created=CREATED + 30, status="open"),
            self.invoice(9000, created=CREATED + 40, billing_reason="manual"),
            self.invoice(9000, created=CREATED + 50, billing_reason="subscription_update"),
        ]
        revenue = customer_revenue(make_customer(), [self.sub], invoices, at=NOW)
        assert revenue.last_invoice_mrr == 5500
        assert revenue.last_invoice_id == invoices[1]["id"]

    def test_proration_only_invoices_are_skipped(self) -> None:
        invoices = [
            self.invoice(6000, created=CREATED + 10, billing_reason="subscription_create"),
            self.invoice(20000, created=CREATED + 20, proration=True),
        ]
        revenue = customer_revenue(make_customer(), [self.sub], invoices, at=NOW)
        assert revenue.last_invoice_id == invoices[0]["id"]
        assert revenue.mrr == 6000

    def test_invoice_divided_by_its_period(self) -> None:
        price = make_price(60000, interval="year")
        item = make_item(price)
        sub = make_subscription([item])
        line = make_line(price, amount=72000, subscription_id=sub["id"], item_id=item["id"])
        invoice = make_invoice(sub, [line], total_excluding_tax=72000, tax=14400)
        revenue = customer_revenue(make_customer(), [sub], [invoice], at=NOW)
        assert revenue.last_invoice_mrr == 6000 and revenue.mrr == 6000

    def test_legacy_invoice_shape(self) -> None:
        invoice = self.invoice(6000, tax=1140, legacy=True)
        assert "total_excluding_tax" not in invoice and "parent" not in invoice
        revenue = customer_revenue(make_customer(), [self.sub], [invoice], at=NOW)
        assert revenue.last_invoice_mrr == 6000

    def test_other_subscriptions_invoices_are_ignored(self) -> None:
        other = make_subscription([make_item(make_price(100))])
        line = make_line(self.price, amount=9000, subscription_id=other["id"])
        invoice = make_invoice(other, [line], total_excluding_tax=9000)
        revenue = customer_revenue(make_customer(), [self.sub], [invoice], at=NOW)
        assert revenue.mrr == 5000 and revenue.last_invoice_mrr is None

    def test_primary_is_the_newest_counting_subscription(self) -> None:
        older = make_subscription([make_item(make_price(1000))], created=CREATED - 100)
        newest_trial = make_subscription(
            [make_item(make_price(8000))], status="trialing", created=CREATED + 100
        )
        revenue = customer_revenue(
            make_customer(), [older, self.sub, newest_trial], [self.invoice(6000)], at=NOW
        )
        assert revenue.primary_subscription_id == self.sub["id"]
        assert revenue.mrr == 6000

    def test_without_a_counting_subscription_the_trait_is_zero(self) -> None:
        canceled = make_subscription([self.item], status="canceled")
        line = make_line(self.price, amount=6000, subscription_id=canceled["id"])
        invoice = make_invoice(canceled, [line], total_excluding_tax=6000)
        revenue = customer_revenue(make_customer(), [canceled], [invoice], at=NOW)
        assert revenue.primary_subscription_id == canceled["id"]
        assert revenue.mrr == 0 and revenue.last_invoice_mrr is None


# -- rule 11: movements ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "paid_before", "expected"),
    [
        (0, 5000, False, "new"),
        (0, 5000, True, "reactivation"),
        (5000, 8000, True, "expansion"),
        (8000, 5000, True, "contraction"),
        (5000, 0, True, "churn"),
        (5000, 5000, True, None),
        (0, 0, True, None),
    ],
)
def test_classify_movement(
    before: int, after: int, paid_before: bool, expected: str | None
) -> None:
    assert classify_movement(before, after, paid_before=paid_before) == expected


def test_second_subscription_is_expansion_and_cancelling_one_of_two_is_contraction() -> None:
    one = [sub_of(make_price(5000))]
    two = [*one, sub_of(make_price(3000))]
    before = customer_revenue(make_customer(), one, [], at=NOW).all_mrr["usd"]
    after = customer_revenue(make_customer(), two, [], at=NOW).all_mrr["usd"]
    assert classify_movement(before, after, paid_before=True) == "expansion"
    assert classify_movement(after, before, paid_before=True) == "contraction"


def test_classify_movement_refuses_negative_amounts() -> None:
    with pytest.raises(InvalidInput, match="-1"):
        classify_movement(-1, 10, paid_before=False)


def test_fx_movement_is_separate_from_business_movement() -> None:
    mrr_by_currency = {"usd": 10000, "eur": 10000}
    old = RevenueRules(reporting_currency="usd", exchange_rates={"eur": "1.10"})
    new = RevenueRules(reporting_currency="usd", exchange_rates={"eur": "1.05"})
    assert fx_movement(mrr_by_currency, rules_before=old, rules_after=new) == -500
    # Unchanged MRR at the new rates: no business movement at all.
    unchanged = to_reporting_currency(mrr_by_currency, new) - to_reporting_currency(
        mrr_by_currency, new
    )
    assert classify_movement(20500, 20500 + unchanged, paid_before=True) is None
    with pytest.raises(InvalidInput):
        fx_movement(
            mrr_by_currency, rules_before=old, rules_after=RevenueRules(reporting_currency="eur")
        )


# -- rule 12: rates -------------------------------------------------------------------


def test_rates() -> None:
    assert subscriber_churn_rate(3, 50, 10) == Fraction(1, 20)
    assert subscriber_churn_rate(0, 0, 0) is None
    assert gross_mrr_churn_rate(1000, 500, 30000) == Fraction(1, 20)
    assert net_mrr_churn_rate(1000, 500, 2000, 500, 30000) == Fraction(-1, 30)
    assert gross_mrr_churn_rate(0, 0, 0) is None and net_mrr_churn_rate(0, 0, 0, 0, 0) is None
    assert arpu(30000, 4) == 7500 and arpu(0, 0) is None
    with pytest.raises(InvalidInput):
        gross_mrr_churn_rate(-1, 0, 100)


# -- rules, rounding ------------------------------------------------------------------


def test_revenue_rules_survive_asdict_replace_and_pickle() -> None:
    rates = {"EUR": "1.08"}
    rules = RevenueRules(reporting_currency="usd", exchange_rates=rates)
    rates["EUR"] = "9"
    assert rules.exchange_rates == {"eur": Decimal("1.08")}
    assert dataclasses.asdict(rules)["exchange_rates"] == {"eur": Decimal("1.08")}
    assert dataclasses.replace(rules, subtract_once_discounts=True).exchange_rates == {
        "eur": Decimal("1.08")
    }
    assert pickle.loads(pickle.dumps(rules)) == rules
    error = pickle.loads(pickle.dumps(MissingExchangeRate("gbp", "usd")))
    assert error.currency == "gbp" and "GBP" in str(error)


def test_revenue_rules_are_validated_and_normalized() -> None:
    rules = RevenueRules(reporting_currency="USD", exchange_rates={"EUR": "1.08"})
    assert rules.reporting_currency == "usd" and dict(rules.exchange_rates) == {
        "eur": Decimal("1.08")
    }
    assert isinstance(hash(rules), int)
    assert rules == RevenueRules(reporting_currency="usd", exchange_rates={"eur": Decimal("1.08")})
    with pytest.raises(ConfigError, match="'1,08'"):
        RevenueRules(exchange_rates={"eur": "1,08"})
    with pytest.raises(ConfigError, match="positive"):
        RevenueRules(exchange_rates={"eur": "0"})
    with pytest.raises(ConfigError, match="converts at 1"):
        RevenueRules(reporting_currency="usd", exchange_rates={"usd": "2"})
    with pytest.raises(ConfigError, match="reporting_currency"):
        RevenueRules().conversion_factor("eur")


@pytest.mark.parametrize(
    "value", [Fraction(5, 2), Fraction(-5, 2), Fraction(7, 3), Fraction(-7, 3), Fraction(0), 3]
)
def test_round_half_up_matches_decimal(value: Fraction | int) -> None:
    value = Fraction(value)
    as_decimal = Decimal(value.numerator) / Decimal(value.denominator)
    assert round_half_up(value) == int(as_decimal.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_arr_from_exact() -> None:
    assert arr_from_exact(Fraction(100000, 12)) == 100000
    assert arr_from_exact(Fraction(1, 24)) == 1


def test_items_not_fully_embedded_is_a_clear_error() -> None:
    sub = sub_of(make_price(5000))
    sub["items"]["has_more"] = True
    with pytest.raises(StripeShapeError, match="has_more"):
        mrr(sub)
