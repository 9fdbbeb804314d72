"""Event polling: read ``/v1/events`` from the stored cursor and apply what webhooks missed.

Each source is polled every ``interval`` (default 1 hour, per source) by `stripesync
serve`'s scheduler, and on demand by ``stripesync sync``. A poll reads the events newer
than its cursor, oldest first (``ending_before`` pages), and for each page records the
events in the ledger, applies the new ones (`stripesync.sync.webhooks.apply_events`) and
moves the cursor, **in one transaction**: a poll killed at any moment resumes after the
last page it committed. Events a webhook already delivered are duplicates in the ledger
and are skipped.

The first poll of a source starts where its first backfill started (changes made while
it ran are in the events), or where the source was connected.

Stripe keeps events for 30 days. A cursor older than that (a server stopped for weeks)
would silently skip whatever changed in between, so the poll re-imports the affected
streams instead (`stripesync.sync.backfill`), refetches the stored objects the
re-import did not see again (deleted since), restarts its cursor at the newest event,
and says so in the sync health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stripesync.errors import StripeSyncError, TransientError
from stripesync.jobs import JobContext, job
from stripesync.secrets import secret_box
from stripesync.settings import Settings
from stripesync.store import Store
from stripesync.store.schema import (
    RAW_TABLES,
    stripe_events,
    sync_runs,
    sync_slices,
    sync_state,
    sync_streams,
)
from stripesync.store.types import utcnow
from stripesync.stripe_api.client import StripeAPI
from stripesync.stripe_api.errors import StripeError
from stripesync.sync.apply import record_event
from stripesync.sync.sources import Source, api_for_source, list_sources
from stripesync.sync.streams import STREAMS
from stripesync.sync.webhooks import (
    Coalescer,
    apply_events,
    bump_state,
    drain,
    ensure_state,
    kick,
    lock_source,
    pending_refetches,
    queue_refetch,
    record_error,
    run_refetches,
    source_api,
    update_derived,
    update_derived_catalog,
)

__all__ = ["EVENT_RETENTION", "PollResult", "Scheduler", "poll_source"]

log = logging.getLogger(__name__)

#: How long Stripe keeps events.
EVENT_RETENTION = 30 * 86_400
#: A cursor this close to the retention limit is treated as past it (the poll itself
#: takes time, and clocks differ).
RETENTION_MARGIN = 3_600
#: A poll that claimed a source and did not finish within this is taken as dead.
POLL_CLAIM_SECONDS = 900
PAGE = 100


@dataclass
class PollResult:
    source: str
    #: Events read from the API.
    events: int = 0
    #: Of those, events no webhook had delivered (applied by this poll).
    missed: int = 0
    #: Events found unprocessed in the ledger and applied.
    drained: int = 0
    refetched: int = 0
    reimported: list[str] = field(default_factory=list)
    note: str | None = None
    skipped: bool = False


# -- the cursor -----------------------------------------------------------------------------


def _state(conn: Connection, source_id: int) -> sa.Row[Any]:
    ensure_state(conn, source_id)
    row = conn.execute(sa.select(sync_state).where(sync_state.c.source_id == source_id)).first()
    assert row is not None
    return row


def _start_time(conn: Connection, source: Source) -> int:
    """Where a source's first poll starts: its first backfill, else its connection."""
    first_run = conn.execute(
        sa.select(sa.func.min(sync_runs.c.started_at)).where(sync_runs.c.source_id == source.id)
    ).scalar()
    start: datetime = first_run or source.created_at
    return int(start.timestamp()) - 60


def _stripe_now(api: StripeAPI) -> tuple[int, dict[str, Any] | None]:
    """Stripe's clock as far as we can tell, and its newest event.

    Our clock, unless Stripe shows an event our clock calls older than the retention:
    Stripe's clock is then behind ours (a simulator), and its newest event is the best
    estimate.
    """
    page = api.list_page("/v1/events", {"limit": 1}, group="events")
    newest = page.data[0] if page.data else None
    local = int(time.time())
    if newest is None:
        return local, None
    created = int(newest["created"])
    if created < local - EVENT_RETENTION:
        return created, newest
    return max(local, created), newest


def _claim(store: Store, source: Source, *, force: bool) -> bool:
    now = utcnow()
    with store.write() as conn:
        ensure_state(conn, source.id)
        claim = sa.update(sync_state).where(sync_state.c.source_id == source.id)
        if not force:
            claim = claim.where(
                sa.or_(
                    sync_state.c.poll_started_at.is_(None),
                    sync_state.c.poll_started_at < now - timedelta(seconds=POLL_CLAIM_SECONDS),
                )
            )
        return bool(conn.execute(claim.values(poll_started_at=now)).rowcount)


# -- polling --------------------------------------------------------------------------------


def poll_source(
    store: Store,
    settings: Settings,
    source: Source,
    *,
    api: StripeAPI | None = None,
    reimport: Callable[[Source, list[str]], None] | None = None,
    force: bool = True,
) -> PollResult:
    """Poll one source's events now; see the module's docstring.

    ``reimport(source, streams)`` runs the re-import when the cursor is past Stripe's
    retention (default: a backfill of those streams in this process). ``force=False``
    skips the poll when another one holds the source.
    """
    result = PollResult(source.name)
    if not _claim(store, source, force=force):
        result.skipped = True
        return result
    if api is None:
        api = api_for_source(source, settings, secret_box(settings))
    try:
        _poll(store, settings, source, api, result, reimport)
    except StripeSyncError as exc:
        with store.write() as conn:
            record_error(conn, source.id, "events", exc)
            bump_state(
                conn,
                source.id,
                poll_started_at=None,
                last_poll_at=utcnow(),
                last_poll_state="failed",
                last_poll_note=str(exc)[:2000],
            )
        raise
    except BaseException:
        with store.write() as conn:
            bump_state(conn, source.id, poll_started_at=None)
        raise
    return result


def _poll(
    store: Store,
    settings: Settings,
    source: Source,
    api: StripeAPI,
    result: PollResult,
    reimport: Callable[[Source, list[str]], None] | None,
) -> None:
    with store.write() as conn:
        state = _state(conn, source.id)
        start = _start_time(conn, source)
    if state.last_poll_state == "reimport_failed":
        # The last re-import did not finish: finish it before anything else.
        _run_reimport(store, settings, source, reimport, result)
    cursor: str | None = state.poll_cursor
    cursor_created: int | None = state.poll_cursor_created
    if cursor is None and cursor_created is not None:
        start = cursor_created  # a previous poll found no event: from where it looked
    stripe_now, newest = _stripe_now(api)
    since = cursor_created if cursor is not None and cursor_created is not None else start
    expired = since < stripe_now - EVENT_RETENTION + RETENTION_MARGIN
    if cursor is not None and not expired:
        try:
            _walk_forward(store, source, api, cursor, result)
        except StripeError as exc:
            if exc.http_status != 404:
                raise
            expired = True  # the cursor's event is gone: past the retention
    elif cursor is None and not expired:
        _first_poll(store, source, api, start, result)
        with store.write() as conn:
            if _state(conn, source.id).poll_cursor is None:
                # No event at all yet: the next poll looks from here (a minute early).
                bump_state(conn, source.id, poll_cursor_created=stripe_now - 60)
    if expired:
        _reimport(
            store, settings, source, newest, datetime.fromtimestamp(since, UTC), result, reimport
        )
    result.drained = drain(store, source.id).events
    while run_refetches(store, api, source.id):
        result.refetched += 1
        with store.read() as conn:
            if not pending_refetches(conn, source.id):
                break
    endpoint_status = _endpoint_status(store, source, api)
    with store.write() as conn:
        values: dict[str, Any] = {
            "poll_started_at": None,
            "last_poll_at": utcnow(),
            "last_poll_state": "reimported" if result.reimported else "ok",
            "last_poll_note": result.note,
            "last_poll_events": result.events,
            "last_poll_missed": result.missed,
        }
        if endpoint_status is not None:
            values.update(endpoint_status=endpoint_status, endpoint_checked_at=utcnow())
        bump_state(conn, source.id, **values)


def _apply_page(
    store: Store,
    source: Source,
    events: list[dict[str, Any]],
    result: PollResult,
    *,
    cursor: dict[str, Any] | None,
) -> None:
    """Record and apply one page (oldest first) and move the cursor, in one transaction."""
    with store.write() as conn:
        lock_source(conn, source.id)
        fresh = [e for e in events if record_event(conn, source.id, e, via="poll")]
        outcome = apply_events(conn, source.id, fresh)
        if fresh:
            conn.execute(
                sa.update(stripe_events)
                .where(
                    stripe_events.c.source_id == source.id,
                    stripe_events.c.id.in_([str(e["id"]) for e in fresh]),
                )
                .values(processed_at=utcnow())
            )
        update_derived(conn, source.id, outcome.customers)
        if cursor is not None:
            bump_state(
                conn,
                source.id,
                poll_cursor=str(cursor["id"]),
                poll_cursor_created=int(cursor["created"]),
            )
    update_derived_catalog(store, outcome.applied)
    result.events += len(events)
    result.missed += len(fresh)


def _walk_forward(
    store: Store, source: Source, api: StripeAPI, cursor: str, result: PollResult
) -> None:
    while True:
        page = api.list_page("/v1/events", {"limit": PAGE, "ending_before": cursor}, group="events")
        if not page.data:
            return
        # ending_before: the events just newer than the cursor, newest first.
        _apply_page(store, source, list(reversed(page.data)), result, cursor=page.data[0])
        cursor = str(page.data[0]["id"])
        if not page.has_more:
            return


def _first_poll(
    store: Store, source: Source, api: StripeAPI, start: int, result: PollResult
) -> None:
    """No cursor yet: from the newest event before ``start`` when Stripe still has one,
    else every event since ``start``, read newest first (the cursor then commits last)."""
    before = api.list_page("/v1/events", {"limit": 1, "created": {"lt": start}}, group="events")
    if before.data:
        first = before.data[0]
        with store.write() as conn:
            bump_state(
                conn,
                source.id,
                poll_cursor=str(first["id"]),
                poll_cursor_created=int(first["created"]),
            )
        _walk_forward(store, source, api, str(first["id"]), result)
        return
    # Newest first, one page in memory at a time: the order does not matter to the apply
    # path (older copies lose), and the cursor, the newest event, commits with the last.
    newest: dict[str, Any] | None = None
    pages = api.iter_list("/v1/events", {"limit": PAGE, "created": {"gte": start}}, group="events")
    page = next(pages, None)
    while page is not None:
        if newest is None and page.data:
            newest = page.data[0]
        following = next(pages, None)
        _apply_page(
            store,
            source,
            list(reversed(page.data)),
            result,
            cursor=newest if following is None else None,
        )
        page = following


# -- the 30-day wall ------------------------------------------------------------------------


def _reimport(
    store: Store,
    settings: Settings,
    source: Source,
    newest: dict[str, Any] | None,
    since: datetime,
    result: PollResult,
    reimport: Callable[[Source, list[str]], None] | None,
) -> None:
    names = [s.name for s in STREAMS]
    began = utcnow()
    note = (
        f"event cursor from {since:%Y-%m-%d %H:%M} UTC is older than Stripe's 30-day event "
        f"retention: re-imported {', '.join(names)} on {began:%Y-%m-%d %H:%M} UTC"
    )
    with store.write() as conn:
        # Everything after `newest` will be polled; what came before, the re-import reads.
        for name in names:
            conn.execute(
                sa.delete(sync_slices).where(
                    sync_slices.c.source_id == source.id,
                    sync_slices.c.stream == name,
                    sync_slices.c.state.in_(("pending", "failed")),
                )
            )
            conn.execute(
                sa.update(sync_streams)
                .where(sync_streams.c.source_id == source.id, sync_streams.c.stream == name)
                .values(range_hi=None, note="re-import: event cursor past 30 days")
            )
        bump_state(
            conn,
            source.id,
            poll_cursor=str(newest["id"]) if newest else None,
            poll_cursor_created=int(newest["created"]) if newest else None,
            reimported_at=began,
            reimport_note=note,
        )
    log.warning("source %s: %s", source.name, note)
    result.note = note
    _run_reimport(store, settings, source, reimport, result, names=names, began=began)


def _run_reimport(
    store: Store,
    settings: Settings,
    source: Source,
    reimport: Callable[[Source, list[str]], None] | None,
    result: PollResult,
    *,
    names: list[str] | None = None,
    began: datetime | None = None,
) -> None:
    if names is None:
        with store.read() as conn:
            names = [
                str(r.stream)
                for r in conn.execute(
                    sa.select(sync_streams.c.stream).where(
                        sync_streams.c.source_id == source.id,
                        sync_streams.c.state.not_in(("done", "skipped")),
                    )
                )
            ]
            began = conn.execute(
                sa.select(sync_state.c.reimported_at).where(sync_state.c.source_id == source.id)
            ).scalar()
    try:
        (reimport or _default_reimport(store, settings))(source, names)
    except StripeSyncError:
        with store.write() as conn:
            bump_state(conn, source.id, last_poll_state="reimport_failed")
        raise
    result.reimported = names
    if began is None:
        return
    # Objects the re-import did not read again were deleted meanwhile (or are hidden
    # from lists): ask Stripe about each.
    with store.write() as conn:
        unseen: dict[tuple[str, str], str] = {}
        for spec in STREAMS:
            if spec.name not in names:
                continue
            table = RAW_TABLES[spec.object_type].table
            for (object_id,) in conn.execute(
                sa.select(table.c.id).where(
                    table.c.source_id == source.id,
                    table.c.deleted.is_(False),
                    table.c.synced_at < began,
                )
            ):
                unseen[(spec.object_type, str(object_id))] = "reimport"
        if unseen:
            queue_refetch(conn, source.id, unseen)


def _default_reimport(store: Store, settings: Settings) -> Callable[[Source, list[str]], None]:
    def run(source: Source, names: list[str]) -> None:
        from stripesync.sync.backfill import BackfillOptions, failure_message, run_backfill

        summary = run_backfill(
            store,
            settings,
            source,
            options=BackfillOptions.from_settings(settings, streams=tuple(names)),
        )
        if not summary.ok:
            raise failure_message(summary)

    return run


def _endpoint_status(store: Store, source: Source, api: StripeAPI) -> str | None:
    """The webhook endpoint as Stripe sees it: enabled, disabled or missing."""
    if not source.webhook_endpoint_id:
        return None
    try:
        body, _, _ = api.request(
            "get", f"/v1/webhook_endpoints/{source.webhook_endpoint_id}", group="webhooks"
        )
    except StripeError as exc:
        if exc.http_status == 404:
            return "missing"
        with store.write() as conn:
            record_error(conn, source.id, "webhooks", exc, context="checking the endpoint: ")
        return None
    return str(body.get("status") or "unknown")


# -- jobs and the scheduler -----------------------------------------------------------------


@job("sync.poll_events")
def poll_job(ctx: JobContext, *, source_id: int) -> None:
    """Poll one source (skipped when another process is polling it)."""
    store: Store = ctx.get("store")
    settings: Settings = ctx.get("settings")

    def run() -> None:
        source, api = source_api(ctx, source_id)
        try:
            poll_source(store, settings, source, api=api, force=False)
        except TransientError:
            log.warning("poll of %s failed; the next one retries", source.name, exc_info=True)

    coalescer: Coalescer | None = ctx.resources.get("coalescer")
    if coalescer is not None:
        coalescer.started("sync.poll_events", source_id)
    try:
        run()
    finally:
        if coalescer is not None:
            coalescer.finished("sync.poll_events", source_id)


class Scheduler:
    """What `stripesync serve` does on its own: polls each source every interval, and
    applies events left unprocessed (by a process that died after storing them)."""

    def __init__(self, ctx: JobContext, *, tick: float = 5.0) -> None:
        self.ctx = ctx
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stripesync-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(self.tick)

    def run_once(self) -> None:
        store: Store = self.ctx.get("store")
        now = utcnow()
        for source in list_sources(store, include_disconnected=False):
            with store.read() as conn:
                state = conn.execute(
                    sa.select(sync_state).where(sync_state.c.source_id == source.id)
                ).first()
                backlog = conn.execute(
                    sa.select(stripe_events.c.id)
                    .where(
                        stripe_events.c.source_id == source.id,
                        stripe_events.c.processed_at.is_(None),
                    )
                    .limit(1)
                ).first()
                refetch = pending_refetches(conn, source.id)
            if backlog is not None:
                kick(self.ctx, "webhooks.process", source.id)
            if refetch:
                kick(self.ctx, "webhooks.refetch", source.id)
            last = state.last_poll_at if state is not None else None
            if last is None or (now - last).total_seconds() >= source.interval_seconds:
                kick(self.ctx, "sync.poll_events", source.id)


def poll_step(
    console: Any, store: Store, settings: Settings, source: Source
) -> list[StripeSyncError]:
    """``stripesync sync``'s last step: poll the source's events now; failures returned."""
    from rich.markup import escape

    try:
        result = poll_source(store, settings, source)
    except StripeSyncError as exc:
        console.print(f"[bold red]Event poll of {source.name} failed:[/] {escape(str(exc))}")
        return [exc]
    line = (
        f"Events of {source.name}: {result.events:,} read, {result.missed:,} not delivered by "
        f"webhooks and applied, {result.drained:,} received ones applied"
    )
    console.print(escape(line))
    if result.note:
        console.print(f"[yellow]{escape(result.note)}[/]")
    return []
