"""Helpers shared by the resource handlers."""

from __future__ import annotations

import copy
from typing import Any

from stripesync.sim.core import Ctx, Simulator
from stripesync.sim.errors import SimAPIError, unknown_param


def check_params(params: dict[str, Any], allowed: set[str]) -> None:
    """Stripe rejects parameters it does not know, naming the first one."""
    for name in params:
        if name not in allowed:
            raise unknown_param(name)


def diff(old: Any, new: Any) -> dict[str, Any]:
    """``previous_attributes``: the old values of what changed, nested as Stripe nests them."""
    out: dict[str, Any] = {}
    if not isinstance(old, dict) or not isinstance(new, dict):
        return out
    for key in set(old) | set(new):
        if key.startswith("_"):
            continue
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict) and before.get("object") != "list":
            nested = diff(before, after)
            out[key] = nested if nested else copy.deepcopy(before)
        else:
            out[key] = copy.deepcopy(before)
    return out


def emit_updated(
    sim: Simulator,
    ctx: Ctx,
    event_type: str,
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    automatic: bool = False,
) -> dict[str, Any] | None:
    """Emit ``*.updated`` only when something visible changed (as Stripe does)."""
    previous = diff(old, new)
    if not previous:
        return None
    return sim.emit(ctx, event_type, new, previous=previous, automatic=automatic)


def deleted_stub(obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": obj["id"], "object": obj["object"], "deleted": True}


def ensure_currency(value: Any, param: str = "currency") -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise SimAPIError(400, f"Invalid currency: {value}", param=param)
    return value.lower()


ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}
