"""Shared fixtures: databases on SQLite and PostgreSQL, each test run making its own.

PostgreSQL comes from STRIPESYNC_TEST_POSTGRES_URL (default: the machine's server at
127.0.0.1:5432, database `test`, user `postgres`). Tests create a fresh database per
session and drop it after, so whatever an earlier run left behind never matters. In CI
(CI=true) a missing PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "stripe-fixtures" / "fixtures3.json"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _admin_url() -> str:
    return os.environ.get("STRIPESYNC_TEST_POSTGRES_URL", DEFAULT_PG)


def _postgres_available(url: str) -> str | None:
    """None when reachable, else the reason."""
    import sqlalchemy as sa

    for candidate in (url, url.replace("postgres@", "root@")):
        try:
            engine = sa.create_engine(candidate, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            engine.dispose()
            os.environ["STRIPESYNC_TEST_POSTGRES_URL"] = candidate
            return None
        except Exception as exc:  # the reason is reported, not swallowed
            reason = f"{type(exc).__name__}: {exc}"
    return reason


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """An admin URL for the PostgreSQL server, or a skip (a failure in CI)."""
    url = _admin_url()
    reason = _postgres_available(url)
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {url}: {reason}")
        pytest.skip(f"PostgreSQL unreachable at {url}: {reason}")
    yield os.environ["STRIPESYNC_TEST_POSTGRES_URL"]


def make_postgres_database(admin_url: str) -> tuple[str, str]:
    """Create a uniquely named database; returns (its URL, its name)."""
    import sqlalchemy as sa

    name = f"stripesync_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_postgres_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend (parametrized ids: sqlite, postgresql)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stripesync.db'}"
        return
    admin = request.getfixturevalue("postgres_server")
    url, name = make_postgres_database(admin)
    try:
        yield url
    finally:
        drop_postgres_database(admin, name)


@pytest.fixture(scope="session")
def stripe_fixtures() -> dict[str, dict]:
    import json

    return json.loads(FIXTURES.read_text())["resources"]  # type: ignore[no-any-return]
