"""The receiver's hot path: which secrets sign a source's webhooks, and storing events fast.

`SourceDirectory` keeps each source's id, mode and decrypted signing secrets in memory
for a couple of seconds (a secret set with ``stripesync webhook-secret`` applies within
that, and at once for a delivery the cached secrets reject).

`LedgerWriter` is a group commit: requests hand their event over and wait; one writer
(two on PostgreSQL) stores everything waiting in one transaction and then answers them
all. An event is answered 2xx only once it is committed, and under load a single commit
carries hundreds of events, which is what lets one process accept thousands a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from stripesync.errors import NotFound, TransientError
from stripesync.secrets import SecretBox
from stripesync.store import Store
from stripesync.store.schema import sources
from stripesync.store.types import utcnow
from stripesync.sync.webhooks import insert_events, load_secrets, record_received

__all__ = ["LedgerWriter", "Receiving", "SourceDirectory"]


@dataclass(frozen=True)
class Receiving:
    """A source as the receiver needs it."""

    source_id: int
    name: str
    livemode: bool
    secrets: tuple[str, ...]
    loaded_at: float


class SourceDirectory:
    def __init__(self, store: Store, box: SecretBox, *, ttl: float = 2.0) -> None:
        self.store = store
        self.box = box
        self.ttl = ttl
        self._cache: dict[str, Receiving | None] = {}
        self._loaded: dict[str, float] = {}
        self._lock = threading.Lock()

    def cached(self, name: str) -> Receiving | None:
        """The cached entry if fresh; raises NotFound for a name known not to exist."""
        with self._lock:
            at = self._loaded.get(name)
            if at is None or time.monotonic() - at > self.ttl:
                return None
            entry = self._cache.get(name)
        if entry is None:
            raise _unknown(name)
        return entry

    def load(self, name: str) -> Receiving:
        """Read the source from the store (blocking: run it in a thread)."""
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(sources.c.id, sources.c.name, sources.c.livemode, sources.c.status).where(
                    sources.c.name == name
                )
            ).first()
            entry: Receiving | None = None
            if row is not None and row.status == "active":
                entry = Receiving(
                    row.id,
                    row.name,
                    bool(row.livemode),
                    tuple(load_secrets(conn, self.box, row.id)),
                    time.monotonic(),
                )
        with self._lock:
            self._cache[name] = entry
            self._loaded[name] = time.monotonic()
        if entry is None:
            raise _unknown(name)
        return entry


def _unknown(name: str) -> NotFound:
    return NotFound(
        f"no connected source named {name!r} receives webhooks here; check the endpoint URL "
        "(…/webhooks/stripe/SOURCE) and `stripesync sources`"
    )


class LedgerWriter:
    """Stores events in batches; `put` returns once its event is committed."""

    def __init__(
        self,
        store: Store,
        on_commit: Callable[[set[int]], None],
        *,
        writers: int | None = None,
        max_batch: int = 500,
    ) -> None:
        self.store = store
        self.on_commit = on_commit
        self.writers = writers or (4 if store.backend == "postgresql" else 1)
        self.max_batch = max_batch
        self._queue: list[tuple[Mapping[str, Any], asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.flush_every = 1.0
        self._tallies: dict[int, tuple[int, int, datetime]] = {}
        self._tally_lock = threading.Lock()
        self._flushed = 0.0

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.writers)]

    async def stop(self) -> None:
        """Store what is waiting, then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tallies:
            await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        with self._tally_lock:
            tallies, self._tallies = self._tallies, {}
        with self.store.write() as conn:
            record_received(conn, tallies)

    async def put(self, row: Mapping[str, Any]) -> None:
        """Store one ledger row (`stripesync.sync.webhooks.ledger_row`), or a duplicate of
        one already there; returns once it is committed."""
        if self._wake is None or self._closing:
            raise TransientError("the server is shutting down; Stripe will retry the delivery")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_every)
                except TimeoutError:
                    if self._tallies:  # quiet now: the counters need not wait for traffic
                        with contextlib.suppress(Exception):
                            await asyncio.to_thread(self._flush)
                continue
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            rows = [row for row, _ in batch]
            try:
                await asyncio.to_thread(self._write, rows)
            except Exception as exc:
                error = TransientError(
                    f"could not store the event ({type(exc).__name__}); Stripe will retry"
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
            self.on_commit({int(row["source_id"]) for row in rows})

    def _write(self, rows: list[Mapping[str, Any]]) -> int:
        with self.store.write() as conn:
            added = insert_events(conn, rows)
            self._tally(rows, added)
            if self._closing or time.monotonic() - self._flushed >= self.flush_every:
                # The health counters, at most once a second: one row per source that
                # every writer would otherwise wait on.
                with self._tally_lock:
                    tallies, self._tallies = self._tallies, {}
                    self._flushed = time.monotonic()
                record_received(conn, tallies)
            return added

    def _tally(self, rows: list[Mapping[str, Any]], added: int) -> None:
        now = utcnow()
        duplicates = len(rows) - added
        with self._tally_lock:
            for n, row in enumerate(rows):
                source_id = int(row["source_id"])
                received, dups, _ = self._tallies.get(source_id, (0, 0, now))
                # Duplicates are counted against the batch's first source (almost always
                # the only one).
                self._tallies[source_id] = (received + 1, dups + (duplicates if n == 0 else 0), now)
