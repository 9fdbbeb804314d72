"""Revenue history: a subscription's MRR over time, customer movements (MRR.md rule 11),
and the day/month series with ARR, paying customers, ARPU, fx and churn rates (rule 12)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stripesync.revenue import RevenueRules
from stripesync.revenue.history import (
    LineFact,
    MovementRecord,
    RateTable,
    Segment,
    _movements,
    customer_history,
    revenue_report,
    subscription_segments,
)
from tests.revenue.factories import (
    make_coupon,
    make_discount,
    make_item,
    make_price,
    make_subscription,
)

DAY = 86_400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW = T0 + 200 * DAY


def _sub(price: dict[str, Any], quantity: int = 1, **kwargs: Any) -> dict[str, Any]:
    return make_subscription([make_item(price, quantity=quantity)], created=T0, **kwargs)


def _line(
    sub: dict[str, Any], price_id: str, quantity: int, start: int, *, proration: bool = False,
    amount: int = 1000, invoice: str | None = None,
) -> LineFact:  # fmt: skip
    return LineFact(
        invoice_id=invoice or f"in_{start}_{proration}",
        invoice_status="paid",
        subscription_id=sub["id"],
        price_id=price_id,
        quantity=quantity,
        period_start=start,
        period_end=start + 30 * DAY,
        proration=proration,
        amount=amount,
    )


def _kinds(records: list[MovementRecord]) -> list[tuple[int, str, int, int]]:
    return [(r.at, r.kind, r.before, r.after) for r in records]


def test_an_active_subscription_is_new_at_its_start_and_keeps_its_mrr() -> None:
    sub = _sub(make_price(2500), quantity=4)
    history = customer_history([sub], now=NOW)
    assert _kinds(history.movements) == [(T0, "new", 0, 10000)]
    (segment,) = history.segments[sub["id"]]
    assert (segment.start, segment.end, segment.mrr) == (T0, None, 10000)
    assert history.movements[0].arr_after == 120000
    assert history.mrr_at(NOW) == {"usd": 10000} and history.mrr_at(T0 - 1) == {}


def test_a_trial_counts_from_its_end() -> None:
    sub = _sub(make_price(5000))
    sub.update(trial_start=T0, trial_end=T0 + 14 * DAY)
    history = customer_history([sub], now=NOW)
    assert _kinds(history.movements) == [(T0 + 14 * DAY, "new", 0, 5000)]
    assert [s.status for s in history.segments[sub["id"]]] == ["trialing", "active"]


def test_a_trial_that_ended_without_payment_pauses() -> None:
    sub = _sub(make_price(5000), status="paused")
    sub.update(trial_start=T0, trial_end=T0 + 14 * DAY)
    history = customer_history([sub], now=NOW)
    assert history.movements == []
    assert [s.status for s in history.segments[sub["id"]]] == ["trialing", "paused"]


def test_cancellation_is_churn_at_its_end_or_at_the_request_with_the_setting() -> None:
    sub = _sub(make_price(5000), status="canceled")
    sub.update(canceled_at=T0 + 40 * DAY, ended_at=T0 + 60 * DAY)
    history = customer_history([sub], now=NOW)
    assert _kinds(history.movements) == [(T0, "new", 0, 5000), (T0 + 60 * DAY, "churn", 5000, 0)]
    classic = customer_history(
        [sub], now=NOW, rules=RevenueRules(churn_at_cancellation_request=True)
    )
    assert _kinds(classic.movements)[-1] == (T0 + 40 * DAY, "churn", 5000, 0)


def test_seat_changes_from_invoices_are_expansion_and_contraction() -> None:
    price = make_price(1000)
    sub = _sub(price, quantity=2)
    lines = [
        _line(sub, price["id"], 5, T0),
        _line(sub, price["id"], 5, T0 + 30 * DAY),
        _line(sub, price["id"], 8, T0 + 60 * DAY),
        _line(sub, price["id"], 2, T0 + 90 * DAY),
    ]
    history = customer_history([sub], lines=lines, prices={price["id"]: price}, now=NOW)
    assert _kinds(history.movements) == [
        (T0, "new", 0, 5000),
        (T0 + 60 * DAY, "expansion", 5000, 8000),
        (T0 + 90 * DAY, "contraction", 8000, 2000),
    ]


def test_an_upgrade_billed_with_prorations_is_dated_at_the_proration() -> None:
    basic, pro = make_price(1000), make_price(3000)
    sub = _sub(pro)
    change = T0 + 45 * DAY
    lines = [
        _line(sub, basic["id"], 1, T0),
        _line(sub, basic["id"], 1, T0 + 30 * DAY),
        _line(sub, pro["id"], 1, change, proration=True, amount=2000, invoice="in_p"),
        _line(sub, basic["id"], 1, change, proration=True, amount=-500, invoice="in_p"),
        _line(sub, pro["id"], 1, T0 + 60 * DAY),
    ]
    prices = {basic["id"]: basic, pro["id"]: pro}
    history = customer_history([sub], lines=lines, prices=prices, now=NOW)
    assert _kinds(history.movements) == [(T0, "new", 0, 1000), (change, "expansion", 1000, 3000)]


def test_a_change_no_invoice_shows_is_dated_when_it_was_observed() -> None:
    price = make_price(1000)
    sub = _sub(price, quantity=3)
    lines = [_line(sub, price["id"], 1, T0)]
    seen = T0 + 20 * DAY
    history = customer_history(
        [sub], lines=lines, prices={price["id"]: price}, now=NOW, observed_at={sub["id"]: seen}
    )
    assert _kinds(history.movements) == [(T0, "new", 0, 1000), (seen, "expansion", 1000, 3000)]


def test_a_repeating_coupon_ending_is_expansion_on_its_end_date() -> None:
    coupon = make_coupon(percent_off=50.0, duration="repeating", duration_in_months=3)
    end = T0 + 90 * DAY
    sub = _sub(make_price(4000), discounts=[make_discount(coupon, start=T0, end=end)])
    rules = RevenueRules(subtract_repeating_discounts=True)
    history = customer_history([sub], now=NOW, rules=rules)
    assert _kinds(history.movements) == [(T0, "new", 0, 2000), (end, "expansion", 2000, 4000)]


def test_second_subscriptions_and_comebacks_follow_rule_11() -> None:
    first = _sub(make_price(1000), status="canceled")
    first.update(canceled_at=T0 + 30 * DAY, ended_at=T0 + 30 * DAY)
    second = make_subscription([make_item(make_price(2000))], created=T0 + 50 * DAY)
    third = make_subscription([make_item(make_price(500))], created=T0 + 80 * DAY)
    history = customer_history([first, second, third], now=NOW)
    assert [r.kind for r in history.movements] == ["new", "churn", "reactivation", "expansion"]
    fourth = make_subscription([make_item(make_price(700))], created=T0, status="canceled")
    fourth.update(canceled_at=T0 + 10 * DAY, ended_at=T0 + 10 * DAY)
    both = customer_history([first, fourth], now=NOW)
    assert _kinds(both.movements) == [
        (T0, "new", 0, 1700),
        (T0 + 10 * DAY, "contraction", 1700, 1000),
        (T0 + 30 * DAY, "churn", 1000, 0),
    ]


def test_the_stretch_holding_now_carries_the_given_current_figure() -> None:
    sub = _sub(make_price(3333))
    segments = subscription_segments(sub, now=NOW, current_mrr=(3333, Fraction(3333)))
    assert segments[-1].mrr == 3333 and segments[-1].end is None
    future = make_subscription([make_item(make_price(100))], created=NOW + DAY)
    assert subscription_segments(future, now=NOW)[0].start == NOW


# -- the series ---------------------------------------------------------------------------


def _record(at: int, before: int, after: int, kind: str, currency: str = "usd") -> MovementRecord:
    return MovementRecord(at, currency, before, after, kind, before * 12, after * 12)  # type: ignore[arg-type]


def test_monthly_series_with_movements_arpu_and_churn_rates() -> None:
    jan, feb, mar = T0, T0 + 31 * DAY, T0 + 59 * DAY
    moves = [
        ("a", _record(jan + DAY, 0, 1000, "new")),
        ("b", _record(jan + 2 * DAY, 0, 3000, "new")),
        ("a", _record(feb + DAY, 1000, 2000, "expansion")),
        ("b", _record(feb + 2 * DAY, 3000, 0, "churn")),
        ("c", _record(feb + 3 * DAY, 0, 500, "new")),
    ]
    report = revenue_report(moves, start=jan, end=mar + 31 * DAY, granularity="month")
    assert [p.period for p in report.periods] == ["2026-01", "2026-02", "2026-03"]
    january, february, march = report.periods
    assert january.mrr == {"usd": 4000} and january.paying_customers == 2
    assert january.movements == {"new": {"usd": 4000}}
    assert january.arpu == Fraction(2000) and january.arr == {"usd": 48000}
    assert february.mrr == {"usd": 2500} and february.paying_customers == 2
    assert february.movements == {
        "expansion": {"usd": 1000},
        "churn": {"usd": 3000},
        "new": {"usd": 500},
    }
    # Rule 12: 1 churned of (2 paying at the start + 1 new); MRR churn over 4000 at start.
    assert february.subscriber_churn_rate == Fraction(1, 3)
    assert february.gross_mrr_churn_rate == Fraction(3000, 4000)
    assert february.net_mrr_churn_rate == Fraction(2000, 4000)
    assert march.movements == {} and march.subscriber_churn_rate == Fraction(0, 2)


def test_daily_series_and_the_30_day_churn_rate() -> None:
    moves = [
        ("a", _record(T0, 0, 1000, "new")),
        ("b", _record(T0, 0, 1000, "new")),
        ("a", _record(T0 + 20 * DAY, 1000, 0, "churn")),
    ]
    report = revenue_report(moves, start=T0, end=T0 + 30 * DAY, granularity="day")
    assert len(report.periods) == 30
    assert report.periods[0].mrr == {"usd": 2000}
    assert report.periods[20].mrr == {"usd": 1000}
    assert report.churn_rate_30d == Fraction(1, 2)


def test_a_reporting_currency_keeps_exchange_rate_changes_apart() -> None:
    moves = [("a", _record(T0, 0, 10000, "new", currency="eur"))]
    rates = RateTable(
        (
            (0, RevenueRules(reporting_currency="usd", exchange_rates={"eur": "1.00"})),
            (T0 + 40 * DAY, RevenueRules(reporting_currency="usd", exchange_rates={"eur": "1.10"})),
        )
    )
    report = revenue_report(moves, start=T0, end=T0 + 90 * DAY, granularity="month", rates=rates)
    january, february, march = report.periods
    assert january.reporting_mrr == 10000 and january.reporting_movements == {"new": 10000}
    # The rate moved in February: MRR in USD grew, but as fx, not expansion.
    assert february.reporting_mrr == 11000 and february.fx == 1000
    assert february.reporting_movements == {} and february.movements == {}
    assert march.fx == 0


# -- properties ---------------------------------------------------------------------------

amounts = st.integers(min_value=0, max_value=50_000)


@st.composite
def stretches(draw: st.DrawFn) -> dict[str, list[Segment]]:
    """Random subscriptions' segments: consecutive, some at 0, in one or two currencies."""
    out: dict[str, list[Segment]] = {}
    for n in range(draw(st.integers(min_value=1, max_value=4))):
        currency = draw(st.sampled_from(["usd", "eur"]))
        moment = T0 + draw(st.integers(min_value=0, max_value=50)) * DAY
        segments: list[Segment] = []
        for _ in range(draw(st.integers(min_value=1, max_value=5))):
            mrr = draw(amounts)
            length = draw(st.integers(min_value=1, max_value=40)) * DAY
            segments.append(
                Segment(moment, moment + length, currency, mrr, Fraction(mrr), "active")
            )
            moment += length
        last = segments[-1]
        segments[-1] = Segment(last.start, None, currency, last.mrr, last.exact, last.status)
        out[f"sub_{n}"] = segments
    return out


@settings(max_examples=150, deadline=None)
@given(stretches())
def test_movements_always_add_up_to_the_mrr_at_every_moment(
    segments: dict[str, list[Segment]],
) -> None:
    records = _movements(segments)
    state: dict[str, int] = {}
    # Whether the customer paid before a moment (changes at one moment classify together).
    paid_until: dict[int, bool] = {}
    ever_paid = False
    for record in sorted(records, key=lambda r: (r.at, r.currency)):
        paid_before = paid_until.setdefault(record.at, ever_paid)
        assert record.before == state.get(record.currency, 0)
        assert record.before != record.after and record.after >= 0
        if record.kind == "new":
            assert record.before == 0 and not paid_before
        if record.kind == "reactivation":
            assert record.before == 0 and paid_before
        if record.kind == "churn":
            assert record.after == 0
        if record.kind in ("expansion", "contraction"):
            assert record.before > 0 and record.after > 0
        state[record.currency] = record.after
        ever_paid = ever_paid or record.after > 0
    final: dict[str, int] = {}
    for subs in segments.values():
        last = subs[-1]
        if last.mrr:
            final[last.currency] = final.get(last.currency, 0) + last.mrr
    assert {k: v for k, v in state.items() if v} == final


@settings(max_examples=100, deadline=None)
@given(stretches())
def test_a_report_ends_where_the_movements_lead(segments: dict[str, list[Segment]]) -> None:
    records = [("c", r) for r in _movements(segments)]
    end = T0 + 300 * DAY
    report = revenue_report(records, start=T0 - 10 * DAY, end=end, granularity="month")
    final: dict[str, int] = {}
    for subs in segments.values():
        if subs[-1].mrr:
            final[subs[-1].currency] = final.get(subs[-1].currency, 0) + subs[-1].mrr
    assert report.periods[-1].mrr == dict(sorted(final.items()))
    assert report.periods[-1].paying_customers == (1 if final else 0)
    for period in report.periods:
        for by_currency in period.movements.values():
            assert all(v >= 0 for v in by_currency.values())
