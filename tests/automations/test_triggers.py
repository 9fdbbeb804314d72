"""Automation triggers: when they fire, and idempotency keys that survive replays.

Fact-based triggers are fed with feed entries derived from real Stripe events (built from
fixtures3.json), so a replayed or duplicated event is exercised end to end: same event,
same entries, same keys, one firing.
"""

from __future__ import annotations

import pytest

from stripesync.activity import activity_from_event
from stripesync.automations import (
    TRIGGER_KINDS,
    MrrChange,
    ProfileState,
    TriggerSpec,
    activity_triggers,
    evaluate_triggers,
    membership_triggers,
    reactivation_trigger,
    stage_trigger,
    time_triggers,
)
from stripesync.errors import InvalidInput
from stripesync.segments import membership_events
from tests.activity.factories import (
    CUSTOMER_ID,
    DAY,
    T0,
    evolve,
    legacy,
    make_event,
    make_invoice,
    make_item,
    make_price,
    make_subscription,
    roll_period,
    updated_event,
)

PERIOD_END = T0 + 31 * DAY
TRIAL_END = T0 + 14 * DAY
RENEWAL_7 = TriggerSpec(kind="renewal_upcoming", days_before=7)
TRIAL_3 = TriggerSpec(kind="trial_ending", days_before=3)


def keys(firings: list) -> list[str]:  # type: ignore[type-arg]
    return [f.idempotency_key for f in firings]


# -- specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "renewal_upcoming"}, "renewal_upcoming needs days_before"),
        ({"kind": "trial_ending", "days_before": 0}, "from 1 to 366; got 0"),
        ({"kind": "trial_ending", "days_before": True}, "got True"),
        ({"kind": "cancelled", "days_before": 3}, "cancelled takes no days_before"),
        ({"kind": "cancelled", "segment": "past_due"}, "takes no segment"),
        ({"kind": "segment_entered", "stage": "trial"}, "takes no stage"),
        ({"kind": "invoice_sent"}, "unknown trigger 'invoice_sent'; use one of renewal_upcoming"),
    ],
)
def test_specs_are_validated(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidInput, match=message):
        TriggerSpec(**kwargs)


def test_every_kind_is_listed() -> None:
    assert len(TRIGGER_KINDS) == 9


# -- renewal and trial reminders --------------------------------------------------------------


def test_renewal_upcoming_fires_inside_its_window_with_a_fact_key() -> None:
    sub = make_subscription(subscription_id="sub_renews")
    before = time_triggers(CUSTOMER_ID, [sub], [RENEWAL_7], now=PERIOD_END - 7 * DAY - 1)
    assert before == []
    firings = time_triggers(CUSTOMER_ID, [sub], [RENEWAL_7], now=PERIOD_END - 7 * DAY)
    assert keys(firings) == [f"renewal_upcoming:sub_renews:{PERIOD_END}:7d"]
    firing = firings[0]
    assert (firing.kind, firing.customer_id, firing.subject_id) == (
        "renewal_upcoming",
        CUSTOMER_ID,
        "sub_renews",
    )
    assert firing.occurred_at == PERIOD_END - 7 * DAY
    assert firing.payload["renews_at"] == PERIOD_END
    # Re-evaluated later in the window (a scheduler tick, a restart): the same key.
    later = time_triggers(CUSTOMER_ID, [sub], [RENEWAL_7], now=PERIOD_END - 1)
    assert keys(later) == keys(firings)
    assert time_triggers(CUSTOMER_ID, [sub], [RENEWAL_7], now=PERIOD_END) == []


def test_the_next_period_is_a_new_renewal() -> None:
    sub = make_subscription(subscription_id="sub_renews")
    next_end = PERIOD_END + 28 * DAY
    renewed = roll_period(sub, PERIOD_END, next_end)
    firings = time_triggers(CUSTOMER_ID, [renewed], [RENEWAL_7], now=next_end - DAY)
    assert keys(firings) == [f"renewal_upcoming:sub_renews:{next_end}:7d"]


def test_two_reminders_for_one_renewal_have_two_keys() -> None:
    sub = make_subscription(subscription_id="sub_renews")
    one_day = TriggerSpec(kind="renewal_upcoming", days_before=1)
    firings = time_triggers(CUSTOMER_ID, [sub], [RENEWAL_7, one_day], now=PERIOD_END - 3600)
    assert sorted(keys(firings)) == [
        f"renewal_upcoming:sub_renews:{PERIOD_END}:1d",
        f"renewal_upcoming:sub_renews:{PERIOD_END}:7d",
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"cancel_at_period_end": True, "canceled_at": T0 + DAY, "cancel_at": PERIOD_END},
        {"cancel_at": PERIOD_END - DAY, "canceled_at": T0 + DAY},
        {"pause_collection": {"behavior": "void", "resumes_at": None}},
        {"status": "canceled", "ended_at": T0 + 2 * DAY},
        {"status": "trialing"},
    ],
    ids=["cancel-at-period-end", "cancel-at-before-end", "paused", "canceled", "trialing"],
)
def test_no_renewal_reminder_for_what_will_not_renew(changes: dict) -> None:  # type: ignore[type-arg]
    sub = evolve(make_subscription(), **changes)
    assert time_triggers(CUSTOMER_ID, [sub], [RENEWAL_7], now=PERIOD_END - DAY) == []


def test_renewal_reads_legacy_subscriptions() -> None:
    sub = legacy(make_subscription(subscription_id="sub_old_shape"))
    assert sub["current_period_end"] == PERIOD_END
    assert keys(time_triggers(CUSTOMER_ID, [sub], [RENEWAL_7], now=PERIOD_END - DAY)) == [
        f"renewal_upcoming:sub_old_shape:{PERIOD_END}:7d"
    ]


def trialing() -> dict:  # type: ignore[type-arg]
    item = make_item(make_price(2000), period=(T0, TRIAL_END))
    return make_subscription([item], status="trialing", trial_days=14, subscription_id="sub_trial")


def test_trial_ending_fires_for_a_running_trial() -> None:
    firings = time_triggers(CUSTOMER_ID, [trialing()], [TRIAL_3], now=TRIAL_END - 2 * DAY)
    assert keys(firings) == [f"trial_ending:sub_trial:{TRIAL_END}:3d"]
    assert firings[0].payload == {
        "subscription_id": "sub_trial",
        "trial_end": TRIAL_END,
        "days_before": 3,
        "cancel_at_period_end": False,
    }
    assert time_triggers(CUSTOMER_ID, [trialing()], [TRIAL_3], now=TRIAL_END - 4 * DAY) == []


def test_trial_ending_never_fires_for_a_trial_that_already_converted() -> None:
    # The customer added a card and ended the trial early: Stripe moved trial_end to now.
    early = evolve(trialing(), status="active", trial_end=TRIAL_END - 5 * DAY)
    assert time_triggers(CUSTOMER_ID, [early], [TRIAL_3], now=TRIAL_END - 2 * DAY) == []
    converted = evolve(trialing(), status="active")
    assert time_triggers(CUSTOMER_ID, [converted], [TRIAL_3], now=TRIAL_END - 2 * DAY) == []


def test_an_extended_trial_gets_a_new_reminder() -> None:
    extended_end = TRIAL_END + 7 * DAY
    extended = evolve(trialing(), trial_end=extended_end)
    assert time_triggers(CUSTOMER_ID, [extended], [TRIAL_3], now=TRIAL_END - 2 * DAY) == []
    firings = time_triggers(CUSTOMER_ID, [extended], [TRIAL_3], now=extended_end - DAY)
    assert keys(firings) == [f"trial_ending:sub_trial:{extended_end}:3d"]


# -- facts from the feed ------------------------------------------------------------------------


def test_payment_failed_once_per_attempt_whatever_replays() -> None:
    invoice = make_invoice(
        make_subscription(), status="open", attempt_count=1, invoice_id="in_late"
    )
    event = make_event("invoice.payment_failed", invoice, created=T0)
    spec = TriggerSpec(kind="payment_failed")
    first = activity_triggers(CUSTOMER_ID, activity_from_event(event), [spec])
    replay = activity_triggers(CUSTOMER_ID, activity_from_event(event), [spec])
    legacy_replay = activity_triggers(CUSTOMER_ID, activity_from_event(legacy(event)), [spec])
    assert keys(first) == keys(replay) == keys(legacy_replay) == ["payment_failed:in_late:1"]
    assert first[0].payload["amount_due"] == 2000
    retry = make_event(
        "invoice.payment_failed", evolve(invoice, attempt_count=2), created=T0 + 3 * DAY
    )
    assert keys(activity_triggers(CUSTOMER_ID, activity_from_event(retry), [spec])) == [
        "payment_failed:in_late:2"
    ]


def test_a_failed_charge_alone_does_not_fire_payment_failed() -> None:
    from tests.activity.factories import make_charge

    entries = activity_from_event(
        make_event("charge.failed", make_charge(status="failed"), created=T0)
    )
    assert activity_triggers(CUSTOMER_ID, entries, [TriggerSpec(kind="payment_failed")]) == []


def test_cancellation_scheduled_and_cancelled() -> None:
    sub = make_subscription(subscription_id="sub_leaving")
    asked = T0 + 10 * DAY
    scheduled = evolve(sub, cancel_at_period_end=True, cancel_at=PERIOD_END, canceled_at=asked)
    ended = evolve(scheduled, status="canceled", ended_at=PERIOD_END)
    specs = [TriggerSpec(kind="cancellation_scheduled"), TriggerSpec(kind="cancelled")]
    events = [
        updated_event("customer.subscription.updated", sub, scheduled, created=asked),
        make_event("customer.subscription.deleted", ended, created=PERIOD_END),
    ]
    entries = [entry for event in events for entry in activity_from_event(event)]
    firings = activity_triggers(CUSTOMER_ID, entries, specs)
    assert keys(firings) == [
        f"cancellation_scheduled:sub_leaving:{asked}",
        "cancelled:sub_leaving",
    ]
    assert firings[1].payload["mrr_before"] is None
    # Stripe sent the deletion twice, and the import rebuilt the cancellation: one firing.
    again = [entry for event in events for entry in activity_from_event(event)]
    state = ProfileState(customer_id=CUSTOMER_ID, activity=[*entries, *again])
    assert keys(evaluate_triggers(state, specs, now=PERIOD_END)) == keys(firings)


def test_a_trial_cancellation_is_not_a_cancelled_subscription() -> None:
    sub = trialing()
    gone = evolve(sub, status="canceled", canceled_at=T0 + DAY, ended_at=T0 + DAY)
    entries = activity_from_event(
        make_event("customer.subscription.deleted", gone, created=T0 + DAY)
    )
    assert [e.name for e in entries] == ["Trial cancelled"]
    assert activity_triggers(CUSTOMER_ID, entries, [TriggerSpec(kind="cancelled")]) == []


def test_reactivated_only_for_a_customer_who_paid_before() -> None:
    spec = [TriggerSpec(kind="reactivated")]
    back = MrrChange(
        before=0, after=2000, paid_before=True, at=T0, cause="sub_b/subscription_created"
    )
    firings = reactivation_trigger(CUSTOMER_ID, back, spec)
    assert keys(firings) == [f"reactivated:{CUSTOMER_ID}:sub_b/subscription_created"]
    assert firings[0].payload == {"mrr_before": 0, "mrr_after": 2000}
    new = MrrChange(before=0, after=2000, paid_before=False, at=T0, cause="x")
    assert reactivation_trigger(CUSTOMER_ID, new, spec) == []
    expansion = MrrChange(before=1000, after=2000, paid_before=True, at=T0, cause="x")
    assert reactivation_trigger(CUSTOMER_ID, expansion, spec) == []
    assert reactivation_trigger(CUSTOMER_ID, None, spec) == []


def test_stage_changed() -> None:
    any_stage = TriggerSpec(kind="stage_changed")
    into_churn = TriggerSpec(kind="stage_changed", stage="churn")
    firings = stage_trigger(
        CUSTOMER_ID, "trial", "customer", at=TRIAL_END, specs=[any_stage, into_churn]
    )
    assert keys(firings) == [f"stage_changed:{CUSTOMER_ID}:trial:customer@{TRIAL_END}"]
    assert firings[0].spec == any_stage
    churned = stage_trigger(CUSTOMER_ID, "customer", "churn", at=PERIOD_END, specs=[into_churn])
    assert keys(churned) == [f"stage_changed:{CUSTOMER_ID}:customer:churn@{PERIOD_END}"]
    assert stage_trigger(CUSTOMER_ID, "trial", "trial", at=T0, specs=[any_stage]) == []
    assert stage_trigger(CUSTOMER_ID, None, "trial", at=None, specs=[any_stage]) == []


def test_segment_entered_and_exited() -> None:
    changes = [
        *membership_events("past_due", [], [CUSTOMER_ID, "cus_other"], at=T0),
        *membership_events("slipping_customers", [CUSTOMER_ID], [], at=T0 + DAY),
    ]
    specs = [
        TriggerSpec(kind="segment_entered", segment="past_due"),
        TriggerSpec(kind="segment_exited"),
    ]
    firings = membership_triggers(CUSTOMER_ID, changes, specs)
    assert keys(firings) == [
        f"segment_entered:past_due:{CUSTOMER_ID}@{T0}",
        f"segment_exited:slipping_customers:{CUSTOMER_ID}@{T0 + DAY}",
    ]
    only_churn = [TriggerSpec(kind="segment_entered", segment="churned_customers")]
    assert membership_triggers(CUSTOMER_ID, changes, only_churn) == []


def test_evaluate_triggers_combines_everything_once() -> None:
    sub = make_subscription(subscription_id="sub_all")
    invoice = make_invoice(sub, status="open", invoice_id="in_all")
    entries = activity_from_event(make_event("invoice.payment_failed", invoice, created=T0 + 2))
    state = ProfileState(
        customer_id=CUSTOMER_ID,
        subscriptions=[sub],
        activity=[*entries, *entries],
        segment_changes=membership_events("past_due", [], [CUSTOMER_ID], at=T0 + 3),
        stage_before="trial",
        stage_after="customer",
        stage_changed_at=T0 + 1,
        mrr_change=MrrChange(before=0, after=2000, paid_before=True, at=T0 + 4, cause="c"),
    )
    specs = [
        RENEWAL_7,
        TriggerSpec(kind="payment_failed"),
        TriggerSpec(kind="stage_changed"),
        TriggerSpec(kind="segment_entered"),
        TriggerSpec(kind="reactivated"),
    ]
    firings = evaluate_triggers(state, specs, now=PERIOD_END - DAY)
    assert [f.kind for f in firings] == [
        "stage_changed",
        "payment_failed",
        "segment_entered",
        "reactivated",
        "renewal_upcoming",
    ]
    assert evaluate_triggers(state, specs, now=PERIOD_END - DAY) == firings
    assert evaluate_triggers(ProfileState(customer_id=CUSTOMER_ID), specs, now=T0) == []
