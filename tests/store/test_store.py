"""The store on SQLite and PostgreSQL: engines, migrations shipped in the package, types."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from stripesync.errors import ConfigError, TransientError
from stripesync.store import Store, current_revision, head_revision, make_engine, upgrade
from stripesync.store.migrate import SCRIPT_LOCATION, alembic_config
from stripesync.store.schema import RAW_TABLES, metadata, sources
from stripesync.store.types import utcnow


def test_migrations_create_exactly_the_schema(database_url: str) -> None:
    store = Store.open(database_url)
    try:
        assert current_revision(store.engine) == head_revision()
        with store.read() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), metadata
            )
        assert diff == []
        names = set(sa.inspect(store.engine).get_table_names())
        assert {spec.table.name for spec in RAW_TABLES.values()} <= names
        assert {"sources", "stripe_events", "sync_streams", "sync_slices", "sync_runs"} <= names
    finally:
        store.close()


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    store = Store.open(database_url)
    try:
        config = alembic_config()
        with store.write() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        assert "stripe_customers" not in sa.inspect(store.engine).get_table_names()
        assert upgrade(store.engine) == head_revision()
        assert "stripe_customers" in sa.inspect(store.engine).get_table_names()
    finally:
        store.close()


def test_migrations_ship_inside_the_package() -> None:
    import stripesync.store.migrations as migrations

    folder = Path(migrations.__file__).parent
    assert SCRIPT_LOCATION == "stripesync.store:migrations"
    assert (folder / "env.py").exists() and (folder / "script.py.mako").exists()
    assert list((folder / "versions").glob("0001_*.py"))


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'deep' / 'dir' / 's.db'}")
    try:
        with store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
    finally:
        store.close()


def test_concurrent_writers_on_sqlite_wait_their_turn(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                with store.write() as conn:
                    # read, then write: what fails with SQLITE_BUSY in a deferred transaction
                    conn.execute(sa.select(sa.func.count()).select_from(sources)).scalar_one()
                    now = utcnow()
                    conn.execute(
                        sa.insert(sources).values(
                            name=f"s{n}-{i}",
                            status="active",
                            key_hint="sk_test_…",
                            key_kind="secret",
                            livemode=False,
                            api_base="http://x",
                            start_mode="all",
                            interval_seconds=3600,
                            permissions={},
                            polling_only=True,
                            profile_settings={},
                            created_at=now,
                            updated_at=now,
                        )
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with store.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(sources)).scalar_one() == 160
    finally:
        store.close()


def test_datetimes_come_back_aware_utc(database_url: str) -> None:
    store = Store.open(database_url)
    try:
        paris = timezone(timedelta(hours=2))
        stamp = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=paris)
        with store.write() as conn:
            conn.execute(
                sa.insert(sources).values(
                    name="tz",
                    status="active",
                    key_hint="k",
                    key_kind="secret",
                    livemode=True,
                    api_base="http://x",
                    start_mode="all",
                    interval_seconds=60,
                    permissions={"Customers: Read": "granted"},
                    polling_only=False,
                    profile_settings={"nested": {"a": [1, 2]}},
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        with store.read() as conn:
            row = conn.execute(sa.select(sources)).one()
        assert row.created_at == stamp and row.created_at.tzinfo == UTC
        assert row.profile_settings == {"nested": {"a": [1, 2]}}
        with pytest.raises(sa.exc.StatementError, match="naive datetime"), store.write() as conn:
            conn.execute(sa.update(sources).values(updated_at=datetime(2024, 1, 1)))
    finally:
        store.close()


def test_bad_database_urls_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid SQLAlchemy URL"):
        make_engine("not a url")
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL"):
        make_engine("mysql://root:hunter2@localhost/db")
    with pytest.raises(TransientError, match="cannot open the database") as info:
        Store.open("postgresql+psycopg://nobody:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(info.value) and "STRIPESYNC_DATABASE_URL" in str(info.value)
