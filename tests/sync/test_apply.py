"""The one apply path: upserts by id, never older over newer, children with their parent."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from stripesync.sim.core import Knobs, Simulator
from stripesync.store import Store
from stripesync.store.schema import raw_table, sources, stripe_events
from stripesync.store.types import utcnow
from stripesync.sync.apply import Observed, apply, apply_event
from tests.sync.seed import call, seed_account

OLD_VERSION = "2024-06-20"


@pytest.fixture(scope="module")
def account() -> Iterator[dict[str, Any]]:
    """Realistic objects, as the simulator renders them now and in an old API version."""
    sim = Simulator(":memory:", knobs=Knobs(rate_limits=False))
    ids = seed_account(sim, customers=4, months=2)
    key = sim.default_key()

    def get(path: str, version: str | None = None) -> dict[str, Any]:
        status, body, _ = sim.request("GET", path, {}, key=key, stripe_version=version)
        assert status == 200, body
        return body

    sub_id = ids["subscriptions"][0]
    invoice_id = next(
        inv["id"]
        for inv in call(sim, "GET", "/v1/invoices", {"limit": "100"})["data"]
        if inv["parent"] and inv["parent"].get("subscription_details")
    )
    yield {
        "customer": get(f"/v1/customers/{ids['customers'][0]}"),
        "subscription": get(f"/v1/subscriptions/{sub_id}"),
        "old_subscription": get(f"/v1/subscriptions/{sub_id}", OLD_VERSION),
        "invoice": get(f"/v1/invoices/{invoice_id}"),
        "old_invoice": get(f"/v1/invoices/{invoice_id}", OLD_VERSION),
    }
    sim.close()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    yield opened
    opened.close()


@pytest.fixture
def source_id(store: Store) -> int:
    now = utcnow()
    with store.write() as conn:
        result = conn.execute(
            sa.insert(sources)
            .values(
                name="acme",
                status="active",
                api_key_encrypted=None,
                key_hint="sk_test_…abcd",
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
        )
        return int(result.scalar_one())


def _apply(store: Store, source_id: int, objs: list[dict[str, Any]], observed: Observed) -> Any:
    with store.write() as conn:
        return apply(conn, source_id, objs, observed)


def _get(store: Store, kind: str, obj_id: str) -> Any:
    table = raw_table(kind)
    with store.read() as conn:
        return conn.execute(sa.select(table).where(table.c.id == obj_id)).first()


def test_upsert_by_id_never_older_over_newer(
    store: Store, source_id: int, account: dict[str, Any]
) -> None:
    customer = account["customer"]
    first = _apply(store, source_id, [customer], Observed.api(1_000_000, 1_000_200))
    assert first.written == 1
    again = _apply(store, source_id, [customer], Observed.api(1_000_000, 1_000_200))
    assert again.written == 0 and again.unchanged == 1
    renamed = {**customer, "name": "Renamed"}
    newer = _apply(store, source_id, [renamed], Observed.api(2_000_000, 2_000_100))
    assert newer.written == 1
    stale = _apply(store, source_id, [customer], Observed.api(1_500_000, 1_500_100))
    assert stale.stale == 1 and stale.written == 0
    row = _get(store, "customer", customer["id"])
    assert row.data["name"] == "Renamed"
    assert (row.version_lo, row.version_hi) == (2_000_000, 2_000_100)
    assert row.source_id == source_id and row.livemode is False and row.deleted is False


def test_same_second_events_are_a_tie_not_a_guess(
    store: Store, source_id: int, account: dict[str, Any]
) -> None:
    sub = account["subscription"]
    _apply(store, source_id, [sub], Observed.event(1_700_000_000))
    other = {**sub, "status": "past_due"}
    tie = _apply(store, source_id, [other], Observed.event(1_700_000_000))
    assert tie.ties == [("subscription", sub["id"])] and tie.written == 0
    assert _get(store, "subscription", sub["id"]).data["status"] == sub["status"]
    # A read that started after the second ended settles it.
    settled = _apply(store, source_id, [other], Observed.api(1_700_000_001_000, 1_700_000_001_050))
    assert settled.written == 1
    assert _get(store, "subscription", sub["id"]).status == "past_due"


def test_deletion_keeps_the_last_copy_flagged(
    store: Store, source_id: int, account: dict[str, Any]
) -> None:
    customer = account["customer"]
    _apply(store, source_id, [customer], Observed.event(1_700_000_000))
    stub = {"id": customer["id"], "object": "customer", "deleted": True}
    _apply(store, source_id, [stub], Observed.event(1_700_000_010))
    row = _get(store, "customer", customer["id"])
    assert row.deleted is True
    assert row.data["email"] == customer["email"] and row.data["deleted"] is True
    unseen = {"id": "cus_never_seen", "object": "customer", "deleted": True}
    _apply(store, source_id, [unseen], Observed.event(1_700_000_010))
    assert _get(store, "customer", "cus_never_seen").deleted is True


def _with_items(sub: dict[str, Any], item_ids: list[str]) -> dict[str, Any]:
    template = sub["items"]["data"][0]
    out = copy.deepcopy(sub)
    out["items"] = {
        **sub["items"],
        "data": [{**copy.deepcopy(template), "id": i} for i in item_ids],
        "has_more": False,
    }
    return out


def _item_ids(store: Store, sub_id: str) -> set[str]:
    table = raw_table("subscription_item")
    with store.read() as conn:
        return {
            r.id for r in conn.execute(sa.select(table.c.id).where(table.c.subscription == sub_id))
        }


def test_children_follow_their_parent_and_its_guard(
    store: Store, source_id: int, account: dict[str, Any]
) -> None:
    sub = account["subscription"]
    _apply(store, source_id, [_with_items(sub, ["si_a", "si_b"])], Observed.event(100))
    assert _item_ids(store, sub["id"]) == {"si_a", "si_b"}
    _apply(store, source_id, [_with_items(sub, ["si_b", "si_c"])], Observed.event(104))
    assert _item_ids(store, sub["id"]) == {"si_b", "si_c"}
    # The late `created` event (older) must not bring item A back (FIELD-NOTES).
    late = _apply(store, source_id, [_with_items(sub, ["si_a"])], Observed.event(101))
    assert late.stale == 1
    assert _item_ids(store, sub["id"]) == {"si_b", "si_c"}
    item = _get(store, "subscription_item", "si_c")
    assert item.customer == sub["customer"] and item.price == sub["items"]["data"][0]["price"]["id"]


def test_truncated_children_are_not_taken_as_removals(
    store: Store, source_id: int, account: dict[str, Any]
) -> None:
    sub = account["subscription"]
    _apply(store, source_id, [_with_items(sub, ["si_a", "si_b", "si_c"])], Observed.event(100))
    partial = _with_items(sub, ["si_a"])
    partial["items"]["has_more"] = True
    _apply(store, source_id, [partial], Observed.event(200))
    assert _item_ids(store, sub["id"]) == {"si_a", "si_b", "si_c"}


def test_old_api_shapes_are_normalized(
    store: Store, source_id: int, account: dict[str, Any]
) -> None:
    old_sub, old_invoice = account["old_subscription"], account["old_invoice"]
    assert "current_period_end" in old_sub and "subscription" in old_invoice  # really old
    _apply(store, source_id, [old_sub, old_invoice], Observed.event(1_700_000_000))
    sub = _get(store, "subscription", old_sub["id"])
    assert "current_period_end" not in sub.data
    assert sub.data["items"]["data"][0]["current_period_end"] == old_sub["current_period_end"]
    invoice = _get(store, "invoice", old_invoice["id"])
    assert invoice.subscription == old_invoice["subscription"]
    parent = invoice.data["parent"]["subscription_details"]["subscription"]
    assert parent == old_invoice["subscription"]
    # The current shape of the same objects lands in the same columns.
    current = account["invoice"]
    _apply(store, source_id, [current], Observed.event(1_700_000_100))
    assert _get(store, "invoice", current["id"]).subscription == invoice.subscription


@pytest.fixture(scope="module")
def renderings() -> Iterator[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """(current, old-version) renderings of one object of every imported type."""
    sim = Simulator(":memory:", knobs=Knobs(rate_limits=False))
    seed_account(sim, customers=6, months=2)
    key = sim.default_key()
    sim.request("POST", f"/v1/customers/{_first(sim, '/v1/customers')}", {"coupon": _first(
        sim, "/v1/coupons")}, key=key)  # fmt: skip
    pairs = []
    for path, params in (
        ("/v1/customers", {}),
        ("/v1/subscriptions", {"status": "all", "expand": ["data.discounts"]}),
        ("/v1/invoices", {}),
        ("/v1/charges", {}),
        ("/v1/payment_intents", {}),
        ("/v1/refunds", {}),
        ("/v1/credit_notes", {}),
        ("/v1/products", {}),
        ("/v1/prices", {"expand": ["data.tiers"]}),
        ("/v1/plans", {}),
        ("/v1/coupons", {"expand": ["data.applies_to"]}),
    ):
        for version in (None, OLD_VERSION):
            status, body, _ = sim.request(
                "GET", path, {"limit": "100", **params}, key=key, stripe_version=version
            )
            assert status == 200, body
            if version is None:
                current = body["data"]
            else:
                pairs.extend(zip(current, body["data"], strict=True))
    yield pairs
    sim.close()


def _first(sim: Simulator, path: str) -> str:
    return str(call(sim, "GET", path, {"limit": "1"})["data"][0]["id"])


def test_the_current_shape_fast_path_agrees_with_normalize(
    renderings: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    from stripesync.stripe_api.shapes import normalize
    from stripesync.sync.apply import _is_current_shape

    kinds = set()
    for current, old in renderings:
        kinds.add(current["object"])
        assert normalize(current) == current
        assert _is_current_shape(current) or current["object"] not in ("charge", "invoice")
        if normalize(old) != old:
            assert not _is_current_shape(old), (old["object"], old["id"])
    assert {"customer", "subscription", "invoice", "charge", "plan", "credit_note"} <= kinds
    assert any(not _is_current_shape(old) for _, old in renderings if old["object"] == "invoice")


def test_events_are_recorded_once_and_applied(
    store: Store, source_id: int, account: dict[str, Any]
) -> None:
    customer = account["customer"]
    event = {
        "id": "evt_1",
        "object": "event",
        "type": "customer.updated",
        "created": 1_700_000_000,
        "api_version": OLD_VERSION,
        "livemode": False,
        "data": {"object": {**customer, "name": "From event"}},
    }
    with store.write() as conn:
        first = apply_event(conn, source_id, event, via="webhook")
    with store.write() as conn:
        duplicate = apply_event(conn, source_id, event, via="poll")
    assert first is not None and first.written == 1
    assert duplicate is None
    assert _get(store, "customer", customer["id"]).data["name"] == "From event"
    with store.read() as conn:
        row = conn.execute(sa.select(stripe_events)).one()
    assert (row.object_id, row.received_via) == (customer["id"], "webhook")
    assert row.processed_at is not None


def test_unknown_types_are_skipped(store: Store, source_id: int) -> None:
    result = _apply(
        store,
        source_id,
        [{"id": "pm_1", "object": "payment_method"}, {"object": "customer"}],
        Observed.event(1),
    )
    assert result.skipped == 2 and result.written == 0
