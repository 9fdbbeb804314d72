"""The commands as a person runs them: output, one-line errors, exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from stripesync.cli import main
from stripesync.sim.server import SimServer
from tests.sync.seed import seed_account


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> None:
    monkeypatch.setenv("STRIPESYNC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STRIPESYNC_DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPESYNC_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("STRIPESYNC_STRIPE_BUDGET_TEST", "1000")
    monkeypatch.setenv("STRIPESYNC_STRIPE_BUDGET_ENDPOINT", "1000")
    monkeypatch.setenv("STRIPESYNC_STRIPE_MAX_NETWORK_RETRIES", "0")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("STRIPESYNC_PUBLIC_URL", raising=False)


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["stripesync", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    code = info.value.code if isinstance(info.value.code, int) else 0
    return code, captured.out, captured.err


@pytest.mark.usefixtures("env")
def test_connect_sync_status_sources_disconnect(
    server: SimServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_account(server.sim, customers=3)
    key = server.secret_key
    code, out, err = run(
        monkeypatch, capsys, "connect", "--name", "acme", "--api-key", key,
        "--api-base", server.url, "--interval", "30m",
    )  # fmt: skip
    assert code == 0, err
    assert "Customers: Read" in out and "granted" in out and "Connected" in out
    assert key not in out + err and f"sk_test_…{key[-4:]}" in out

    code, out, err = run(monkeypatch, capsys, "sync", "acme")
    assert code == 0, err
    assert "customers" in out and "done" in out

    code, out, _ = run(monkeypatch, capsys, "status", "--json")
    assert code == 0
    report = json.loads(out)["sources"][0]
    assert report["source"] == "acme" and report["interval_seconds"] == 1800
    streams = {s["stream"]: s for s in report["streams"]}
    assert streams["customers"]["state"] == "done" and streams["customers"]["objects"] == 3
    assert key not in out

    code, out, _ = run(monkeypatch, capsys, "status")
    assert code == 0 and "invoices" in out

    code, out, _ = run(monkeypatch, capsys, "sources")
    assert code == 0 and "acme" in out and "polling" in out and key not in out

    code, out, _ = run(monkeypatch, capsys, "disconnect", "acme", "--purge")
    assert code == 0 and "purged" in out
    code, out, _ = run(monkeypatch, capsys, "sources")
    assert "No sources yet" in out


@pytest.mark.usefixtures("env")
def test_errors_are_one_line_and_exit_1(
    server: SimServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["connect", "--name", "a", "--api-key", "nope"], "not a Stripe secret or restricted"),
        (
            ["connect", "--name", "a", "--api-key", server.live_key, "--mode", "test",
             "--api-base", server.url],
            "--mode test was asked",
        ),
        (
            ["connect", "--name", "a", "--api-key", server.secret_key[:-3] + "xyz",
             "--api-base", server.url],
            "rejected the key",
        ),
        (["connect", "--name", "a", "--api-key", server.secret_key, "--start-date", "soon"],
         "YYYY-MM-DD"),
        (["sync", "ghost"], "no connected source named 'ghost'"),
        (["status", "ghost"], "no connected source named 'ghost'"),
    ]  # fmt: skip
    for args, message in cases:
        code, out, err = run(monkeypatch, capsys, *args)
        assert code == 1, (args, out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (args, err)
        assert server.live_key not in err and server.secret_key not in err
    code, out, _ = run(monkeypatch, capsys, "sources")
    assert "No sources yet" in out  # nothing was stored by any failed connect


@pytest.mark.usefixtures("env")
def test_missing_permission_prints_the_table_then_refuses(
    server: SimServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = server.sim.create_key(
        server.sim.context().account,
        permissions={"customers": "read", "subscriptions": "read", "events": "read"},
    )
    code, out, err = run(
        monkeypatch, capsys, "connect", "--name", "a", "--api-key", key, "--api-base", server.url
    )
    assert code == 1
    assert "Invoices: Read" in out and "missing (required)" in out
    assert "lacks `Invoices: Read`, `Charges: Read`" in err
    assert "Stripe Dashboard → Developers → API keys" in err


@pytest.mark.usefixtures("env")
def test_a_failed_sync_exits_1_and_says_how_to_resume(
    server: SimServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_account(server.sim, customers=3)
    code, _, err = run(
        monkeypatch, capsys, "connect", "--name", "acme", "--api-key", server.secret_key,
        "--api-base", server.url,
    )  # fmt: skip
    assert code == 0, err
    server.sim.knobs.error_rate = 1.0
    try:
        code, out, err = run(monkeypatch, capsys, "sync")
    finally:
        server.sim.knobs.error_rate = 0.0
    assert code == 1
    assert "failed" in out
    assert "rerun `stripesync sync acme` to resume" in err
    code, out, _ = run(monkeypatch, capsys, "status", "--json")
    states = {s["state"] for s in json.loads(out)["sources"][0]["streams"]}
    assert states == {"failed"}


@pytest.mark.usefixtures("env")
def test_migrate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "migrate")
    assert code == 0 and "revision" in out
    code, out, _ = run(monkeypatch, capsys, "migrate")
    assert code == 0 and "already at revision" in out
