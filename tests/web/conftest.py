"""Web fixtures: the stripesync app served by a real uvicorn in a thread, and a simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from stripesync.settings import Settings
from stripesync.sim.core import Knobs
from stripesync.sim.server import SimServer, free_port
from stripesync.store import Store
from stripesync.web.app import create_app
from tests.sync.helpers import make_settings


class AppServer:
    """``stripesync serve`` in a thread: the same app, the same uvicorn, on loopback."""

    def __init__(self, settings: Settings, store: Store, port: int) -> None:
        self.port = port
        self.app = create_app(settings, store, scheduler=False)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="stripesync-web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "app did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def idle(self, timeout: float = 20.0) -> None:
        """Wait until no job is queued or running (events applied, refetches done)."""
        services: Any = self.app.state.services
        deadline = time.monotonic() + timeout
        while services.coalescer.busy() or services.runner.pending:
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.02)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """A simulator delivering webhooks, rate limits off."""
    with SimServer(knobs=Knobs(rate_limits=False, webhook_retry_base_seconds=0.2)) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, database_url: str, port: int) -> Settings:
    return make_settings(tmp_path, database_url, public_url=f"http://127.0.0.1:{port}")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.open(settings.resolved_database_url)
    yield opened
    opened.close()


@pytest.fixture
def app_server(settings: Settings, store: Store, port: int) -> Iterator[AppServer]:
    server = AppServer(settings, store, port).start()
    yield server
    server.stop()
