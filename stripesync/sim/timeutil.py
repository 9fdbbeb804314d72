"""Calendar arithmetic for billing periods, as Stripe anchors them (UTC)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta


def add_interval(ts: int, interval: str, count: int = 1, *, anchor_day: int | None = None) -> int:
    """``ts`` moved by ``count`` intervals; month ends clamp (Jan 31 → Feb 28/29)."""
    dt = datetime.fromtimestamp(ts, UTC)
    if interval == "day":
        return int((dt + timedelta(days=count)).timestamp())
    if interval == "week":
        return int((dt + timedelta(weeks=count)).timestamp())
    months = count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    total = dt.month - 1 + months
    year, month = dt.year + total // 12, total % 12 + 1
    day = min(anchor_day or dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


def add_months(ts: int, months: int) -> int:
    return add_interval(ts, "month", months)
