"""``kill -9`` a real ``stripesync sync`` mid-import, twice, then rerun: every object once."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from stripesync.sim.core import Knobs
from stripesync.sim.server import SimServer
from stripesync.store import Store
from tests.sync.helpers import IMPORTED, connect, count_rows, ground_truth, make_settings, stored
from tests.sync.seed import DAY, seed_account

pytestmark = pytest.mark.e2e

EXTRA_CUSTOMERS = 3000
EXTRA_CHARGES = 3000


def _bulk(server: SimServer, start: int) -> None:
    """Many more realistic objects, inserted directly: copies of seeded ones, new ids and times."""
    sim = server.sim
    acct = sim.context().acct
    customer = sim.db.list(acct, "customer", limit=1).data[0]
    charge = sim.db.list(acct, "charge", limit=1).data[0]
    rows: list[tuple[str, dict[str, Any]]] = []
    for i in range(EXTRA_CUSTOMERS):
        obj = copy.deepcopy(customer)
        obj.update(
            id=f"cus_bulk{i:06d}", created=start - (i * 977) % (300 * DAY), email=f"b{i}@x.io"
        )
        rows.append((acct, obj))
    for i in range(EXTRA_CHARGES):
        obj = copy.deepcopy(charge)
        obj.update(id=f"ch_bulk{i:06d}", created=start - (i * 613) % (300 * DAY))
        rows.append((acct, obj))
    sim.db.put_many(rows)


def _sync(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stripesync.cli", "sync", "acme"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_when(store: Store, source_id: int, proc: subprocess.Popen[bytes], at_least: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = count_rows(store, source_id, "customer") + count_rows(store, source_id, "charge")
        if done >= at_least:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return done
        if proc.poll() is not None:
            raise AssertionError(
                f"sync ended before the kill: {proc.stderr and proc.stderr.read()}"
            )
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the import never got far enough to be killed")


def test_kill_9_then_rerun_imports_every_object_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    # Stripe's test-mode limits and some latency, so the import takes a few seconds.
    knobs = Knobs(rate_limits=True, latency_ms=40)
    with SimServer(knobs=knobs, deliver_webhooks=False) as server:
        server.sim.knobs.rate_limits = False
        seed_account(server.sim, customers=20)
        _bulk(server, start=server.sim.now())
        server.sim.knobs.rate_limits = True
        secret = Fernet.generate_key().decode()
        settings = make_settings(
            tmp_path,
            database_url,
            secret_key=secret,
            stripe_budget_test=23.0,
            stripe_budget_endpoint=23.0,
            stripe_max_network_retries=2,
        )
        store = Store.open(settings.resolved_database_url)
        try:
            source = connect(store, settings, server)
            env = {
                **os.environ,
                "STRIPESYNC_DATABASE_URL": settings.resolved_database_url,
                "STRIPESYNC_DATA_DIR": str(settings.data_dir),
                "STRIPESYNC_SECRET_KEY": secret,
            }
            total = EXTRA_CUSTOMERS + EXTRA_CHARGES
            first = _kill_when(store, source.id, _sync(env), at_least=400)
            assert first < total, "killed too late to prove anything"
            status = subprocess.run(
                [sys.executable, "-m", "stripesync.cli", "status", "--json"],
                env=env,
                capture_output=True,
                check=True,
            )
            states = {s["state"] for s in json.loads(status.stdout)["sources"][0]["streams"]}
            assert "done" not in states or "interrupted" in states, states
            assert not states <= {"done"}, "a killed import must not look finished"
            second = _kill_when(store, source.id, _sync(env), at_least=first + 1500)
            assert second < total
            final = _sync(env)
            _, err = final.communicate(timeout=300)
            assert final.returncode == 0, err.decode()
            truth = ground_truth(server.sim)
            for kind in IMPORTED:
                got = stored(store, source.id, kind)
                assert set(got) == set(truth[kind]), kind
                assert count_rows(store, source.id, kind) == len(truth[kind]), kind
            assert stored(store, source.id, "customer") == truth["customer"]
        finally:
            store.close()
