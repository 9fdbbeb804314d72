"""Sync health per source: is the raw store current, and if not, why.

`source_health` is what ``stripesync status`` prints under each source and what the
REST API serves: the last webhook received, the last poll and what it found, the
events behind (stored but not applied, objects waiting for a refetch), the objects
stored per type, the errors with their counts and last message, and the webhook
endpoint as Stripe last reported it. ``healthy`` is False, with the reasons in
``problems``, when something needs a person: no poll for two intervals, an endpoint
disabled or missing, a backlog older than a few minutes, a re-import that failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stripesync.store import Store
from stripesync.store.schema import (
    RAW_TABLES,
    stripe_events,
    sync_errors,
    sync_refetch,
    sync_state,
    webhook_secrets,
)
from stripesync.store.types import utcnow
from stripesync.sync.sources import Source, list_sources

__all__ = ["health", "print_health", "source_health"]

#: A backlog whose oldest event waited longer than this makes the source unhealthy.
BACKLOG_SECONDS = 300


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def source_health(store: Store, source: Source) -> dict[str, Any]:
    """The source's sync health as plain JSON values."""
    now = utcnow()
    with store.read() as conn:
        state = conn.execute(
            sa.select(sync_state).where(sync_state.c.source_id == source.id)
        ).first()
        unprocessed, oldest = conn.execute(
            sa.select(sa.func.count(), sa.func.min(stripe_events.c.received_at)).where(
                stripe_events.c.source_id == source.id, stripe_events.c.processed_at.is_(None)
            )
        ).one()
        refetch = conn.execute(
            sa.select(sa.func.count(), sa.func.max(sync_refetch.c.attempts)).where(
                sync_refetch.c.source_id == source.id
            )
        ).one()
        secrets = conn.execute(
            sa.select(sa.func.count()).where(
                webhook_secrets.c.source_id == source.id,
                sa.or_(webhook_secrets.c.expires_at.is_(None), webhook_secrets.c.expires_at > now),
            )
        ).scalar_one()
        objects: dict[str, int] = {}
        for object_type, spec in RAW_TABLES.items():
            table = spec.table
            objects[object_type] = int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.source_id == source.id)
                ).scalar_one()
            )
        grouped = list(
            conn.execute(
                sa.select(
                    sync_errors.c.stream,
                    sa.func.count().label("n"),
                    sa.func.max(sync_errors.c.id).label("last_id"),
                )
                .where(sync_errors.c.source_id == source.id)
                .group_by(sync_errors.c.stream)
            )
        )
        last_errors = {
            r.id: r
            for r in conn.execute(
                sa.select(sync_errors).where(sync_errors.c.id.in_([g.last_id for g in grouped]))
            )
        }
    secret_count = int(secrets) + (1 if source.webhook_secret_encrypted else 0)
    errors = sorted(
        (
            {
                "stream": g.stream or "sync",
                "count": int(g.n),
                "last_message": last_errors[g.last_id].message,
                "last_kind": last_errors[g.last_id].kind,
                "last_at": _iso(last_errors[g.last_id].occurred_at),
            }
            for g in grouped
            if g.last_id in last_errors
        ),
        key=lambda e: str(e["last_at"]),
        reverse=True,
    )
    if source.webhook_endpoint_id:
        mode = "endpoint"
    elif secret_count:
        mode = "signing secret (stripe listen or an endpoint made by hand)"
    else:
        mode = "none: polling only"
    last_poll = state.last_poll_at if state is not None else None
    next_poll = last_poll + timedelta(seconds=source.interval_seconds) if last_poll else None
    problems: list[str] = []
    if source.status == "active":
        overdue = timedelta(seconds=2 * source.interval_seconds)
        if last_poll is None:
            if now - source.created_at > overdue:
                problems.append("never polled: is `stripesync serve` running?")
        elif now - last_poll > overdue:
            problems.append(f"no poll since {_iso(last_poll)}: is `stripesync serve` running?")
        if state is not None and state.last_poll_state in ("failed", "reimport_failed"):
            problems.append(f"the last poll failed: {state.last_poll_note or 'see errors'}")
        endpoint = state.endpoint_status if state is not None else None
        if source.webhook_endpoint_id and endpoint not in (None, "enabled"):
            problems.append(
                f"webhook endpoint {source.webhook_endpoint_id} is {endpoint} on Stripe; "
                "changes arrive by polling only"
            )
        if oldest is not None and (now - oldest).total_seconds() > BACKLOG_SECONDS:
            problems.append(
                f"{int(unprocessed)} received event(s) not applied, the oldest since "
                f"{_iso(oldest)}: is `stripesync serve` running?"
            )
    return {
        "source": source.name,
        "status": source.status,
        "healthy": not problems,
        "problems": problems,
        "webhooks": {
            "mode": mode,
            "endpoint_id": source.webhook_endpoint_id,
            "endpoint_status": state.endpoint_status if state is not None else None,
            "endpoint_checked_at": _iso(state.endpoint_checked_at) if state is not None else None,
            "signing_secrets": secret_count,
            "last_received_at": _iso(state.last_webhook_at) if state is not None else None,
            "received": int(state.webhooks_received) if state is not None else 0,
            "duplicates": int(state.webhook_duplicates) if state is not None else 0,
        },
        "polling": {
            "interval_seconds": source.interval_seconds,
            "last_poll_at": _iso(last_poll),
            "last_state": state.last_poll_state if state is not None else None,
            "last_events": int(state.last_poll_events) if state is not None else 0,
            "last_missed_by_webhooks": int(state.last_poll_missed) if state is not None else 0,
            "note": state.last_poll_note if state is not None else None,
            "cursor_created": state.poll_cursor_created if state is not None else None,
            "next_poll_due": _iso(next_poll),
            "reimported_at": _iso(state.reimported_at) if state is not None else None,
            "reimport_note": state.reimport_note if state is not None else None,
        },
        "events_behind": {
            "unprocessed": int(unprocessed),
            "oldest_unprocessed_at": _iso(oldest),
            "refetch_pending": int(refetch[0]),
            "refetch_max_attempts": int(refetch[1] or 0),
        },
        "objects": objects,
        "errors": errors,
    }


def health(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """Every source's health (or one's)."""
    return [source_health(store, s) for s in list_sources(store) if name in (None, s.name)]


def print_health(console: Console, report: dict[str, Any]) -> None:
    """The health of one source as a Rich table (for ``stripesync status``)."""
    verdict = "[green]healthy[/]" if report["healthy"] else "[bold red]unhealthy[/]"
    table = Table(title=f"{report['source']}: sync health, {verdict}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    hooks = report["webhooks"]
    polling = report["polling"]
    behind = report["events_behind"]
    endpoint = hooks["endpoint_id"] or "-"
    if hooks["endpoint_status"]:
        endpoint += f" ({hooks['endpoint_status']}, checked {hooks['endpoint_checked_at']})"
    rows = [
        ("webhooks", f"{hooks['mode']}; {hooks['signing_secrets']} signing secret(s)"),
        ("webhook endpoint", endpoint),
        (
            "last webhook",
            f"{hooks['last_received_at'] or 'never'} ({hooks['received']:,} received, "
            f"{hooks['duplicates']:,} duplicates)",
        ),
        (
            "last poll",
            f"{polling['last_poll_at'] or 'never'} ({polling['last_state'] or '-'}: "
            f"{polling['last_events']:,} events read, {polling['last_missed_by_webhooks']:,} "
            f"missed by webhooks); every {polling['interval_seconds'] // 60}m",
        ),
        (
            "events behind",
            f"{behind['unprocessed']:,} to apply, {behind['refetch_pending']:,} to refetch",
        ),
        (
            "objects",
            ", ".join(f"{k} {v:,}" for k, v in report["objects"].items() if v) or "none yet",
        ),
    ]
    if polling["reimport_note"]:
        rows.append(("re-import", polling["reimport_note"]))
    for error in report["errors"]:
        rows.append(
            (
                f"errors: {error['stream']}",
                f"{error['count']:,}, last {error['last_at']}: {error['last_message']}",
            )
        )
    for problem in report["problems"]:
        rows.append(("[bold red]problem[/]", problem))
    for what, value in rows:
        table.add_row(what, escape(value))
    console.print(table)
