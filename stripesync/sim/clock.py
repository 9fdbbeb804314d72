"""Simulated time, like Stripe's test clocks: advancing it runs what Stripe would do.

Resources schedule their next automatic action with ``sim.schedule(ctx, kind, id, at)``
(trial ending, period renewing, payment retry, scheduled cancellation, pause ending, ...)
and register the callback with ``@timer_handler(kind)``. :func:`advance` pops due timers
in time order, moving the clock to each one's moment before running it, so events come
out with the timestamps they would have had.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stripesync.sim.core import EVENT_RETENTION_SECONDS, TIMER_HANDLERS, Simulator

#: Called after each advance with (sim, start, end): the generator's live activity.
ACTIVITY_HOOKS: list[Callable[[Simulator, int, int], None]] = []


def advance(sim: Simulator, to: int, *, max_steps: int = 5_000_000) -> int:
    """Move the clock to ``to``, running every timer due on the way; returns steps run."""
    start = sim.now()
    if to < start:
        raise ValueError(f"the clock only moves forward (now {start}, asked {to})")
    steps = 0
    while steps < max_steps:
        due = sim.db.next_timer(to)
        if due is None:
            break
        acct, kind, obj_id, at = due
        sim.set_clock(max(at, sim.now()))
        sim.db.set_timer(acct, kind, obj_id, None)
        handler = TIMER_HANDLERS.get(kind)
        if handler is not None:
            ctx = sim.system_context(acct)
            with sim.db:
                handler(sim, ctx, obj_id, at)
        steps += 1
    sim.set_clock(to)
    for hook in ACTIVITY_HOOKS:
        hook(sim, start, to)
    sim.db.prune_events(to - EVENT_RETENTION_SECONDS)
    return steps


async def run_clock(sim: Simulator, deliverer: Any, speed: float, *, tick: float = 0.25) -> None:
    """Run simulated time at ``speed`` simulated seconds per real second."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        target = sim.now_float() + (now - last) * speed - (now - last)
        last = now
        advance(sim, int(max(target, sim.now())))
        deliverer.wake()


def routes(sim: Simulator, deliverer: Any) -> Iterable[Route]:
    async def advance_route(request: Request) -> Response:
        try:
            body = await request.json() if await request.body() else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            if "to" in body:
                target = int(body["to"])
            else:
                target = sim.now() + int(body.get("seconds", 0))
            steps = advance(sim, target)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            return Response(
                json.dumps({"error": {"message": str(exc), "type": "invalid_request_error"}}),
                status_code=400,
                media_type="application/json",
            )
        deliverer.wake()
        return Response(
            json.dumps({"now": sim.now(), "steps": steps}), media_type="application/json"
        )

    async def clock_route(request: Request) -> Response:
        return Response(json.dumps({"now": sim.now()}), media_type="application/json")

    return [
        Route("/_sim/advance", advance_route, methods=["POST"]),
        Route("/_sim/clock", clock_route, methods=["GET"]),
    ]
