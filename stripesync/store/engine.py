"""Engines for the two supported backends: SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode so readers (``stripesync status``, the web app) never wait for
the importer, with ``synchronous=NORMAL`` (durable at each checkpoint, not each commit:
a power cut may lose the last page, which the checkpoint then re-reads), foreign keys on
and a long busy timeout. Write transactions begin ``IMMEDIATE``: a deferred transaction
that reads, then writes, fails at once with SQLITE_BUSY when another connection wrote
in between, instead of waiting its turn.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from stripesync.errors import ConfigError, TransientError
from stripesync.store.types import dumps

SQLITE_BUSY_TIMEOUT_MS = 60_000

#: SQLite has one writer at a time; threads of this process queue on a lock, in order,
#: rather than in SQLite's busy handler, which sleeps and retries (unfair under load).
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(engine: Engine) -> threading.Lock | None:
    if engine.dialect.name != "sqlite":
        return None
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = threading.Lock()
        return lock


def masked_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 30) -> Engine:
    """An engine for ``url``; a bad or unsupported URL is one clear ConfigError."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"database URL {url!r} is not a valid SQLAlchemy URL; use sqlite:///path.db or "
            "postgresql+psycopg://user@host:5432/db (STRIPESYNC_DATABASE_URL)"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool_size=pool_size, max_overflow=max_overflow)
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return sa.create_engine(
                parsed,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
                pool_timeout=120,
                json_serializer=dumps,
            )
        except NoSuchModuleError as exc:
            raise ConfigError(
                f"no driver for {masked_url(parsed)}; use postgresql+psycopg://..."
            ) from exc
    raise ConfigError(
        f"database {masked_url(parsed)} is not supported: stripesync runs on SQLite or "
        "PostgreSQL (STRIPESYNC_DATABASE_URL=postgresql+psycopg://user@host:5432/db)"
    )


def _sqlite_engine(url: URL, *, pool_size: int, max_overflow: int) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=120,
        json_serializer=dumps,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy's begin event (below) emit BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA temp_store=MEMORY")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on error.

    On SQLite it takes the write lock up front (``BEGIN IMMEDIATE``); on PostgreSQL it
    is an ordinary transaction.
    """
    lock = _write_lock(engine)
    if lock is not None:
        lock.acquire()
    try:
        with engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn
    finally:
        if lock is not None:
            lock.release()


def check_connection(engine: Engine) -> None:
    """Fail early, with the URL (password hidden) and the fix, when the store is unreachable."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise TransientError(
            f"cannot open the database {masked_url(engine.url)}: {reason}; check "
            "STRIPESYNC_DATABASE_URL and that the server is running"
        ) from exc
