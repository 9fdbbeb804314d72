"""Helpers of the profile-store tests: a source row, objects into the raw store, snapshots."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from stripesync.profiles.settings import ProfileSettings, save_profile_settings
from stripesync.profiles.store import profile_customers, profiles
from stripesync.store import Store
from stripesync.store.schema import sources
from stripesync.store.types import utcnow
from stripesync.sync.apply import ApplyResult, Observed, apply
from tests.profiles.factories import (
    DAY,
    make_charge,
    make_customer,
    make_invoice,
    make_item,
    make_price,
    make_product,
    make_subscription,
    ts,
)

Obj = dict[str, Any]

_clock = itertools.count(1_800_000_000_000, 1000)


def add_source(store: Store, name: str, settings: ProfileSettings | None = None) -> int:
    """A connected source row (no key needed: these tests never call Stripe)."""
    now = utcnow()
    with store.write() as conn:
        source_id = conn.execute(
            sa.insert(sources)
            .values(
                name=name,
                status="active",
                api_key_encrypted=None,
                key_hint="sk_test_…0000",
                key_kind="secret",
                livemode=False,
                api_base="http://127.0.0.1:1",
                start_mode="all",
                start_at=None,
                interval_seconds=3600,
                permissions={},
                polling_only=True,
                profile_settings={},
                created_at=now,
                updated_at=now,
            )
            .returning(sources.c.id)
        ).scalar_one()
        if settings is not None:
            save_profile_settings(conn, int(source_id), settings)
    return int(source_id)


def put(store: Store, source_id: int, *objects: Mapping[str, Any]) -> ApplyResult:
    """Apply objects as one API read, each call later than the one before."""
    moment = next(_clock)
    with store.write() as conn:
        return apply(conn, source_id, list(objects), Observed.api(moment, moment + 10))


PERIOD = (ts(2026, 3, 1), ts(2026, 4, 1))


def catalog(suffix: str = "") -> tuple[Obj, Obj]:
    product = make_product("Pro", product_id=f"prod_Pro{suffix}")
    price = make_price(4900, product=product["id"], price_id=f"price_ProMonthly{suffix}")
    return product, price


def account(
    customer_id: str,
    *,
    price: Obj,
    metadata: Mapping[str, str] | None = None,
    sub_metadata: Mapping[str, str] | None = None,
    quantity: int = 1,
    status: str = "active",
    trial: tuple[int, int] | None = None,
    created: int = ts(2026, 1, 1),
    invoices: bool = True,
) -> list[Obj]:
    """A customer with one subscription (and, unless trialing, a paid invoice and charge)."""
    customer = make_customer(customer_id=customer_id, metadata=metadata, created=created)
    item = make_item(price, quantity=quantity, period=PERIOD)
    sub = make_subscription(
        [item],
        customer=customer_id,
        status=status,
        created=created,
        trial=trial,
        metadata=sub_metadata,
        subscription_id=f"sub_{customer_id[4:]}",
    )
    out = [customer, sub]
    if invoices and status != "trialing":
        invoice = make_invoice(sub, total=4900 * quantity, created=PERIOD[0])
        invoice["customer"] = customer_id
        charge = make_charge(amount=4900 * quantity, created=PERIOD[0] + 3600, customer=customer_id)
        out += [invoice, charge]
    return out


def snapshot(store: Store) -> dict[str, Any]:
    """Everything derived that must not depend on the path that computed it."""
    with store.read() as conn:
        rows = conn.execute(sa.select(profiles).order_by(profiles.c.kind, profiles.c.link_id))
        found = {}
        for r in rows:
            traits = dict(r.traits)
            traits.pop("last_sync_at", None)
            found[(r.kind, r.link_id)] = {
                "status": r.status,
                "created_via": r.created_via,
                "customers": r.customers,
                "mrr": r.mrr,
                "arr": r.arr,
                "reporting_mrr": r.reporting_mrr,
                "paying": r.paying,
                "stage": r.stage,
                "renewal_at": r.renewal_at,
                "traits": traits,
            }
        links = {
            (r.source_id, r.customer_id): (r.link_id, r.link_source, r.state, r.stage, r.mrr)
            for r in conn.execute(sa.select(profile_customers))
        }
    return {"profiles": found, "links": links}


def profile_rows(store: Store) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(sa.select(profiles).order_by(profiles.c.id)))


__all__ = [
    "DAY",
    "PERIOD",
    "account",
    "add_source",
    "catalog",
    "profile_rows",
    "put",
    "snapshot",
    "ts",
]


def ids(objects: Sequence[Obj], kind: str) -> list[str]:
    return [o["id"] for o in objects if o.get("object") == kind]
