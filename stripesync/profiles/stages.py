"""Lifecycle stages from subscription statuses, and the history of stage changes.

Seed 004 defines the stages by subscription status (trial = ``trialing``; customer =
``active``, ``incomplete``, ``incomplete_expired``, ``past_due``, ``unpaid``; churn =
``canceled``). The mapping is a setting (`StageRules`); the defaults are the seed's, plus
``paused`` (a status Stripe added after the seed was written: a trial that ended without a
payment method) as *customer*, next to ``unpaid``, which it resembles.

A customer with several subscriptions is in the stage that ranks first in
``StageRules.precedence`` (default customer > trial > churn): one paying subscription makes
a customer whatever else was cancelled, and a trial next to a cancelled subscription is a
trial again. A customer without subscriptions (or only with statuses the mapping leaves out)
is a *lead*; a deleted customer is churned, as Vitally churns the account on a delete,
whatever its stored subscriptions still say.

History is a fold: `stage_transition` compares the current `StageRecord` with the stage
observed at a moment and returns the `StageTransition` to store, or None when nothing moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from stripesync.errors import ConfigError
from stripesync.profiles.traits import Timestamp, iso_utc

__all__ = [
    "DEFAULT_STAGE_PRECEDENCE",
    "DEFAULT_STATUS_STAGES",
    "STRIPE_SUBSCRIPTION_STATUSES",
    "StageRecord",
    "StageRules",
    "StageTransition",
    "apply_stage",
    "lifecycle_stage",
    "stage_for_statuses",
    "stage_history",
    "stage_transition",
]

#: Every status a Stripe subscription can have.
STRIPE_SUBSCRIPTION_STATUSES = frozenset(
    {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    }
)

#: Seed 004's mapping, plus ``paused`` (see the module docstring).
DEFAULT_STATUS_STAGES: Mapping[str, str] = MappingProxyType(
    {
        "trialing": "trial",
        "active": "customer",
        "incomplete": "customer",
        "incomplete_expired": "customer",
        "past_due": "customer",
        "unpaid": "customer",
        "paused": "customer",
        "canceled": "churn",
    }
)

DEFAULT_STAGE_PRECEDENCE: tuple[str, ...] = ("customer", "trial", "churn")


@dataclass(frozen=True, kw_only=True)
class StageRules:
    """How subscription statuses become a lifecycle stage; one value per source.

    ``status_stages``
        Stripe subscription status → stage name. Statuses left out do not count.
    ``precedence``
        Stages from strongest to weakest; the strongest stage among a customer's
        subscriptions wins. Every stage of ``status_stages`` must be listed.
    ``no_subscription_stage``
        The stage of a customer with no counted subscription (None: no stage at all).
    ``deleted_stage``
        The stage of a customer deleted in Stripe.
    """

    status_stages: Mapping[str, str] = field(default_factory=lambda: DEFAULT_STATUS_STAGES)
    precedence: tuple[str, ...] = DEFAULT_STAGE_PRECEDENCE
    no_subscription_stage: str | None = "lead"
    deleted_stage: str = "churn"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.status_stages) - STRIPE_SUBSCRIPTION_STATUSES)
        if unknown:
            raise ConfigError(
                f"stage mapping names {', '.join(map(repr, unknown))}, not a Stripe subscription "
                f"status; use one of {', '.join(sorted(STRIPE_SUBSCRIPTION_STATUSES))}"
            )
        unranked = sorted(set(self.status_stages.values()) - set(self.precedence))
        if unranked:
            raise ConfigError(
                f"stage {', '.join(map(repr, unranked))} is mapped but missing from precedence "
                f"{list(self.precedence)}; add it where it ranks"
            )
        if len(set(self.precedence)) != len(self.precedence):
            raise ConfigError(f"precedence {list(self.precedence)} lists a stage twice")
        # A private frozen copy: later edits of the caller's dict must not change the rules.
        object.__setattr__(self, "status_stages", MappingProxyType(dict(self.status_stages)))


_DEFAULT_RULES = StageRules()


def stage_for_statuses(
    statuses: Iterable[str | None], *, deleted: bool = False, rules: StageRules | None = None
) -> str | None:
    """The stage of a customer whose subscriptions have these statuses."""
    rules = rules or _DEFAULT_RULES
    if deleted:
        return rules.deleted_stage
    stages = {
        rules.status_stages[s] for s in statuses if s is not None and s in rules.status_stages
    }
    if not stages:
        return rules.no_subscription_stage
    return min(stages, key=rules.precedence.index)


def lifecycle_stage(
    customer: Mapping[str, Any],
    subscriptions: Iterable[Mapping[str, Any]],
    *,
    rules: StageRules | None = None,
) -> str | None:
    """The customer's lifecycle stage from its Stripe customer and subscription objects."""
    statuses = [s.get("status") for s in subscriptions]
    return stage_for_statuses(
        [s if isinstance(s, str) else None for s in statuses],
        deleted=customer.get("deleted") is True,
        rules=rules,
    )


# -- history ----------------------------------------------------------------------------


def _utc(value: Timestamp) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class StageRecord:
    """A profile's current stage and since when it has held it."""

    stage: str | None
    since: datetime


@dataclass(frozen=True)
class StageTransition:
    """One change of stage: the row a stage history stores."""

    from_stage: str | None
    to_stage: str | None
    at: datetime

    @property
    def record(self) -> StageRecord:
        """The current-stage record after this transition."""
        return StageRecord(self.to_stage, self.at)

    def as_dict(self) -> dict[str, str | None]:
        return {"from": self.from_stage, "to": self.to_stage, "at": iso_utc(self.at)}


def stage_transition(
    previous: StageRecord | None, stage: str | None, at: Timestamp
) -> StageTransition | None:
    """The transition to record when ``stage`` is observed at ``at``, or None.

    None when the stage is unchanged, and when ``at`` is older than the current record:
    a late webhook must not roll a profile back to an older stage (FIELD-NOTES, "late events
    undoing upgrades"); the stage is recomputed from current state instead. A first
    observation records the entry into the stage, from None.
    """
    moment = _utc(at)
    if previous is None:
        return None if stage is None else StageTransition(None, stage, moment)
    if stage == previous.stage or moment < previous.since:
        return None
    return StageTransition(previous.stage, stage, moment)


def apply_stage(
    previous: StageRecord | None, stage: str | None, at: Timestamp
) -> tuple[StageRecord | None, StageTransition | None]:
    """`stage_transition`, plus the current record to keep afterwards."""
    transition = stage_transition(previous, stage, at)
    return (transition.record if transition else previous), transition


def stage_history(
    observations: Iterable[tuple[Timestamp, str | None]],
    *,
    previous: StageRecord | None = None,
) -> list[StageTransition]:
    """Transitions through a series of (moment, stage) observations, oldest first.

    Observations are sorted by moment (stably, so same-second ones keep their order), so a
    rebuild from the raw store gives the same history as the live fold did.
    """
    ordered = sorted(((_utc(at), stage) for at, stage in observations), key=lambda o: o[0])
    transitions: list[StageTransition] = []
    current = previous
    for moment, stage in ordered:
        current, transition = apply_stage(current, stage, moment)
        if transition is not None:
            transitions.append(transition)
    return transitions
