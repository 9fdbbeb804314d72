"""Webhook delivery as Stripe does it: signed, per endpoint version, retried with backoff.

Signature: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``, one
``v1`` per live secret while a secret is being rolled. The chaos knobs (duplicates,
shuffled order, dropped deliveries) let the product's receiver be tested against the
delivery guarantees Stripe actually gives: at least once, in no particular order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from stripesync.sim import versions


def sign(payload: bytes, secrets: list[str], timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    parts = [f"t={timestamp}"]
    for secret in secrets:
        parts.append("v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest())
    return ",".join(parts)


def endpoint_secrets(endpoint: dict[str, Any], now: float) -> list[str]:
    """The endpoint's current secret plus any rolled one that has not expired yet."""
    secrets = [endpoint["_secret"]]
    for old in endpoint.get("_old_secrets", []):
        if old["expires"] > now:
            secrets.append(old["secret"])
    return secrets


class Deliverer:
    """Sends pending deliveries; runs as a task in the simulator's event loop."""

    def __init__(self, sim: Any, *, concurrency: int = 16, timeout: float = 10.0) -> None:
        self.sim = sim
        self.concurrency = concurrency
        self.timeout = timeout
        self._wake: asyncio.Event | None = None
        self._stopped = False
        self._client: httpx.AsyncClient | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self.wake()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self) -> None:
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=self.timeout)
        while not self._stopped:
            sent = await self.deliver_due()
            if sent:
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.25)

    def _due(self, limit: int) -> list[tuple[int, str, str, str, int]]:
        return [
            (int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]))
            for r in self.sim.db.execute(
                "SELECT seq, acct, endpoint, event, attempts FROM deliveries"
                " WHERE status='pending' AND next_attempt <= ? ORDER BY next_attempt, seq LIMIT ?",
                (time.time(), limit),
            )
        ]

    async def deliver_due(self) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        due = self._due(self.concurrency * 4)
        if not due:
            return 0
        knobs = self.sim.knobs
        rng = self.sim.rng
        if knobs.webhook_shuffle:
            rng.shuffle(due)
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(row: tuple[int, str, str, str, int]) -> None:
            async with semaphore:
                await self._attempt(*row)

        await asyncio.gather(*(one(row) for row in due))
        return len(due)

    async def _attempt(
        self, seq: int, acct: str, endpoint_id: str, event_id: str, attempts: int
    ) -> None:
        sim = self.sim
        knobs = sim.knobs
        endpoint = sim.db.get(acct, endpoint_id)
        event = sim.db.get_event(acct, event_id)
        if endpoint is None or event is None or endpoint.get("status") != "enabled":
            self._finish(seq, "skipped", "endpoint or event gone")
            return
        if attempts == 0 and knobs.webhook_drop_rate and sim.rng.random() < knobs.webhook_drop_rate:
            self.dropped += 1
            self._finish(seq, "dropped", None)
            return
        version = endpoint.get("api_version") or event["api_version"]
        rendered = sim.render_event(acct, event, version)
        payload = json.dumps(rendered, indent=2).encode()
        now = time.time()
        header = sign(payload, endpoint_secrets(endpoint, now), int(now))
        error: str | None = None
        try:
            assert self._client is not None
            response = await self._client.post(
                endpoint["url"],
                content=payload,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": header,
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
            )
            if 200 <= response.status_code < 300:
                self.sent += 1
                self._finish(seq, "delivered", None)
                if knobs.webhook_duplicate_rate and sim.rng.random() < knobs.webhook_duplicate_rate:
                    self._schedule_duplicate(acct, endpoint_id, event_id)
                return
            error = f"HTTP {response.status_code}"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempts += 1
        if attempts >= knobs.webhook_max_attempts:
            self.failed += 1
            self._finish(seq, "failed", error, attempts=attempts)
            return
        delay = knobs.webhook_retry_base_seconds * (2 ** (attempts - 1))
        with sim.db:
            sim.db.conn.execute(
                "UPDATE deliveries SET attempts=?, next_attempt=?, last_error=? WHERE seq=?",
                (attempts, time.time() + delay, error, seq),
            )

    def _finish(
        self, seq: int, status: str, error: str | None, *, attempts: int | None = None
    ) -> None:
        with self.sim.db:
            self.sim.db.conn.execute(
                "UPDATE deliveries SET status=?, last_error=?, attempts=coalesce(?, attempts + 1)"
                " WHERE seq=?",
                (status, error, attempts, seq),
            )

    def _schedule_duplicate(self, acct: str, endpoint_id: str, event_id: str) -> None:
        delay = self.sim.rng.random() * 0.5
        with self.sim.db:
            self.sim.db.conn.execute(
                "INSERT INTO deliveries(acct, endpoint, event, attempts, next_attempt, status)"
                " VALUES (?,?,?,1,?,'pending')",
                (acct, endpoint_id, event_id, time.time() + delay),
            )


def pending_count(sim: Any) -> int:
    rows = sim.db.execute("SELECT count(*) FROM deliveries WHERE status='pending'")
    return int(rows[0][0])


__all__ = ["Deliverer", "endpoint_secrets", "pending_count", "sign", "versions"]
