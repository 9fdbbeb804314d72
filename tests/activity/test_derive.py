"""Feed entries from Stripe events: every mapping, both payload shapes, MRR before/after.

Events are built from Stripe's example objects (fixtures3.json) with realistic values, and
old-shape payloads come from the simulator's renderer for API version 2024-06-20, so
the tests pin what an account still on that version would see in its feed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stripesync.activity import (
    ACTIVITY_NAMES,
    CHANGE_KINDS,
    HANDLED_EVENT_TYPES,
    ActivityEvent,
    activity_from_event,
)
from stripesync.errors import InvalidInput
from stripesync.revenue import RevenueRules
from tests.activity.factories import (
    CUSTOMER_ID,
    DAY,
    T0,
    Obj,
    evolve,
    fixture,
    legacy,
    make_charge,
    make_customer,
    make_event,
    make_invoice,
    make_item,
    make_payment_intent,
    make_price,
    make_product,
    make_refund,
    make_subscription,
    roll_period,
    updated_event,
    with_items,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "activity.md"
TRIAL_END = T0 + 14 * DAY


def names(entries: list[ActivityEvent]) -> list[str]:
    return [entry.name for entry in entries]


def only(entries: list[ActivityEvent]) -> ActivityEvent:
    assert len(entries) == 1, names(entries)
    return entries[0]


def trialing_sub(**kwargs: Any) -> Obj:
    price = make_price(2000)
    item = make_item(price, period=(T0, TRIAL_END))
    return make_subscription([item], status="trialing", trial_days=14, **kwargs)


def converted(sub: Obj) -> Obj:
    return roll_period(evolve(sub, status="active"), TRIAL_END, TRIAL_END + 31 * DAY)


# -- the entry itself -------------------------------------------------------------------


def test_every_entry_carries_time_ids_and_keys() -> None:
    sub = make_subscription()
    event = make_event("customer.subscription.created", sub, created=T0 + 5)
    entry = only(activity_from_event(event))
    assert entry.name == "Subscription created"
    assert entry.key == "subscription_created"
    assert entry.occurred_at == T0 + 5
    assert entry.occurred_at_iso == "2025-01-06T09:00:05Z"
    assert (entry.event_id, entry.event_type) == (event["id"], "customer.subscription.created")
    assert (entry.object_type, entry.object_id, entry.customer_id) == (
        "subscription",
        sub["id"],
        CUSTOMER_ID,
    )
    assert entry.reconstructed is False
    assert entry.livemode is False
    assert entry.source == "stripe"
    assert entry.dedupe_key == f"{event['id']}/subscription_created/{sub['id']}"
    assert entry.fact_key == f"{sub['id']}/subscription_created"


def test_entries_are_frozen_and_json_ready() -> None:
    entry = only(activity_from_event(make_event("charge.succeeded", make_charge(), created=T0)))
    with pytest.raises(AttributeError):
        entry.name = "Charge failed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.attributes["amount"] = 1  # type: ignore[index]
    encoded = json.loads(json.dumps(entry.as_dict()))
    assert encoded["attributes"]["amount"] == 2000
    assert encoded["fact_key"] == entry.fact_key


def test_a_replayed_event_yields_identical_entries() -> None:
    sub = trialing_sub()
    event = updated_event(
        "customer.subscription.updated", sub, converted(sub), created=TRIAL_END, event_id="evt_A"
    )
    first, again = activity_from_event(event), activity_from_event(json.loads(json.dumps(event)))
    assert first == again
    assert [e.dedupe_key for e in first] == ["evt_A/trial_converted/" + sub["id"]]


def test_unknown_and_silent_types_give_nothing() -> None:
    assert activity_from_event(make_event("plan.created", fixture("plan"), created=T0)) == []
    assert activity_from_event(make_event("payout.paid", fixture("payout"), created=T0)) == []
    sub = trialing_sub()
    # The reminder is the automations' job, computed from current state (docs/activity.md).
    will_end = make_event("customer.subscription.trial_will_end", sub, created=TRIAL_END - 3 * DAY)
    assert activity_from_event(will_end) == []


def test_not_an_event_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidInput, match=r"not its data\.object"):
        activity_from_event(make_subscription())
    broken = make_event("charge.succeeded", make_charge(), created=T0)
    del broken["data"]["object"]
    with pytest.raises(InvalidInput, match=r"lacks an id, a created time or data\.object"):
        activity_from_event(broken)


def test_an_entry_with_an_unknown_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not a known pair"):
        ActivityEvent(
            name="Subscription renewed",
            key="subscription_renewed",
            occurred_at=T0,
            customer_id=None,
            object_type="subscription",
            object_id=None,
            event_id=None,
            event_type=None,
            reconstructed=False,
            dedupe_key="x",
            fact_key="y",
        )


# -- customers --------------------------------------------------------------------------


def test_customer_created_updated_deleted() -> None:
    customer = make_customer()
    created = only(activity_from_event(make_event("customer.created", customer, created=T0)))
    assert created.name == "Customer created"
    assert created.customer_id == created.object_id == CUSTOMER_ID
    assert created.attributes["email"] == "ada@lovelace.example"
    assert created.attributes["city"] == "London"
    assert created.attributes["postal_code"] == "SW1Y 4JH"
    assert created.attributes["created"] == "2025-01-06T09:00:00Z"
    assert created.fact_key == f"{CUSTOMER_ID}/customer_created"

    moved = evolve(customer, email="ada@analytical.example")
    updated = only(
        activity_from_event(updated_event("customer.updated", customer, moved, created=T0 + DAY))
    )
    assert updated.name == "Customer updated"
    assert updated.attributes["email"] == "ada@analytical.example"
    assert updated.attributes["changed_fields"] == ["email"]
    assert updated.fact_key == f"{CUSTOMER_ID}/customer_updated@{T0 + DAY}"

    deleted = only(activity_from_event(make_event("customer.deleted", moved, created=T0 + 9 * DAY)))
    assert deleted.name == "Customer deleted"
    assert deleted.fact_key == f"{CUSTOMER_ID}/customer_deleted"


# -- subscriptions: creation and trials -------------------------------------------------------


def test_subscription_created_active_carries_the_seed_attributes() -> None:
    product = make_product("Starter")
    price = make_price(2500, product=product)
    sub = make_subscription([make_item(price, quantity=4)])
    entry = only(activity_from_event(make_event("customer.subscription.created", sub, created=T0)))
    attrs = entry.attributes
    assert attrs["value"] == sub["id"]
    assert attrs["change_type"] == price["id"]
    assert attrs["product_names"] == ["Starter"]
    assert attrs["state"] == "active"
    assert attrs["activated_at"] == "2025-01-06T09:00:00Z"
    assert attrs["current_term_start"] == "2025-01-06T09:00:00Z"
    assert attrs["current_term_end"] == "2025-02-06T09:00:00Z"
    assert attrs["is_trial"] is False
    assert attrs["trial_end_action"] is None
    assert (attrs["mrr"], attrs["arr"]) == (10000, 120000)  # MRR.md: 2500 × 4
    assert (attrs["cancelled_at"], attrs["expires_at"]) == (None, None)


def test_product_names_come_from_the_lookup_when_prices_are_not_expanded() -> None:
    sub = make_subscription()
    store = {"prod_RdQmStarterPlan": make_product("Starter")}
    entry = only(
        activity_from_event(
            make_event("customer.subscription.created", sub, created=T0), lookup=store.get
        )
    )
    assert entry.attributes["product_names"] == ["Starter"]


def test_the_customers_discount_reaches_mrr_through_the_lookup() -> None:
    coupon = fixture("coupon")
    coupon.update(id="HALF", percent_off=50, amount_off=None, duration="forever", currency=None)
    discount = fixture("discount")
    discount.update(id="di_half", customer=CUSTOMER_ID, end=None, subscription=None)
    discount["source"]["coupon"] = coupon
    customer = evolve(make_customer(), discount=discount)
    event = make_event("customer.subscription.created", make_subscription(), created=T0)
    assert only(activity_from_event(event)).attributes["mrr"] == 2000
    with_discount = only(activity_from_event(event, customer_lookup={CUSTOMER_ID: customer}.get))
    assert with_discount.attributes["mrr"] == 1000


def test_a_trialing_subscription_starts_a_trial() -> None:
    sub = trialing_sub(trial_end_behavior="pause")
    entries = activity_from_event(make_event("customer.subscription.created", sub, created=T0))
    assert names(entries) == ["Subscription created", "New trial"]
    trial = entries[1]
    assert trial.attributes["is_trial"] is True
    assert trial.attributes["trial_started_at"] == "2025-01-06T09:00:00Z"
    assert trial.attributes["trial_ends_at"] == "2025-01-20T09:00:00Z"
    assert trial.attributes["trial_end_action"] == "pause"
    assert trial.attributes["mrr"] == 0  # MRR.md rule 1: trials count 0
    assert trial.fact_key == f"{sub['id']}/new_trial@{T0}"


def test_trial_converted_when_the_trial_becomes_active() -> None:
    sub = trialing_sub()
    event = updated_event(
        "customer.subscription.updated", sub, converted(sub), created=TRIAL_END + 2
    )
    entry = only(activity_from_event(event))
    assert entry.name == "Trial converted"
    assert (entry.attributes["mrr_before"], entry.attributes["mrr_after"]) == (0, 2000)
    assert entry.attributes["activated_at"] == "2025-01-20T09:00:00Z"
    assert entry.fact_key == f"{sub['id']}/trial_converted@{T0}"


@pytest.mark.parametrize("status", ["past_due", "unpaid", "incomplete"])
def test_trial_expired_when_it_ends_without_payment(status: str) -> None:
    sub = trialing_sub()
    event = updated_event(
        "customer.subscription.updated",
        sub,
        evolve(converted(sub), status=status),
        created=TRIAL_END,
    )
    entry = only(activity_from_event(event))
    assert entry.name == "Trial expired"
    assert entry.fact_key == f"{sub['id']}/trial_expired@{T0}"


def test_a_trial_paused_for_lack_of_a_payment_method_expires_and_pauses() -> None:
    sub = trialing_sub(trial_end_behavior="pause")
    paused = evolve(sub, status="paused")
    event = updated_event("customer.subscription.updated", sub, paused, created=TRIAL_END)
    entries = activity_from_event(event)
    assert names(entries) == ["Trial expired", "Subscription change"]
    assert entries[1].attributes["change_kinds"] == ["pause"]


def test_trial_cancelled_when_cancelled_before_its_end() -> None:
    sub = trialing_sub()
    gone = evolve(sub, status="canceled", canceled_at=T0 + 3 * DAY, ended_at=T0 + 3 * DAY)
    updated = updated_event("customer.subscription.updated", sub, gone, created=T0 + 3 * DAY)
    deleted = make_event("customer.subscription.deleted", gone, created=T0 + 3 * DAY)
    from_update, from_delete = (
        only(activity_from_event(updated)),
        only(activity_from_event(deleted)),
    )
    assert from_update.name == from_delete.name == "Trial cancelled"
    # Two events, one fact: the store keeps one entry (docs/activity.md, dedupe rule).
    assert from_update.fact_key == from_delete.fact_key == f"{sub['id']}/trial_cancelled@{T0}"
    assert from_update.dedupe_key != from_delete.dedupe_key


def test_a_trial_that_ends_with_its_subscription_expired_or_was_cancelled() -> None:
    sub = trialing_sub(trial_end_behavior="cancel")
    # end_behavior cancel: Stripe ends the subscription at the trial's end.
    expired = evolve(sub, status="canceled", canceled_at=TRIAL_END, ended_at=TRIAL_END + 40)
    entry = only(
        activity_from_event(make_event("customer.subscription.deleted", expired, created=TRIAL_END))
    )
    assert entry.name == "Trial expired"
    # The customer asked to cancel during the trial; it ran out its days.
    requested = evolve(
        sub, status="canceled", cancel_at_period_end=True, canceled_at=T0 + DAY, ended_at=TRIAL_END
    )
    entry = only(
        activity_from_event(
            make_event("customer.subscription.deleted", requested, created=TRIAL_END)
        )
    )
    assert entry.name == "Trial cancelled"


def test_subscription_cancelled_after_the_trial_or_without_one() -> None:
    sub = converted(trialing_sub())
    gone = evolve(
        sub,
        status="canceled",
        canceled_at=TRIAL_END + 20 * DAY,
        ended_at=TRIAL_END + 20 * DAY,
        cancellation_details={
            "comment": None,
            "feedback": "too_expensive",
            "reason": "cancellation_requested",
        },
    )
    deleted = make_event("customer.subscription.deleted", gone, created=TRIAL_END + 20 * DAY)
    entry = only(activity_from_event(deleted))
    assert entry.name == "Subscription cancelled"
    assert entry.attributes["state"] == "canceled"
    assert entry.attributes["cancelled_at"] == entry.attributes["expires_at"]
    assert entry.attributes["cancellation_reason"] == "cancellation_requested"
    assert (entry.attributes["mrr_before"], entry.attributes["mrr_after"]) == (None, 0)
    assert entry.fact_key == f"{sub['id']}/subscription_cancelled"
    # With the stored object Stripe's deletion carries no previous state for, MRR before is known.
    with_previous = only(activity_from_event(deleted, previous_object=sub))
    assert with_previous.attributes["mrr_before"] == 2000
    # A previous status decides over the object's dates.
    trialing = only(activity_from_event(deleted, previous_object=evolve(sub, status="trialing")))
    assert trialing.name == "Trial expired"


def test_an_incomplete_subscription_that_expires_is_cancelled() -> None:
    sub = make_subscription(status="incomplete")
    gone = evolve(sub, status="incomplete_expired", ended_at=T0 + DAY)
    event = updated_event("customer.subscription.updated", sub, gone, created=T0 + DAY)
    assert names(activity_from_event(event)) == ["Subscription cancelled"]


def test_a_trial_added_to_a_running_subscription_is_a_new_trial() -> None:
    sub = make_subscription()
    trialing = evolve(sub, status="trialing", trial_start=T0 + DAY, trial_end=T0 + 8 * DAY)
    event = updated_event("customer.subscription.updated", sub, trialing, created=T0 + DAY)
    entry = only(activity_from_event(event))
    assert entry.name == "New trial"
    assert entry.fact_key == f"{sub['id']}/new_trial@{T0 + DAY}"


# -- subscriptions: changes ---------------------------------------------------------------------


def change(before: Obj, after: Obj, *, created: int = T0 + 10 * DAY) -> ActivityEvent:
    event = updated_event("customer.subscription.updated", before, after, created=created)
    entries = [e for e in activity_from_event(event) if e.name == "Subscription change"]
    return only(entries)


def mrr(entry: ActivityEvent) -> tuple[int, int]:
    return entry.attributes["mrr_before"], entry.attributes["mrr_after"]


def test_upgrade_and_downgrade_by_the_mrr_of_the_new_price() -> None:
    basic, pro = make_price(2000), make_price(5000)
    sub = make_subscription([make_item(basic, item_id="si_main")])
    upgraded = with_items(sub, [make_item(pro, item_id="si_main")])
    entry = change(sub, upgraded)
    assert entry.attributes["change_kind"] == "upgrade"
    assert entry.attributes["change_kinds"] == ["upgrade"]
    assert mrr(entry) == (2000, 5000)
    assert entry.attributes["previous_plan_ids"] == [basic["id"]]
    assert entry.attributes["plan_ids"] == [pro["id"]]
    assert entry.fact_key == f"{sub['id']}/subscription_change.upgrade@{T0 + 10 * DAY}"

    entry = change(upgraded, sub)
    assert entry.attributes["change_kinds"] == ["downgrade"]
    assert mrr(entry) == (5000, 2000)


def test_a_new_price_at_the_same_mrr_is_a_plan_change() -> None:
    sub = make_subscription([make_item(make_price(2000))])
    same = with_items(sub, [make_item(make_price(2000))])
    assert change(sub, same).attributes["change_kinds"] == ["plan"]


def test_quantity() -> None:
    price = make_price(2000)
    sub = make_subscription([make_item(price, quantity=1, item_id="si_seats")])
    more = with_items(sub, [make_item(price, quantity=3, item_id="si_seats")])
    entry = change(sub, more)
    assert entry.attributes["change_kinds"] == ["quantity"]
    assert entry.attributes["previous_quantity"] == 1
    assert entry.attributes["quantity"] == 3
    assert mrr(entry) == (2000, 6000)


def test_interval_from_monthly_to_yearly() -> None:
    sub = make_subscription([make_item(make_price(2000))])
    yearly = with_items(sub, [make_item(make_price(20000, interval="year"))])
    entry = change(sub, yearly)
    # 20000 a year is 1667 a month (MRR.md rule 5): a yearly plan at a discount.
    assert entry.attributes["change_kinds"] == ["interval", "downgrade"]
    assert entry.attributes["change_kind"] == "interval"
    assert mrr(entry) == (2000, 1667)


def test_pause_and_resume_collection() -> None:
    sub = make_subscription()
    paused = evolve(sub, pause_collection={"behavior": "void", "resumes_at": None})
    entry = change(sub, paused)
    assert entry.attributes["change_kinds"] == ["pause"]
    assert mrr(entry) == (2000, 0)  # MRR.md rule 2
    entry = change(paused, sub)
    assert entry.attributes["change_kinds"] == ["resume"]
    assert mrr(entry) == (0, 2000)


def test_a_paused_subscription_that_resumes_after_its_expired_trial() -> None:
    sub = evolve(trialing_sub(), status="paused")
    resumed = converted(sub)
    entry = change(sub, resumed)
    assert entry.attributes["change_kinds"] == ["resume"]
    assert entry.attributes["previous_state"] == "paused"


def test_scheduled_cancellation_and_its_withdrawal() -> None:
    sub = make_subscription()
    period_end = T0 + 31 * DAY
    asked = T0 + 10 * DAY
    scheduled = evolve(sub, cancel_at_period_end=True, cancel_at=period_end, canceled_at=asked)
    entry = change(sub, scheduled, created=asked)
    assert entry.attributes["change_kinds"] == ["scheduled_cancellation"]
    assert entry.attributes["expires_at"] == "2025-02-06T09:00:00Z"
    assert entry.attributes["cancelled_at"] == "2025-01-16T09:00:00Z"
    assert mrr(entry) == (2000, 2000)  # counts until the status changes (MRR.md rule 3)
    # Keyed by the request time Stripe keeps in canceled_at, as reconstruction sees it.
    assert entry.fact_key == f"{sub['id']}/subscription_change.scheduled_cancellation@{asked}"

    classic = RevenueRules(churn_at_cancellation_request=True)
    event = updated_event("customer.subscription.updated", sub, scheduled, created=asked)
    entry = only(activity_from_event(event, rules=classic))
    assert mrr(entry) == (2000, 0)

    withdrawn = evolve(scheduled, cancel_at_period_end=False, cancel_at=None, canceled_at=None)
    entry = change(scheduled, withdrawn, created=asked + DAY)
    assert entry.attributes["change_kinds"] == ["cancellation_withdrawn"]


def test_scheduling_a_cancellation_for_a_date() -> None:
    sub = make_subscription()
    scheduled = evolve(sub, cancel_at=T0 + 60 * DAY, canceled_at=T0 + 2 * DAY)
    entry = change(sub, scheduled)
    assert entry.attributes["change_kinds"] == ["scheduled_cancellation"]
    assert entry.attributes["expires_at"] == "2025-03-07T09:00:00Z"


def test_a_status_change_with_nothing_else_is_a_status_change() -> None:
    sub = make_subscription()
    entry = change(sub, evolve(sub, status="past_due"))
    assert entry.attributes["change_kinds"] == ["status"]
    assert entry.attributes["previous_state"] == "active"
    assert entry.attributes["state"] == "past_due"


def test_several_changes_in_one_update_make_one_entry() -> None:
    price = make_price(2000)
    sub = make_subscription([make_item(price, quantity=1, item_id="si_a")])
    after = evolve(
        with_items(sub, [make_item(price, quantity=2, item_id="si_a")]),
        cancel_at_period_end=True,
        cancel_at=T0 + 31 * DAY,
        canceled_at=T0 + 5 * DAY,
    )
    entry = change(sub, after)
    assert entry.attributes["change_kinds"] == ["scheduled_cancellation", "quantity"]
    assert entry.fact_key.endswith(f"subscription_change.scheduled_cancellation@{T0 + 5 * DAY}")
    assert set(entry.attributes["change_kinds"]) <= set(CHANGE_KINDS)


def test_a_period_roll_over_or_metadata_change_is_not_a_feed_entry() -> None:
    sub = make_subscription()
    renewed = roll_period(sub, T0 + 31 * DAY, T0 + 59 * DAY)
    assert (
        activity_from_event(
            updated_event("customer.subscription.updated", sub, renewed, created=T0 + 31 * DAY)
        )
        == []
    )
    tagged = evolve(sub, metadata={"seats_note": "annual review"})
    assert (
        activity_from_event(
            updated_event("customer.subscription.updated", sub, tagged, created=T0 + DAY)
        )
        == []
    )
    # An update without previous_attributes (hand-made or truncated) cannot be compared.
    assert activity_from_event(make_event("customer.subscription.updated", sub, created=T0)) == []


def test_previous_object_stands_in_for_missing_previous_attributes() -> None:
    price = make_price(2000)
    sub = make_subscription([make_item(price, item_id="si_x")])
    more = with_items(sub, [make_item(price, quantity=5, item_id="si_x")])
    event = make_event("customer.subscription.updated", more, created=T0 + DAY)
    entry = only(activity_from_event(event, previous_object=sub))
    assert entry.attributes["change_kinds"] == ["quantity"]
    assert mrr(entry) == (2000, 10000)


def test_paused_and_resumed_events_match_the_update_they_repeat() -> None:
    sub = trialing_sub(trial_end_behavior="pause")
    paused = evolve(sub, status="paused")
    update = updated_event("customer.subscription.updated", sub, paused, created=TRIAL_END)
    pause = make_event("customer.subscription.paused", paused, created=TRIAL_END)
    from_update = [e for e in activity_from_event(update) if e.name == "Subscription change"]
    from_pause = only(activity_from_event(pause, previous_object=sub))
    assert from_pause.attributes["change_kinds"] == ["pause"]
    assert from_pause.fact_key == only(from_update).fact_key

    resumed = converted(paused)
    entry = only(
        activity_from_event(
            make_event("customer.subscription.resumed", resumed, created=T0 + 30 * DAY)
        )
    )
    assert entry.attributes["change_kind"] == "resume"
    assert entry.attributes["mrr_after"] == 2000


# -- both shapes --------------------------------------------------------------------------------


def comparable(entries: list[ActivityEvent]) -> list[tuple[Any, ...]]:
    """Entries minus ``changed_fields``, which names fields as the payload's version did
    (an old invoice also reports its ``paid`` flag changing)."""
    return [
        (
            e.name,
            e.fact_key,
            e.customer_id,
            tuple(
                sorted((k, json.dumps(v)) for k, v in e.attributes.items() if k != "changed_fields")
            ),
        )
        for e in entries
    ]


def story_events() -> list[Obj]:
    """One subscription's life as Stripe reports it, current shape."""
    basic, pro = make_price(2000, price_id="price_basic"), make_price(5000, price_id="price_pro")
    sub = make_subscription(
        [make_item(basic, item_id="si_1", period=(T0, TRIAL_END))], status="trialing", trial_days=14
    )
    active = converted(sub)
    upgraded = with_items(
        active, [make_item(pro, item_id="si_1", period=(TRIAL_END, TRIAL_END + 31 * DAY))]
    )
    renewed = roll_period(upgraded, TRIAL_END + 31 * DAY, TRIAL_END + 59 * DAY)
    paused = evolve(
        renewed, pause_collection={"behavior": "mark_uncollectible", "resumes_at": None}
    )
    scheduled = evolve(
        renewed,
        cancel_at_period_end=True,
        cancel_at=TRIAL_END + 59 * DAY,
        canceled_at=TRIAL_END + 40 * DAY,
    )
    ended = evolve(scheduled, status="canceled", ended_at=TRIAL_END + 59 * DAY)
    invoice = make_invoice(active, created=TRIAL_END, status="open")
    paid = evolve(invoice, status="paid", amount_paid=2000, amount_remaining=0)
    paid["status_transitions"]["paid_at"] = TRIAL_END + 3600
    return [
        make_event("customer.subscription.created", sub, created=T0),
        updated_event("customer.subscription.updated", sub, active, created=TRIAL_END),
        make_event("invoice.created", invoice, created=TRIAL_END),
        updated_event("invoice.paid", invoice, paid, created=TRIAL_END + 3600),
        updated_event("customer.subscription.updated", active, upgraded, created=TRIAL_END + DAY),
        updated_event(
            "customer.subscription.updated", upgraded, renewed, created=TRIAL_END + 31 * DAY
        ),
        updated_event(
            "customer.subscription.updated", renewed, paused, created=TRIAL_END + 35 * DAY
        ),
        updated_event(
            "customer.subscription.updated", paused, renewed, created=TRIAL_END + 36 * DAY
        ),
        updated_event(
            "customer.subscription.updated", renewed, scheduled, created=TRIAL_END + 40 * DAY
        ),
        make_event("customer.subscription.deleted", ended, created=TRIAL_END + 59 * DAY),
    ]


def test_legacy_payloads_give_the_same_feed() -> None:
    events = story_events()
    current = [e for event in events for e in activity_from_event(event)]
    old = [e for event in events for e in activity_from_event(legacy(event))]
    assert legacy(events[1])["data"]["object"]["current_period_end"] == TRIAL_END + 31 * DAY
    assert names(current) == [
        "Subscription created",
        "New trial",
        "Trial converted",
        "Invoice created",
        "Invoice paid",
        "Subscription change",
        "Subscription change",
        "Subscription change",
        "Subscription change",
        "Subscription cancelled",
    ]
    kinds = [e.attributes["change_kinds"] for e in current if e.name == "Subscription change"]
    assert kinds == [["upgrade"], ["pause"], ["resume"], ["scheduled_cancellation"]]
    assert comparable(old) == comparable(current)


def test_legacy_invoice_reads_its_subscription_and_paid_flag() -> None:
    sub = make_subscription()
    invoice = make_invoice(sub, status="paid")
    entry = only(activity_from_event(legacy(make_event("invoice.paid", invoice, created=T0))))
    assert entry.attributes["subscription_id"] == sub["id"]
    assert entry.attributes["paid"] is True


# -- payments -------------------------------------------------------------------------------------


def test_charge_succeeded_and_failed() -> None:
    ok = make_charge(amount=4900, payment_intent="pi_ok")
    entry = only(activity_from_event(make_event("charge.succeeded", ok, created=T0)))
    assert entry.name == "Charge succeeded"
    assert entry.attributes["status"] == "succeeded"
    assert entry.attributes["amount"] == 4900
    assert entry.attributes["amount_refunded"] == 0
    assert entry.attributes["currency"] == "usd"
    assert entry.attributes["description"] == "Subscription creation"
    assert entry.attributes["receipt_email"] == "ada@lovelace.example"  # billing email fallback
    assert entry.attributes["payment_intent"] == "pi_ok"
    assert entry.fact_key == f"{ok['id']}/charge_succeeded"

    bad = make_charge(status="failed")
    entry = only(activity_from_event(make_event("charge.failed", bad, created=T0)))
    assert entry.name == "Charge failed"
    assert entry.attributes["failure_code"] == "card_declined"
    assert entry.attributes["failure_message"] == "Your card was declined."


def test_refund_issued_from_every_event_that_reports_it_is_one_fact() -> None:
    charge = make_charge(amount=3000)
    refund = make_refund(charge, amount=1000)
    store = {charge["id"]: charge}
    created = only(
        activity_from_event(
            make_event("refund.created", refund, created=T0 + DAY), lookup=store.get
        )
    )
    assert created.name == "Refund issued"
    assert created.customer_id == CUSTOMER_ID  # through its charge
    assert created.attributes["amount"] == 1000
    assert created.attributes["reason"] == "requested_by_customer"
    assert created.attributes["charge"] == charge["id"]

    updated = only(
        activity_from_event(make_event("charge.refund.updated", refund, created=T0 + DAY + 60))
    )
    assert updated.fact_key == created.fact_key == f"{refund['id']}/refund_issued"

    refunded = make_charge(amount=3000, refunds=[refund], charge_id=charge["id"])
    event = updated_event("charge.refunded", charge, refunded, created=T0 + DAY)
    from_charge = only(activity_from_event(event))
    assert from_charge.fact_key == created.fact_key
    assert from_charge.customer_id == CUSTOMER_ID


def test_charge_refunded_without_embedded_refunds_leaves_it_to_refund_created() -> None:
    charge = make_charge()
    refunded = evolve(charge, amount_refunded=2000, refunded=True)
    assert activity_from_event(updated_event("charge.refunded", charge, refunded, created=T0)) == []


def test_a_second_refund_on_a_charge_adds_only_itself() -> None:
    charge = make_charge(amount=3000)
    first, second = make_refund(charge, amount=1000), make_refund(charge, amount=500)
    before = make_charge(amount=3000, refunds=[first], charge_id=charge["id"])
    after = make_charge(amount=3000, refunds=[second, first], charge_id=charge["id"])
    entry = only(activity_from_event(updated_event("charge.refunded", before, after, created=T0)))
    assert entry.object_id == second["id"]


def test_a_failed_refund() -> None:
    refund = make_refund(make_charge(), status="failed")
    refund["failure_reason"] = "expired_or_canceled_card"
    entry = only(activity_from_event(make_event("refund.failed", refund, created=T0)))
    assert entry.name == "Refund failed"
    assert entry.attributes["failure_reason"] == "expired_or_canceled_card"


def test_payment_intents() -> None:
    created = make_payment_intent(status="requires_payment_method", amount=1099)
    entry = only(activity_from_event(make_event("payment_intent.created", created, created=T0)))
    assert entry.name == "Payment intent created"
    assert entry.attributes == {
        "amount": 1099,
        "amount_received": 0,
        "currency": "usd",
        "status": "requires_payment_method",
        "description": "Subscription update",
    }
    done = evolve(created, status="succeeded", amount_received=1099)
    entry = only(activity_from_event(make_event("payment_intent.succeeded", done, created=T0 + 9)))
    assert entry.name == "Payment intent succeeded"
    assert entry.fact_key == f"{created['id']}/payment_intent_succeeded"


# -- invoices -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "status", "name", "instance"),
    [
        ("invoice.created", "draft", "Invoice created", False),
        ("invoice.updated", "draft", "Invoice updated", True),
        ("invoice.finalized", "open", "Invoice updated", True),
        ("invoice.paid", "paid", "Invoice paid", False),
        ("invoice.payment_succeeded", "paid", "Invoice paid", False),
        ("invoice.voided", "void", "Invoice voided", False),
        ("invoice.marked_uncollectible", "uncollectible", "Invoice marked uncollectible", False),
    ],
)
def test_invoice_events(event_type: str, status: str, name: str, instance: bool) -> None:
    sub = make_subscription()
    invoice = make_invoice(sub, status=status, total=4500, number="7FE1103-0042")
    entry = only(activity_from_event(make_event(event_type, invoice, created=T0 + 7)))
    assert entry.name == name
    assert entry.customer_id == CUSTOMER_ID
    attrs = entry.attributes
    assert attrs["number"] == "7FE1103-0042"
    assert attrs["status"] == status
    assert (attrs["total"], attrs["subtotal"], attrs["amount_due"]) == (4500, 4500, 4500)
    assert attrs["amount_paid"] == (4500 if status == "paid" else 0)
    assert attrs["paid"] is (status == "paid")
    assert attrs["collection_method"] == "charge_automatically"
    assert attrs["subscription_id"] == sub["id"]
    key = entry.key
    assert entry.fact_key == f"{invoice['id']}/{key}" + (f"@{T0 + 7}" if instance else "")


def test_invoice_paid_and_payment_succeeded_are_one_fact() -> None:
    invoice = make_invoice(make_subscription())
    paid = only(activity_from_event(make_event("invoice.paid", invoice, created=T0)))
    succeeded = only(
        activity_from_event(make_event("invoice.payment_succeeded", invoice, created=T0 + 1))
    )
    assert paid.fact_key == succeeded.fact_key


def test_each_failed_payment_attempt_is_its_own_fact() -> None:
    invoice = make_invoice(make_subscription(), status="open", attempt_count=1)
    invoice["next_payment_attempt"] = T0 + 3 * DAY
    first = only(activity_from_event(make_event("invoice.payment_failed", invoice, created=T0)))
    assert first.name == "Invoice payment failed"
    assert first.attributes["next_payment_attempt"] == "2025-01-09T09:00:00Z"
    replay = only(activity_from_event(make_event("invoice.payment_failed", invoice, created=T0)))
    retry = only(
        activity_from_event(
            make_event(
                "invoice.payment_failed", evolve(invoice, attempt_count=2), created=T0 + 3 * DAY
            )
        )
    )
    assert first.fact_key == replay.fact_key == f"{invoice['id']}/invoice_payment_failed@1"
    assert retry.fact_key == f"{invoice['id']}/invoice_payment_failed@2"


# -- documentation --------------------------------------------------------------------------------


def test_docs_map_every_handled_event_type_and_every_name() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for event_type in HANDLED_EVENT_TYPES:
        assert f"`{event_type}`" in text, f"docs/activity.md does not map {event_type}"
    for name in ACTIVITY_NAMES.values():
        assert name in text, f"docs/activity.md does not name {name!r}"
    for kind in CHANGE_KINDS:
        assert f"`{kind}`" in text, f"docs/activity.md does not describe change kind {kind}"
    assert re.search(r"## Dedupe rule", text)
