"""The profile commands as a person runs them: output, JSON, one-line errors, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from stripesync.cli import main
from stripesync.profiles.recompute import refresh_after_apply
from stripesync.profiles.settings import ProfileSettings
from stripesync.store import Store
from tests.profiles.factories import make_coupon, make_discount
from tests.profiles_store.helpers import account, add_source, catalog, put

AT = datetime(2026, 3, 15, 12, tzinfo=UTC)


@pytest.fixture
def filled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Iterator[Store]:
    monkeypatch.setenv("STRIPESYNC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STRIPESYNC_DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPESYNC_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("COLUMNS", "250")
    store = Store.open(database_url)
    source = add_source(store, "acme", ProfileSettings(link_key="app_id"))
    product, price = catalog()
    coupon = make_coupon(name="Half", percent_off=50.0, coupon_id="HALF")
    first = account("cus_One", price=price, metadata={"app_id": "org_1"}, quantity=3)
    first[1]["discounts"] = [make_discount(coupon, subscription=first[1]["id"])]
    second = account("cus_Two", price=price, metadata={"app_id": "org_1"})
    third = account("cus_Three", price=price)
    result = put(store, source, product, price, coupon, *first, *second, *third)
    refresh_after_apply(store, result, at=AT)
    yield store
    store.close()


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["stripesync", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    code = info.value.code if isinstance(info.value.code, int) else 0
    return code, captured.out, captured.err


def test_profiles_list_and_show(
    filled: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "profiles", "list")
    assert code == 0, err
    assert "org_1" in out and "cus_Three" in out and "customer" in out

    code, out, _ = run(monkeypatch, capsys, "profiles", "list", "--json", "--limit", "1")
    listed = json.loads(out)["profiles"]
    assert code == 0 and len(listed) == 1
    assert listed[0]["traits"]["stripe"]["customer_ids"]

    code, out, _ = run(monkeypatch, capsys, "profiles", "list", "--json", "--stage", "churn")
    assert json.loads(out) == {"profiles": []}

    code, out, err = run(monkeypatch, capsys, "profiles", "show", "org_1", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["link_id"] == "org_1" and shown["customers"] == 2
    assert {c["customer_id"] for c in shown["stripe_customers"]} == {"cus_One", "cus_Two"}
    assert len(shown["merges"]) == 1 and shown["stage_history"]
    assert sorted(i["amount_paid"] for i in shown["paid_invoices"]) == [4900, 14700]
    assert shown["renewal_date"] == "2026-04-01T00:00:00Z"
    assert shown["traits"]["stripe"]["renewal_date"] == "2026-04-01T00:00:00Z"

    code, out, _ = run(monkeypatch, capsys, "profiles", "show", "cus_Three")
    assert code == 0 and "Traits (stripe)" in out and "Paid invoices" in out

    code, out, err = run(monkeypatch, capsys, "profiles", "show", "nobody")
    assert code == 1 and "no profile 'nobody'" in err and out == ""


def test_explain_shows_mrr_item_by_item(
    filled: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "explain", "org_1")
    assert code == 0, err
    assert "cus_One" in out and "cus_Two" in out
    assert "HALF (subscription, 50%)" in out
    assert "rounded half up once" in out and "73.50 USD" in out
    code, out, _ = run(monkeypatch, capsys, "explain", "org_1", "--json")
    body = json.loads(out)
    one = next(c for c in body["customers"] if c["customer_id"] == "cus_One")
    (sub,) = one["subscriptions"]
    (item,) = sub["items"]
    assert sub["mrr"] == 7350 and item["quantity"] == 3
    assert item["monthly_before_discounts"] == "14700" and item["monthly"] == "7350"


def test_rebuild_and_unmerge(
    filled: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "rebuild")
    assert code == 0, err
    assert "Rebuilt 3 customers" in out
    code, out, _ = run(monkeypatch, capsys, "profiles", "show", "org_1", "--json")
    merge_id = json.loads(out)["merges"][0]["id"]
    code, out, err = run(monkeypatch, capsys, "profiles", "unmerge", str(merge_id))
    assert code == 0, err and "undone" in out
    code, out, _ = run(monkeypatch, capsys, "profiles", "list", "--json")
    assert len(json.loads(out)["profiles"]) == 3
    code, out, err = run(monkeypatch, capsys, "profiles", "unmerge", str(merge_id))
    assert code == 1 and "already undone" in err
    code, out, err = run(monkeypatch, capsys, "profiles", "unpin", "acme", "cus_Two")
    assert code == 0, err
    code, out, _ = run(monkeypatch, capsys, "profiles", "list", "--json")
    assert len(json.loads(out)["profiles"]) == 2


def test_source_set_changes_settings_with_clear_errors(
    filled: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(monkeypatch, capsys, "source", "set", "acme", "--reporting-currency", "gbp")
    assert code == 1 and "--rate usd=<rate>" in err
    code, out, err = run(
        monkeypatch, capsys, "source", "set", "acme", "--profile-kind", "users",
        "--subscriptions", "multiple", "--no-create-missing", "--churn-at-cancellation-request",
        "--reporting-currency", "EUR", "--rate", "usd=0.5", "--stage", "past_due=at_risk",
    )  # fmt: skip
    assert code == 0, err
    assert "Recomputed 3 customers" in out
    code, out, _ = run(monkeypatch, capsys, "source", "show", "acme")
    shown = json.loads(out)
    assert shown["kind"] == "users" and shown["subscription_mode"] == "multiple"
    assert shown["create_missing"] is False
    assert shown["revenue"]["reporting_currency"] == "eur"
    assert shown["revenue"]["exchange_rates"] == {"usd": "0.5"}
    assert shown["stages"]["status_stages"]["past_due"] == "at_risk"
    assert "at_risk" in shown["stages"]["precedence"]
    # create-missing is now off: no users profiles were created by the app, so none exist.
    code, out, _ = run(monkeypatch, capsys, "profiles", "list", "--json", "--kind", "users")
    assert json.loads(out) == {"profiles": []}

    code, _, err = run(monkeypatch, capsys, "source", "set", "acme", "--profile-kind", "teams")
    assert code == 1 and "'teams'" in err and "users" in err
    code, _, err = run(monkeypatch, capsys, "source", "set", "acme", "--rate", "usd")
    assert code == 1 and "KEY=VALUE" in err
    code, _, err = run(monkeypatch, capsys, "source", "set", "nope", "--profile-kind", "users")
    assert code == 1 and "no connected source named 'nope'" in err


def test_revenue_report(
    filled: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    code, out, err = run(
        monkeypatch, capsys, "revenue", "--json", "--since", "2026-01-01", "--until", "2026-03-31"
    )
    assert code == 0, err
    report = json.loads(out)
    assert [p["period"] for p in report["periods"]] == ["2026-01", "2026-02", "2026-03"]
    assert report["periods"][0]["mrr"] == {"usd": 7350 + 4900 + 4900}
    assert report["periods"][0]["paying_customers"] == 3
    assert report["periods"][0]["movements"]["new"] == {"usd": 17150}
    code, out, err = run(
        monkeypatch, capsys, "revenue", "--by", "day", "--since", "2026-03-01",
        "--until", "2026-03-03", "--currency", "eur",
    )  # fmt: skip
    assert code == 1 and "no exchange rate for USD" in err
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"usd": "0.5"}))
    code, out, err = run(
        monkeypatch, capsys, "revenue", "--by", "day", "--since", "2026-03-01",
        "--until", "2026-03-03", "--currency", "eur", "--rates", str(rates),
    )  # fmt: skip
    assert code == 0, err
    assert "Revenue by day in EUR" in out and "85.75 EUR" in out
    code, _, err = run(monkeypatch, capsys, "revenue", "--by", "week")
    assert code == 1 and "--by 'week'" in err
