"""Slices: a stream's ``created`` range cut into pieces that are paged concurrently.

A slice is ``lo <= created < hi`` plus its checkpoint: the last object read (Stripe
lists newest first, so ``cursor`` is the oldest object read so far, and ``cursor_created``
its ``created``). What remains of a slice is ``lo <= created <= cursor_created`` after
``cursor``; a slice is done when its list has no more pages. A checkpoint is written in
the transaction that writes the page's objects, so after a crash a slice resumes at the
page after the last one stored, and a finished slice is never read again.

When a stream has fewer slices in flight than it can use, a slice that is estimated to
have pages left splits its remainder at the middle: it keeps the newer half, and a new
slice takes the older one. Stripe's ``starting_after`` and ``created`` filters combine,
so the running slice carries on from its cursor with the narrower range, and no object is
in two slices.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stripesync.store.schema import sync_slices
from stripesync.store.types import utcnow

__all__ = [
    "STRIPE_EPOCH",
    "Slice",
    "add_slices",
    "cut",
    "load_slice",
    "midpoint",
    "pending_slices",
]

#: Nothing on Stripe was created before 2010 (the company launched in 2011).
STRIPE_EPOCH = 1_262_304_000
PAGE_SIZE = 100


@dataclass(frozen=True)
class Slice:
    id: int
    source_id: int
    stream: str
    lo: int
    hi: int
    cursor: str | None
    cursor_created: int | None
    state: str
    objects: int
    pages: int
    attempts: int

    @property
    def remaining_hi(self) -> int:
        """Exclusive upper bound of what is left to read."""
        return self.hi if self.cursor_created is None else self.cursor_created + 1

    @property
    def remaining_seconds(self) -> int:
        return max(0, self.remaining_hi - self.lo)

    @property
    def read_seconds(self) -> int:
        return max(0, self.hi - self.remaining_hi)

    def estimated_remaining(self, fallback_density: float | None) -> float | None:
        """Objects estimated left, from this slice's density (or the stream's)."""
        density = self.objects / self.read_seconds if self.read_seconds and self.objects else None
        density = density if density is not None else fallback_density
        if density is None:
            return None
        return density * self.remaining_seconds

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Slice:
        m = row._mapping
        return cls(
            id=m["id"],
            source_id=m["source_id"],
            stream=m["stream"],
            lo=m["lo"],
            hi=m["hi"],
            cursor=m["cursor"],
            cursor_created=m["cursor_created"],
            state=m["state"],
            objects=m["objects"],
            pages=m["pages"],
            attempts=m["attempts"],
        )


def cut(lo: int, hi: int, pieces: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut into at most ``pieces`` contiguous ranges at least a second wide."""
    if hi <= lo:
        return []
    pieces = max(1, min(pieces, hi - lo))
    bounds = [lo + (hi - lo) * i // pieces for i in range(pieces + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def midpoint(sl: Slice) -> int | None:
    """Where to split a slice's remainder, or None when it cannot be split.

    The slice keeps ``[mid, remaining_hi)`` and a new slice gets ``[lo, mid)``; both
    must be at least a second wide.
    """
    if sl.cursor_created is None:
        return None
    lo, hi = sl.lo, sl.cursor_created + 1
    if hi - lo < 2:
        return None
    return lo + (hi - lo) // 2


def add_slices(
    conn: Connection, source_id: int, stream: str, ranges: Sequence[tuple[int, int]]
) -> list[int]:
    ids: list[int] = []
    now = utcnow()
    for lo, hi in ranges:
        result = conn.execute(
            sa.insert(sync_slices)
            .values(
                source_id=source_id,
                stream=stream,
                lo=lo,
                hi=hi,
                cursor=None,
                cursor_created=None,
                state="pending",
                objects=0,
                pages=0,
                attempts=0,
                updated_at=now,
            )
            .returning(sync_slices.c.id)
        )
        ids.append(int(result.scalar_one()))
    return ids


def load_slice(conn: Connection, slice_id: int) -> Slice | None:
    row = conn.execute(sa.select(sync_slices).where(sync_slices.c.id == slice_id)).first()
    return None if row is None else Slice.from_row(row)


def pending_slices(conn: Connection, source_id: int, stream: str | None = None) -> list[Slice]:
    query = sa.select(sync_slices).where(
        sync_slices.c.source_id == source_id, sync_slices.c.state == "pending"
    )
    if stream is not None:
        query = query.where(sync_slices.c.stream == stream)
    return [Slice.from_row(r) for r in conn.execute(query.order_by(sync_slices.c.id))]


def count_pending(conn: Connection, source_id: int, stream: str) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_slices)
            .where(
                sync_slices.c.source_id == source_id,
                sync_slices.c.stream == stream,
                sync_slices.c.state == "pending",
            )
        ).scalar_one()
    )
