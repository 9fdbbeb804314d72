"""Simulated time through the official SDK: what Stripe does on its own as the clock moves.

Every test runs its own simulator with a frozen clock and moves it only through the
control route (``POST /_sim/advance``), as a test clock is advanced. Each scenario checks
the objects' states and the events Stripe emits for it: their types, their ``created``
(the simulated moment, not the wall clock) and ``request`` (null: nobody asked for them).
Stripe does not promise an order between events of one moment, so the tests compare the
events of each moment as a multiset and check order only where Stripe documents it (an
invoice is created, finalized about an hour later, then paid).
"""

from __future__ import annotations

import calendar
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from stripesync.sim.core import Knobs
from stripesync.sim.resources import subscriptions
from stripesync.sim.server import SimServer
from tests.sim.conftest import Receiver

DAY = 86400
HOUR = 3600
#: 2027-01-31 09:00 UTC: a month-end anchor, so renewals show calendar months (Feb 28).
JAN_31 = calendar.timegm((2027, 1, 31, 9, 0, 0))
#: 2027-01-15 09:00 UTC.
JAN_15 = calendar.timegm((2027, 1, 15, 9, 0, 0))

#: What paying an invoice automatically emits at the moment it is finalized and charged.
PAID_AT_FINALIZATION = Counter(
    {
        "invoice.finalized": 1,
        "payment_intent.created": 1,
        "charge.succeeded": 1,
        "payment_intent.succeeded": 1,
        "invoice.updated": 1,
        "invoice.paid": 1,
        "invoice.payment_succeeded": 1,
    }
)
#: What a declined retry emits (the invoice's one payment intent is confirmed again).
FAILED_ATTEMPT = Counter(
    {
        "charge.failed": 1,
        "payment_intent.payment_failed": 1,
        "invoice.payment_failed": 1,
        "invoice.updated": 1,
    }
)


@pytest.fixture
def sim_server() -> Iterator[SimServer]:
    """A simulator of its own (other tests' timers must not run), clock frozen."""
    with SimServer(knobs=Knobs(rate_limits=False), deliver_webhooks=False) as srv:
        srv.sim.freeze(JAN_31)
        yield srv


# -- helpers ----------------------------------------------------------------------------


def advance(server: SimServer, **body: int) -> int:
    """Move the clock through the control route; returns the new simulated now."""
    response = httpx.post(f"{server.url}/_sim/advance", json=body, timeout=30)
    assert response.status_code == 200, response.text
    now = int(response.json()["now"])
    assert httpx.get(f"{server.url}/_sim/clock").json()["now"] == now
    return now


def events(client: Any, start: int, end: int | None = None) -> list[Any]:
    """Events created in [start, end], oldest first (the list is newest first)."""
    created: dict[str, int] = {"gte": start}
    if end is not None:
        created["lte"] = end
    found = list(
        client.v1.events.list(params={"created": created, "limit": 100}).auto_paging_iter()
    )
    return list(reversed(found))


def types_at(found: list[Any], ts: int) -> Counter[str]:
    return Counter(e.type for e in found if e.created == ts)


def assert_automatic(found: list[Any]) -> None:
    """Stripe's own changes carry no request."""
    for event in found:
        assert event.request.id is None, (event.type, event.request)
        assert event.request.idempotency_key is None, (event.type, event.request)


def index(found: list[Any], event_type: str, obj_id: str | None = None) -> int:
    for i, event in enumerate(found):
        if event.type == event_type and (obj_id is None or event.data.object.id == obj_id):
            return i
    raise AssertionError(f"no {event_type} for {obj_id}: {[e.type for e in found]}")


def price(client: Any, amount: int = 1000) -> Any:
    product = client.v1.products.create(params={"name": "Team plan"})
    return client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    )


def customer(client: Any, card: str | None = "pm_card_visa") -> Any:
    """A customer whose invoices charge ``card`` (none: no payment method at all)."""
    cus = client.v1.customers.create(params={"email": "ada@example.com", "name": "Ada"})
    if card is not None:
        pm = client.v1.payment_methods.attach(card, params={"customer": cus.id})
        cus = client.v1.customers.update(
            cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
        )
    return cus


def period(sub: Any) -> tuple[int, int]:
    item = sub["items"].data[0]
    return item.current_period_start, item.current_period_end


# -- trials -----------------------------------------------------------------------------


def test_trial_will_end_three_days_before_the_trial_ends(sim_server: SimServer) -> None:
    client = sim_server.client()
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer(client).id,
            "items": [{"price": price(client).id}],
            "trial_period_days": 14,
        }
    )
    assert sub.status == "trialing" and sub.trial_end == JAN_31 + 14 * DAY
    warn_at = sub.trial_end - 3 * DAY
    advance(sim_server, to=warn_at - 1)
    assert [e for e in events(client, JAN_31 + 1) if "trial_will_end" in e.type] == []
    advance(sim_server, seconds=1)
    found = events(client, JAN_31 + 1)
    assert [e.type for e in found] == ["customer.subscription.trial_will_end"]
    (warning,) = found
    assert warning.created == warn_at
    assert warning.data.object.id == sub.id and warning.data.object.status == "trialing"
    assert_automatic(found)
    # nothing more until the trial ends, and the warning is never repeated
    advance(sim_server, to=sub.trial_end - 1)
    assert [e.type for e in events(client, JAN_31 + 1)] == ["customer.subscription.trial_will_end"]
    assert client.v1.subscriptions.retrieve(sub.id).status == "trialing"


def test_a_trial_ending_within_three_days_warns_at_once(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, plan = customer(client), price(client)
    short = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": plan.id}], "trial_period_days": 2}
    )
    (warning,) = [e for e in events(client, JAN_31) if "trial_will_end" in e.type]
    assert warning.created == JAN_31 and warning.data.object.id == short.id
    assert warning.request.id is not None  # sent by the request that made the trial
    # a trial shortened to less than three days warns at once too
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": plan.id}], "trial_period_days": 30}
    )
    shortened_at = advance(sim_server, seconds=5 * DAY)
    client.v1.subscriptions.update(sub.id, params={"trial_end": shortened_at + DAY})
    found = [e for e in events(client, shortened_at) if "trial_will_end" in e.type]
    assert [(e.data.object.id, e.created) for e in found] == [(sub.id, shortened_at)]
    assert found[0].data.object.trial_end == shortened_at + DAY
    # a trial extended after its warning is warned about again, three days before its end
    extended_end = shortened_at + 20 * DAY
    client.v1.subscriptions.update(sub.id, params={"trial_end": extended_end})
    advance(sim_server, to=extended_end + HOUR)
    warnings = [
        (e.data.object.id, e.created)
        for e in events(client, shortened_at + 1)
        if "trial_will_end" in e.type
    ]
    assert warnings == [(sub.id, extended_end - 3 * DAY)]
    every = [e.data.object.id for e in events(client, JAN_31) if "trial_will_end" in e.type]
    assert sorted(every) == sorted([short.id, sub.id, sub.id])
    assert client.v1.subscriptions.retrieve(short.id).status == "active"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_trial_end_with_a_card_starts_paying(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus = customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price(client, 1500).id}],
            "trial_period_days": 7,
        }
    )
    end = sub.trial_end
    advance(sim_server, to=end)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active"
    assert period(sub) == (end, calendar.timegm((2027, 3, 7, 9, 0, 0)))
    first = client.v1.invoices.retrieve(sub.latest_invoice)
    # the first paid invoice after a trial is a cycle invoice, a draft for about an hour
    assert first.billing_reason == "subscription_cycle"
    assert first.status == "draft" and first.created == end
    assert first.amount_due == 1500 and first.lines.data[0].period.start == end

    advance(sim_server, to=end + HOUR)
    first = client.v1.invoices.retrieve(first.id)
    assert first.status == "paid" and first.amount_paid == 1500
    assert first.status_transitions.finalized_at == end + HOUR
    assert first.status_transitions.paid_at == end + HOUR
    charges = client.v1.charges.list(params={"customer": cus.id}).data
    assert [(c.status, c.amount, c.paid) for c in charges] == [("succeeded", 1500, True)]
    intents = client.v1.payment_intents.list(params={"customer": cus.id}).data
    assert [(i.status, i.amount_received) for i in intents] == [("succeeded", 1500)]

    found = events(client, JAN_31 + 1)
    assert_automatic(found)
    assert [e.created for e in found] == sorted(e.created for e in found)
    assert types_at(found, end - 3 * DAY) == Counter({"customer.subscription.trial_will_end": 1})
    assert types_at(found, end) == Counter(
        {"customer.subscription.updated": 1, "invoice.created": 1}
    )
    assert types_at(found, end + HOUR) == PAID_AT_FINALIZATION
    updated = found[index(found, "customer.subscription.updated")]
    assert updated.data.object.status == "active"
    assert updated.data.previous_attributes.status == "trialing"
    created = index(found, "invoice.created", first.id)
    assert created < index(found, "invoice.finalized", first.id) < index(found, "invoice.paid")
    assert found[index(found, "charge.succeeded")].data.object.amount == 1500


@pytest.mark.parametrize("behavior", ["cancel", "pause", "create_invoice"])
def test_trial_end_without_a_payment_method(sim_server: SimServer, behavior: str) -> None:
    client = sim_server.client()
    cus = customer(client, card=None)
    sub = client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price(client, 900).id}],
            "trial_period_days": 7,
            "trial_settings": {"end_behavior": {"missing_payment_method": behavior}},
        }
    )
    assert sub.trial_settings.end_behavior.missing_payment_method == behavior
    end = sub.trial_end
    advance(sim_server, to=end + 2 * HOUR)
    sub = client.v1.subscriptions.retrieve(sub.id)
    found = events(client, JAN_31 + 1)
    assert_automatic(found)
    invoices = client.v1.invoices.list(params={"subscription": sub.id}).data
    assert types_at(found, end - 3 * DAY) == Counter({"customer.subscription.trial_will_end": 1})
    if behavior == "cancel":
        assert sub.status == "canceled" and sub.ended_at == end and sub.canceled_at == end
        assert types_at(found, end) == Counter({"customer.subscription.deleted": 1})
        assert len(invoices) == 1  # only the trial's free invoice
    elif behavior == "pause":
        assert sub.status == "paused" and sub.ended_at is None
        assert types_at(found, end) == Counter(
            {"customer.subscription.paused": 1, "customer.subscription.updated": 1}
        )
        updated = found[index(found, "customer.subscription.updated")]
        assert updated.data.previous_attributes.status == "trialing"
        assert len(invoices) == 1  # a paused subscription does not invoice
    else:
        # the invoice is made, finalized an hour later and cannot be paid
        assert types_at(found, end) == Counter(
            {"customer.subscription.updated": 1, "invoice.created": 1}
        )
        assert types_at(found, end + HOUR) == Counter(
            {
                "invoice.finalized": 1,
                "payment_intent.created": 1,
                "invoice.payment_failed": 1,
                "invoice.updated": 1,
                "customer.subscription.updated": 1,
            }
        )
        assert sub.status == "past_due"
        invoice = client.v1.invoices.retrieve(sub.latest_invoice)
        assert invoice.billing_reason == "subscription_cycle"
        assert invoice.status == "open" and invoice.amount_remaining == 900
        assert invoice.attempt_count == 1 and invoice.attempted
        assert client.v1.charges.list(params={"customer": cus.id}).data == []
        last = found[-1]
        assert last.type == "customer.subscription.updated"
        assert last.data.previous_attributes.status == "active"
    # nothing else happens on its own in the following days
    advance(sim_server, seconds=2 * DAY)
    assert events(client, end + 2 * HOUR + 1) == []


def test_paused_after_trial_resumes_through_the_api(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus = customer(client, card=None)
    sub = client.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price(client, 900).id}],
            "trial_period_days": 7,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    )
    end = sub.trial_end
    advance(sim_server, to=end + DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "paused"
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    resumed_at = end + DAY
    sub = client.v1.subscriptions.resume(sub.id)
    assert sub.status == "active"
    assert period(sub) == (resumed_at, calendar.timegm((2027, 3, 8, 9, 0, 0)))
    assert sub.billing_cycle_anchor == resumed_at
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "paid" and invoice.amount_paid == 900
    found = events(client, resumed_at)
    kinds = Counter(e.type for e in found)
    assert kinds["customer.subscription.resumed"] == 1
    unpaused = [e for e in found if e.type == "customer.subscription.updated"]
    assert unpaused[0].data.previous_attributes.status == "paused"
    assert unpaused[0].data.object.status == "active"
    assert kinds["invoice.paid"] == 1 and kinds["charge.succeeded"] == 1
    for event in found:  # a change someone asked for carries the request
        assert event.created == resumed_at
        assert event.request.id is not None and event.request.id.startswith("req_")
    # and from then on it renews like any subscription
    advance(sim_server, to=period(sub)[1] + HOUR)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active" and period(sub)[0] == calendar.timegm((2027, 3, 8, 9, 0, 0))
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "paid"


# -- renewals ---------------------------------------------------------------------------


def test_three_monthly_renewals(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus = customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price(client, 2000).id}]}
    )
    assert sub.status == "active"
    # anchored on the 31st: Feb 28, then back to the 31st, then Apr 30
    ends = [calendar.timegm((2027, m, d, 9, 0, 0)) for m, d in ((2, 28), (3, 31), (4, 30))]
    assert period(sub) == (JAN_31, ends[0])
    start = JAN_31
    numbers = [client.v1.invoices.retrieve(sub.latest_invoice).number]
    for n, renewal in enumerate(ends):
        next_end = ends[n + 1] if n + 1 < len(ends) else calendar.timegm((2027, 5, 31, 9, 0, 0))
        advance(sim_server, to=renewal)
        sub = client.v1.subscriptions.retrieve(sub.id)
        assert sub.status == "active"
        assert period(sub) == (renewal, next_end)
        draft = client.v1.invoices.retrieve(sub.latest_invoice)
        assert draft.status == "draft" and draft.billing_reason == "subscription_cycle"
        assert (draft.period_start, draft.period_end) == (start, renewal)
        line = draft.lines.data[0]
        assert (line.period.start, line.period.end) == (renewal, next_end)
        assert draft.parent.subscription_details.subscription == sub.id

        advance(sim_server, to=renewal + HOUR)
        paid = client.v1.invoices.retrieve(draft.id)
        assert paid.status == "paid" and paid.amount_paid == 2000 and paid.amount_remaining == 0
        numbers.append(paid.number)

        found = events(client, renewal, renewal + HOUR)
        assert_automatic(found)
        assert types_at(found, renewal) == Counter(
            {"customer.subscription.updated": 1, "invoice.created": 1}
        )
        assert types_at(found, renewal + HOUR) == PAID_AT_FINALIZATION
        updated = found[index(found, "customer.subscription.updated")]
        item = updated.data.object["items"].data[0]
        assert (item.current_period_start, item.current_period_end) == (renewal, next_end)
        old_item = updated.data.previous_attributes["items"].data[0]
        assert (old_item.current_period_start, old_item.current_period_end) == (start, renewal)
        assert updated.data.previous_attributes.latest_invoice != draft.id
        assert updated.data.object.latest_invoice == draft.id
        assert index(found, "invoice.created") < index(found, "invoice.finalized")
        assert index(found, "invoice.finalized") < index(found, "invoice.paid")
        intent = found[index(found, "payment_intent.succeeded")].data.object
        assert intent.amount_received == 2000
        start = renewal
    prefix = numbers[0].rsplit("-", 1)[0]
    assert numbers == [f"{prefix}-{n:04d}" for n in range(1, 5)]
    assert len(client.v1.charges.list(params={"customer": cus.id}).data) == 4


def _declining_subscription(client: Any) -> tuple[Any, Any]:
    cus = customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price(client, 2500).id}]}
    )
    assert sub.status == "active"
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": cus.id}
    )
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": failing.id}}
    )
    return cus, sub


def test_declining_card_at_renewal_retries_then_cancels(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, sub = _declining_subscription(client)
    renewal = period(sub)[1]
    attempt = renewal + HOUR
    advance(sim_server, to=attempt)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "past_due"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "open" and invoice.attempt_count == 1
    found = events(client, renewal)
    assert_automatic(found)
    assert types_at(found, attempt) == FAILED_ATTEMPT + Counter(
        {
            "invoice.finalized": 1,
            "payment_intent.created": 1,
            "customer.subscription.updated": 1,
        }
    )
    failed_charge = found[index(found, "charge.failed")].data.object
    assert failed_charge.status == "failed" and failed_charge.failure_code == "card_declined"
    past_due = [e for e in found if e.type == "customer.subscription.updated"][-1]
    assert past_due.data.object.status == "past_due"
    assert past_due.data.previous_attributes.status == "active"

    # each retry follows the schedule, then Billing's default ends the subscription
    attempts = [attempt]
    while invoice.next_payment_attempt is not None:
        assert invoice.next_payment_attempt > attempts[-1]
        attempts.append(invoice.next_payment_attempt)
        advance(sim_server, to=invoice.next_payment_attempt)
        invoice = client.v1.invoices.retrieve(invoice.id)
        assert invoice.attempt_count == len(attempts)
        retry = events(client, attempts[-1], attempts[-1])
        assert_automatic(retry)
        if invoice.next_payment_attempt is not None:
            assert types_at(retry, attempts[-1]) == FAILED_ATTEMPT
            assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert [g // DAY for g in gaps] == list(subscriptions.invoices.RETRY_SCHEDULE_DAYS)
    last = attempts[-1]
    # the last failure, the cancellation, and the invoice's collection stopped
    assert types_at(events(client, last, last), last) == FAILED_ATTEMPT + Counter(
        {"customer.subscription.deleted": 1, "invoice.updated": 1}
    )
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert invoice.status == "open" and invoice.auto_advance is False
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled" and sub.ended_at == last
    assert sub.cancellation_details.reason == "payment_failed"
    charges = client.v1.charges.list(params={"customer": cus.id}).data
    assert [c.status for c in charges] == ["failed"] * len(attempts) + ["succeeded"]
    # every attempt confirmed the invoice's one payment intent again
    assert len({c.payment_intent for c in charges[:-1]}) == 1
    intent = client.v1.payment_intents.retrieve(charges[0].payment_intent)
    assert intent.status == "requires_payment_method" and intent.latest_charge == charges[0].id
    # a canceled subscription renews no more
    advance(sim_server, seconds=40 * DAY)
    assert client.v1.invoices.list(params={"subscription": sub.id}).data[0].id == invoice.id


def test_canceling_a_past_due_subscription_stops_collecting(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus, sub = _declining_subscription(client)
    renewal = period(sub)[1]
    advance(sim_server, to=renewal + HOUR)
    invoice = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert invoice.next_payment_attempt == renewal + HOUR + 3 * DAY
    canceled_at = advance(sim_server, seconds=DAY)
    client.v1.subscriptions.cancel(sub.id)
    # Stripe stops automatic collection of the customer's finalized invoices
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert invoice.status == "open" and invoice.auto_advance is False
    assert invoice.next_payment_attempt is None
    advance(sim_server, seconds=30 * DAY)
    assert client.v1.invoices.retrieve(invoice.id).attempt_count == 1
    assert [c.status for c in client.v1.charges.list(params={"customer": cus.id}).data] == [
        "failed",
        "succeeded",
    ]
    later = events(client, canceled_at + 1)
    assert later == []


def test_exhausted_retries_can_leave_the_subscription_unpaid(
    sim_server: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions, "RETRIES_EXHAUSTED", "unpaid")
    client = sim_server.client()
    _, sub = _declining_subscription(client)
    renewal = period(sub)[1]
    advance(sim_server, to=renewal + HOUR + 20 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "unpaid"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.next_payment_attempt is None and invoice.status == "open"
    statuses = [
        (e.data.previous_attributes.status, e.data.object.status)
        for e in events(client, renewal)
        if e.type == "customer.subscription.updated" and "status" in e.data.previous_attributes
    ]
    assert statuses == [("active", "past_due"), ("past_due", "unpaid")]
    # an unpaid subscription keeps invoicing each period (its invoices are not charged)
    advance(sim_server, to=period(sub)[1] + 2 * HOUR)
    later = client.v1.subscriptions.retrieve(sub.id)
    assert later.status == "unpaid" and later.latest_invoice != invoice.id


# -- scheduled ends ---------------------------------------------------------------------


def test_cancel_at_period_end(sim_server: SimServer) -> None:
    client = sim_server.client()
    sub = client.v1.subscriptions.create(
        params={"customer": customer(client).id, "items": [{"price": price(client).id}]}
    )
    end = period(sub)[1]
    asked_at = advance(sim_server, seconds=5 * DAY)
    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert sub.status == "active" and sub.cancel_at_period_end and sub.cancel_at == end
    request = events(client, asked_at)
    assert [e.type for e in request] == ["customer.subscription.updated"]
    assert request[0].request.id is not None
    assert request[0].data.previous_attributes.cancel_at_period_end is False
    advance(sim_server, to=end - 1)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    advance(sim_server, to=end + 2 * HOUR)
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and ended.ended_at == end
    assert ended.canceled_at == asked_at and ended.cancel_at_period_end is True
    found = events(client, asked_at + 1)
    assert_automatic(found)
    assert [(e.type, e.created) for e in found] == [("customer.subscription.deleted", end)]
    assert found[0].data.object.status == "canceled"
    # no renewal invoice
    assert client.v1.invoices.list(params={"subscription": sub.id}).data[0].id == sub.latest_invoice


def test_cancel_at_in_the_middle_of_a_period(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus = customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price(client, 2800).id}]}
    )
    start, end = period(sub)
    cancel_at = start + 14 * DAY
    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at": cancel_at})
    assert sub.cancel_at == cancel_at and sub.cancel_at_period_end is False
    assert sub.status == "active"
    # a cancel_at before the period ends prorates: the unused half month is credited
    assert (end - start) == 28 * DAY
    (credit,) = client.v1.invoice_items.list(params={"customer": cus.id, "pending": True}).data
    assert credit.amount == -1400 and credit.proration is True
    assert (credit.period.start, credit.period.end) == (cancel_at, end)
    assert credit.parent.subscription_details.subscription == sub.id
    update_events = events(client, JAN_31)
    assert Counter(e.type for e in update_events if e.created == JAN_31 and e.request.id) >= (
        Counter({"customer.subscription.updated": 1, "invoiceitem.created": 1})
    )
    advance(sim_server, to=cancel_at - 1)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    advance(sim_server, to=cancel_at)
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and ended.ended_at == cancel_at
    assert ended.canceled_at == JAN_31
    found = events(client, JAN_31 + 1)
    assert_automatic(found)
    assert [(e.type, e.created) for e in found] == [("customer.subscription.deleted", cancel_at)]
    assert found[0].data.object.cancel_at == cancel_at
    advance(sim_server, to=end + 2 * HOUR)
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == 1


# -- coupons and collection pauses ------------------------------------------------------


def test_repeating_coupon_stops_discounting_when_it_ends(sim_server: SimServer) -> None:
    sim_server.sim.freeze(JAN_15)
    client = sim_server.client()
    coupon = client.v1.coupons.create(
        params={"percent_off": 25, "duration": "repeating", "duration_in_months": 3}
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer(client).id,
            "items": [{"price": price(client, 4000).id}],
            "discounts": [{"coupon": coupon.id}],
        }
    )
    (discount_id,) = sub.discounts
    discount = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["discounts"]})
    ends_at = calendar.timegm((2027, 4, 15, 9, 0, 0))
    assert discount.discounts[0].end == ends_at
    totals = [client.v1.invoices.retrieve(sub.latest_invoice).total]
    found: list[Any] = []
    for _ in range(4):
        renewal = period(client.v1.subscriptions.retrieve(sub.id))[1]
        advance(sim_server, to=renewal + HOUR)
        latest = client.v1.subscriptions.retrieve(sub.id).latest_invoice
        invoice = client.v1.invoices.retrieve(latest)
        assert invoice.status == "paid"
        totals.append(invoice.total)
        found.extend(events(client, renewal, renewal + HOUR))  # events live 30 days
    # three months of 25% off: the first invoice and two renewals
    assert totals == [3000, 3000, 3000, 4000, 4000]
    assert_automatic(found)
    deleted = [e for e in found if e.type == "customer.discount.deleted"]
    assert len(deleted) == 1
    assert deleted[0].created == ends_at and deleted[0].data.object.id == discount_id
    assert deleted[0].data.object.source.coupon == coupon.id
    at_end = [e for e in found if e.created == ends_at and e.type.startswith("customer.subscr")]
    assert len(at_end) == 1 and at_end[0].data.previous_attributes.discounts == [discount_id]
    assert at_end[0].data.object.discounts == []
    assert client.v1.subscriptions.retrieve(sub.id).discounts == []


def test_pause_collection_resumes_at_its_date(sim_server: SimServer) -> None:
    client = sim_server.client()
    cus = customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": price(client, 1200).id}]}
    )
    first_end = period(sub)[1]
    resumes_at = first_end + 10 * DAY
    sub = client.v1.subscriptions.update(
        sub.id, params={"pause_collection": {"behavior": "void", "resumes_at": resumes_at}}
    )
    assert sub.pause_collection.behavior == "void"
    assert sub.pause_collection.resumes_at == resumes_at
    # the renewal during the pause is invoiced and voided, never charged
    advance(sim_server, to=first_end + 2 * HOUR)
    paused_invoice = client.v1.invoices.retrieve(
        client.v1.subscriptions.retrieve(sub.id).latest_invoice
    )
    assert paused_invoice.status == "void"
    advance(sim_server, to=resumes_at)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.pause_collection is None and sub.status == "active"
    found = events(client, resumes_at, resumes_at)
    assert_automatic(found)
    assert [e.type for e in found] == ["customer.subscription.updated"]
    assert found[0].data.previous_attributes.pause_collection.resumes_at == resumes_at
    # the next renewal is collected again
    second_end = period(sub)[1]
    advance(sim_server, to=second_end + HOUR)
    invoice = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert invoice.status == "paid" and invoice.amount_paid == 1200
    assert [c.amount for c in client.v1.charges.list(params={"customer": cus.id}).data] == [
        1200,
        1200,
    ]


# -- the clock itself -------------------------------------------------------------------


def test_the_clock_only_moves_forward(sim_server: SimServer) -> None:
    now = httpx.get(f"{sim_server.url}/_sim/clock").json()["now"]
    assert now == JAN_31
    for body in ({"to": now - 1}, {"seconds": -1}, {"to": "yesterday"}):
        response = httpx.post(f"{sim_server.url}/_sim/advance", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{sim_server.url}/_sim/clock").json()["now"] == now
    assert advance(sim_server, seconds=0) == now
    assert advance(sim_server, to=now + 90) == now + 90
    client = sim_server.client()
    assert client.v1.customers.create().created == now + 90


def test_clock_driven_events_are_delivered_as_signed_webhooks(receiver: Receiver) -> None:
    knobs = Knobs(rate_limits=False, webhook_retry_base_seconds=0.05)
    with SimServer(knobs=knobs) as srv:
        srv.sim.freeze(JAN_31)
        client = srv.client()
        endpoint = client.v1.webhook_endpoints.create(
            params={
                "url": receiver.url,
                "enabled_events": [
                    "customer.subscription.trial_will_end",
                    "invoice.paid",
                    "customer.subscription.updated",
                ],
            }
        )
        sub = client.v1.subscriptions.create(
            params={
                "customer": customer(client).id,
                "items": [{"price": price(client).id}],
                "trial_period_days": 4,
            }
        )
        advance(srv, to=sub.trial_end + HOUR)
        deliveries = receiver.wait_for(4)
        assert len(deliveries) == 4
        received = []
        for headers, body in deliveries:
            event = stripe.Webhook.construct_event(
                body.decode(), headers["Stripe-Signature"], endpoint.secret
            )
            automatic = event.request.id is None
            received.append((event.type, event.created, automatic))
            assert json.loads(body)["data"]["object"]["object"] in ("subscription", "invoice")
        assert sorted(received) == sorted(
            [
                ("invoice.paid", JAN_31, False),  # the trial's free invoice, by the request
                ("customer.subscription.trial_will_end", sub.trial_end - 3 * DAY, True),
                ("customer.subscription.updated", sub.trial_end, True),
                ("invoice.paid", sub.trial_end + HOUR, True),
            ]
        )
