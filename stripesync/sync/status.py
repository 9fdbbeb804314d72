"""What ``stripesync status`` reports: each source's streams, their counts and last error.

A stream is only ever reported as it is: ``done`` when its last run finished every
slice, ``failed`` with the reason when one gave up, ``running`` while a live process is
importing it, and ``interrupted`` when the process importing it died (its run's heartbeat
stopped), which the next ``stripesync sync`` resumes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from stripesync.store import Store
from stripesync.store.schema import RAW_TABLES, sync_runs, sync_slices, sync_streams
from stripesync.sync.backfill import run_alive
from stripesync.sync.sources import Source, list_sources
from stripesync.sync.streams import STREAMS

__all__ = ["source_status", "status"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def source_status(store: Store, source: Source) -> dict[str, Any]:
    with store.read() as conn:
        run = conn.execute(
            sa.select(sync_runs)
            .where(sync_runs.c.source_id == source.id)
            .order_by(sync_runs.c.id.desc())
            .limit(1)
        ).first()
        rows = {
            r.stream: r
            for r in conn.execute(
                sa.select(sync_streams).where(sync_streams.c.source_id == source.id)
            )
        }
        slice_counts: dict[tuple[str, str], int] = {
            (r.stream, r.state): int(r.n)
            for r in conn.execute(
                sa.select(sync_slices.c.stream, sync_slices.c.state, sa.func.count().label("n"))
                .where(sync_slices.c.source_id == source.id)
                .group_by(sync_slices.c.stream, sync_slices.c.state)
            )
        }
        stored: dict[str, int] = {}
        for spec in STREAMS:
            table = RAW_TABLES[spec.object_type].table
            stored[spec.name] = int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.source_id == source.id)
                ).scalar_one()
            )
    alive = run is not None and run_alive(run)
    streams: list[dict[str, Any]] = []
    for spec in STREAMS:
        row = rows.get(spec.name)
        state = row.state if row is not None else "never synced"
        if state == "running" and not alive:
            state = "interrupted"
        done = slice_counts.get((spec.name, "done"), 0)
        total = sum(n for (name, _), n in slice_counts.items() if name == spec.name)
        streams.append(
            {
                "stream": spec.name,
                "state": state,
                "objects": stored[spec.name],
                "imported": int(row.objects) if row is not None else 0,
                "pages": int(row.pages) if row is not None else 0,
                "slices_done": done,
                "slices_total": total,
                "started_at": _iso(row.started_at) if row is not None else None,
                "finished_at": _iso(row.finished_at) if row is not None else None,
                "last_error": row.last_error if row is not None else None,
                "last_error_at": _iso(row.last_error_at) if row is not None else None,
                "note": row.note if row is not None else None,
            }
        )
    return {
        "source": source.name,
        "status": source.status,
        "mode": source.mode,
        "key": source.key_hint,
        "api_base": source.api_base,
        "start": source.start_label(),
        "interval_seconds": source.interval_seconds,
        "polling_only": source.polling_only,
        "last_run": None
        if run is None
        else {
            "id": run.id,
            "state": "interrupted" if run.state == "running" and not alive else run.state,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "objects": int(run.objects),
            "requests": int(run.requests),
            "rate_limited": int(run.rate_limited),
            "error": run.error,
        },
        "streams": streams,
    }


def status(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    found = [s for s in list_sources(store) if name is None or s.name == name]
    return [source_status(store, s) for s in found]
