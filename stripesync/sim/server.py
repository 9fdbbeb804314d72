"""Running the simulator: in a background thread (tests, demo) or in the foreground (CLI)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from stripesync.sim.app import create_app
from stripesync.sim.core import Knobs, Simulator


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SimServer:
    """A simulator served by uvicorn on loopback in a daemon thread.

    >>> with SimServer() as server:
    ...     client = stripe.StripeClient(server.secret_key, base_addresses={"api": server.url})
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        knobs: Knobs | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        sim: Simulator | None = None,
        deliver_webhooks: bool = True,
        clock_speed: float = 0.0,
    ) -> None:
        self.sim = sim or Simulator(path, knobs=knobs)
        self.host = host
        self.port = port or free_port(host)
        self.app = create_app(self.sim, deliver_webhooks=deliver_webhooks, clock_speed=clock_speed)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def secret_key(self) -> str:
        return self.sim.default_key(livemode=False)

    @property
    def live_key(self) -> str:
        return self.sim.default_key(livemode=True)

    def start(self) -> SimServer:
        self.thread = threading.Thread(target=self.server.run, name="stripesync-sim", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"simulator did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sim.close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, key: str | None = None, **kwargs: Any) -> Any:
        """A StripeClient pointed at this simulator (the official SDK, unchanged)."""
        import stripe

        return stripe.StripeClient(
            key or self.secret_key, base_addresses={"api": self.url}, **kwargs
        )


def serve_forever(sim: Simulator, host: str, port: int, *, speed: float = 0.0) -> None:
    uvicorn.run(
        create_app(sim, clock_speed=speed),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )
