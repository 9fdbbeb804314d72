"""The predefined segments on realistic profiles, and membership changes.

Profiles are trait dicts in the exact shape `stripesync.profiles.traits.compute_traits`
produces (one test computes them from Stripe objects to keep the two aligned), plus
``last_activity_at`` from the product's own tracking.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stripesync.errors import InvalidInput, NotFound
from stripesync.segments import (
    PREDEFINED_SEGMENTS,
    Segment,
    SegmentMembershipEvent,
    membership_events,
    predefined_segment,
    segment_changes,
    segment_members,
)
from tests.activity.factories import (
    DAY,
    T0,
    evolve,
    make_customer,
    make_item,
    make_price,
    make_subscription,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "segments.md"


def sub_view(status: str, *, trial_ends_at: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"sub_{status}_{trial_ends_at or 'none'}",
        "status": status,
        "is_trial": status == "trialing",
        "trial_started_at": None,
        "trial_ends_at": trial_ends_at,
        **extra,
    }


def profile(
    *subs: dict[str, Any],
    current: str | None,
    created: str = "2024-06-03T10:00:00Z",
    last_activity_at: str | None = None,
    customer_id: str = "cus_RdQm4x8kTzLp2A",
) -> dict[str, Any]:
    traits: dict[str, Any] = {
        "customer_id": customer_id,
        "created": created,
        "subscriptions": list(subs),
        "subscription_statuses": [s["status"] for s in subs],
        "current_subscription_status": current,
    }
    if last_activity_at is not None:
        traits["last_activity_at"] = last_activity_at
    return traits


PROFILES: dict[str, dict[str, Any]] = {
    "fresh_trial": profile(
        sub_view("trialing", trial_ends_at="2025-03-10T09:00:00Z"),
        current="trialing",
        created="2025-02-24T09:00:00Z",
        last_activity_at="2025-03-01T09:00:00Z",
    ),
    "slipping_trial": profile(
        sub_view("trialing", trial_ends_at="2025-03-08T09:00:00Z"),
        current="trialing",
        created="2025-02-22T09:00:00Z",
        last_activity_at="2025-02-25T16:00:00Z",
    ),
    "stale_trial": profile(
        sub_view("trialing", trial_ends_at="2025-02-28T09:00:00Z"),
        current="trialing",
        last_activity_at="2025-03-01T08:00:00Z",
    ),
    "loyal": profile(sub_view("active"), current="active", last_activity_at="2025-02-28T10:00:00Z"),
    "untracked": profile(sub_view("active"), current="active"),
    "slipping_past_due": profile(
        sub_view("past_due"), current="past_due", last_activity_at="2025-02-01T10:00:00Z"
    ),
    "churned_after_converting": profile(
        sub_view("canceled", trial_ends_at="2024-06-17T10:00:00Z", trial_outcome="trial_converted"),
        current="canceled",
    ),
    "paused_after_trial": profile(
        sub_view("paused", trial_ends_at="2025-02-20T10:00:00Z"), current="paused"
    ),
    "cancelled_trial": profile(
        sub_view("canceled", trial_ends_at="2025-01-20T10:00:00Z", trial_outcome="trial_cancelled"),
        current="canceled",
    ),
    "unpaid": profile(sub_view("unpaid"), current="unpaid"),
    "resubscribed": profile(
        sub_view("canceled", trial_ends_at="2024-09-01T10:00:00Z"),
        sub_view("active"),
        current="active",
        last_activity_at="2025-02-27T10:00:00Z",
    ),
    "no_subscription": profile(current=None, created="2025-02-28T10:00:00Z"),
}

EXPECTED: dict[str, set[str]] = {
    "fresh_trial": {"current_trials", "new_customers"},
    "slipping_trial": {"current_trials", "slipping_trials", "new_customers"},
    "stale_trial": {"current_trials", "expired_trials"},
    "loyal": {"customers", "active_subscribers"},
    "untracked": {"customers", "active_subscribers"},  # no activity data: not slipping
    "slipping_past_due": {"customers", "slipping_customers", "past_due"},
    "churned_after_converting": {"churned_customers"},
    "paused_after_trial": {"unconverted_trials"},
    "cancelled_trial": {"churned_customers", "unconverted_trials"},
    "unpaid": {"churned_customers"},
    "resubscribed": {"customers", "active_subscribers"},
    "no_subscription": {"new_customers"},
}


def memberships(traits: dict[str, Any]) -> set[str]:
    return {s.key for s in PREDEFINED_SEGMENTS if s.matches(traits, now=NOW)} - {
        "syncing_with_stripe"
    }


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_profile_lands_in_the_expected_segments(name: str) -> None:
    assert memberships(PROFILES[name]) == EXPECTED[name]


def test_every_synced_customer_is_syncing_with_stripe() -> None:
    syncing = predefined_segment("syncing_with_stripe")
    assert segment_members(syncing, PROFILES, now=NOW) == set(PROFILES)
    assert not syncing.matches({"email": "lead@example.org"}, now=NOW)


def test_every_predefined_segment_has_a_member_and_a_non_member() -> None:
    for segment in PREDEFINED_SEGMENTS:
        members = segment_members(segment, PROFILES, now=NOW)
        assert members, segment.key
        if segment.key != "syncing_with_stripe":
            assert members != set(PROFILES), segment.key


def test_the_seed_and_product_segments_are_all_there() -> None:
    assert [s.name for s in PREDEFINED_SEGMENTS] == [
        "Syncing with Stripe",
        "Current Trials",
        "Slipping Trials",
        "Slipping Customers",
        "Expired Trials",
        "Customers",
        "Churned Customers",
        "Past Due",
        "Active subscribers",
        "New customers",
        "Unconverted trials",
    ]
    assert all(s.predefined for s in PREDEFINED_SEGMENTS)
    for segment in PREDEFINED_SEGMENTS:  # stored as JSON, like a user's
        assert json.loads(json.dumps(segment.filter)) == segment.filter


def test_slipping_is_relative_to_now() -> None:
    slipping = predefined_segment("slipping_trials")
    traits = PROFILES["fresh_trial"]
    assert not slipping.matches(traits, now=NOW)
    assert slipping.matches(traits, now=datetime(2025, 3, 3, 9, 0, 1, tzinfo=UTC))


def test_profiles_computed_from_stripe_objects() -> None:
    """Alignment with the traits module: the segments read the keys it produces, in both
    subscription modes."""
    from stripesync.profiles.traits import compute_traits

    at = T0 + 20 * DAY
    trial_item = make_item(make_price(2000), period=(T0 + 18 * DAY, T0 + 32 * DAY))
    trialing = make_subscription(
        [trial_item], status="trialing", trial_days=14, created=T0 + 18 * DAY
    )
    stale = evolve(trialing, trial_end=T0 + 19 * DAY)
    active = make_subscription()
    canceled = evolve(make_subscription(), status="canceled", ended_at=T0 + 5 * DAY)
    cases = {
        "trial": ([trialing], {"current_trials", "new_customers"}),
        "stale": ([stale], {"current_trials", "expired_trials", "new_customers"}),
        "customer": ([active], {"customers", "active_subscribers", "new_customers"}),
        "churned": ([canceled], {"churned_customers", "new_customers"}),
        "both": ([canceled, active], {"customers", "active_subscribers", "new_customers"}),
    }
    for mode in ("single", "multiple"):
        for name, (subs, expected) in cases.items():
            traits = compute_traits(make_customer(), subs, [], [], [], mode=mode, at=at)
            found = {s.key for s in PREDEFINED_SEGMENTS if s.matches(traits, now=at)}
            assert found - {"syncing_with_stripe"} == expected, (mode, name)
            assert "syncing_with_stripe" in found


# -- segments and membership ----------------------------------------------------------------


def test_custom_segments_are_validated() -> None:
    segment = Segment(
        key="big_accounts",
        name="Big accounts",
        description="MRR of 1000 USD or more",
        filter={"all": [{"trait": "all_mrr", "op": "gte", "value": 100_000}]},
    )
    assert segment.matches({"all_mrr": 120_000}, now=NOW)
    assert not segment.predefined
    with pytest.raises(InvalidInput, match=r"filter\.op: unknown op 'at_least'"):
        Segment(
            key="x", name="X", description="", filter={"trait": "a", "op": "at_least", "value": 1}
        )
    with pytest.raises(InvalidInput, match="lowercase letters, digits and underscores"):
        Segment(key="Big Accounts", name="X", description="", filter={"all": []})


def test_an_unknown_predefined_segment() -> None:
    with pytest.raises(NotFound, match="no predefined segment 'trials'; the keys are syncing"):
        predefined_segment("trials")


def test_segment_changes() -> None:
    entered, exited = segment_changes({"cus_a", "cus_b"}, {"cus_b", "cus_c"})
    assert (entered, exited) == ({"cus_c"}, {"cus_a"})
    assert segment_changes(set(), set()) == (set(), set())


def test_membership_events_are_sorted_and_keyed_for_idempotent_storage() -> None:
    events = membership_events("past_due", ["cus_a", "cus_b"], ["cus_c", "cus_b", "cus_d"], at=T0)
    assert [(e.change, e.customer_id) for e in events] == [
        ("exited", "cus_a"),
        ("entered", "cus_c"),
        ("entered", "cus_d"),
    ]
    assert events[0] == SegmentMembershipEvent(
        segment_key="past_due",
        customer_id="cus_a",
        change="exited",
        occurred_at=T0,
        dedupe_key=f"past_due/cus_a/exited@{T0}",
    )
    assert events[1].name == "Entered segment"
    assert events[0].name == "Exited segment"
    assert membership_events("past_due", ["cus_a"], ["cus_a"], at=T0) == []


def test_docs_list_every_predefined_segment() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for segment in PREDEFINED_SEGMENTS:
        assert f"`{segment.key}`" in text, segment.key
        assert segment.name in text, segment.name
