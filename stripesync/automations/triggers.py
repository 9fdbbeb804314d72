"""Which automation triggers fire for a profile, decided purely from its state and a time.

Automations must run at least once and never twice for one fact, and Stripe delivers
events at least once, out of order, and replays them. So a trigger never fires "because an
event arrived": it fires because a *fact* holds (a trial ends in 3 days, an invoice payment
attempt failed), and every firing carries an ``idempotency_key`` derived from that fact
alone: replaying the event, re-running the evaluation or restarting the scheduler produces
the same key, and the delivery log (written by the persistence layer, keyed per
automation as ``<automation id>:<idempotency key>``) refuses the second one.

Time-based triggers read the current state, not an old event, so a "trial ending" reminder
is not fired for a trial that already converted (FIELD-NOTES), and one for a trial that was
extended gets a new key (the new ``trial_end``) while the old, never-due one is never sent.

Keys, with the fact each stands for:

===========================  =================================================================
``renewal_upcoming``         ``renewal_upcoming:<sub>:<current_period_end>:<N>d``
``trial_ending``             ``trial_ending:<sub>:<trial_end>:<N>d``
``payment_failed``           ``payment_failed:<invoice>:<attempt_count>`` (each retry is a fact)
``cancellation_scheduled``   ``cancellation_scheduled:<sub>:<canceled_at>`` (the request)
``cancelled``                ``cancelled:<sub>`` (a subscription ends once)
``reactivated``              ``reactivated:<customer>:<cause>`` (the feed fact that moved MRR)
``stage_changed``            ``stage_changed:<customer>:<from>:<to>@<at>``
``segment_entered/exited``   ``segment_<change>:<segment>:<customer>@<at>``
===========================  =================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from stripesync.activity.derive import ActivityEvent
from stripesync.errors import InvalidInput
from stripesync.revenue import classify_movement
from stripesync.segments.predefined import SegmentMembershipEvent
from stripesync.stripe_api.shapes import normalize, object_id, subscription_period

__all__ = [
    "DAY",
    "TRIGGER_KINDS",
    "Firing",
    "MrrChange",
    "ProfileState",
    "TriggerKind",
    "TriggerSpec",
    "activity_triggers",
    "evaluate_triggers",
    "membership_triggers",
    "reactivation_trigger",
    "stage_trigger",
    "time_triggers",
]

DAY: Final = 86_400

TriggerKind = Literal[
    "renewal_upcoming",
    "trial_ending",
    "payment_failed",
    "cancellation_scheduled",
    "cancelled",
    "reactivated",
    "stage_changed",
    "segment_entered",
    "segment_exited",
]
TRIGGER_KINDS: Final[tuple[str, ...]] = (
    "renewal_upcoming",
    "trial_ending",
    "payment_failed",
    "cancellation_scheduled",
    "cancelled",
    "reactivated",
    "stage_changed",
    "segment_entered",
    "segment_exited",
)
_TIMED: Final = frozenset({"renewal_upcoming", "trial_ending"})
_MAX_DAYS_BEFORE: Final = 366

#: Statuses that renew at the period end (a paused-collection one is not billed).
_RENEWING: Final = frozenset({"active", "past_due"})


@dataclass(frozen=True, kw_only=True)
class TriggerSpec:
    """What an automation listens for.

    ``days_before`` is required for ``renewal_upcoming`` and ``trial_ending`` (1 to 366)
    and refused elsewhere. ``segment`` narrows segment triggers to one segment key and
    ``stage`` narrows ``stage_changed`` to changes *into* that stage; None means any.
    """

    kind: TriggerKind
    days_before: int | None = None
    segment: str | None = None
    stage: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRIGGER_KINDS:
            raise InvalidInput(
                f"unknown trigger {self.kind!r}; use one of {', '.join(TRIGGER_KINDS)}"
            )
        if self.kind in _TIMED:
            days = self.days_before
            if (
                isinstance(days, bool)
                or not isinstance(days, int)
                or not 1 <= days <= _MAX_DAYS_BEFORE
            ):
                raise InvalidInput(
                    f"{self.kind} needs days_before, a whole number of days from 1 to "
                    f"{_MAX_DAYS_BEFORE}; got {days!r}"
                )
        elif self.days_before is not None:
            raise InvalidInput(f"{self.kind} takes no days_before; remove it")
        if self.segment is not None and self.kind not in ("segment_entered", "segment_exited"):
            raise InvalidInput(f"{self.kind} takes no segment; only segment triggers do")
        if self.stage is not None and self.kind != "stage_changed":
            raise InvalidInput(f"{self.kind} takes no stage; only stage_changed does")


@dataclass(frozen=True, kw_only=True)
class Firing:
    """One trigger that fires, with the fact it fired for.

    ``occurred_at`` is when the fact happened or falls due (unix time); ``subject_id`` the
    Stripe object or segment it is about; ``payload`` plain JSON for the action.
    """

    kind: TriggerKind
    customer_id: str
    subject_id: str | None
    idempotency_key: str
    occurred_at: int
    spec: TriggerSpec
    payload: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, kw_only=True)
class MrrChange:
    """A change of the customer's MRR (one currency, or the reporting currency), with the
    feed fact that caused it (its ``fact_key``), for the ``reactivated`` trigger."""

    before: int
    after: int
    paid_before: bool
    at: int
    cause: str


@dataclass(frozen=True, kw_only=True)
class ProfileState:
    """What the trigger evaluation knows about one profile at one moment.

    ``subscriptions`` are the customer's Stripe subscriptions as stored now (any API
    version). ``activity`` holds the feed entries recorded since the last evaluation,
    ``segment_changes`` the membership changes, ``stage_before``/``stage_after`` the
    lifecycle stage around ``stage_changed_at``, and ``mrr_change`` the MRR movement, if
    any. Everything is optional: each trigger reads only its own part.
    """

    customer_id: str
    subscriptions: Sequence[Mapping[str, Any]] = ()
    activity: Sequence[ActivityEvent] = ()
    segment_changes: Sequence[SegmentMembershipEvent] = ()
    stage_before: str | None = None
    stage_after: str | None = None
    stage_changed_at: int | None = None
    mrr_change: MrrChange | None = None


def _ts(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _due(now: int, moment: int, days: int) -> bool:
    """True from ``days`` days before ``moment`` until it passes. A scheduler that was down
    still fires late inside the window, never after the moment itself."""
    return moment - days * DAY <= now < moment


# -- time-based --------------------------------------------------------------------------


def time_triggers(
    customer_id: str,
    subscriptions: Iterable[Mapping[str, Any]],
    specs: Iterable[TriggerSpec],
    *,
    now: int,
) -> list[Firing]:
    """Renewal and trial-ending reminders due at ``now`` for the subscriptions as they are.

    Renewals: ``active``/``past_due`` subscriptions that will renew at the current period
    end (not scheduled to cancel before it, collection not paused). Trial endings:
    ``trialing`` subscriptions only, so a converted, cancelled or expired trial never
    gets one.
    """
    firings: list[Firing] = []
    subs = [normalize(sub) for sub in subscriptions]
    for spec in specs:
        if spec.kind not in _TIMED or spec.days_before is None:
            continue
        days = spec.days_before
        for sub in subs:
            sub_id = object_id(sub.get("id"))
            if sub_id is None:
                continue
            if spec.kind == "renewal_upcoming":
                end = subscription_period(sub)[1]
                if end is None or sub.get("status") not in _RENEWING or not _renews(sub, end):
                    continue
                if _due(now, end, days):
                    firings.append(
                        Firing(
                            kind="renewal_upcoming",
                            customer_id=customer_id,
                            subject_id=sub_id,
                            idempotency_key=f"renewal_upcoming:{sub_id}:{end}:{days}d",
                            occurred_at=end - days * DAY,
                            spec=spec,
                            payload={
                                "subscription_id": sub_id,
                                "renews_at": end,
                                "days_before": days,
                            },
                        )
                    )
            else:
                trial_end = _ts(sub.get("trial_end"))
                if trial_end is None or sub.get("status") != "trialing":
                    continue
                if _due(now, trial_end, days):
                    firings.append(
                        Firing(
                            kind="trial_ending",
                            customer_id=customer_id,
                            subject_id=sub_id,
                            idempotency_key=f"trial_ending:{sub_id}:{trial_end}:{days}d",
                            occurred_at=trial_end - days * DAY,
                            spec=spec,
                            payload={
                                "subscription_id": sub_id,
                                "trial_end": trial_end,
                                "days_before": days,
                                "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
                            },
                        )
                    )
    return firings


def _renews(sub: Mapping[str, Any], period_end: int) -> bool:
    if sub.get("cancel_at_period_end") or sub.get("pause_collection"):
        return False
    cancel_at = _ts(sub.get("cancel_at"))
    return cancel_at is None or cancel_at > period_end


# -- fact-based --------------------------------------------------------------------------


def activity_triggers(
    customer_id: str, activity: Iterable[ActivityEvent], specs: Iterable[TriggerSpec]
) -> list[Firing]:
    """Triggers that follow a feed fact: payment failed, cancellation scheduled, cancelled.

    ``payment_failed`` follows "Invoice payment failed" (one per payment attempt; a failed
    charge of the same attempt is the same failure, so "Charge failed" does not fire it).
    ``cancelled`` follows "Subscription cancelled"; a trial that is cancelled or expires is
    not a cancelled subscription (its own entries exist for automations that want them).
    """
    wanted: dict[str, TriggerSpec] = {spec.kind: spec for spec in specs}
    firings: list[Firing] = []
    for entry in activity:
        firing = _from_entry(customer_id, entry, wanted)
        if firing is not None:
            firings.append(firing)
    return firings


def _from_entry(
    customer_id: str, entry: ActivityEvent, wanted: Mapping[str, TriggerSpec]
) -> Firing | None:
    attributes = entry.attributes
    oid = entry.object_id
    if entry.key == "invoice_payment_failed" and "payment_failed" in wanted:
        attempt = attributes.get("attempt_count")
        return Firing(
            kind="payment_failed",
            customer_id=customer_id,
            subject_id=oid,
            idempotency_key=f"payment_failed:{oid}:{attempt}",
            occurred_at=entry.occurred_at,
            spec=wanted["payment_failed"],
            payload={
                "invoice_id": oid,
                "attempt_count": attempt,
                "amount_due": attributes.get("amount_due"),
                "currency": attributes.get("currency"),
                "subscription_id": attributes.get("subscription_id"),
                "next_payment_attempt": attributes.get("next_payment_attempt"),
            },
        )
    if (
        entry.key == "subscription_change"
        and "scheduled_cancellation" in (attributes.get("change_kinds") or ())
        and "cancellation_scheduled" in wanted
    ):
        # The request instance is in the fact key (…@<canceled_at>): reuse it.
        instance = entry.fact_key.rpartition("@")[2]
        return Firing(
            kind="cancellation_scheduled",
            customer_id=customer_id,
            subject_id=oid,
            idempotency_key=f"cancellation_scheduled:{oid}:{instance}",
            occurred_at=entry.occurred_at,
            spec=wanted["cancellation_scheduled"],
            payload={"subscription_id": oid, "expires_at": attributes.get("expires_at")},
        )
    if entry.key == "subscription_cancelled" and "cancelled" in wanted:
        return Firing(
            kind="cancelled",
            customer_id=customer_id,
            subject_id=oid,
            idempotency_key=f"cancelled:{oid}",
            occurred_at=entry.occurred_at,
            spec=wanted["cancelled"],
            payload={
                "subscription_id": oid,
                "mrr_before": attributes.get("mrr_before"),
                "cancellation_reason": attributes.get("cancellation_reason"),
            },
        )
    return None


def reactivation_trigger(
    customer_id: str, change: MrrChange | None, specs: Iterable[TriggerSpec]
) -> list[Firing]:
    """``reactivated`` when MRR.md rule 11 calls the change a reactivation (0 → x for a
    customer who paid before); keyed by the fact that caused it."""
    spec = next((s for s in specs if s.kind == "reactivated"), None)
    if spec is None or change is None:
        return []
    movement = classify_movement(change.before, change.after, paid_before=change.paid_before)
    if movement != "reactivation":
        return []
    return [
        Firing(
            kind="reactivated",
            customer_id=customer_id,
            subject_id=None,
            idempotency_key=f"reactivated:{customer_id}:{change.cause}",
            occurred_at=change.at,
            spec=spec,
            payload={"mrr_before": change.before, "mrr_after": change.after},
        )
    ]


def stage_trigger(
    customer_id: str,
    before: str | None,
    after: str | None,
    *,
    at: int | None,
    specs: Iterable[TriggerSpec],
) -> list[Firing]:
    """``stage_changed`` when the lifecycle stage differs; a spec with ``stage`` fires only
    for changes into that stage."""
    if before == after or at is None:
        return []
    return [
        Firing(
            kind="stage_changed",
            customer_id=customer_id,
            subject_id=None,
            idempotency_key=f"stage_changed:{customer_id}:{before}:{after}@{at}",
            occurred_at=at,
            spec=spec,
            payload={"stage_before": before, "stage_after": after},
        )
        for spec in specs
        if spec.kind == "stage_changed" and (spec.stage is None or spec.stage == after)
    ]


def membership_triggers(
    customer_id: str, changes: Iterable[SegmentMembershipEvent], specs: Iterable[TriggerSpec]
) -> list[Firing]:
    """``segment_entered``/``segment_exited`` for this customer's membership changes."""
    spec_list = [s for s in specs if s.kind in ("segment_entered", "segment_exited")]
    firings: list[Firing] = []
    for change in changes:
        if change.customer_id != customer_id:
            continue
        kind: TriggerKind = "segment_entered" if change.change == "entered" else "segment_exited"
        for spec in spec_list:
            if spec.kind != kind or (
                spec.segment is not None and spec.segment != change.segment_key
            ):
                continue
            firings.append(
                Firing(
                    kind=kind,
                    customer_id=customer_id,
                    subject_id=change.segment_key,
                    idempotency_key=(
                        f"{kind}:{change.segment_key}:{customer_id}@{change.occurred_at}"
                    ),
                    occurred_at=change.occurred_at,
                    spec=spec,
                    payload={"segment": change.segment_key},
                )
            )
    return firings


def evaluate_triggers(
    state: ProfileState, specs: Iterable[TriggerSpec], *, now: int
) -> list[Firing]:
    """Every firing for one profile at ``now``: the union of the functions above, each
    firing once per (spec, idempotency key), sorted by time then key."""
    spec_list = list(specs)
    firings = [
        *time_triggers(state.customer_id, state.subscriptions, spec_list, now=now),
        *activity_triggers(state.customer_id, state.activity, spec_list),
        *reactivation_trigger(state.customer_id, state.mrr_change, spec_list),
        *stage_trigger(
            state.customer_id,
            state.stage_before,
            state.stage_after,
            at=state.stage_changed_at,
            specs=spec_list,
        ),
        *membership_triggers(state.customer_id, state.segment_changes, spec_list),
    ]
    unique: dict[tuple[TriggerSpec, str], Firing] = {}
    for firing in firings:
        unique.setdefault((firing.spec, firing.idempotency_key), firing)
    return sorted(unique.values(), key=lambda f: (f.occurred_at, f.idempotency_key))
