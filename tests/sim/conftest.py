"""Simulator fixtures: a real server on loopback and a real webhook receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stripesync.sim.core import Knobs
from stripesync.sim.server import SimServer


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    """One simulator per test module (rate limits off; tests of limits make their own)."""
    with SimServer(knobs=Knobs(rate_limits=False)) as srv:
        yield srv


@pytest.fixture
def client(server: SimServer) -> Any:
    return server.client()


class Receiver:
    """Collects webhook deliveries; can be told to fail the first N with a status."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_next = 0
        self.fail_status = 500
        self.lock = threading.Lock()
        self.event = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        status = receiver.fail_status
                    else:
                        receiver.requests.append((dict(self.headers.items()), body))
                        receiver.event.set()
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.02)
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
