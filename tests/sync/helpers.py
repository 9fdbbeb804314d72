"""Helpers of the sync tests: settings, connecting a source, the simulator's ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

from stripesync.secrets import secret_box
from stripesync.settings import Settings, load_settings
from stripesync.sim.core import Simulator
from stripesync.sim.server import SimServer
from stripesync.store import Store
from stripesync.store.schema import RAW_TABLES
from stripesync.sync.sources import ConnectRequest, Source, probe, save_source

#: Object types the backfill imports, by how the simulator's ground truth stores them.
IMPORTED = (
    "customer",
    "product",
    "price",
    "coupon",
    "subscription",
    "invoice",
    "charge",
    "payment_intent",
    "refund",
    "credit_note",
)


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "secret_key": Fernet.generate_key().decode(),
        # The simulator's limits are off in most tests: do not pace for Stripe's.
        "stripe_budget_live": 2000.0,
        "stripe_budget_test": 2000.0,
        "stripe_budget_endpoint": 2000.0,
        "stripe_max_network_retries": 0,
        "sync_workers": 16,
    }
    values.update(overrides)
    return load_settings(**values)


def connect(
    store: Store,
    settings: Settings,
    server: SimServer,
    *,
    name: str = "acme",
    key: str | None = None,
    start_date: str | None = None,
) -> Source:
    request = ConnectRequest.parse(
        name=name, api_key=key or server.secret_key, api_base=server.url, start_date=start_date
    )
    report = probe(store, request, settings)
    return save_source(store, secret_box(settings), request, report, settings).source


def ground_truth(sim: Simulator, *, since: int | None = None) -> dict[str, dict[str, Any]]:
    """What the account holds, by type and id (deleted objects are not listed by Stripe)."""
    truth: dict[str, dict[str, Any]] = {t: {} for t in (*IMPORTED, "plan")}
    for row in sim.export_state():
        obj = row["object"]
        kind = obj.get("object")
        if row["deleted"] or kind not in truth:
            continue
        if since is not None and int(obj.get("created") or 0) < since:
            continue
        truth[kind][obj["id"]] = obj
        if kind == "price" and obj.get("recurring"):
            truth["plan"][obj["id"]] = obj  # a recurring price is also a legacy plan
    return truth


def stored(store: Store, source_id: int, object_type: str) -> dict[str, Any]:
    table = RAW_TABLES[object_type].table
    with store.read() as conn:
        return {
            row.id: row.data
            for row in conn.execute(
                sa.select(table.c.id, table.c.data).where(table.c.source_id == source_id)
            )
        }


def count_rows(store: Store, source_id: int, object_type: str) -> int:
    table = RAW_TABLES[object_type].table
    with store.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.source_id == source_id)
            ).scalar_one()
        )
