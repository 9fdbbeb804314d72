"""Events: retrieve and list, newest first, only the last 30 days, in their own version."""

from __future__ import annotations

from typing import Any

from stripesync.sim import forms
from stripesync.sim.core import EVENT_RETENTION_SECONDS, Ctx, Simulator, route
from stripesync.sim.errors import SimAPIError, missing
from stripesync.sim.resources.common import check_params


@route("GET", "/v1/events/{event_id}", resource="events")
def retrieve(sim: Simulator, ctx: Ctx, params: dict[str, Any], event_id: str) -> dict[str, Any]:
    event = sim.db.get_event(ctx.acct, event_id)
    if event is None or event["created"] < sim.now() - EVENT_RETENTION_SECONDS:
        raise missing(event_id, kind="event")
    return event


@route("GET", "/v1/events", resource="events")
def list_(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "created",
            "delivery_success",
            "ending_before",
            "limit",
            "starting_after",
            "type",
            "types",
        },
    )
    limit = forms.as_int(params, "limit", 10, minimum=1, maximum=100)
    assert limit is not None
    types = forms.as_list(params, "types")
    if params.get("type"):
        if types:
            raise SimAPIError(
                400, "You may only specify one of these parameters: type, types.", param="type"
            )
        kind = params["type"]
        if "*" in kind:
            prefix = kind.split("*", 1)[0]
            types = [
                t
                for (t,) in sim.db.execute(
                    "SELECT DISTINCT type FROM events WHERE acct=?", (ctx.acct,)
                )
                if t.startswith(prefix)
            ] or ["__none__"]
        else:
            types = [kind]
    starting_after = params.get("starting_after") or None
    ending_before = params.get("ending_before") or None
    try:
        page = sim.db.list_events(
            ctx.acct,
            limit=limit,
            min_created=sim.now() - EVENT_RETENTION_SECONDS,
            starting_after=starting_after,
            ending_before=ending_before,
            created=forms.created_filter(params),
            types=types or None,
        )
    except KeyError as exc:
        raise missing(
            str(exc.args[0]),
            param="starting_after" if starting_after else "ending_before",
            kind="event",
        ) from None
    return {"object": "list", "data": page.data, "has_more": page.has_more, "url": "/v1/events"}
