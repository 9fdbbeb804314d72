"""Revenue over time: each subscription's MRR history, customer movements, and the series.

Stripe keeps only the current state of a subscription, so its past is reconstructed from
what the stored objects still say (MRR.md rules applied at every moment):

- **when it lived**: ``start_date`` (or ``created``), the trial (``trial_start`` to
  ``trial_end``: 0, rule 1), and the end (``ended_at``, else ``canceled_at`` for a canceled one). With
  ``churn_at_cancellation_request`` a scheduled cancellation gives 0 from the request
  (``canceled_at``, rule 3).
- **what it billed**: every issued invoice of the subscription names, in its
  non-proration subscription lines, the prices and quantities of one period; a change of
  that set starts a new stretch at the period's start. A mid-period change billed with
  prorations is dated at the proration lines' start. The current items take over from
  the last invoiced set when they differ, dated when the change was observed
  (``observed_at``: when the stored copy was known true), never earlier.
- **which discounts applied**: a discount counts from its ``start`` to its ``end``
  (rule 6), so a repeating coupon ending is a contraction on its end date.
- **states with no date in the object**: a current ``paused`` status after a trial is
  dated at the trial's end; collection paused, ``unpaid`` or ``incomplete`` are dated at
  ``observed_at``.

The stretch containing ``now`` always carries the subscription's current MRR exactly as
`explain_subscription_mrr` gives it, so history and the profile's figure meet.

Customer level (rule 11): each currency's MRR is the sum of its subscriptions'; every
change is a `MovementRecord` (new, reactivation, expansion, contraction, churn).
`revenue_report` turns movement records of many customers into day or month series: MRR
and ARR per currency and in a reporting currency, paying customers, ARPU, movements by
kind, exchange-rate effects kept apart (rule 8) and the churn rates of rule 12.

Pure functions; `stripesync.profiles.recompute` feeds them stored objects and keeps the
movements in the store, ``stripesync revenue`` prints the report.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any, Literal, NamedTuple

from stripesync.errors import InvalidInput
from stripesync.revenue.mrr import (
    COUNTING_STATUSES,
    Movement,
    arr_from_exact,
    classify_movement,
    explain_subscription_mrr,
    gross_mrr_churn_rate,
    net_mrr_churn_rate,
    round_half_up,
    subscriber_churn_rate,
)
from stripesync.revenue.rules import RevenueRules
from stripesync.revenue.shapes import (
    StripeObject,
    StripeShapeError,
    invoice_lines,
    invoice_subscription_id,
    line_is_proration,
    line_is_subscription_charge,
    line_pricing_ref,
    object_id,
    subscription_discount_entries,
    subscription_items,
)

__all__ = [
    "CustomerHistory",
    "LineFact",
    "MovementRecord",
    "PeriodFigures",
    "RateTable",
    "RevenueReport",
    "Segment",
    "customer_history",
    "line_facts",
    "revenue_report",
    "subscription_segments",
]

Granularity = Literal["day", "month"]
_ISSUED = frozenset({"paid", "open", "uncollectible"})
DAY = 86_400


def _ts(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- inputs -----------------------------------------------------------------------------


class LineFact(NamedTuple):
    """What history needs of one invoice line: which price, how many, for which period.

    Built from an invoice's embedded lines (`line_facts`) or read as scalar columns from
    the raw store's line table, so a rebuild never decodes whole invoices for it.
    """

    invoice_id: str
    invoice_status: str | None
    subscription_id: str | None
    price_id: str | None
    quantity: int | None
    period_start: int | None
    period_end: int | None
    proration: bool
    amount: int | None
    #: False for one-off invoice items that are not a subscription's charge.
    subscription_charge: bool = True


def line_facts(invoice: StripeObject) -> list[LineFact]:
    """The `LineFact` of each embedded line of ``invoice`` (any API version)."""
    invoice_id = object_id(invoice.get("id")) or ""
    status = invoice.get("status") if isinstance(invoice.get("status"), str) else None
    default_sub = invoice_subscription_id(invoice)
    facts: list[LineFact] = []
    for line in invoice_lines(invoice):
        period = line.get("period") if isinstance(line.get("period"), Mapping) else {}
        assert isinstance(period, Mapping)
        parent = line.get("parent")
        details = parent.get("subscription_item_details") if isinstance(parent, Mapping) else None
        sub_id = (
            object_id(details.get("subscription")) if isinstance(details, Mapping) else None
        ) or object_id(line.get("subscription"))
        facts.append(
            LineFact(
                invoice_id=invoice_id,
                invoice_status=status,
                subscription_id=sub_id or default_sub,
                price_id=object_id(line_pricing_ref(line)),
                quantity=_ts(line.get("quantity")),
                period_start=_ts(period.get("start")),
                period_end=_ts(period.get("end")),
                proration=line_is_proration(line),
                amount=_ts(line.get("amount")),
                subscription_charge=line_is_subscription_charge(line),
            )
        )
    return facts


# -- one subscription -------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stretch of a subscription's life with one MRR: ``[start, end)``, end None = now on."""

    start: int
    end: int | None
    currency: str
    mrr: int
    exact: Fraction
    status: str
    note: str | None = None

    @property
    def arr(self) -> int:
        return arr_from_exact(self.exact)


ItemKey = tuple[tuple[str, int], ...]


def _key(pairs: Iterable[tuple[str, int]]) -> ItemKey:
    total: Counter[str] = Counter()
    for price_id, quantity in pairs:
        total[price_id] += quantity
    return tuple(sorted(total.items()))


def _is_metered(price: Mapping[str, Any] | None) -> bool:
    if price is None:
        return False
    recurring = price.get("recurring")
    source = recurring if isinstance(recurring, Mapping) else price
    return source.get("usage_type") == "metered"


@dataclass
class _Sub:
    """A subscription prepared for reconstruction."""

    sub: StripeObject
    id: str
    currency: str
    start: int
    known: dict[str, Mapping[str, Any]]
    catalogue: Mapping[str, Mapping[str, Any]]
    current_key: ItemKey
    current_items: dict[str, StripeObject]

    def price(self, price_id: str) -> Mapping[str, Any] | None:
        found = self.known.get(price_id)
        return found if found is not None else self.catalogue.get(price_id)


def _prepare(subscription: StripeObject, prices: Mapping[str, Mapping[str, Any]]) -> _Sub | None:
    sub_id = object_id(subscription.get("id"))
    start = _ts(subscription.get("start_date")) or _ts(subscription.get("created"))
    if sub_id is None or start is None:
        return None
    known: dict[str, Mapping[str, Any]] = {}
    current_items: dict[str, StripeObject] = {}
    pairs: list[tuple[str, int]] = []
    for item in subscription_items(subscription):
        price = item.get("price")
        price_obj = price if isinstance(price, Mapping) else item.get("plan")
        price_id = object_id(price_obj)
        if price_id is None or not isinstance(price_obj, Mapping):
            continue
        stored = prices.get(price_id)
        # The stored price carries its tiers (fetched expanded); the embedded one may not.
        known[price_id] = stored if stored is not None else price_obj
        current_items.setdefault(price_id, item)
        if not _is_metered(known[price_id]):
            quantity = item.get("quantity")
            pairs.append((price_id, quantity if isinstance(quantity, int) else 1))
    currency = subscription.get("currency")
    if not isinstance(currency, str):
        currency = next(
            (str(p.get("currency")) for p in known.values() if isinstance(p.get("currency"), str)),
            "",
        )
    return _Sub(
        sub=subscription,
        id=sub_id,
        currency=currency.lower(),
        start=start,
        known=known,
        catalogue=prices,
        current_key=_key(pairs),
        current_items=current_items,
    )


def _item_changes(
    prep: _Sub, lines: Sequence[LineFact], observed_at: int | None, now: int
) -> list[tuple[int, ItemKey]]:
    """(moment, item set) changes: invoiced periods, prorations, then the current items."""
    groups: dict[str, list[LineFact]] = {}
    prorated: list[int] = []
    for fact in lines:
        if fact.subscription_id != prep.id or fact.invoice_status not in _ISSUED:
            continue
        if not fact.subscription_charge or fact.price_id is None:
            continue
        if fact.proration:
            if (fact.amount or 0) > 0 and fact.period_start is not None:
                prorated.append(fact.period_start)
            continue
        if _is_metered(prep.price(fact.price_id)):
            continue
        groups.setdefault(fact.invoice_id, []).append(fact)
    periods: list[tuple[int, ItemKey]] = []
    for facts in groups.values():
        starts = [f.period_start for f in facts if f.period_start is not None]
        if not starts:
            continue
        key = _key((f.price_id or "", f.quantity if f.quantity is not None else 1) for f in facts)
        periods.append((min(starts), key))
    periods.sort()
    changes: list[tuple[int, ItemKey]] = []
    for moment, key in periods:
        if not changes or changes[-1][1] != key:
            changes.append((moment, key))
    # A change billed with prorations happened at the proration's start, not at the next
    # period's: move each invoiced change back to the latest proration within the period.
    prorated.sort()
    for index in range(1, len(changes)):
        moment, key = changes[index]
        floor = changes[index - 1][0]
        pos = bisect.bisect_left(prorated, moment) - 1
        if pos >= 0 and prorated[pos] > floor:
            changes[index] = (prorated[pos], key)
    if not changes:
        return [(prep.start, prep.current_key)]
    if changes[-1][1] != prep.current_key:
        last = changes[-1][0]
        moment = observed_at if observed_at is not None else last
        pos = bisect.bisect_right(prorated, last)
        if pos < len(prorated):
            moment = prorated[pos]
        changes.append((min(max(moment, last), now), prep.current_key))
    if changes[0][0] > prep.start:
        changes[0] = (prep.start, changes[0][1])
    return changes


def _status_points(
    prep: _Sub,
    lines: Sequence[LineFact],
    observed_at: int | None,
    now: int,
    rules: RevenueRules,
) -> list[tuple[int, str]]:
    """(moment, status) changes over the subscription's life, as far as objects tell."""
    sub = prep.sub
    status = str(sub.get("status") or "")
    seen = observed_at if observed_at is not None else now
    points: list[tuple[int, str]] = []
    trial_start, trial_end = _ts(sub.get("trial_start")), _ts(sub.get("trial_end"))
    ended = _ts(sub.get("ended_at"))
    if ended is None and status in ("canceled", "incomplete_expired"):
        ended = _ts(sub.get("canceled_at")) or seen
    if status in ("incomplete", "incomplete_expired"):
        points.append((prep.start, "incomplete"))
    elif trial_start is not None and trial_end is not None and trial_end > trial_start:
        points.append((min(prep.start, trial_start), "trialing"))
        if status != "trialing":
            paid_after = any(
                f.invoice_status == "paid"
                and not f.proration
                and f.period_start is not None
                and f.period_start >= trial_end - DAY
                for f in lines
            )
            # Stripe pauses a trial that ended without a payment method (trial_settings).
            after = "paused" if status == "paused" and not paid_after else "active"
            points.append((trial_end, after))
    else:
        points.append((prep.start, "active"))
    live = points[-1][1]
    if status == "past_due" and live == "active":
        points.append((max(seen, points[-1][0]), "past_due"))
    elif status in ("unpaid", "paused") and live == "active":
        points.append((max(seen, points[-1][0]), status))
    elif status == "active" and sub.get("pause_collection"):
        points.append((max(seen, points[-1][0]), "collection_paused"))
    request = _ts(sub.get("canceled_at"))
    scheduled = bool(sub.get("cancel_at_period_end")) or _ts(sub.get("cancel_at")) is not None
    if (
        rules.churn_at_cancellation_request
        and request is not None
        and (scheduled or (ended is not None and request < ended))
    ):
        points.append((max(request, points[0][0]), "cancellation_requested"))
    if ended is not None:
        final = "incomplete_expired" if status == "incomplete_expired" else "canceled"
        points.append((max(ended, points[0][0]), final))
    points.sort(key=lambda p: p[0])
    return [(moment, state) for moment, state in points if moment <= now]


def _discounts_at(entries: Sequence[Any], moment: int) -> tuple[Any, ...]:
    kept = []
    for entry in entries:
        if isinstance(entry, Mapping):
            start = _ts(entry.get("start"))
            end = _ts(entry.get("end"))
            if (start is not None and start > moment) or (end is not None and end <= moment):
                continue
        kept.append(entry)
    return tuple(kept)


def _discount_moments(sub: StripeObject, customer: StripeObject | None) -> list[int]:
    moments: list[int] = []
    entries: list[Any] = list(subscription_discount_entries(sub))
    for item in subscription_items(sub):
        listed = item.get("discounts")
        if isinstance(listed, list):
            entries.extend(listed)
    if customer is not None and isinstance(customer.get("discount"), Mapping):
        entries.append(customer["discount"])
    for entry in entries:
        if isinstance(entry, Mapping):
            for name in ("start", "end"):
                value = _ts(entry.get(name))
                if value is not None:
                    moments.append(value)
    return moments


def subscription_segments(
    subscription: StripeObject,
    *,
    lines: Sequence[LineFact] = (),
    prices: Mapping[str, Mapping[str, Any]] | None = None,
    customer: StripeObject | None = None,
    rules: RevenueRules | None = None,
    now: int,
    observed_at: int | None = None,
    current_mrr: tuple[int, Fraction] | None = None,
) -> list[Segment]:
    """The subscription's MRR over its life, as consecutive segments up to ``now``.

    ``subscription`` is stored as Stripe sends it (items with prices; discounts with
    coupons expanded to count them); ``lines`` are the `LineFact` of its invoices (any
    other subscription's are ignored); ``prices`` resolves prices by id (with tiers) for
    periods billed at prices the subscription no longer has. ``current_mrr`` (MRR, exact)
    saves recomputing today's figure when the caller has it.
    """
    rules = rules or RevenueRules()
    prep = _prepare(subscription, prices or {})
    if prep is None:
        return []
    # An object dated after the compute moment (clock skew, a simulated clock) exists now.
    prep.start = min(prep.start, now)
    items = _item_changes(prep, lines, observed_at, now)
    states = _status_points(prep, lines, observed_at, now, rules)
    moments = {prep.start, *(m for m, _ in items), *(m for m, _ in states)}
    moments.update(m for m in _discount_moments(prep.sub, customer) if prep.start <= m <= now)
    ordered = sorted(m for m in moments if prep.start <= m <= now)
    if current_mrr is None:
        explanation = explain_subscription_mrr(prep.sub, customer=customer, at=now, rules=rules)
        current_mrr = (explanation.mrr, explanation.exact)
    cache: dict[tuple[Any, ...], tuple[int, Fraction, str | None]] = {}
    if _counts_now(prep.sub, rules):
        # Same items and discounts as today: today's figure (saves an explanation).
        cache[(prep.current_key, _marker(prep, now, customer)[0])] = (*current_mrr, None)
    segments: list[Segment] = []
    item_moments = [m for m, _ in items]
    state_moments = [m for m, _ in states]
    for index, moment in enumerate(ordered):
        end = ordered[index + 1] if index + 1 < len(ordered) else None
        key = items[max(0, bisect.bisect_right(item_moments, moment) - 1)][1]
        state_pos = bisect.bisect_right(state_moments, moment) - 1
        state = states[state_pos][1] if state_pos >= 0 else "active"
        if end is None:
            # The stretch holding now: today's figure, exactly as the profile shows it.
            mrr, exact, note = current_mrr[0], current_mrr[1], None
        elif state not in COUNTING_STATUSES:
            mrr, exact, note = 0, Fraction(0), None
        else:
            mrr, exact, note = _mrr_at(prep, key, moment, customer, rules, cache)
        segment = Segment(moment, end, prep.currency, mrr, exact, state, note)
        if segments and (segments[-1].mrr, segments[-1].exact, segments[-1].status) == (
            mrr,
            exact,
            state,
        ):
            last = segments[-1]
            segments[-1] = Segment(last.start, end, last.currency, mrr, exact, last.status, note)
        else:
            segments.append(segment)
    return segments


def _marker(
    prep: _Sub, moment: int, customer: StripeObject | None
) -> tuple[tuple[Any, ...], tuple[Any, ...], StripeObject | None]:
    """The discounts in force at ``moment``: an identity for caching, and the objects."""
    discounts = _discounts_at(subscription_discount_entries(prep.sub), moment)
    own_customer = None
    if customer is not None:
        own = customer.get("discount")
        own_customer = (
            dict(customer, discount=None)
            if isinstance(own, Mapping) and not _discounts_at([own], moment)
            else customer
        )
    item_discounts = [
        _discounts_at(item.get("discounts") or [], moment) for item in prep.current_items.values()
    ]
    entries = (
        *discounts,
        *(() if own_customer is None else (own_customer.get("discount"),)),
        *(d for listed in item_discounts for d in listed),
    )
    marker = tuple((e.get("id") if isinstance(e, Mapping) else e) for e in entries)
    return marker, discounts, own_customer


def _counts_now(sub: StripeObject, rules: RevenueRules) -> bool:
    if sub.get("status") not in COUNTING_STATUSES or sub.get("pause_collection"):
        return False
    scheduled = bool(sub.get("cancel_at_period_end")) or sub.get("cancel_at") is not None
    return not (rules.churn_at_cancellation_request and scheduled)


def _mrr_at(
    prep: _Sub,
    key: ItemKey,
    moment: int,
    customer: StripeObject | None,
    rules: RevenueRules,
    cache: dict[tuple[Any, ...], tuple[int, Fraction, str | None]],
) -> tuple[int, Fraction, str | None]:
    sub = prep.sub
    marker, discounts, own_customer = _marker(prep, moment, customer)
    cached = cache.get((key, marker))
    if cached is not None:
        return cached
    items: list[dict[str, Any]] = []
    missing: list[str] = []
    for price_id, quantity in key:
        current = prep.current_items.get(price_id)
        price = prep.price(price_id)
        if price is None:
            missing.append(price_id)
            continue
        item: dict[str, Any] = {
            "id": object_id(current.get("id")) if current is not None else None,
            "object": "subscription_item",
            "price": price if price.get("object") != "plan" else None,
            "plan": price if price.get("object") == "plan" else None,
            "quantity": quantity,
            "discounts": list(_discounts_at(current.get("discounts") or [], moment))
            if current is not None
            else [],
            "tax_rates": current.get("tax_rates") if current is not None else [],
        }
        items.append(item)
    synthetic = {
        **sub,
        "status": "active",
        "pause_collection": None,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "discount": None,
        "discounts": list(discounts),
        "items": {"object": "list", "data": items, "has_more": False},
        "currency": prep.currency or sub.get("currency"),
    }
    try:
        explanation = explain_subscription_mrr(
            synthetic, customer=own_customer, at=moment, rules=rules
        )
        result = (
            explanation.mrr,
            explanation.exact,
            f"price {', '.join(missing)} not in the store: not counted" if missing else None,
        )
    except StripeShapeError as exc:
        result = (0, Fraction(0), f"could not be priced: {exc}")
    cache[(key, marker)] = result
    return result


# -- one customer -----------------------------------------------------------------------


@dataclass(frozen=True)
class MovementRecord:
    """One change of a customer's MRR in one currency (rule 11), with its ARR after."""

    at: int
    currency: str
    before: int
    after: int
    kind: Movement
    arr_before: int
    arr_after: int

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass(frozen=True)
class CustomerHistory:
    """A customer's reconstructed revenue: per-subscription segments and its movements."""

    segments: dict[str, list[Segment]]
    movements: list[MovementRecord]

    def mrr_at(self, moment: int) -> dict[str, int]:
        """MRR per currency at ``moment`` (the sum of the subscriptions' segments)."""
        totals: dict[str, int] = {}
        for segments in self.segments.values():
            for segment in segments:
                if segment.start <= moment and (segment.end is None or moment < segment.end):
                    if segment.exact > 0:
                        totals[segment.currency] = totals.get(segment.currency, 0) + segment.mrr
                    break
        return totals


def customer_history(
    subscriptions: Iterable[StripeObject],
    *,
    lines: Sequence[LineFact] = (),
    prices: Mapping[str, Mapping[str, Any]] | None = None,
    customer: StripeObject | None = None,
    rules: RevenueRules | None = None,
    now: int,
    observed_at: Mapping[str, int] | None = None,
    current: Mapping[str, tuple[int, Fraction]] | None = None,
) -> CustomerHistory:
    """Segments of every subscription and the customer's movements up to ``now``.

    ``observed_at`` and ``current`` are per subscription id (see `subscription_segments`).
    Movements are per currency; the first rise of a customer that had MRR before in any
    currency is a reactivation.
    """
    rules = rules or RevenueRules()
    by_sub: dict[str, list[Segment]] = {}
    by_subscription_lines: dict[str | None, list[LineFact]] = {}
    for fact in lines:
        by_subscription_lines.setdefault(fact.subscription_id, []).append(fact)
    for subscription in subscriptions:
        sub_id = object_id(subscription.get("id"))
        if sub_id is None:
            continue
        by_sub[sub_id] = subscription_segments(
            subscription,
            lines=by_subscription_lines.get(sub_id, ()),
            prices=prices,
            customer=customer,
            rules=rules,
            now=now,
            observed_at=(observed_at or {}).get(sub_id),
            current_mrr=(current or {}).get(sub_id),
        )
    return CustomerHistory(by_sub, _movements(by_sub))


def _movements(by_sub: Mapping[str, list[Segment]]) -> list[MovementRecord]:
    # Sweep every boundary; totals follow rule 10 (rounded per subscription, summed).
    deltas: dict[int, list[tuple[str, int, int, bool]]] = {}
    for segments in by_sub.values():
        previous: Segment | None = None
        for segment in segments:
            before_mrr = previous.mrr if previous and previous.exact > 0 else 0
            before_arr = previous.arr if previous and previous.exact > 0 else 0
            now_mrr = segment.mrr if segment.exact > 0 else 0
            now_arr = segment.arr if segment.exact > 0 else 0
            if (now_mrr, now_arr) != (before_mrr, before_arr):
                deltas.setdefault(segment.start, []).append(
                    (segment.currency, now_mrr - before_mrr, now_arr - before_arr, True)
                )
            previous = segment
    mrr: dict[str, int] = {}
    arr: dict[str, int] = {}
    paid_before = False
    records: list[MovementRecord] = []
    for moment in sorted(deltas):
        changed: dict[str, tuple[int, int]] = {}
        for currency, d_mrr, d_arr, _ in deltas[moment]:
            a, b = changed.get(currency, (0, 0))
            changed[currency] = (a + d_mrr, b + d_arr)
        any_paid = paid_before
        for currency in sorted(changed):
            d_mrr, d_arr = changed[currency]
            before, arr_before = mrr.get(currency, 0), arr.get(currency, 0)
            after, arr_after = before + d_mrr, arr_before + d_arr
            mrr[currency], arr[currency] = after, arr_after
            kind = classify_movement(before, after, paid_before=paid_before)
            if kind is None:
                continue
            records.append(
                MovementRecord(moment, currency, before, after, kind, arr_before, arr_after)
            )
            any_paid = any_paid or after > 0
        paid_before = any_paid
    return records


# -- many customers: the series ---------------------------------------------------------


@dataclass(frozen=True)
class RateTable:
    """Exchange rates into one reporting currency, possibly changing over time.

    ``rates`` is a list of (from moment, `RevenueRules` carrying the rates in force from
    then on), oldest first; the first applies before its moment too. A single table is a
    list of one.
    """

    rates: tuple[tuple[int, RevenueRules], ...]

    def __post_init__(self) -> None:
        if not self.rates:
            raise InvalidInput("a rate table needs at least one set of rates")
        currencies = {rules.reporting_currency for _, rules in self.rates}
        if None in currencies or len(currencies) != 1:
            raise InvalidInput("every rate set must name the same reporting_currency")

    @property
    def currency(self) -> str:
        currency = self.rates[0][1].reporting_currency
        assert currency is not None
        return currency

    def at(self, moment: int) -> RevenueRules:
        chosen = self.rates[0][1]
        for start, rules in self.rates:
            if start <= moment:
                chosen = rules
        return chosen

    def convert(self, amounts: Mapping[str, int], moment: int) -> int:
        from stripesync.revenue.mrr import to_reporting_currency

        return to_reporting_currency({k: v for k, v in amounts.items() if v}, self.at(moment))


@dataclass
class PeriodFigures:
    """One day or month of the series (figures at its end, movements during it)."""

    period: str
    start: int
    end: int
    mrr: dict[str, int]
    arr: dict[str, int]
    paying_customers: int
    #: Movement totals by kind and currency; amounts ≥ 0 (churn and contraction too).
    movements: dict[str, dict[str, int]]
    #: Customers (per kind) that moved in the period.
    movement_counts: dict[str, int]
    reporting_mrr: int | None = None
    reporting_arr: int | None = None
    #: Movements converted at the period's rates, and the exchange-rate effect apart.
    reporting_movements: dict[str, int] | None = None
    fx: int | None = None
    arpu: Fraction | None = None
    arpu_by_currency: dict[str, Fraction] = field(default_factory=dict)
    subscriber_churn_rate: Fraction | None = None
    gross_mrr_churn_rate: Fraction | None = None
    net_mrr_churn_rate: Fraction | None = None


@dataclass
class RevenueReport:
    granularity: Granularity
    reporting_currency: str | None
    periods: list[PeriodFigures]
    #: Subscriber churn rate over the 30 days before the report's end (rule 12).
    churn_rate_30d: Fraction | None = None


def _period_bounds(moment: int, granularity: Granularity) -> tuple[str, int, int]:
    day = datetime.fromtimestamp(moment, UTC).date()
    if granularity == "day":
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        return day.isoformat(), start, start + DAY
    first = date(day.year, day.month, 1)
    nxt = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    start = int(datetime(first.year, first.month, 1, tzinfo=UTC).timestamp())
    end = int(datetime(nxt.year, nxt.month, 1, tzinfo=UTC).timestamp())
    return f"{first.year:04d}-{first.month:02d}", start, end


def revenue_report(
    movements: Iterable[tuple[Any, MovementRecord]],
    *,
    start: int,
    end: int,
    granularity: Granularity = "month",
    rates: RateTable | None = None,
) -> RevenueReport:
    """Series from customers' movement records: ``(customer key, record)`` pairs, any order.

    Periods cover ``[start, end)``; figures are those at each period's end (MRR, ARR,
    paying customers, ARPU = MRR ÷ paying customers), movements those within it. With
    ``rates``, everything is also in the reporting currency: movements converted at the
    period's rates, and the change that comes only from rates moving kept apart as ``fx``
    (rule 8). Churn rates follow rule 12 per period: subscribers churned ÷ (paying at
    the start + new in the period); gross and net MRR churn in the reporting currency when
    set, else only when one currency is involved.
    """
    if granularity not in ("day", "month"):
        raise InvalidInput(f"granularity is {granularity!r}; use 'day' or 'month'")
    if end <= start:
        raise InvalidInput("the report's end must come after its start")
    ordered = sorted(movements, key=lambda pair: (pair[1].at, str(pair[0]), pair[1].currency))
    state: dict[Any, dict[str, tuple[int, int]]] = {}
    totals_mrr: dict[str, int] = {}
    totals_arr: dict[str, int] = {}
    paying: set[Any] = set()
    ever_paid: set[Any] = set()
    periods: list[PeriodFigures] = []
    index = 0

    def apply(customer: Any, record: MovementRecord) -> None:
        current = state.setdefault(customer, {})
        old_mrr, old_arr = current.get(record.currency, (0, 0))
        current[record.currency] = (record.after, record.arr_after)
        totals_mrr[record.currency] = totals_mrr.get(record.currency, 0) + record.after - old_mrr
        totals_arr[record.currency] = (
            totals_arr.get(record.currency, 0) + record.arr_after - old_arr
        )
        if any(m > 0 for m, _ in current.values()):
            paying.add(customer)
            ever_paid.add(customer)
        else:
            paying.discard(customer)

    while index < len(ordered) and ordered[index][1].at < start:
        apply(*ordered[index])
        index += 1
    moment = start
    while moment < end:
        label, p_start, p_end = _period_bounds(moment, granularity)
        p_start = max(p_start, start)
        p_end = min(p_end, end)
        mrr_start = dict(totals_mrr)
        paying_start = len(paying)
        kinds: dict[str, dict[str, int]] = {}
        counts: Counter[str] = Counter()
        reporting_moves: Counter[str] = Counter()
        churned: set[Any] = set()
        new_subscribers: set[Any] = set()
        while index < len(ordered) and ordered[index][1].at < p_end:
            customer, record = ordered[index]
            was_paying = customer in paying
            had_paid = customer in ever_paid
            apply(customer, record)
            amount = abs(record.delta)
            by_currency = kinds.setdefault(record.kind, {})
            by_currency[record.currency] = by_currency.get(record.currency, 0) + amount
            counts[record.kind] += 1
            if rates is not None:
                reporting_moves[record.kind] += abs(
                    rates.convert({record.currency: record.after}, record.at)
                    - rates.convert({record.currency: record.before}, record.at)
                )
            if was_paying and customer not in paying:
                churned.add(customer)
            if not was_paying and customer in paying and not had_paid:
                new_subscribers.add(customer)
            index += 1
        figures = PeriodFigures(
            period=label,
            start=p_start,
            end=p_end,
            mrr={k: v for k, v in sorted(totals_mrr.items()) if v},
            arr={k: v for k, v in sorted(totals_arr.items()) if v},
            paying_customers=len(paying),
            movements=kinds,
            movement_counts=dict(counts),
        )
        figures.subscriber_churn_rate = subscriber_churn_rate(
            len(churned), paying_start, len(new_subscribers)
        )
        figures.arpu_by_currency = _arpu_by_currency(state, totals_mrr)
        if rates is not None:
            figures.reporting_mrr = rates.convert(totals_mrr, p_end - 1)
            figures.reporting_arr = rates.convert(totals_arr, p_end - 1)
            figures.reporting_movements = dict(reporting_moves)
            figures.fx = rates.convert(mrr_start, p_end - 1) - rates.convert(mrr_start, p_start)
            figures.arpu = Fraction(figures.reporting_mrr, len(paying)) if paying else None
            base = rates.convert(mrr_start, p_start)
            _rates(figures, dict(reporting_moves), base)
        elif len({c for by in kinds.values() for c in by} | set(mrr_start)) == 1:
            currency = next(iter({c for by in kinds.values() for c in by} | set(mrr_start)))
            one = {kind: by.get(currency, 0) for kind, by in kinds.items()}
            _rates(figures, one, mrr_start.get(currency, 0))
            total = totals_mrr.get(currency, 0)
            figures.arpu = Fraction(total, len(paying)) if paying else None
        periods.append(figures)
        moment = p_end
    report = RevenueReport(granularity, rates.currency if rates else None, periods)
    report.churn_rate_30d = _churn_30d(ordered, end)
    return report


def _rates(figures: PeriodFigures, moves: Mapping[str, int], base: int) -> None:
    figures.gross_mrr_churn_rate = gross_mrr_churn_rate(
        moves.get("churn", 0), moves.get("contraction", 0), max(base, 0)
    )
    figures.net_mrr_churn_rate = net_mrr_churn_rate(
        moves.get("churn", 0),
        moves.get("contraction", 0),
        moves.get("expansion", 0),
        moves.get("reactivation", 0),
        max(base, 0),
    )


def _arpu_by_currency(
    state: Mapping[Any, Mapping[str, tuple[int, int]]], totals: Mapping[str, int]
) -> dict[str, Fraction]:
    counts: Counter[str] = Counter()
    for per_currency in state.values():
        for currency, (mrr, _) in per_currency.items():
            if mrr > 0:
                counts[currency] += 1
    return {
        currency: Fraction(totals.get(currency, 0), n) for currency, n in sorted(counts.items())
    }


def _churn_30d(ordered: Sequence[tuple[Any, MovementRecord]], end: int) -> Fraction | None:
    """Rule 12's subscriber churn rate over the 30 days before ``end``."""
    window_start = end - 30 * DAY
    state: dict[Any, dict[str, int]] = {}
    paying_at_start: set[Any] = set()
    ever: set[Any] = set()
    churned: set[Any] = set()
    new: set[Any] = set()
    started = False
    for customer, record in ordered:
        if record.at >= end:
            break
        if record.at >= window_start and not started:
            paying_at_start = {c for c, cur in state.items() if any(v > 0 for v in cur.values())}
            started = True
        current = state.setdefault(customer, {})
        was = any(v > 0 for v in current.values())
        current[record.currency] = record.after
        now_paying = any(v > 0 for v in current.values())
        if started:
            if was and not now_paying:
                churned.add(customer)
            if not was and now_paying and customer not in ever:
                new.add(customer)
        if now_paying:
            ever.add(customer)
    if not started:
        paying_at_start = {c for c, cur in state.items() if any(v > 0 for v in cur.values())}
    return subscriber_churn_rate(len(churned), len(paying_at_start), len(new))


def movements_total(records: Iterable[MovementRecord]) -> dict[str, int]:
    """The net MRR per currency the records lead to (a customer's current MRR)."""
    totals: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r.at):
        totals[record.currency] = record.after
    return {k: v for k, v in totals.items() if v}


def round_ratio(value: Fraction | None, digits: int = 4) -> float | None:
    """A rate for display or JSON (the exact Fraction stays the computed value)."""
    if value is None:
        return None
    scale: int = 10**digits
    return round_half_up(value * scale) / scale
