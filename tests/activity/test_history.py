"""Reconstructed history: the feed rebuilt from objects, ordered, keyed like live entries.

The central property: for every fact both paths can see, the reconstructed entry and the
entry derived from Stripe's event carry the same ``fact_key``, so an import that overlaps
live webhooks never doubles a line of the feed.
"""

from __future__ import annotations

import copy

import pytest

from stripesync.activity import (
    ActivityEvent,
    activity_from_event,
    reconstruct_activity,
    trial_outcome,
)
from tests.activity.factories import (
    CUSTOMER_ID,
    DAY,
    T0,
    Obj,
    evolve,
    legacy,
    make_charge,
    make_customer,
    make_event,
    make_invoice,
    make_item,
    make_payment_intent,
    make_price,
    make_refund,
    make_subscription,
    roll_period,
    updated_event,
)

TRIAL_END = T0 + 14 * DAY
ASKED = TRIAL_END + 40 * DAY
ENDED = TRIAL_END + 62 * DAY


class Story:
    """A customer who trials, converts, pays, gets a refund, schedules a cancellation and
    leaves: the objects as stored at the end, and the events Stripe sent on the way."""

    def __init__(self) -> None:
        self.customer = make_customer(created=T0 - 600)
        price = make_price(2000, price_id="price_starter_monthly")
        item = make_item(price, item_id="si_story", period=(T0, TRIAL_END))
        self.trial = make_subscription(
            [item], status="trialing", trial_days=14, subscription_id="sub_story"
        )
        self.active = roll_period(
            evolve(self.trial, status="active"), TRIAL_END, TRIAL_END + 31 * DAY
        )
        self.scheduled = evolve(
            roll_period(self.active, TRIAL_END + 31 * DAY, ENDED),
            cancel_at_period_end=True,
            cancel_at=ENDED,
            canceled_at=ASKED,
        )
        self.ended = evolve(self.scheduled, status="canceled", ended_at=ENDED)

        self.trial_invoice = make_invoice(
            self.trial, total=0, created=T0, billing_reason="subscription_create", paid_at=T0
        )
        self.first_invoice = make_invoice(self.active, created=TRIAL_END, paid_at=TRIAL_END + 3600)
        self.intent = make_payment_intent(created=TRIAL_END + 3590)
        self.charge = make_charge(created=TRIAL_END + 3600, payment_intent=self.intent["id"])
        self.refund = make_refund(self.charge, amount=500, created=TRIAL_END + 5 * DAY)
        self.failed = make_charge(status="failed", created=TRIAL_END + 31 * DAY)
        self.void = make_invoice(self.active, status="void", created=TRIAL_END + 31 * DAY)

    def objects(self) -> dict[str, list[Obj]]:
        return {
            "subscriptions": [self.ended],
            "invoices": [self.trial_invoice, self.first_invoice, self.void],
            "charges": [self.charge, self.failed],
            "refunds": [self.refund],
            "payment_intents": [self.intent],
        }

    def reconstruct(self, since: int | None = None) -> list[ActivityEvent]:
        return reconstruct_activity(self.customer, **self.objects(), since=since)

    def events(self) -> list[Obj]:
        open_invoice = evolve(self.first_invoice, status="open", amount_paid=0)
        open_invoice["status_transitions"]["paid_at"] = None
        draft = make_invoice(
            self.active, status="draft", created=TRIAL_END + 31 * DAY, invoice_id=self.void["id"]
        )
        return [
            make_event("customer.created", self.customer, created=T0 - 600),
            make_event("customer.subscription.created", self.trial, created=T0),
            make_event("invoice.created", self.trial_invoice, created=T0),
            make_event("invoice.paid", self.trial_invoice, created=T0),
            updated_event(
                "customer.subscription.updated", self.trial, self.active, created=TRIAL_END + 1
            ),
            make_event("invoice.created", open_invoice, created=TRIAL_END + 1),
            make_event("payment_intent.created", self.intent, created=TRIAL_END + 3590),
            make_event("charge.succeeded", self.charge, created=TRIAL_END + 3600),
            make_event("payment_intent.succeeded", self.intent, created=TRIAL_END + 3600),
            updated_event(
                "invoice.paid", open_invoice, self.first_invoice, created=TRIAL_END + 3601
            ),
            make_event("refund.created", self.refund, created=TRIAL_END + 5 * DAY),
            make_event("charge.failed", self.failed, created=TRIAL_END + 31 * DAY),
            make_event("invoice.created", draft, created=TRIAL_END + 31 * DAY),
            make_event("invoice.voided", self.void, created=TRIAL_END + 31 * DAY + 7200),
            updated_event(
                "customer.subscription.updated", self.active, self.scheduled, created=ASKED + 1
            ),
            make_event("customer.subscription.deleted", self.ended, created=ENDED + 2),
        ]


def names(entries: list[ActivityEvent]) -> list[str]:
    return [entry.name for entry in entries]


def test_the_story_is_rebuilt_in_order() -> None:
    entries = Story().reconstruct()
    assert names(entries) == [
        "Customer created",
        "Subscription created",
        "New trial",
        "Invoice created",
        "Invoice paid",
        "Trial converted",
        "Invoice created",
        "Payment intent created",
        "Charge succeeded",
        "Payment intent succeeded",
        "Invoice paid",
        "Refund issued",
        "Invoice created",
        "Charge failed",
        "Invoice voided",
        "Subscription change",
        "Subscription cancelled",
    ]
    times = [entry.occurred_at for entry in entries]
    assert times == sorted(times)
    assert all(entry.reconstructed and entry.event_id is None for entry in entries)
    assert all(entry.customer_id == CUSTOMER_ID for entry in entries)
    assert all(entry.dedupe_key == f"history/{entry.fact_key}" for entry in entries)


def test_reconstructed_attributes() -> None:
    by_name = {entry.name: entry for entry in Story().reconstruct()}
    converted = by_name["Trial converted"]
    assert converted.occurred_at == TRIAL_END
    assert (converted.attributes["mrr_before"], converted.attributes["mrr_after"]) == (0, 2000)
    change = by_name["Subscription change"]
    assert change.occurred_at == ASKED
    assert change.attributes["change_kinds"] == ["scheduled_cancellation"]
    assert change.attributes["mrr_before"] == change.attributes["mrr_after"] == 2000
    cancelled = by_name["Subscription cancelled"]
    assert cancelled.occurred_at == ENDED
    assert (cancelled.attributes["mrr_before"], cancelled.attributes["mrr_after"]) == (2000, 0)
    assert cancelled.attributes["state"] == "canceled"
    assert by_name["Refund issued"].attributes["amount"] == 500
    assert by_name["Charge failed"].attributes["failure_code"] == "card_declined"


def test_reconstructed_and_live_entries_of_one_fact_share_their_fact_key() -> None:
    story = Story()
    live = [entry for event in story.events() for entry in activity_from_event(event)]
    rebuilt = story.reconstruct()
    live_keys = {entry.fact_key for entry in live}
    assert {entry.fact_key for entry in rebuilt} <= live_keys
    # ... and the other way round, for every kind reconstruction can produce.
    rebuildable = {entry.key for entry in rebuilt}
    assert {e.fact_key for e in live if e.key in rebuildable} == {e.fact_key for e in rebuilt}


def test_the_persistence_rule_keeps_one_entry_per_fact() -> None:
    """What the store does (docs/activity.md): skip an entry whose dedupe key or fact key it
    already holds. Live events replayed twice, then the import: each fact once."""
    story = Story()
    stored: dict[str, ActivityEvent] = {}
    seen_dedupe: set[str] = set()
    arrivals = [
        *[e for event in story.events() for e in activity_from_event(event)],
        *[e for event in story.events() for e in activity_from_event(event)],
        *story.reconstruct(),
    ]
    for entry in arrivals:
        if entry.dedupe_key in seen_dedupe or entry.fact_key in stored:
            continue
        seen_dedupe.add(entry.dedupe_key)
        stored[entry.fact_key] = entry
    assert sorted(e.name for e in stored.values()) == sorted(names(story.reconstruct()))
    assert not any(e.reconstructed for e in stored.values())


def test_since_keeps_the_sync_window() -> None:
    entries = Story().reconstruct(since=TRIAL_END + 31 * DAY)
    assert names(entries) == [
        "Invoice created",
        "Charge failed",
        "Invoice voided",
        "Subscription change",
        "Subscription cancelled",
    ]
    assert Story().reconstruct(since=ENDED + 1) == []


def test_legacy_objects_give_the_same_history() -> None:
    story = Story()
    current = story.reconstruct()
    old = reconstruct_activity(
        legacy(story.customer),
        **{kind: [legacy(obj) for obj in objs] for kind, objs in story.objects().items()},
        since=None,
    )
    assert legacy(story.ended)["current_period_end"] == ENDED
    assert [(e.name, e.fact_key, e.occurred_at) for e in old] == [
        (e.name, e.fact_key, e.occurred_at) for e in current
    ]


def test_duplicates_and_embedded_refunds_count_once() -> None:
    story = Story()
    objects = story.objects()
    charged = make_charge(
        created=story.charge["created"],
        payment_intent=story.intent["id"],
        refunds=[story.refund],
        charge_id=story.charge["id"],
    )
    objects["charges"] = [charged, copy.deepcopy(charged), story.failed]
    objects["invoices"] = objects["invoices"] * 2
    objects["subscriptions"] = objects["subscriptions"] * 2
    entries = reconstruct_activity(story.customer, **objects, since=None)
    assert names(entries) == names(story.reconstruct())
    objects["refunds"] = []
    assert names(reconstruct_activity(story.customer, **objects, since=None)) == names(
        story.reconstruct()
    )


def test_a_refund_without_a_customer_gets_its_charges() -> None:
    charge = make_charge(customer="cus_other")
    refund = make_refund(charge)
    entries = reconstruct_activity(make_customer(), [], [], [charge], [refund], [], since=None)
    assert [e.customer_id for e in entries if e.name == "Refund issued"] == ["cus_other"]


def test_a_deleted_customer_has_no_created_entry() -> None:
    stub = {"id": CUSTOMER_ID, "object": "customer", "deleted": True}
    assert reconstruct_activity(stub, [], [], [], [], [], since=None) == []


def test_failed_refunds_and_uncollectible_invoices() -> None:
    charge = make_charge()
    refund = make_refund(charge, status="failed")
    sub = make_subscription()
    lost = make_invoice(sub, status="uncollectible", created=T0 + DAY)
    entries = reconstruct_activity(
        make_customer(), [], [lost], [charge], [refund], [], since=T0 + 1
    )
    assert names(entries) == [
        "Invoice created",
        "Refund issued",
        "Refund failed",
        "Invoice marked uncollectible",
    ]
    assert entries[-1].occurred_at == T0 + DAY + 7200


# -- trials -----------------------------------------------------------------------------------


def trial(**changes: object) -> Obj:
    item = make_item(make_price(2000), period=(T0, TRIAL_END))
    sub = make_subscription([item], status="trialing", trial_days=14)
    return evolve(sub, **changes)


def test_a_running_trial_has_no_outcome_yet() -> None:
    assert trial_outcome(trial()) is None
    assert trial_outcome(make_subscription()) is None  # never had one


@pytest.mark.parametrize(
    ("changes", "invoice_status", "expected"),
    [
        ({"status": "active"}, "paid", ("trial_converted", TRIAL_END)),
        ({"status": "active"}, None, ("trial_converted", TRIAL_END)),
        ({"status": "past_due"}, "open", ("trial_expired", TRIAL_END)),
        ({"status": "paused"}, None, ("trial_expired", TRIAL_END)),
        (
            {"status": "canceled", "canceled_at": T0 + 3 * DAY, "ended_at": T0 + 3 * DAY},
            None,
            ("trial_cancelled", T0 + 3 * DAY),
        ),
        (
            {"status": "canceled", "canceled_at": TRIAL_END, "ended_at": TRIAL_END},
            None,
            ("trial_expired", TRIAL_END),
        ),
        (
            {
                "status": "canceled",
                "cancel_at_period_end": True,
                "canceled_at": T0 + DAY,
                "ended_at": TRIAL_END,
            },
            None,
            ("trial_cancelled", TRIAL_END),
        ),
        (
            {"status": "canceled", "canceled_at": T0 + 90 * DAY, "ended_at": T0 + 90 * DAY},
            "paid",
            ("trial_converted", TRIAL_END),
        ),
        (
            {"status": "canceled", "canceled_at": T0 + 60 * DAY, "ended_at": T0 + 60 * DAY},
            "uncollectible",
            ("trial_expired", TRIAL_END),
        ),
    ],
    ids=[
        "paid",
        "active-no-invoices",
        "payment-failed",
        "paused",
        "cancelled-mid-trial",
        "ended-with-trial",
        "cancel-requested",
        "converted-then-churned",
        "never-paid-then-churned",
    ],
)
def test_trial_outcomes(
    changes: dict[str, object], invoice_status: str | None, expected: tuple[str, int]
) -> None:
    sub = trial(**changes)
    invoices = []
    if invoice_status is not None:
        invoices = [make_invoice(sub, status=invoice_status, created=TRIAL_END)]
    assert trial_outcome(sub, invoices) == expected


def test_an_ended_trial_is_not_also_a_cancelled_subscription() -> None:
    sub = trial(status="canceled", canceled_at=T0 + 3 * DAY, ended_at=T0 + 3 * DAY)
    entries = reconstruct_activity(make_customer(), [sub], [], [], [], [], since=None)
    assert names(entries)[-1] == "Trial cancelled"
    assert "Subscription cancelled" not in names(entries)


def test_a_trial_that_expired_and_was_cancelled_later_has_both() -> None:
    sub = trial(status="canceled", canceled_at=T0 + 60 * DAY, ended_at=T0 + 60 * DAY)
    unpaid = make_invoice(sub, status="uncollectible", created=TRIAL_END)
    entries = reconstruct_activity(make_customer(), [sub], [unpaid], [], [], [], since=None)
    facts = [(e.name, e.occurred_at) for e in entries if e.object_type == "subscription"]
    assert facts == [
        ("Subscription created", T0),
        ("New trial", T0),
        ("Trial expired", TRIAL_END),
        ("Subscription cancelled", T0 + 60 * DAY),
    ]
