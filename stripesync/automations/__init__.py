"""Automations: triggers decided purely from a profile's state; actions come later.

`triggers` answers "what fires for this profile now", with idempotency keys derived from
the facts, so the delivery layer can promise at-least-once without duplicates.
"""

from stripesync.automations.triggers import (
    TRIGGER_KINDS,
    Firing,
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

__all__ = [
    "TRIGGER_KINDS",
    "Firing",
    "MrrChange",
    "ProfileState",
    "TriggerSpec",
    "activity_triggers",
    "evaluate_triggers",
    "membership_triggers",
    "reactivation_trigger",
    "stage_trigger",
    "time_triggers",
]
