"""Lifecycle stages from subscription statuses (seed 004) and their history."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stripesync.errors import ConfigError
from stripesync.profiles import (
    DEFAULT_STATUS_STAGES,
    StageRecord,
    StageRules,
    StageTransition,
    apply_stage,
    lifecycle_stage,
    stage_for_statuses,
    stage_history,
    stage_transition,
)
from tests.profiles.factories import (
    TRIAL,
    make_customer,
    make_deleted_customer,
    realistic_account,
    ts,
)


@pytest.mark.parametrize(
    ("status", "stage"),
    [
        ("trialing", "trial"),
        ("active", "customer"),
        ("incomplete", "customer"),
        ("incomplete_expired", "customer"),
        ("past_due", "customer"),
        ("unpaid", "customer"),
        ("paused", "customer"),
        ("canceled", "churn"),
    ],
)
def test_the_seed_mapping(status: str, stage: str) -> None:
    assert stage_for_statuses([status]) == stage


@pytest.mark.parametrize(
    ("statuses", "stage"),
    [
        (["canceled", "active", "trialing"], "customer"),
        (["canceled", "trialing"], "trial"),
        (["trialing", "past_due"], "customer"),
        (["canceled", "canceled"], "churn"),
        ([], "lead"),
    ],
    ids=["customer-beats-all", "trial-beats-churn", "past-due-is-customer", "churn", "none"],
)
def test_precedence(statuses: list[str], stage: str) -> None:
    assert stage_for_statuses(statuses) == stage


def test_stages_of_realistic_customers() -> None:
    account = realistic_account()
    assert lifecycle_stage(account.customer, account.subscriptions) == "customer"
    trial_only = [account.subscription("trialing"), account.subscription("canceled")]
    assert lifecycle_stage(account.customer, trial_only) == "trial"
    assert lifecycle_stage(account.customer, [account.subscription("canceled")]) == "churn"
    assert lifecycle_stage(make_customer(), []) == "lead"


def test_a_deleted_customer_is_churned_whatever_its_subscriptions_say() -> None:
    account = realistic_account()
    assert lifecycle_stage(make_deleted_customer(), account.subscriptions) == "churn"


def test_a_custom_mapping() -> None:
    rules = StageRules(
        status_stages={"trialing": "trial", "active": "paying", "past_due": "at_risk"},
        precedence=("paying", "at_risk", "trial"),
        no_subscription_stage=None,
        deleted_stage="gone",
    )
    assert stage_for_statuses(["past_due", "trialing"], rules=rules) == "at_risk"
    assert stage_for_statuses(["active", "past_due"], rules=rules) == "paying"
    # Statuses the mapping leaves out do not count.
    assert stage_for_statuses(["canceled"], rules=rules) is None
    assert stage_for_statuses(["active"], deleted=True, rules=rules) == "gone"


def test_rules_keep_their_own_copy() -> None:
    mapping = {"active": "customer"}
    rules = StageRules(status_stages=mapping)
    mapping["active"] = "churn"
    assert stage_for_statuses(["active"], rules=rules) == "customer"
    assert DEFAULT_STATUS_STAGES["active"] == "customer"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status_stages": {"cancelled": "churn"}}, "'cancelled', not a Stripe subscription"),
        ({"status_stages": {"active": "vip"}}, "'vip' is mapped but missing from precedence"),
        ({"precedence": ("customer", "trial", "churn", "trial")}, "lists a stage twice"),
    ],
    ids=["unknown-status", "unranked-stage", "duplicate-stage"],
)
def test_bad_rules_say_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StageRules(**kwargs)  # type: ignore[arg-type]


# -- history ----------------------------------------------------------------------------

T0, T1, T2 = TRIAL[0], TRIAL[1], ts(2026, 4, 19)


def at(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def test_first_observation_enters_a_stage() -> None:
    transition = stage_transition(None, "trial", T0)
    assert transition == StageTransition(None, "trial", at(T0))
    assert transition.as_dict() == {"from": None, "to": "trial", "at": "2026-03-05T00:00:00Z"}
    assert stage_transition(None, None, T0) is None


def test_a_change_is_a_transition_and_a_repeat_is_not() -> None:
    record = StageRecord("trial", at(T0))
    assert stage_transition(record, "trial", T1) is None
    transition = stage_transition(record, "customer", T1)
    assert transition == StageTransition("trial", "customer", at(T1))
    assert transition.record == StageRecord("customer", at(T1))


def test_an_older_observation_never_rolls_the_stage_back() -> None:
    """A late `trialing` webhook after the conversion must not reopen the trial."""
    record = StageRecord("customer", at(T1))
    assert stage_transition(record, "trial", T0) is None
    assert apply_stage(record, "trial", T0) == (record, None)


def test_same_second_changes_are_kept() -> None:
    record = StageRecord("trial", at(T1))
    assert stage_transition(record, "customer", T1) == StageTransition("trial", "customer", at(T1))


def test_history_of_a_trial_that_converted_then_churned() -> None:
    observations: list[tuple[datetime | int, str | None]] = [
        (T2, "churn"),
        (T0, "trial"),
        (T1, "customer"),
        (T1 + 3600, "customer"),
        (datetime(2026, 3, 5, 0, 0), "trial"),  # naive datetimes are UTC
    ]
    history = stage_history(observations)
    assert [t.as_dict() for t in history] == [
        {"from": None, "to": "trial", "at": "2026-03-05T00:00:00Z"},
        {"from": "trial", "to": "customer", "at": "2026-03-19T00:00:00Z"},
        {"from": "customer", "to": "churn", "at": "2026-04-19T00:00:00Z"},
    ]


def test_history_continues_from_a_stored_record() -> None:
    stored = StageRecord("customer", at(T1))
    history = stage_history([(T0, "trial"), (T2, "churn")], previous=stored)
    assert history == [StageTransition("customer", "churn", at(T2))]
