"""Cutting and splitting ``created`` ranges (pure functions)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from stripesync.sync.slices import Slice, cut, midpoint


def _slice(lo: int, hi: int, cursor_created: int | None, objects: int = 0) -> Slice:
    return Slice(
        id=1,
        source_id=1,
        stream="invoices",
        lo=lo,
        hi=hi,
        cursor=None if cursor_created is None else "in_x",
        cursor_created=cursor_created,
        state="pending",
        objects=objects,
        pages=1 if objects else 0,
        attempts=0,
    )


@given(
    lo=st.integers(0, 2_000_000_000),
    width=st.integers(0, 100_000_000),
    pieces=st.integers(1, 64),
)
def test_cut_covers_the_range_without_overlap(lo: int, width: int, pieces: int) -> None:
    ranges = cut(lo, lo + width, pieces)
    if width == 0:
        assert ranges == []
        return
    assert ranges[0][0] == lo and ranges[-1][1] == lo + width
    assert len(ranges) <= pieces
    for (a, b), (c, _) in itertools.pairwise(ranges):
        assert a < b == c


@given(lo=st.integers(0, 10**9), gap=st.integers(0, 10**6), read=st.integers(1, 10**6))
def test_midpoint_leaves_two_nonempty_halves(lo: int, gap: int, read: int) -> None:
    cursor_created = lo + gap
    sl = _slice(lo, cursor_created + read, cursor_created)
    mid = midpoint(sl)
    if gap < 1:
        assert mid is None
        return
    assert mid is not None
    assert lo < mid <= cursor_created  # new slice [lo, mid), this one keeps [mid, cursor]


def test_a_slice_not_started_cannot_split() -> None:
    assert midpoint(_slice(0, 1000, None)) is None


def test_estimates_use_the_slice_density_then_the_streams() -> None:
    started = _slice(0, 1000, cursor_created=900, objects=100)  # 100 objects in 100 s
    assert started.read_seconds == 99 and started.remaining_seconds == 901
    assert started.estimated_remaining(None) == 100 / 99 * 901
    fresh = _slice(0, 1000, None)
    assert fresh.estimated_remaining(None) is None
    assert fresh.estimated_remaining(0.5) == 500
