"""The backfill against the simulator, on SQLite and PostgreSQL: complete, resumable, honest."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console

from stripesync.errors import TerminalError, TransientError
from stripesync.secrets import secret_box
from stripesync.settings import Settings
from stripesync.sim.server import SimServer
from stripesync.store import Store
from stripesync.store.schema import sync_runs, sync_slices
from stripesync.stripe_api.budget import RetryPolicy
from stripesync.stripe_api.client import StripeAPI
from stripesync.sync.backfill import BackfillOptions, failure_message, run_backfill
from stripesync.sync.progress import BackfillProgress, summary_table
from stripesync.sync.sources import api_for_source
from stripesync.sync.status import status
from tests.sync.helpers import IMPORTED, connect, count_rows, ground_truth, make_settings, stored
from tests.sync.seed import DAY, call, seed_account

FAST = RetryPolicy(rate_limit_retries=1, backoff_base=0.01, slice_retries=0, slice_retry_delay=0)


def _options(settings: Settings, **overrides: Any) -> BackfillOptions:
    return BackfillOptions.from_settings(settings, **overrides)


def test_imports_every_object_exactly_once(
    seeded: tuple[SimServer, dict[str, Any]], store: Store, settings: Settings
) -> None:
    server, ids = seeded
    source = connect(store, settings, server)
    summary = run_backfill(store, settings, source)
    assert summary.ok, summary.failed
    truth = ground_truth(server.sim)
    for kind in (*IMPORTED, "plan"):
        got = stored(store, source.id, kind)
        assert set(got) == set(truth[kind]), kind
        assert count_rows(store, source.id, kind) == len(truth[kind])
    for kind in ("customer", "product", "invoice", "charge", "payment_intent", "refund"):
        got = stored(store, source.id, kind)
        assert got == truth[kind], f"{kind} differs from the account's copy"
    subs = stored(store, source.id, "subscription")
    # Stripe hides canceled subscriptions unless asked for status=all.
    assert subs[ids["canceled"]]["status"] == "canceled"
    # More items than Stripe embeds: the rest were fetched.
    many = subs[ids["many_items_subscription"]]["items"]
    assert len(many["data"]) == 12 and many["has_more"] is False
    items = stored(store, source.id, "subscription_item")
    assert len([i for i in items.values() if i["subscription"] == ids["many_items_subscription"]])
    big = stored(store, source.id, "invoice")[ids["big_invoice"]]["lines"]
    assert len(big["data"]) == 13 and big["has_more"] is False
    lines = stored(store, source.id, "line_item")
    assert sum(1 for line in lines.values() if line["invoice"] == ids["big_invoice"]) == 13
    # Expanded only on request: price tiers and coupon restrictions.
    tiered = [p for p in stored(store, source.id, "price").values() if p["tiers_mode"]]
    assert tiered and all(len(p["tiers"]) == 2 for p in tiered)
    assert all("applies_to" in c for c in stored(store, source.id, "coupon").values())
    report = status(store, "acme")[0]
    assert {s["state"] for s in report["streams"]} == {"done"}
    assert report["last_run"]["state"] == "done"


def test_key_columns_are_filled(
    seeded: tuple[SimServer, dict[str, Any]], store: Store, settings: Settings
) -> None:
    server, ids = seeded
    source = connect(store, settings, server)
    assert run_backfill(store, settings, source).ok
    from stripesync.store.schema import raw_table

    invoices = raw_table("invoice")
    with store.read() as conn:
        row = conn.execute(sa.select(invoices).where(invoices.c.id == ids["big_invoice"])).one()
        assert row.customer == ids["customers"][0]
        assert row.status == "paid" and row.livemode is False and row.deleted is False
        assert row.created > 0 and row.source_id == source.id
        by_sub = conn.execute(
            sa.select(sa.func.count())
            .select_from(invoices)
            .where(invoices.c.subscription == ids["subscriptions"][0])
        ).scalar_one()
        assert by_sub >= 3  # the first invoice and its monthly renewals


def test_resume_after_a_crash_reads_each_finished_slice_once(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=30)
    source = connect(store, settings, server)
    options = _options(settings, page_size=5, slices_per_stream=3, min_split_pages=2)
    api = api_for_source(source, settings, secret_box(settings), policy=options.policy)

    class Crash(BaseException):
        """Stands for kill -9: nothing after it runs, no handler records it."""

    calls = {"n": 0}
    real_list_page = StripeAPI.list_page

    def crashing(self: StripeAPI, path: str, params: Any, *, group: str = "") -> Any:
        calls["n"] += 1
        if calls["n"] > 25:
            raise Crash()
        return real_list_page(self, path, params, group=group)

    api.list_page = crashing.__get__(api)  # type: ignore[method-assign]
    first = run_backfill(store, settings, source, options=options, api=api)
    assert not first.ok  # never reported successful
    with store.read() as conn:
        done_before = {
            row.id: row.pages
            for row in conn.execute(sa.select(sync_slices).where(sync_slices.c.state == "done"))
        }
    assert done_before, "some slices finished before the crash"
    second = run_backfill(store, settings, source, options=options)
    assert second.ok, second.failed
    with store.read() as conn:
        after = {row.id: row.pages for row in conn.execute(sa.select(sync_slices))}
    for slice_id, pages in done_before.items():
        assert after[slice_id] == pages, "a finished slice was read again"
    truth = ground_truth(server.sim)
    for kind in IMPORTED:
        assert set(stored(store, source.id, kind)) == set(truth[kind]), kind
        assert count_rows(store, source.id, kind) == len(truth[kind])


def test_slices_split_and_stay_disjoint(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=40, months=2)
    source = connect(store, settings, server)
    options = _options(settings, page_size=3, slices_per_stream=4, min_split_pages=2)
    summary = run_backfill(store, settings, source, options=options)
    assert summary.ok, summary.failed
    with store.read() as conn:
        rows = conn.execute(
            sa.select(sync_slices).where(sync_slices.c.stream == "invoices").order_by("lo")
        ).all()
    assert len(rows) > 1, "the invoices stream was split"
    for a, b in itertools.pairwise(rows):
        assert a.hi <= b.lo, "slices overlap"
    truth = ground_truth(server.sim)
    assert set(stored(store, source.id, "invoice")) == set(truth["invoice"])


def test_rerun_imports_only_what_is_new(
    server: SimServer, store: Store, settings: Settings
) -> None:
    ids = seed_account(server.sim, customers=5)
    source = connect(store, settings, server)
    assert run_backfill(store, settings, source).ok
    later = server.sim.now() + DAY
    server.sim.freeze(later)
    new = call(server.sim, "POST", "/v1/customers", {"email": "late@example.com"})
    second = run_backfill(store, settings, source)
    assert second.ok
    customers = next(o for o in second.outcomes if o.name == "customers")
    assert customers.objects <= 2  # the new one, and at most one of the overlap second
    assert new["id"] in stored(store, source.id, "customer")
    assert set(ids["customers"]) <= set(stored(store, source.id, "customer"))


def test_start_date_limits_the_import(server: SimServer, store: Store, settings: Settings) -> None:
    seed_account(server.sim, customers=10, start=1_700_000_000)
    since = int(datetime(2023, 11, 17, tzinfo=UTC).timestamp())
    source = connect(store, settings, server, start_date="2023-11-17")
    assert source.start_at == since
    assert run_backfill(store, settings, source).ok
    truth = ground_truth(server.sim, since=since)
    for kind in IMPORTED:
        assert set(stored(store, source.id, kind)) == set(truth[kind]), kind
    assert 0 < len(truth["customer"]) < 10


def test_start_now_imports_only_new_data(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=3)
    server.sim.db.meta_set("clock_mode", "real")  # the simulator's clock = this machine's
    server.sim.db.meta_set("clock_offset", "0")
    source = connect(store, settings, server, start_date="now")
    assert run_backfill(store, settings, source).ok
    assert count_rows(store, source.id, "customer") == 0
    server.sim.set_clock(server.sim.now_float() + 5)
    new = call(server.sim, "POST", "/v1/customers", {"email": "new@example.com"})
    assert run_backfill(store, settings, source).ok
    assert set(stored(store, source.id, "customer")) == {new["id"]}


def test_a_429_storm_fails_the_stream_and_a_rerun_resumes(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=4)
    source = connect(store, settings, server)
    server.sim.knobs.rate_limits = True
    server.sim.knobs.burst_429_rate = 1.0
    try:
        summary = run_backfill(
            store, settings, source, options=_options(settings, policy=FAST, streams=("customers",))
        )
    finally:
        server.sim.knobs.burst_429_rate = 0.0
        server.sim.knobs.rate_limits = False
    assert not summary.ok
    (outcome,) = summary.outcomes
    assert outcome.state == "failed" and "429" in (outcome.error or "")
    error = failure_message(summary)
    assert isinstance(error, TransientError) and "rerun `stripesync sync acme`" in str(error)
    report = status(store, "acme")[0]
    customers = next(s for s in report["streams"] if s["stream"] == "customers")
    assert customers["state"] == "failed" and "429" in customers["last_error"]
    assert report["last_run"]["state"] == "failed"
    assert report["last_run"]["rate_limited"] >= 2
    again = run_backfill(
        store, settings, source, options=_options(settings, streams=("customers",))
    )
    assert again.ok
    assert count_rows(store, source.id, "customer") == 4


def test_server_errors_fail_the_stream_with_the_reason(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=3)
    source = connect(store, settings, server)
    server.sim.knobs.error_rate = 1.0
    try:
        summary = run_backfill(
            store, settings, source, options=_options(settings, policy=FAST, streams=("products",))
        )
    finally:
        server.sim.knobs.error_rate = 0.0
    (outcome,) = summary.outcomes
    assert outcome.state == "failed"
    assert "500" in (outcome.error or "")
    with store.read() as conn:
        run = conn.execute(sa.select(sync_runs).order_by(sync_runs.c.id.desc())).first()
    assert run is not None and run.state == "failed" and "products" in (run.error or "")


def test_revoked_key_fails_with_a_terminal_reason(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=3)
    key = server.sim.create_key(server.sim.context().account, livemode=False)
    source = connect(store, settings, server, key=key)
    server.sim.revoke_key(key)
    summary = run_backfill(store, settings, source, options=_options(settings, policy=FAST))
    assert {o.state for o in summary.outcomes} == {"failed"}
    assert all("rejected the key" in (o.error or "") for o in summary.outcomes)
    assert isinstance(failure_message(summary), TerminalError)


def test_streams_without_permission_are_skipped_with_the_reason(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=3)
    read = {
        name: "read"
        for name in (
            "customers",
            "subscriptions",
            "invoices",
            "charges",
            "payment_intents",
            "refunds",
            "products",
            "prices",
            "coupons",
            "events",
        )
    }
    key = server.sim.create_key(server.sim.context().account, permissions=read)
    source = connect(store, settings, server, key=key)
    summary = run_backfill(store, settings, source)
    assert summary.ok
    skipped = {o.name: o.note for o in summary.outcomes if o.state == "skipped"}
    assert set(skipped) == {"plans", "credit_notes"}
    assert "Credit Notes: Read" in (skipped["credit_notes"] or "")
    assert count_rows(store, source.id, "subscription") == 3


def test_progress_bars_and_summary_render(
    seeded: tuple[SimServer, dict[str, Any]], store: Store, settings: Settings
) -> None:
    server, _ = seeded
    source = connect(store, settings, server)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    with BackfillProgress(console, "Syncing acme") as progress:
        summary = run_backfill(store, settings, source, on_progress=progress.update)
    console.print(summary_table(summary))
    text = out.getvalue()
    for name in ("customers", "invoices", "objects", "slices", "done"):
        assert name in text


def test_a_second_live_run_is_refused(
    seeded: tuple[SimServer, dict[str, Any]], store: Store, settings: Settings
) -> None:
    server, _ = seeded
    source = connect(store, settings, server)
    from stripesync.sync.backfill import _claim_run

    run_id = _claim_run(store, source)
    with pytest.raises(TerminalError, match="being synced already"):
        run_backfill(store, settings, source)
    with store.write() as conn:
        conn.execute(sa.update(sync_runs).where(sync_runs.c.id == run_id).values(pid=2**22 + 7))
    # A dead process's run (same host, pid gone) does not block.
    assert run_backfill(store, settings, source).ok


def test_status_json_is_serializable(
    seeded: tuple[SimServer, dict[str, Any]], store: Store, settings: Settings
) -> None:
    server, _ = seeded
    source = connect(store, settings, server)
    assert run_backfill(store, settings, source).ok
    text = json.dumps(status(store))
    assert '"state": "done"' in text and "sk_test_" in text and server.secret_key not in text


def test_settings_budget_defaults_are_just_under_stripes(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, "sqlite://", stripe_budget_live=95.0, stripe_budget_test=23.0
    )
    from stripesync.stripe_api.budget import BudgetLimits

    live = BudgetLimits.for_mode(True, live=settings.stripe_budget_live)
    test = BudgetLimits.for_mode(False, test=settings.stripe_budget_test)
    assert (live.account, live.endpoint, test.account) == (95.0, 23.0, 23.0)
    assert replace(_options(settings), workers=3).workers == 3
