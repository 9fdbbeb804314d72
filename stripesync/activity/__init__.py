"""The activity feed: what happened to each customer, in the seeds' words.

`activity_from_event` turns one Stripe event into feed entries; `reconstruct_activity`
rebuilds the entries of the time before the sync listened, from the objects. Both are
pure and share one entry type and one dedupe rule (docs/activity.md), so the store can
write whatever they return, as often as it arrives, without doubles.
"""

from stripesync.activity.derive import (
    ACTIVITY_NAMES,
    CHANGE_KINDS,
    HANDLED_EVENT_TYPES,
    ActivityEvent,
    activity_from_event,
    change_kinds,
    fact_key,
    sorted_activity,
)
from stripesync.activity.history import reconstruct_activity, trial_outcome

__all__ = [
    "ACTIVITY_NAMES",
    "CHANGE_KINDS",
    "HANDLED_EVENT_TYPES",
    "ActivityEvent",
    "activity_from_event",
    "change_kinds",
    "fact_key",
    "reconstruct_activity",
    "sorted_activity",
    "trial_outcome",
]
