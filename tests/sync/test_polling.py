"""Event polling: what webhooks missed, from the stored cursor, and the 30-day wall."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from stripesync.jobs import JobContext
from stripesync.settings import Settings
from stripesync.sim.server import SimServer
from stripesync.store import Store
from stripesync.store.schema import stripe_events, sync_state
from stripesync.stripe_api.client import Page, StripeAPI
from stripesync.sync.backfill import BackfillOptions, run_backfill
from stripesync.sync.health import source_health
from stripesync.sync.polling import Scheduler, poll_source
from stripesync.sync.sources import Source, api_for_source, get_source
from tests.sync.helpers import IMPORTED, connect, ground_truth, stored
from tests.sync.seed import call, seed_account


def run_clock_in_real_time(sim: Any) -> None:
    """Unfreeze the simulator's clock: from now on it reads the real time."""
    sim.db.meta_set("clock_mode", "running")
    sim.db.meta_set("clock_offset", "0")


def backfill(store: Store, settings: Settings, source: Source) -> None:
    summary = run_backfill(store, settings, source, options=BackfillOptions(workers=8))
    assert summary.ok, summary


def changes(server: SimServer) -> dict[str, str]:
    """A few changes of different kinds, made through the API."""
    sim = server.sim
    customers = call(sim, "GET", "/v1/customers", {"limit": "3"})["data"]
    call(sim, "POST", f"/v1/customers/{customers[0]['id']}", {"name": "Renamed"})
    subs = call(sim, "GET", "/v1/subscriptions", {"limit": "1", "status": "active"})["data"]
    call(sim, "DELETE", f"/v1/subscriptions/{subs[0]['id']}")
    fresh = call(sim, "POST", "/v1/customers", {"email": "new@example.com"})
    call(sim, "DELETE", f"/v1/customers/{customers[1]['id']}")
    return {"renamed": customers[0]["id"], "deleted": customers[1]["id"], "new": fresh["id"]}


def assert_matches_stripe(server: SimServer, store: Store, source_id: int) -> None:
    truth = ground_truth(server.sim)
    deleted = {row["object"]["id"] for row in server.sim.export_state() if row["deleted"]}
    for kind in IMPORTED:
        got = stored(store, source_id, kind)
        live = {k: v for k, v in got.items() if not v.get("deleted")}
        assert set(live) == set(truth[kind]), kind
        assert set(got) - set(live) <= deleted, kind
    assert stored(store, source_id, "customer").keys() >= truth["customer"].keys()
    for cid, obj in truth["customer"].items():
        assert stored(store, source_id, "customer")[cid] == obj


def test_poll_applies_what_webhooks_missed_from_its_cursor(
    server: SimServer, settings: Settings, store: Store
) -> None:
    seed_account(server.sim, customers=4, start=int(time.time()) - 200 * 86400, months=1)
    run_clock_in_real_time(server.sim)
    source = connect(store, settings, server)
    backfill(store, settings, source)
    ids = changes(server)
    first = poll_source(store, settings, source)
    assert first.events >= 4 and first.missed == first.events
    with store.read() as conn:
        cursor = conn.execute(sa.select(sync_state)).one()
    assert cursor.poll_cursor is not None and cursor.last_poll_state == "ok"
    assert_matches_stripe(server, store, source.id)
    customers = stored(store, source.id, "customer")
    assert customers[ids["renamed"]]["name"] == "Renamed"
    assert customers[ids["deleted"]]["deleted"] is True and customers[ids["new"]]
    # Nothing new: nothing read again; then one more change, read from the cursor.
    assert poll_source(store, settings, source).events == 0
    call(server.sim, "POST", f"/v1/customers/{ids['new']}", {"name": "Newest"})
    again = poll_source(store, settings, source)
    assert (again.events, again.missed) == (1, 1)
    assert stored(store, source.id, "customer")[ids["new"]]["name"] == "Newest"
    with store.read() as conn:
        vias = conn.execute(sa.select(stripe_events.c.received_via).distinct()).scalars().all()
    assert vias == ["poll"]
    health = source_health(store, get_source(store, "acme"))
    assert health["polling"]["last_poll_at"] and health["healthy"], health["problems"]


class FailingAfter:
    """A StripeAPI whose event listing fails after ``pages`` pages (a crash mid-poll)."""

    def __init__(self, api: StripeAPI, pages: int) -> None:
        self.api = api
        self.left = pages

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    def list_page(self, path: str, params: Any, *, group: str = "") -> Page:
        if path == "/v1/events" and "ending_before" in params:
            if self.left == 0:
                from stripesync.stripe_api.errors import StripeServerError

                raise StripeServerError("Stripe answered 500 (simulated crash)")
            self.left -= 1
        return self.api.list_page(path, {**params, "limit": 2}, group=group)


def test_a_poll_that_dies_resumes_after_its_last_page(
    server: SimServer, settings: Settings, store: Store
) -> None:
    seed_account(server.sim, customers=3, start=int(time.time()) - 100 * 86400, months=1)
    run_clock_in_real_time(server.sim)
    source = connect(store, settings, server)
    backfill(store, settings, source)
    call(server.sim, "POST", "/v1/customers", {"email": "first@example.com"})
    poll_source(store, settings, source)  # the cursor: that customer's event
    for n in range(7):
        call(server.sim, "POST", "/v1/customers", {"email": f"p{n}@example.com"})
    from stripesync.secrets import secret_box
    from stripesync.stripe_api.errors import StripeServerError

    api = api_for_source(source, settings, secret_box(settings))
    with pytest.raises(StripeServerError):
        poll_source(store, settings, source, api=FailingAfter(api, 2))  # type: ignore[arg-type]
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(stripe_events)).scalar() == 5
        state = conn.execute(sa.select(sync_state)).one()
    assert state.last_poll_state == "failed"
    health = source_health(store, get_source(store, "acme"))
    assert not health["healthy"]
    assert health["errors"][0]["stream"] == "events" and health["errors"][0]["count"] == 1
    rest = poll_source(store, settings, source)
    assert rest.events == 3
    assert_matches_stripe(server, store, source.id)


def test_a_cursor_past_30_days_reimports_instead(
    server: SimServer, settings: Settings, store: Store
) -> None:
    # The account lived 40 days ago (the simulator's clock there), was synced then...
    past = int(time.time()) - 40 * 86400
    seed_account(server.sim, customers=4, start=past - 90 * 86400, months=1)
    server.sim.freeze(past)
    source = connect(store, settings, server)
    backfill(store, settings, source)
    call(server.sim, "POST", "/v1/customers", {"email": "then@example.com"})
    poll_source(store, settings, source)
    with store.read() as conn:
        assert conn.execute(sa.select(sync_state.c.poll_cursor_created)).scalar() == past
    # ...then the server was off for 40 days, while the account kept changing.
    run_clock_in_real_time(server.sim)
    ids = changes(server)
    result = poll_source(store, settings, source)
    assert result.reimported and "30-day" in (result.note or "")
    assert_matches_stripe(server, store, source.id)
    customers = stored(store, source.id, "customer")
    assert customers[ids["renamed"]]["name"] == "Renamed"
    assert customers[ids["deleted"]]["deleted"] is True
    health = source_health(store, get_source(store, "acme"))
    assert "re-imported" in health["polling"]["reimport_note"]
    assert health["polling"]["last_state"] == "reimported"
    # The cursor starts again at the newest event: the next poll reads only what is new.
    assert poll_source(store, settings, source).reimported == []


def test_sync_command_polls_and_status_shows_health(
    server: SimServer, settings: Settings, store: Store
) -> None:
    seed_account(server.sim, customers=3, start=int(time.time()) - 100 * 86400, months=1)
    run_clock_in_real_time(server.sim)
    source = connect(store, settings, server)
    from stripesync.cli import app

    env = {
        "STRIPESYNC_DATABASE_URL": settings.resolved_database_url,
        "STRIPESYNC_DATA_DIR": str(settings.data_dir),
        "STRIPESYNC_SECRET_KEY": settings.secret_key.get_secret_value(),  # type: ignore[union-attr]
        "STRIPESYNC_STRIPE_BUDGET_TEST": "2000",
        "STRIPESYNC_STRIPE_BUDGET_ENDPOINT": "2000",
        "STRIPESYNC_SYNC_WORKERS": "8",
    }
    runner = CliRunner()
    synced = runner.invoke(app, ["sync", "acme"], env=env)
    assert synced.exit_code == 0, synced.output
    assert "Events of acme" in synced.output
    changes(server)
    polled = runner.invoke(app, ["sync", "acme", "--poll-only"], env=env)
    assert polled.exit_code == 0, polled.output
    assert "not delivered by webhooks" in polled.output
    assert_matches_stripe(server, store, source.id)
    status = runner.invoke(app, ["status", "--json"], env=env)
    health = json.loads(status.stdout)["sources"][0]["health"]
    assert health["polling"]["last_missed_by_webhooks"] >= 4
    assert health["objects"]["customer"] >= 4
    table = runner.invoke(app, ["status"], env={**env, "COLUMNS": "200"})
    assert "sync health" in table.output and "last poll" in table.output
    assert os.environ.get("STRIPESYNC_DATABASE_URL") != settings.resolved_database_url


class Recorder:
    def __init__(self) -> None:
        self.deferred: list[tuple[str, dict[str, Any]]] = []

    def defer(self, name: str, /, **args: Any) -> None:
        self.deferred.append((name, args))


def test_the_scheduler_polls_due_sources_and_recovers_stored_events(
    server: SimServer, settings: Settings, store: Store
) -> None:
    seed_account(server.sim, customers=3, start=int(time.time()) - 100 * 86400, months=1)
    source = connect(store, settings, server)
    recorder = Recorder()
    scheduler = Scheduler(JobContext(recorder, {"store": store, "settings": settings}))
    scheduler.run_once()
    assert recorder.deferred == [("sync.poll_events", {"source_id": source.id})]
    poll_source(store, settings, source)
    with store.write() as conn:  # an event stored by a receiver that died before applying it
        conn.execute(
            sa.insert(stripe_events).values(
                source_id=source.id,
                id="evt_left",
                type="customer.updated",
                created=1,
                api_version=None,
                livemode=False,
                object_id=None,
                data={"id": "evt_left"},
                received_via="webhook",
                received_at=sa.func.current_timestamp(),
                processed_at=None,
            )
        )
    recorder.deferred.clear()
    scheduler.run_once()
    assert recorder.deferred == [("webhooks.process", {"source_id": source.id})]
