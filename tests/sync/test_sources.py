"""Connecting sources: every bad input is one clear error, and nothing is stored."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from stripesync.errors import InvalidInput, NotFound, PermissionMissing
from stripesync.secrets import secret_box
from stripesync.settings import Settings
from stripesync.sim.server import SimServer, free_port
from stripesync.store import Store
from stripesync.store.schema import sources
from stripesync.stripe_api.errors import KeyRejected, StripeUnreachable
from stripesync.sync.backfill import run_backfill
from stripesync.sync.sources import (
    ConnectRequest,
    disconnect,
    get_source,
    list_sources,
    parse_interval,
    parse_start,
    probe,
    save_source,
)
from tests.sync.helpers import connect, count_rows, make_settings
from tests.sync.seed import seed_account

ALL_READS = (
    "customers",
    "subscriptions",
    "invoices",
    "charges",
    "payment_intents",
    "refunds",
    "products",
    "prices",
    "plans",
    "coupons",
    "credit_notes",
    "events",
)


def _nothing_stored(store: Store) -> bool:
    with store.read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sources)).scalar_one() == 0


def _restricted(server: SimServer, *, without: str | None = None, webhooks: bool = True) -> str:
    permissions = {name: "read" for name in ALL_READS if name != without}
    if webhooks:
        permissions["webhook_endpoints"] = "write"
    return server.sim.create_key(server.sim.context().account, permissions=permissions)


def test_key_is_encrypted_and_only_shown_masked(
    server: SimServer, store: Store, settings: Settings
) -> None:
    source = connect(store, settings, server)
    key = server.secret_key
    assert source.key_hint == f"sk_test_…{key[-4:]}" and source.mode == "test"
    with store.read() as conn:
        row = conn.execute(sa.select(sources)).one()
    assert key not in repr(tuple(row)) and key not in repr(source)
    assert source.api_key(secret_box(settings)) == key
    assert source.start_mode == "all" and source.interval_seconds == 3600
    assert source.profile_settings == {}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("hello", "not a Stripe secret or restricted key"),
        ("pk_test_51Abcdefghijklmnopqrstuvwxyz", "publishable key"),
        ("sk_test_", "not a Stripe secret or restricted key"),
    ],
    ids=["garbage", "publishable", "truncated"],
)
def test_malformed_keys_are_refused_before_any_request(key: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        ConnectRequest.parse(name="acme", api_key=key)
    assert "Dashboard" in str(info.value)


def test_wrong_and_revoked_keys_are_one_clear_error(
    server: SimServer, store: Store, settings: Settings
) -> None:
    mistyped = server.secret_key[:-4] + "zzzz"
    for key in (mistyped, None):
        if key is None:
            key = server.sim.create_key(server.sim.context().account)
            server.sim.revoke_key(key)
        request = ConnectRequest.parse(name="acme", api_key=key, api_base=server.url)
        with pytest.raises(KeyRejected) as info:
            probe(store, request, settings)
        text = str(info.value)
        assert "rejected the key" in text and request.key_hint in text and key not in text
        assert "\n" not in text
    assert _nothing_stored(store)


def test_unreachable_server_fails_fast(store: Store, settings: Settings) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    request = ConnectRequest.parse(name="acme", api_key="sk_test_" + "a" * 30, api_base=base)
    started = time.monotonic()
    with pytest.raises(StripeUnreachable, match="cannot reach the Stripe API at"):
        probe(store, request, settings)
    assert time.monotonic() - started < 10
    assert _nothing_stored(store)


def test_live_key_where_test_was_asked(server: SimServer) -> None:
    with pytest.raises(InvalidInput, match="--mode test was asked but sk_live_…") as info:
        ConnectRequest.parse(name="acme", api_key=server.live_key, mode="test")
    assert server.live_key not in str(info.value)
    request = ConnectRequest.parse(name="acme", api_key=server.live_key, mode="live")
    assert request.livemode is True


def test_missing_read_permission_refuses_with_the_exact_permission(
    server: SimServer, store: Store, settings: Settings
) -> None:
    key = _restricted(server, without="invoices")
    request = ConnectRequest.parse(name="acme", api_key=key, api_base=server.url)
    report = probe(store, request, settings)
    assert [p.name for p in report.missing] == ["Invoices: Read"]
    with pytest.raises(PermissionMissing) as info:
        save_source(store, secret_box(settings), request, report, settings)
    assert str(info.value) == (
        f"key {request.key_hint} lacks `Invoices: Read`; add it in the Stripe Dashboard → "
        "Developers → API keys"
    )
    assert _nothing_stored(store)


def test_missing_webhook_write_connects_with_polling_only(
    server: SimServer, store: Store, settings: Settings
) -> None:
    key = _restricted(server, webhooks=False)
    request = ConnectRequest.parse(name="acme", api_key=key, api_base=server.url)
    report = probe(store, request, settings)
    assert [p.name for p in report.missing] == ["Webhook Endpoints: Write"]
    saved = save_source(store, secret_box(settings), request, report, settings)
    assert saved.source.polling_only is True and saved.source.key_kind == "restricted"
    assert any("polling only" in note for note in saved.notes)
    # The probe created nothing on the account.
    assert server.sim.db.counts().get("webhook_endpoint", 0) == 0


def test_webhook_endpoint_registered_and_removed(
    server: SimServer, tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, public_url="https://sync.example.com")
    store = Store.open(settings.resolved_database_url)
    try:
        saved = connect(store, settings, server, key=_restricted(server))
        endpoint = server.sim.db.get(server.sim.context().acct, saved.webhook_endpoint_id or "")
        assert endpoint is not None
        assert endpoint["url"] == "https://sync.example.com/webhooks/stripe/acme"
        assert saved.polling_only is False
        result = disconnect(store, settings, secret_box(settings), "acme")
        assert any("deleted" in note for note in result.notes)
        assert server.sim.db.get(server.sim.context().acct, saved.webhook_endpoint_id or "") is None
    finally:
        store.close()


def test_disconnect_keeps_data_purge_deletes_it_and_reconnect_resumes(
    server: SimServer, store: Store, settings: Settings
) -> None:
    seed_account(server.sim, customers=3)
    source = connect(store, settings, server)
    assert run_backfill(store, settings, source).ok
    box = secret_box(settings)
    disconnect(store, settings, box, "acme")
    with pytest.raises(NotFound, match="no connected source named 'acme'"):
        get_source(store, "acme")
    kept = get_source(store, "acme", active=False)
    assert kept.status == "disconnected" and kept.api_key_encrypted is None
    assert count_rows(store, source.id, "customer") == 3
    again = connect(store, settings, server)
    assert again.id == source.id and again.status == "active"
    disconnect(store, settings, box, "acme", purge=True)
    assert list_sources(store) == []
    assert count_rows(store, source.id, "customer") == 0


def test_names_are_unique_and_checked(server: SimServer, store: Store, settings: Settings) -> None:
    connect(store, settings, server)
    with pytest.raises(InvalidInput, match="already connected"):
        connect(store, settings, server)
    with pytest.raises(InvalidInput, match="not a valid source name"):
        ConnectRequest.parse(name="no spaces", api_key=server.secret_key)
    with pytest.raises(NotFound, match="connected: acme"):
        disconnect(store, settings, secret_box(settings), "other")


def test_start_dates() -> None:
    now = 1_750_000_000.0
    assert parse_start(None, now=now) == ("all", None)
    assert parse_start("all", now=now) == ("all", None)
    assert parse_start("now", now=now) == ("now", 1_750_000_000)
    assert parse_start("2024-01-01", now=now) == ("date", 1_704_067_200)
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        parse_start("yesterday", now=now)
    with pytest.raises(InvalidInput, match="in the future"):
        parse_start("2099-01-01", now=now)


def test_intervals() -> None:
    assert parse_interval(None) == 3600
    assert parse_interval("30m") == 1800
    assert parse_interval("1d") == 86400
    assert parse_interval(" 2h ") == 7200
    for bad, message in (("1 hour", "not a duration"), ("20s", "minimum"), ("30d", "maximum")):
        with pytest.raises(InvalidInput, match=message):
            parse_interval(bad)


def test_api_base_is_checked() -> None:
    key = "sk_test_" + "a" * 30
    assert ConnectRequest.parse(name="a", api_key=key).api_base == "https://api.stripe.com"
    with pytest.raises(InvalidInput, match="not an http"):
        ConnectRequest.parse(name="a", api_key=key, api_base="api.stripe.com")
    with pytest.raises(InvalidInput, match="has a path"):
        ConnectRequest.parse(name="a", api_key=key, api_base="https://api.stripe.com/v1")
    with pytest.raises(InvalidInput, match="--mode"):
        ConnectRequest.parse(name="a", api_key=key, mode="prod")
