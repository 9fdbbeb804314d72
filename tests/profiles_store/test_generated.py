"""A generated account end to end, on SQLite and PostgreSQL: backfill, then live changes
applied event by event (each recomputing only what it touched), then a rebuild from the
raw store that must agree with them; the set-based loader must agree with computing
traits from every stored object; and each customer's movements must add up to its MRR."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from stripesync.profiles.recompute import (
    _card_methods,
    _with_tiers,
    rebuild,
    refresh_after_apply,
)
from stripesync.profiles.settings import ProfileSettings, save_profile_settings
from stripesync.profiles.store import (
    profile_customers,
    profile_merges,
    profile_overrides,
    profiles,
    revenue_movements,
    revenue_series,
    stage_history,
)
from stripesync.profiles.traits import compute_traits, expand_coupons
from stripesync.settings import Settings
from stripesync.sim.core import Knobs
from stripesync.sim.generator import LINK_KEY, generate
from stripesync.sim.server import SimServer
from stripesync.store import Store
from stripesync.store.schema import raw_table
from stripesync.sync.apply import apply_event
from stripesync.sync.backfill import run_backfill
from tests.profiles_store.helpers import snapshot
from tests.sync.helpers import connect, make_settings
from tests.sync.seed import call

CUSTOMERS = 40


@pytest.fixture(scope="module")
def generated() -> Iterator[SimServer]:
    with SimServer(knobs=Knobs(rate_limits=False), deliver_webhooks=False) as server:
        generate(server.sim, customers=CUSTOMERS, seed=5)
        yield server


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.open(settings.resolved_database_url)
    yield opened
    opened.close()


def _rows(store: Store, kind: str, source_id: int) -> list[dict[str, Any]]:
    table = raw_table(kind)
    with store.read() as conn:
        return [
            r.data
            for r in conn.execute(sa.select(table.c.data).where(table.c.source_id == source_id))
        ]


def _live_changes(server: SimServer, store: Store, source_id: int) -> tuple[int, int]:
    """Change the account through its API, then apply its events one by one, as webhooks
    would, each followed by the recompute of what it touched. Returns (events, moment)."""
    sim = server.sim
    start = int(time.time()) + 120
    sim.freeze(start)
    subs = [s for s in _rows(store, "subscription", source_id) if s["status"] == "active"]
    subs.sort(key=lambda s: s["id"])
    upgrade, cancel = subs[0], subs[1]
    item = upgrade["items"]["data"][0]
    call(
        sim,
        "POST",
        f"/v1/subscriptions/{upgrade['id']}",
        {"items": [{"id": item["id"], "quantity": str((item.get("quantity") or 1) + 4)}]},
    )
    call(sim, "DELETE", f"/v1/subscriptions/{cancel['id']}", {})
    # A second Stripe customer carrying an existing customer's app id: a merge.
    tagged = next(c for c in _rows(store, "customer", source_id) if c["metadata"].get(LINK_KEY))
    price = item["price"]["id"]
    twin = call(
        sim,
        "POST",
        "/v1/customers",
        {
            "email": "twin@example.com",
            "metadata": {LINK_KEY: tagged["metadata"][LINK_KEY]},
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        },
    )
    call(sim, "POST", "/v1/subscriptions", {"customer": twin["id"], "items": [{"price": price}]})
    events: list[dict[str, Any]] = []
    page = call(sim, "GET", "/v1/events", {"limit": "100", "created": {"gte": str(start)}})
    events.extend(page["data"])
    while page["has_more"]:
        page = call(
            sim,
            "GET",
            "/v1/events",
            {"limit": "100", "created": {"gte": str(start)}, "starting_after": events[-1]["id"]},
        )
        events.extend(page["data"])
    events.sort(key=lambda e: (e["created"], e["id"]))
    moment = start + 3600
    for event in events:
        with store.write() as conn:
            result = apply_event(conn, source_id, event, via="webhook")
        if result is not None:
            refresh_after_apply(store, result, at=datetime.fromtimestamp(moment, UTC))
    return len(events), moment


def _wipe_derived(store: Store) -> None:
    with store.write() as conn:
        for table in (
            stage_history,
            revenue_movements,
            profile_overrides,
            profile_merges,
            profile_customers,
            profiles,
        ):
            conn.execute(sa.delete(table))


def test_live_changes_and_a_rebuild_agree(
    generated: SimServer, store: Store, settings: Settings
) -> None:
    source = connect(store, settings, generated)
    with store.write() as conn:
        save_profile_settings(conn, source.id, ProfileSettings(kind="users", link_key=LINK_KEY))
    summary = run_backfill(store, settings, source)
    assert summary.ok, summary.failed
    customers = {c["id"] for c in _rows(store, "customer", source.id)}
    with store.read() as conn:
        linked = {r.customer_id for r in conn.execute(sa.select(profile_customers))}
    assert linked == customers, "the backfill recomputes every customer it imported"

    count, moment = _live_changes(generated, store, source.id)
    assert count >= 4
    live = snapshot(store)
    with store.read() as conn:
        merged = conn.execute(sa.select(sa.func.count()).select_from(profile_merges)).scalar_one()
    assert merged >= 1

    _wipe_derived(store)
    result = rebuild(store, at=datetime.fromtimestamp(moment, UTC), batch_size=7)
    assert result.errors == []
    rebuilt = snapshot(store)
    assert rebuilt["links"] == live["links"]
    assert rebuilt["profiles"].keys() == live["profiles"].keys()
    for key, row in live["profiles"].items():
        assert rebuilt["profiles"][key] == row, key


def test_the_lean_loader_gives_the_traits_of_every_stored_object(
    generated: SimServer, store: Store, settings: Settings
) -> None:
    source = connect(store, settings, generated)
    assert run_backfill(store, settings, source).ok
    at = datetime(2030, 1, 1, tzinfo=UTC)
    rebuild(store, at=at)
    catalog = {
        kind: {o["id"]: o for o in _rows(store, kind, source.id)}
        for kind in ("price", "product", "coupon")
    }
    by_customer: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind in ("subscription", "invoice", "charge"):
        for obj in _rows(store, kind, source.id):
            by_customer.setdefault(obj["customer"], {}).setdefault(kind, []).append(obj)
    with store.read() as conn:
        stored = {
            r.customer_id: r.traits
            for r in conn.execute(
                sa.select(profile_customers.c.customer_id, profile_customers.c.traits)
            )
        }
    checked = 0
    for customer in _rows(store, "customer", source.id):
        own = by_customer.get(customer["id"], {})
        subs = []
        for sub in own.get("subscription", []):
            expanded = expand_coupons(dict(sub), catalog["coupon"])
            _with_tiers(expanded, catalog["price"])
            subs.append(expanded)
        charges = own.get("charge", [])
        expected = compute_traits(
            expand_coupons(dict(customer), catalog["coupon"]),
            subs,
            own.get("invoice", []),
            charges,
            _card_methods(charges),
            mode="single",
            at=at,
            coupons=catalog["coupon"],
            products=catalog["product"],
        )
        assert stored[customer["id"]] == expected, customer["id"]
        checked += 1
    assert checked == CUSTOMERS or checked > 0


def test_movements_add_up_to_each_customers_mrr_and_the_report_to_the_total(
    generated: SimServer, store: Store, settings: Settings
) -> None:
    source = connect(store, settings, generated)
    assert run_backfill(store, settings, source).ok
    with store.read() as conn:
        current = {
            r.customer_id: {k: v for k, v in r.mrr.items() if v}
            for r in conn.execute(
                sa.select(profile_customers.c.customer_id, profile_customers.c.mrr)
            )
        }
        folded: dict[str, dict[str, int]] = {}
        kinds: set[str] = set()
        for r in conn.execute(sa.select(revenue_movements).order_by(revenue_movements.c.at)):
            folded.setdefault(r.customer_id, {})[r.currency] = r.mrr_after
            kinds.add(r.kind)
    for customer_id, mrr in current.items():
        assert {k: v for k, v in folded.get(customer_id, {}).items() if v} == mrr, customer_id
    assert {"new", "churn"} <= kinds
    report = revenue_series(store, granularity="month")
    last = report["periods"][-1]
    total: dict[str, int] = {}
    for mrr in current.values():
        for currency, amount in mrr.items():
            total[currency] = total.get(currency, 0) + amount
    assert last["mrr"] == dict(sorted(total.items()))
    assert last["paying_customers"] == sum(1 for m in current.values() if m)
    assert len(report["periods"]) in (12, 13)
