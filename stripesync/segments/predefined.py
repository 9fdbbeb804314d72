"""Segments: the eight of seed 003, three more the product adds, and membership changes.

Each predefined segment is written in the filter language (`stripesync.segments.filters`)
over the profile traits of `stripesync.profiles.traits`, exactly as a user could write it:
nothing about them is special-cased, so a user can copy one and adjust it, and a later
SQL translation of filters covers them too. docs/segments.md lists each definition and the
traits it reads.

Membership is a set of customer ids. `segment_changes` compares two evaluations; the
entered/exited records (`membership_events`) are what the store keeps as membership
history and what automations' "segment entered/exited" triggers read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from stripesync.errors import InvalidInput, NotFound
from stripesync.segments.filters import Filter, Now, evaluate, validate_filter

__all__ = [
    "PREDEFINED_SEGMENTS",
    "Segment",
    "SegmentMembershipEvent",
    "membership_events",
    "predefined_segment",
    "segment_changes",
    "segment_members",
]

#: Subscription statuses that make a paying customer (seed 003's "Customers").
_PAYING = ["active", "past_due"]
#: Statuses of a subscription that is over (seed 003's "Cancelled, Expired, or Unpaid").
_CHURNED = ["canceled", "incomplete_expired", "unpaid"]


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A named filter. ``key`` is stable (URLs, the store); ``name`` is for people."""

    key: str
    name: str
    description: str
    filter: Filter = field(hash=False)
    predefined: bool = False

    def __post_init__(self) -> None:
        if not self.key or not self.key.replace("_", "").isalnum() or not self.key.islower():
            raise InvalidInput(
                f"segment key {self.key!r} must be lowercase letters, digits and underscores"
            )
        validate_filter(self.filter)

    def matches(self, traits: Mapping[str, Any], *, now: Now) -> bool:
        return evaluate(self.filter, traits, now=now)


def _c(trait: str, op: str, value: Any = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"trait": trait, "op": op}
    if op not in ("exists", "not_exists"):
        condition["value"] = value
    return condition


def _some_subscription(*conditions: dict[str, Any]) -> dict[str, Any]:
    """One subscription (an entry of the ``subscriptions`` trait) meets every condition."""
    return {"some": {"trait": "subscriptions", "filter": {"all": list(conditions)}}}


_TRIALING = _c("subscription_statuses", "contains", "trialing")

PREDEFINED_SEGMENTS: Final[tuple[Segment, ...]] = (
    Segment(
        key="syncing_with_stripe",
        name="Syncing with Stripe",
        description="Every Stripe customer the sync has imported.",
        filter=_c("customer_id", "exists"),
        predefined=True,
    ),
    Segment(
        key="current_trials",
        name="Current Trials",
        description="A subscription is trialing.",
        filter=_TRIALING,
        predefined=True,
    ),
    Segment(
        key="slipping_trials",
        name="Slipping Trials",
        description="A subscription is trialing and the last activity was more than 2 days ago.",
        filter={"all": [_TRIALING, _c("last_activity_at", "more_than_days_ago", 2)]},
        predefined=True,
    ),
    Segment(
        key="slipping_customers",
        name="Slipping Customers",
        description=(
            "A subscription is active or past due and the last activity was more than 15 days ago."
        ),
        filter={
            "all": [
                _c("subscription_statuses", "in", _PAYING),
                _c("last_activity_at", "more_than_days_ago", 15),
            ]
        },
        predefined=True,
    ),
    Segment(
        key="expired_trials",
        name="Expired Trials",
        description=(
            "A subscription is still trialing although its trial end has passed (Stripe has "
            "not moved it on yet)."
        ),
        filter=_some_subscription(
            _c("status", "eq", "trialing"),
            _c("trial_ends_at", "more_than_days_ago", 0),
        ),
        predefined=True,
    ),
    Segment(
        key="customers",
        name="Customers",
        description="A subscription is active or past due.",
        filter=_c("subscription_statuses", "in", _PAYING),
        predefined=True,
    ),
    Segment(
        key="churned_customers",
        name="Churned Customers",
        description=(
            "The customer's status is canceled, expired (incomplete_expired) or unpaid: no "
            "subscription is active, past due or trialing."
        ),
        filter=_c("current_subscription_status", "in", _CHURNED),
        predefined=True,
    ),
    Segment(
        key="past_due",
        name="Past Due",
        description="A subscription is past due.",
        filter=_c("subscription_statuses", "contains", "past_due"),
        predefined=True,
    ),
    Segment(
        key="active_subscribers",
        name="Active subscribers",
        description="A subscription is active.",
        filter=_c("subscription_statuses", "contains", "active"),
        predefined=True,
    ),
    Segment(
        key="new_customers",
        name="New customers",
        description="Created in Stripe within the last 30 days.",
        filter=_c("created", "within_last_days", 30),
        predefined=True,
    ),
    Segment(
        key="unconverted_trials",
        name="Unconverted trials",
        description=(
            "A subscription's trial has ended and the subscription is no longer running "
            "(paused, canceled, expired or unpaid), the trial did not convert, and the "
            "customer has nothing active, past due or trialing."
        ),
        filter={
            "all": [
                _some_subscription(
                    _c("trial_ends_at", "more_than_days_ago", 0),
                    _c("status", "in", ["paused", *_CHURNED]),
                    _c("trial_outcome", "ne", "trial_converted"),
                ),
                _c("current_subscription_status", "not_in", [*_PAYING, "trialing"]),
            ]
        },
        predefined=True,
    ),
)

_BY_KEY: Final[Mapping[str, Segment]] = {segment.key: segment for segment in PREDEFINED_SEGMENTS}


def predefined_segment(key: str) -> Segment:
    """The predefined segment with this key; :class:`~stripesync.errors.NotFound` else."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise NotFound(
            f"no predefined segment {key!r}; the keys are {', '.join(_BY_KEY)}"
        ) from None


def segment_members(
    segment: Segment, profiles: Mapping[str, Mapping[str, Any]], *, now: Now
) -> set[str]:
    """The ids (keys of ``profiles``) of the profiles whose traits match ``segment``."""
    return {
        customer_id for customer_id, traits in profiles.items() if segment.matches(traits, now=now)
    }


def segment_changes(
    old_members: Iterable[str], new_members: Iterable[str]
) -> tuple[set[str], set[str]]:
    """``(entered, exited)`` between two evaluations of one segment."""
    old, new = set(old_members), set(new_members)
    return new - old, old - new


@dataclass(frozen=True, kw_only=True)
class SegmentMembershipEvent:
    """A profile entering or leaving a segment: a row of membership history.

    ``dedupe_key`` is ``<segment>/<customer>/<change>@<at>``: recomputing membership for
    the same moment yields the same keys, so storing the result twice changes nothing.
    """

    segment_key: str
    customer_id: str
    change: Literal["entered", "exited"]
    occurred_at: int
    dedupe_key: str

    @property
    def name(self) -> str:
        return "Entered segment" if self.change == "entered" else "Exited segment"


def membership_events(
    segment_key: str, old_members: Iterable[str], new_members: Iterable[str], *, at: int
) -> list[SegmentMembershipEvent]:
    """Entered/exited records between two evaluations made at ``at`` (unix time), sorted
    (exits first, then by customer) so the history reads the same on every run."""
    entered, exited = segment_changes(old_members, new_members)
    changes: list[tuple[Literal["entered", "exited"], str]] = [
        *(("exited", cid) for cid in sorted(exited)),
        *(("entered", cid) for cid in sorted(entered)),
    ]
    return [
        SegmentMembershipEvent(
            segment_key=segment_key,
            customer_id=cid,
            change=change,
            occurred_at=at,
            dedupe_key=f"{segment_key}/{cid}/{change}@{at}",
        )
        for change, cid in changes
    ]
