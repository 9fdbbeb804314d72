"""The store: raw Stripe objects (the source of truth), sources and sync bookkeeping.

SQLAlchemy 2 Core on SQLite (embedded default, WAL) or PostgreSQL; the schema comes from
Alembic migrations shipped in the package and applied on open (`Store.open`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

from stripesync.store import schema
from stripesync.store.engine import check_connection, make_engine, masked_url, write
from stripesync.store.migrate import current_revision, ensure_schema, head_revision, upgrade

__all__ = [
    "Store",
    "current_revision",
    "head_revision",
    "make_engine",
    "masked_url",
    "schema",
    "upgrade",
]


class Store:
    """An engine plus the two kinds of transaction stripesync uses."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(
        cls, url: str, *, migrate: bool = True, pool_size: int = 10, max_overflow: int = 30
    ) -> Store:
        """Open the database at ``url``, upgrading its schema first unless told not to."""
        engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        check_connection(engine)
        if migrate:
            ensure_schema(engine)
        return cls(engine)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: holds the write lock from the start)."""
        with write(self.engine) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()
