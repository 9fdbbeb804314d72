"""Sync fixtures: a simulator with a seeded account, settings and a store per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stripesync.settings import Settings
from stripesync.sim.core import Knobs
from stripesync.sim.server import SimServer
from stripesync.store import Store
from tests.sync.helpers import make_settings
from tests.sync.seed import seed_account


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[SimServer, dict[str, Any]]]:
    """One simulator per module with a seeded test-mode account (rate limits off)."""
    with SimServer(knobs=Knobs(rate_limits=False), deliver_webhooks=False) as server:
        ids = seed_account(server.sim)
        yield server, ids


@pytest.fixture
def server() -> Iterator[SimServer]:
    """A fresh, empty simulator (rate limits off) for tests that change it."""
    with SimServer(knobs=Knobs(rate_limits=False), deliver_webhooks=False) as srv:
        yield srv


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.open(settings.resolved_database_url)
    yield opened
    opened.close()
