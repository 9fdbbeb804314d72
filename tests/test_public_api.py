"""The curated public surface: what `__all__` promises exists, and nothing public hides."""

from __future__ import annotations

import stripesync


def test_all_names_exist() -> None:
    missing = [name for name in stripesync.__all__ if not hasattr(stripesync, name)]
    assert missing == []


def test_no_unlisted_public_names() -> None:
    public = {
        name
        for name in vars(stripesync)
        if not name.startswith("_") and not isinstance(getattr(stripesync, name), type(stripesync))
    }
    assert public - set(stripesync.__all__) == set()


def test_the_documented_entry_points_are_public() -> None:
    for name in ("subscription_mrr", "customer_revenue", "RevenueRules"):
        assert name in stripesync.__all__
