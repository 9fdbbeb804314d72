"""The backfill: import a source's history into the raw store, as fast as the budget allows.

A run plans each stream (`streams.STREAMS`) as slices of its ``created`` range
(`slices`), then runs one ``sync.import_slice`` job per slice (`stripesync.jobs`). A
job pages its slice through the source's request budget, completes nested lists Stripe
truncates, and for each page writes the objects (`apply`) and the slice's checkpoint in
one transaction; it may split its remainder so the stream keeps enough slices in flight.
Jobs take only ids as arguments: they find the store, the settings and the source's
Stripe client in the process running them (`runtime_for`), so a queue can run them too.

What a run leaves behind is always true: a stream is ``done`` only when every slice
finished; a slice that gave up (429s or 5xx after every retry, a missing permission, a
refused request) makes its stream ``failed`` with the reason, and the next run resumes
it from its checkpoint. Killing the process at any moment loses at most the page being
written, which the checkpoint then reads again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stripesync.errors import StripeSyncError, TerminalError, TransientError
from stripesync.jobs import InProcessRunner, JobContext, job
from stripesync.secrets import secret_box
from stripesync.settings import Settings
from stripesync.store import Store
from stripesync.store.batch import BatchWriter
from stripesync.store.schema import RAW_TABLES, sync_errors, sync_runs, sync_slices, sync_streams
from stripesync.store.types import utcnow
from stripesync.stripe_api.budget import RetryPolicy
from stripesync.stripe_api.client import StripeAPI
from stripesync.stripe_api.errors import StripeError, StripeRequestRefused
from stripesync.stripe_api.permissions import PERMISSIONS
from stripesync.sync.apply import Observed, prepare, write_prepared
from stripesync.sync.slices import (
    PAGE_SIZE,
    STRIPE_EPOCH,
    Slice,
    add_slices,
    count_pending,
    cut,
    load_slice,
    midpoint,
)
from stripesync.sync.sources import Source, api_for_source, get_source
from stripesync.sync.streams import STREAMS, Stream, stream

__all__ = [
    "BackfillOptions",
    "RunSummary",
    "StreamOutcome",
    "Tracker",
    "import_slice",
    "run_backfill",
]

log = logging.getLogger(__name__)

#: A run whose heartbeat is older than this is considered dead.
HEARTBEAT_SECONDS = 5.0
STALE_RUN_SECONDS = 60.0


@dataclass(frozen=True)
class BackfillOptions:
    workers: int = 64
    #: Slices each stream keeps in flight (split on demand up to this many).
    slices_per_stream: int = 8
    #: Slices a stream's range is first cut into (splitting takes it from there: a small
    #: stream then costs one request, a large one ramps up within a few pages).
    initial_slices: int = 1
    #: Split a slice only when its remainder is estimated at this many pages or more.
    min_split_pages: float = 4.0
    #: Objects per page (Stripe's maximum, 100; smaller only in tests).
    page_size: int = PAGE_SIZE
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    streams: tuple[str, ...] | None = None  # None: every stream

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> BackfillOptions:
        return cls(**{"workers": settings.sync_workers, **overrides})


# -- live progress (process-local, for the progress bars and the budget's priorities) ---


@dataclass
class StreamLive:
    name: str
    objects: int = 0
    pages: int = 0
    slices_total: int = 0
    slices_done: int = 0
    slices_failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    read_objects: int = 0
    read_seconds: int = 0
    slices: dict[int, Slice] = field(default_factory=dict)

    @property
    def density(self) -> float | None:
        if self.read_seconds <= 0 or self.read_objects <= 0:
            return None
        return self.read_objects / self.read_seconds

    def remaining(self) -> float | None:
        """Objects estimated left in the slices in flight (None: not known yet)."""
        total = 0.0
        for sl in self.slices.values():
            est = sl.estimated_remaining(self.density)
            if est is None:
                return None
            total += est
        return total

    @property
    def rate(self) -> float:
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.objects / elapsed if elapsed > 0 else 0.0


class Tracker:
    """What each stream of a run has done so far; feeds the budget's priorities."""

    def __init__(self, on_priority: Callable[[str, float], None] | None = None) -> None:
        self._lock = threading.Lock()
        self.streams: dict[str, StreamLive] = {}
        self._on_priority = on_priority

    def _live(self, name: str) -> StreamLive:
        live = self.streams.get(name)
        if live is None:
            live = self.streams[name] = StreamLive(name)
        return live

    def _prioritize(self, live: StreamLive) -> None:
        if self._on_priority is None:
            return
        remaining = live.remaining()
        self._on_priority(live.name, float("inf") if remaining is None else remaining / PAGE_SIZE)

    def stream_started(self, name: str) -> None:
        with self._lock:
            self._live(name)

    def slice_known(self, sl: Slice) -> None:
        with self._lock:
            live = self._live(sl.stream)
            if sl.id not in live.slices:
                live.slices_total += 1
            live.slices[sl.id] = sl
            self._prioritize(live)

    def page(self, before: Slice, after: Slice, objects: int) -> None:
        with self._lock:
            live = self._live(after.stream)
            live.objects += objects
            live.pages += 1
            live.read_objects += objects
            live.read_seconds += max(0, before.remaining_hi - after.remaining_hi)
            if after.state == "pending":
                live.slices[after.id] = after
            self._prioritize(live)

    def slice_finished(self, sl: Slice, *, failed: bool) -> None:
        with self._lock:
            live = self._live(sl.stream)
            live.slices.pop(sl.id, None)
            if failed:
                live.slices_failed += 1
            else:
                live.slices_done += 1
            if not live.slices:
                live.finished = time.monotonic()
            self._prioritize(live)

    def snapshot(self) -> list[StreamLive]:
        with self._lock:
            return [replace(s, slices=dict(s.slices)) for s in self.streams.values()]


# -- per-process runtime of a source ----------------------------------------------------


@dataclass
class SourceRuntime:
    source: Source
    api: StripeAPI
    store: Store
    options: BackfillOptions
    tracker: Tracker
    writer: BatchWriter
    stop: threading.Event = field(default_factory=threading.Event)
    sleep: Callable[[float], None] = time.sleep
    #: (source id, customer id) of customers whose objects this run wrote: their profiles
    #: are recomputed once, when the run ends (issue 6, `_refresh_profiles`).
    touched: set[tuple[int, str]] = field(default_factory=set)


_RUNTIME_LOCK = threading.Lock()


def runtime_for(ctx: JobContext, source_id: int) -> SourceRuntime:
    """The source's runtime in this process, built on first use from the store and settings."""
    runtimes: dict[int, SourceRuntime] = ctx.resources.setdefault("runtimes", {})
    with _RUNTIME_LOCK:
        runtime = runtimes.get(source_id)
        if runtime is None:
            store: Store = ctx.get("store")
            settings: Settings = ctx.get("settings")
            with store.read() as conn:
                name = conn.execute(
                    sa.text("SELECT name FROM sources WHERE id = :id"), {"id": source_id}
                ).scalar_one()
            source = get_source(store, str(name))
            options = BackfillOptions.from_settings(settings)
            tracker = Tracker()
            api = api_for_source(source, settings, secret_box(settings), policy=options.policy)
            runtime = SourceRuntime(source, api, store, options, tracker, BatchWriter(store))
            runtimes[source_id] = runtime
        return runtime


# -- the slice job ----------------------------------------------------------------------


@job("sync.import_slice")
def import_slice(ctx: JobContext, *, source_id: int, slice_id: int) -> None:
    """Import one slice to its end (or until it gives up), splitting it when useful."""
    runtime = runtime_for(ctx, source_id)
    _SliceImport(runtime, ctx, slice_id).run()


class _SliceImport:
    def __init__(self, runtime: SourceRuntime, ctx: JobContext, slice_id: int) -> None:
        self.rt = runtime
        self.ctx = ctx
        self.slice_id = slice_id

    def run(self) -> None:
        rt = self.rt
        with rt.store.read() as conn:
            sl = load_slice(conn, self.slice_id)
        if sl is None or sl.state != "pending":
            return
        spec = stream(sl.stream)
        rt.tracker.slice_known(sl)
        failures = 0
        while not rt.stop.is_set():
            try:
                sl, new_ids = self._step(spec, sl)
            except StripeSyncError as exc:
                failures += 1
                retry = (
                    isinstance(exc, TransientError) and failures <= rt.options.policy.slice_retries
                )
                sl = self._record_error(sl, exc, give_up=not retry)
                if not retry:
                    rt.tracker.slice_finished(sl, failed=True)
                    return
                rt.sleep(rt.options.policy.slice_retry_delay)
                continue
            except Exception as exc:
                # A bug, not Stripe: the stream must still show failed, with the reason.
                self._record_error(sl, exc, give_up=True)
                rt.tracker.slice_finished(sl, failed=True)
                raise
            for new_id in new_ids:
                self.ctx.defer("sync.import_slice", source_id=sl.source_id, slice_id=new_id)
            if sl.state == "done":
                rt.tracker.slice_finished(sl, failed=False)
                return

    def _params(self, spec: Stream, sl: Slice) -> dict[str, Any]:
        params = spec.list_params(self.rt.options.page_size)
        # Bounding `created` by the cursor's second returns the same page as the cursor
        # alone, and lets the server start its scan at the cursor instead of at `hi`.
        params["created"] = {"gte": sl.lo, "lt": sl.remaining_hi}
        if sl.cursor is not None:
            params["starting_after"] = sl.cursor
        return params

    def _step(self, spec: Stream, sl: Slice) -> tuple[Slice, list[int]]:
        rt = self.rt
        try:
            page = rt.api.list_page(spec.path, self._params(spec, sl), group=spec.name)
        except StripeRequestRefused as exc:
            if sl.cursor is not None and exc.http_status == 404:
                # The checkpoint's object is gone (deleted): carry on from its second instead.
                return self._drop_cursor(sl), []
            raise
        objects = page.data
        for obj in objects:
            _complete_nested(rt.api, spec, obj)
        # Everything that needs no database happens before taking the write lock.
        prepared = prepare(sl.source_id, objects, Observed.api(page.sent_ms, page.received_ms))
        count, has_more = len(objects), page.has_more
        last_id = str(objects[-1]["id"]) if objects else None
        created = objects[-1].get("created") if objects else None
        last_created = int(created) if isinstance(created, int | float) else None
        # The page is encoded now; the parsed dicts can go while it waits to be written.
        del page, objects

        def commit(conn: Connection) -> tuple[Slice, list[int]]:
            rt.touched.update(write_prepared(conn, prepared).customers)
            current = load_slice(conn, sl.id)
            assert current is not None
            new_ids: list[int] = []
            after = replace(
                current,
                cursor=last_id if last_id is not None else current.cursor,
                cursor_created=last_created if last_created is not None else current.cursor_created,
                objects=current.objects + count,
                pages=current.pages + 1,
                state="pending" if has_more and count else "done",
                attempts=0,
            )
            if after.state == "pending":
                after, new_ids = self._maybe_split(conn, after)
            conn.execute(
                sa.update(sync_slices)
                .where(sync_slices.c.id == sl.id)
                .values(
                    lo=after.lo,
                    cursor=after.cursor,
                    cursor_created=after.cursor_created,
                    objects=after.objects,
                    pages=after.pages,
                    state=after.state,
                    attempts=0,
                    last_error=None,
                    updated_at=utcnow(),
                )
            )
            conn.execute(
                sa.update(sync_streams)
                .where(
                    sync_streams.c.source_id == sl.source_id,
                    sync_streams.c.stream == sl.stream,
                )
                .values(
                    objects=sync_streams.c.objects + count,
                    pages=sync_streams.c.pages + 1,
                    updated_at=utcnow(),
                )
            )
            return after, new_ids

        # One transaction per page and its checkpoint, committed in groups (BatchWriter).
        after, new_ids = rt.writer.submit(commit)
        rt.tracker.page(sl, after, count)
        if new_ids:
            with rt.store.read() as conn:
                for new_id in new_ids:
                    created_slice = load_slice(conn, new_id)
                    if created_slice is not None:
                        rt.tracker.slice_known(created_slice)
        return after, new_ids

    def _maybe_split(self, conn: Connection, sl: Slice) -> tuple[Slice, list[int]]:
        opts = self.rt.options
        live = self.rt.tracker.streams.get(sl.stream)
        estimate = sl.estimated_remaining(live.density if live else None)
        if estimate is None or estimate < opts.min_split_pages * opts.page_size:
            return sl, []
        mid = midpoint(sl)
        if mid is None or count_pending(conn, sl.source_id, sl.stream) >= opts.slices_per_stream:
            return sl, []
        new_ids = add_slices(conn, sl.source_id, sl.stream, [(sl.lo, mid)])
        return replace(sl, lo=mid), new_ids

    def _drop_cursor(self, sl: Slice) -> Slice:
        assert sl.cursor_created is not None
        after = replace(sl, hi=sl.cursor_created + 1, cursor=None)
        with self.rt.store.write() as conn:
            conn.execute(
                sa.update(sync_slices)
                .where(sync_slices.c.id == sl.id)
                .values(hi=after.hi, cursor=None, updated_at=utcnow())
            )
        return after

    def _record_error(self, sl: Slice, exc: BaseException, *, give_up: bool) -> Slice:
        message = str(exc) if isinstance(exc, StripeSyncError) else f"internal error: {exc!r}"
        kind = "transient" if isinstance(exc, TransientError) else "terminal"
        now = utcnow()
        with self.rt.store.write() as conn:
            conn.execute(
                sa.insert(sync_errors).values(
                    source_id=sl.source_id,
                    stream=sl.stream,
                    slice_id=sl.id,
                    occurred_at=now,
                    kind=kind,
                    http_status=getattr(exc, "http_status", None),
                    code=getattr(exc, "stripe_code", None),
                    request_id=getattr(exc, "request_id", None),
                    message=message,
                )
            )
            conn.execute(
                sa.update(sync_slices)
                .where(sync_slices.c.id == sl.id)
                .values(
                    attempts=sync_slices.c.attempts + 1,
                    last_error=message,
                    state="failed" if give_up else "pending",
                    updated_at=now,
                )
            )
            conn.execute(
                sa.update(sync_streams)
                .where(
                    sync_streams.c.source_id == sl.source_id,
                    sync_streams.c.stream == sl.stream,
                )
                .values(last_error=message, last_error_at=now, updated_at=now)
            )
        return replace(sl, state="failed" if give_up else "pending", attempts=sl.attempts + 1)


def _complete_nested(api: StripeAPI, spec: Stream, obj: dict[str, Any]) -> None:
    """Replace each truncated nested list (``has_more``) by the whole list, fetched."""
    for nested in spec.nested:
        embedded = obj.get(nested.name)
        if not isinstance(embedded, Mapping) or not embedded.get("has_more"):
            continue
        path, params = nested.request(str(obj["id"]))
        items: list[dict[str, Any]] = []
        for page in api.iter_list(path, {"limit": 100, **params}, group=spec.name):
            items.extend(page.data)
        obj[nested.name] = {**embedded, "data": items, "has_more": False}


# -- planning ---------------------------------------------------------------------------


@dataclass
class StreamOutcome:
    name: str
    state: str
    objects: int = 0
    pages: int = 0
    slices_done: int = 0
    slices_total: int = 0
    stored: int = 0
    error: str | None = None
    #: ``transient`` (a rerun may succeed) or ``terminal`` (fix something first).
    error_kind: str | None = None
    note: str | None = None


@dataclass
class RunSummary:
    source: str
    run_id: int
    outcomes: list[StreamOutcome]
    seconds: float
    requests: int
    rate_limited: int

    @property
    def failed(self) -> list[StreamOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def objects(self) -> int:
        return sum(o.objects for o in self.outcomes)


def _streams_for(
    source: Source, only: tuple[str, ...] | None
) -> tuple[list[Stream], dict[str, str]]:
    """The streams this source's key can read, and why the others are skipped."""
    report = source.permission_report
    labels = {p.resource: p for p in PERMISSIONS if p.access == "read"}
    chosen: list[Stream] = []
    skipped: dict[str, str] = {}
    for spec in STREAMS:
        if only is not None and spec.name not in only:
            continue
        permission = labels.get(spec.permission)
        if permission is not None and report.checks and not report.granted(spec.permission):
            skipped[spec.name] = (
                f"key lacks `{permission.name}`: {permission.without or 'not imported'}"
            )
            continue
        chosen.append(spec)
    return chosen, skipped


def _newest_created(api: StripeAPI, spec: Stream) -> int | None:
    page = api.list_page(spec.path, {"limit": 1, **spec.params}, group=spec.name)
    if not page.data:
        return None
    created = page.data[0].get("created")
    return int(created) if isinstance(created, int | float) else None


def _stream_row(conn: Connection, source_id: int, name: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(sync_streams).where(
            sync_streams.c.source_id == source_id, sync_streams.c.stream == name
        )
    ).first()


def _upsert_stream(conn: Connection, source_id: int, name: str, **values: Any) -> None:
    values["updated_at"] = utcnow()
    if _stream_row(conn, source_id, name) is None:
        defaults: dict[str, Any] = {"state": "pending", "objects": 0, "pages": 0}
        conn.execute(
            sa.insert(sync_streams).values(
                source_id=source_id, stream=name, **{**defaults, **values}
            )
        )
    else:
        conn.execute(
            sa.update(sync_streams)
            .where(sync_streams.c.source_id == source_id, sync_streams.c.stream == name)
            .values(**values)
        )


def _plan_stream(rt: SourceRuntime, spec: Stream) -> tuple[str, str] | None:
    """Make the stream's slices for this run; (error, kind) if it could not."""
    source = rt.source
    with rt.store.read() as conn:
        row = _stream_row(conn, source.id, spec.name)
        unfinished = conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_slices)
            .where(
                sync_slices.c.source_id == source.id,
                sync_slices.c.stream == spec.name,
                sync_slices.c.state.in_(("pending", "failed")),
            )
        ).scalar_one()
    now = utcnow()
    if unfinished:
        with rt.store.write() as conn:
            conn.execute(
                sa.update(sync_slices)
                .where(
                    sync_slices.c.source_id == source.id,
                    sync_slices.c.stream == spec.name,
                    sync_slices.c.state == "failed",
                )
                .values(state="pending", attempts=0, updated_at=now)
            )
            _upsert_stream(conn, source.id, spec.name, state="running", finished_at=None)
        return None
    first = row is None or row.range_hi is None
    if first:
        lo = source.start_at if source.start_at is not None else STRIPE_EPOCH
    else:
        assert row is not None
        # One second of overlap: objects created in the second the last plan ended in.
        lo = int(row.range_hi) - 1
    try:
        newest = _newest_created(rt.api, spec)
    except StripeError as exc:
        return str(exc), "transient" if isinstance(exc, TransientError) else "terminal"
    hi = max(lo, newest + 1) if newest is not None else lo
    with rt.store.write() as conn:
        ranges = cut(lo, hi, rt.options.initial_slices if first else 1)
        add_slices(conn, source.id, spec.name, ranges)
        values: dict[str, Any] = {
            "state": "running" if ranges else "done",
            "range_hi": max(hi, int(row.range_hi) if row is not None and row.range_hi else hi),
            "started_at": now,
            "finished_at": None if ranges else now,
            "note": None,
        }
        if first:
            values["range_lo"] = source.start_at
        _upsert_stream(conn, source.id, spec.name, **values)
    return None


# -- runs -------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_alive(run: sa.Row[Any]) -> bool:
    """Whether a ``running`` run's process still lives: a fresh heartbeat and, on this
    host, its pid still there (so a killed run shows at once, not a minute later)."""
    if run.state != "running":
        return False
    if (utcnow() - run.heartbeat_at).total_seconds() > STALE_RUN_SECONDS:
        return False
    return not (
        run.host == socket.gethostname() and run.pid is not None and not _pid_alive(run.pid)
    )


def _claim_run(store: Store, source: Source) -> int:
    """Record this run; refuse when another live process is syncing the source."""
    host = socket.gethostname()
    now = utcnow()
    with store.write() as conn:
        for run in conn.execute(
            sa.select(sync_runs).where(
                sync_runs.c.source_id == source.id, sync_runs.c.state == "running"
            )
        ):
            if run_alive(run):
                raise TerminalError(
                    f"source {source.name!r} is being synced already (pid {run.pid} on "
                    f"{run.host}, since {run.started_at:%Y-%m-%d %H:%M:%S} UTC); wait for it "
                    "to finish, or stop it and rerun"
                )
            conn.execute(
                sa.update(sync_runs)
                .where(sync_runs.c.id == run.id)
                .values(state="interrupted", finished_at=run.heartbeat_at)
            )
        result = conn.execute(
            sa.insert(sync_runs)
            .values(
                source_id=source.id,
                state="running",
                started_at=now,
                heartbeat_at=now,
                pid=os.getpid(),
                host=host,
                objects=0,
                requests=0,
                rate_limited=0,
            )
            .returning(sync_runs.c.id)
        )
        return int(result.scalar_one())


def _heartbeat(store: Store, run_id: int, rt: SourceRuntime) -> None:
    objects = sum(s.objects for s in rt.tracker.snapshot())
    with store.write() as conn:
        conn.execute(
            sa.update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(
                heartbeat_at=utcnow(),
                objects=objects,
                requests=rt.api.stats.requests,
                rate_limited=rt.api.stats.rate_limited,
            )
        )


def _count_rows(conn: Connection, source_id: int, spec: Stream) -> int:
    table = RAW_TABLES[spec.object_type].table
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.source_id == source_id)
        ).scalar_one()
    )


def _finish(
    store: Store,
    rt: SourceRuntime,
    run_id: int,
    planned: list[Stream],
    plan_errors: dict[str, tuple[str, str]],
    skipped: dict[str, str],
    started: float,
    interrupted: bool,
) -> RunSummary:
    source = rt.source
    live = {s.name: s for s in rt.tracker.snapshot()}
    outcomes: list[StreamOutcome] = []
    now = utcnow()
    with store.write() as conn:
        for spec in STREAMS:
            if spec.name in skipped:
                _upsert_stream(conn, source.id, spec.name, state="skipped", note=skipped[spec.name])
                outcomes.append(StreamOutcome(spec.name, "skipped", note=skipped[spec.name]))
                continue
            if spec not in planned:
                continue
            states: dict[str, int] = dict(
                conn.execute(
                    sa.select(sync_slices.c.state, sa.func.count())
                    .where(sync_slices.c.source_id == source.id, sync_slices.c.stream == spec.name)
                    .group_by(sync_slices.c.state)
                ).all()
            )
            done, failed, pending = (int(states.get(k, 0)) for k in ("done", "failed", "pending"))
            error, kind = plan_errors.get(spec.name, (None, "terminal"))
            if error is not None:
                state = "failed"
            elif failed or pending:
                state = "failed"
                latest = conn.execute(
                    sa.select(sync_errors.c.message, sync_errors.c.kind)
                    .where(sync_errors.c.source_id == source.id, sync_errors.c.stream == spec.name)
                    .order_by(sync_errors.c.id.desc())
                    .limit(1)
                ).first()
                if failed and latest is not None:
                    error, kind = latest.message, latest.kind
                else:
                    error, kind = (
                        "interrupted before it finished"
                        if interrupted
                        else f"{failed + pending} slice(s) did not finish",
                        "transient",
                    )
            else:
                state = "done"
            values: dict[str, Any] = {"state": state}
            if state == "done":
                values["finished_at"] = now
            if error is not None:
                values.update(last_error=error, last_error_at=now)
            _upsert_stream(conn, source.id, spec.name, **values)
            stream_live = live.get(spec.name)
            outcomes.append(
                StreamOutcome(
                    spec.name,
                    state,
                    objects=stream_live.objects if stream_live else 0,
                    pages=stream_live.pages if stream_live else 0,
                    slices_done=done,
                    slices_total=done + failed + pending,
                    stored=_count_rows(conn, source.id, spec),
                    error=error,
                    error_kind=kind if error is not None else None,
                )
            )
        failed_streams = [o for o in outcomes if o.state == "failed"]
        conn.execute(
            sa.update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(
                state="failed" if failed_streams or interrupted else "done",
                finished_at=now,
                heartbeat_at=now,
                objects=sum(o.objects for o in outcomes),
                requests=rt.api.stats.requests,
                rate_limited=rt.api.stats.rate_limited,
                error="; ".join(f"{o.name}: {o.error}" for o in failed_streams) or None,
            )
        )
    return RunSummary(
        source=source.name,
        run_id=run_id,
        outcomes=outcomes,
        seconds=time.monotonic() - started,
        requests=rt.api.stats.requests,
        rate_limited=rt.api.stats.rate_limited,
    )


ProgressHook = Callable[[Tracker], None]


def run_backfill(
    store: Store,
    settings: Settings,
    source: Source,
    *,
    options: BackfillOptions | None = None,
    api: StripeAPI | None = None,
    on_progress: ProgressHook | None = None,
    progress_interval: float = 0.2,
) -> RunSummary:
    """Import (or resume importing) a source's history; returns what each stream did."""
    options = options or BackfillOptions.from_settings(settings)
    if api is None:
        api = api_for_source(source, settings, secret_box(settings), policy=options.policy)
    budget = api.budget
    tracker = Tracker(budget.set_priority if budget is not None else None)
    writer = BatchWriter(store)
    rt = SourceRuntime(source, api, store, options, tracker, writer)
    started = time.monotonic()
    run_id = _claim_run(store, source)
    planned, skipped = _streams_for(source, options.streams)
    plan_errors: dict[str, tuple[str, str]] = {}
    interrupted = False
    runner = InProcessRunner(
        {"store": store, "settings": settings, "runtimes": {source.id: rt}},
        max_workers=options.workers,
    )
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(planned))) as pool:
            for spec, error in zip(
                planned, pool.map(lambda s: _plan_stream(rt, s), planned), strict=True
            ):
                if error is not None:
                    plan_errors[spec.name] = error
        with store.read() as conn:
            queued = [
                Slice.from_row(r)
                for r in conn.execute(
                    sa.select(sync_slices)
                    .where(sync_slices.c.source_id == source.id, sync_slices.c.state == "pending")
                    .order_by(sync_slices.c.id)
                )
            ]
        for spec in planned:
            tracker.stream_started(spec.name)
        # Interleave streams so every stream starts at once, whatever the pool size.
        by_stream: dict[str, list[Slice]] = {}
        for sl in queued:
            if sl.stream in {s.name for s in planned}:
                by_stream.setdefault(sl.stream, []).append(sl)
        order: list[Slice] = []
        while any(by_stream.values()):
            for slices_left in by_stream.values():
                if slices_left:
                    order.append(slices_left.pop(0))
        for sl in order:
            tracker.slice_known(sl)
            runner.defer("sync.import_slice", source_id=source.id, slice_id=sl.id)
        last_beat = time.monotonic()
        while runner.pending:
            runner.join(timeout=progress_interval)
            if on_progress is not None:
                on_progress(tracker)
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                _heartbeat(store, run_id, rt)
                last_beat = time.monotonic()
        if on_progress is not None:
            on_progress(tracker)
    except KeyboardInterrupt:
        interrupted = True
        rt.stop.set()
        runner.join()
        raise
    finally:
        runner.shutdown()
        writer.close()
        summary = _finish(store, rt, run_id, planned, plan_errors, skipped, started, interrupted)
        _refresh_profiles(store, rt)
    return summary


def _refresh_profiles(store: Store, rt: SourceRuntime) -> None:
    """Recompute the profiles of every customer the run wrote, after the writes committed.

    Once per run rather than per page: a customer's objects arrive on many pages of many
    streams, and one set-based pass over the touched customers costs a fraction of
    recomputing them page after page (issue 6, docs/profiles.md). Interrupted runs are
    refreshed too, for what they committed.
    """
    if rt.touched:
        from stripesync.profiles.recompute import refresh_after_apply

        refresh_after_apply(store, sorted(rt.touched))


def failure_message(summary: RunSummary) -> StripeSyncError:
    """The error a failed run ends the command with (transient when a rerun may fix it)."""
    parts = [f"{o.name}: {o.error}" for o in summary.failed]
    text = (
        f"sync of source {summary.source!r}: {len(parts)} stream(s) failed ("
        + "; ".join(parts)
        + f"); see `stripesync status`; rerun `stripesync sync {summary.source}` to resume"
    )
    if all(o.error_kind == "transient" for o in summary.failed):
        return TransientError(text)
    return TerminalError(text)
