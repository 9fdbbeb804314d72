"""Group commit: many small write transactions from many threads, committed together.

The backfill writes one page and its checkpoint per transaction, from dozens of threads.
SQLite has one writer at a time, and a commit costs more than the statements it commits;
with one transaction per page the writers queue on the write lock. `BatchWriter` runs
the writes in one thread: it takes whatever is queued (up to ``max_batch``), runs each
in its own SAVEPOINT, so one failing write is rolled back alone, and commits them in one
transaction. `submit` returns when its write is committed (or raises its error), so a
caller's next step still sees its write durable, as with a transaction of its own.

PostgreSQL takes concurrent writers in its stride: there `submit` simply runs the write in
the caller's thread, in a transaction of its own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from stripesync.store.engine import write

__all__ = ["BatchWriter"]

T = TypeVar("T")

_STOP = object()


class BatchWriter:
    def __init__(self, store: Any, *, max_batch: int = 32) -> None:
        self._engine = store.engine
        self._queue: queue.Queue[Any] = queue.Queue()
        self._max_batch = max_batch
        self._closed = False
        self._direct = self._engine.dialect.name != "sqlite"
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        if not self._direct:
            self._thread.start()

    def submit(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a write transaction; its result once committed."""
        if self._closed:
            raise RuntimeError("the batch writer is closed")
        if self._direct:
            with write(self._engine) as conn:
                return fn(conn)
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future.result()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._direct:
                self._queue.put(_STOP)
                self._thread.join()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Callable[[Connection], Any], Future[Any]]]) -> None:
        results: list[tuple[Future[Any], bool, Any]] = []
        try:
            with write(self._engine) as conn:
                for fn, future in batch:
                    savepoint = conn.begin_nested()
                    try:
                        value = fn(conn)
                    except BaseException as exc:
                        savepoint.rollback()
                        results.append((future, False, exc))
                    else:
                        savepoint.commit()
                        results.append((future, True, value))
        except BaseException as exc:  # the commit itself failed: every write in it did
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, ok, value in results:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
