"""Alembic, driven from the installed package (no alembic.ini needed).

``stripesync migrate`` and every command that opens the store call `ensure_schema`,
which upgrades to the newest revision when the database is behind. Concurrent starts
are safe: the upgrade holds SQLite's write lock or a PostgreSQL advisory lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from stripesync.store.engine import write

SCRIPT_LOCATION = "stripesync.store:migrations"
#: An arbitrary constant: the key of the advisory lock serializing upgrades on PostgreSQL.
PG_LOCK_KEY = 0x5354_5249_5045  # "STRIPE"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "stripesync ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the schema to ``revision``; returns the revision the database is at."""
    config = alembic_config()
    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return current_revision(engine)


def ensure_schema(engine: Engine) -> None:
    """Upgrade when behind; a cheap read when already current."""
    if current_revision(engine) != head_revision():
        upgrade(engine)
