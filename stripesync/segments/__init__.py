"""Segments: groups of profiles defined by filters over their traits.

`filters` is the language (JSON, validated, evaluated purely); `predefined` holds the
seeds' segments written in it and the membership diff that yields enter/exit history.
"""

from stripesync.segments.filters import OPS, Filter, evaluate, parse_time, validate_filter
from stripesync.segments.predefined import (
    PREDEFINED_SEGMENTS,
    Segment,
    SegmentMembershipEvent,
    membership_events,
    predefined_segment,
    segment_changes,
    segment_members,
)

__all__ = [
    "OPS",
    "PREDEFINED_SEGMENTS",
    "Filter",
    "Segment",
    "SegmentMembershipEvent",
    "evaluate",
    "membership_events",
    "parse_time",
    "predefined_segment",
    "segment_changes",
    "segment_members",
    "validate_filter",
]
