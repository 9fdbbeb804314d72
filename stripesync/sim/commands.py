"""``stripesync sim ...``: run the simulator, export its state, show what it holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stripesync.errors import ConfigError
from stripesync.sim.core import Knobs, Simulator

sim_app = typer.Typer(
    help="The Stripe API simulator (for the demo, the tests and benchmarks).", no_args_is_help=True
)
console = Console()


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--{name} must be a fraction between 0 and 1, got {value}")
    return value


def summary_table(sim: Simulator, title: str = "Simulated Stripe account") -> Table:
    table = Table(title=title)
    table.add_column("object")
    table.add_column("count", justify="right")
    counts = sim.db.counts()
    events = sim.db.execute("SELECT count(*) FROM events")[0][0]
    for name in sorted(counts):
        table.add_row(name, f"{counts[name]:,}")
    table.add_row("event (last 30 days)", f"{events:,}")
    return table


@sim_app.command("serve")
def serve(
    db: Annotated[Path, typer.Option(help="SQLite file holding the simulator's state.")] = Path(
        ".stripesync/sim.db"
    ),
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 12111,
    customers: Annotated[
        int,
        typer.Option(
            min=0, help="Generate this many customers with ~2 years of history (0: none)."
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic generator.")] = 1,
    latency_ms: Annotated[float, typer.Option(min=0, help="Added latency per API call.")] = 0.0,
    error_rate: Annotated[
        float, typer.Option(help="Fraction of API calls answered with a transient 500.")
    ] = 0.0,
    rate_limit_live: Annotated[
        int, typer.Option(min=1, help="Requests/s per account in live mode.")
    ] = 100,
    rate_limit_test: Annotated[
        int, typer.Option(min=1, help="Requests/s per account in test mode.")
    ] = 25,
    rate_limit_endpoint: Annotated[int, typer.Option(min=1, help="Requests/s per endpoint.")] = 25,
    no_rate_limits: Annotated[
        bool, typer.Option("--no-rate-limits", help="Disable the 429 budgets.")
    ] = False,
    webhook_duplicates: Annotated[
        float, typer.Option(help="Fraction of webhooks delivered twice.")
    ] = 0.0,
    webhook_drops: Annotated[
        float, typer.Option(help="Fraction of webhooks never delivered.")
    ] = 0.0,
    webhook_shuffle: Annotated[
        bool, typer.Option(help="Deliver webhooks in shuffled order.")
    ] = False,
    speed: Annotated[
        float,
        typer.Option(
            min=0,
            help="Run the clock at this many simulated seconds per real second (0: real time, no live activity).",
        ),
    ] = 0.0,
) -> None:
    """Serve a stateful Stripe API simulator on loopback (state survives restarts)."""
    knobs = Knobs(
        rate_limit_live=rate_limit_live,
        rate_limit_test=rate_limit_test,
        rate_limit_endpoint=rate_limit_endpoint,
        rate_limits=not no_rate_limits,
        latency_ms=latency_ms,
        error_rate=_check_rate("error-rate", error_rate),
        webhook_duplicate_rate=_check_rate("webhook-duplicates", webhook_duplicates),
        webhook_drop_rate=_check_rate("webhook-drops", webhook_drops),
        webhook_shuffle=webhook_shuffle,
        seed=seed,
    )
    sim = Simulator(db, knobs=knobs)
    if customers:
        _generate(sim, customers, seed)
    console.print(summary_table(sim))
    console.print(f"Simulator on http://{host}:{port}")
    console.print(f"  test key: {sim.default_key(livemode=False)}")
    console.print(f"  live key: {sim.default_key(livemode=True)}")
    console.print("  ground truth: GET /_sim/state   clock: POST /_sim/advance")
    from stripesync.sim.server import serve_forever

    if speed > 0:
        from stripesync.sim.live import enable_live_activity

        enable_live_activity(sim, seed=seed)
        console.print(f"  live activity: on (clock at {speed:g}x)")
    serve_forever(sim, host, port, speed=speed)


def _generate(sim: Simulator, customers: int, seed: int) -> None:
    try:
        from stripesync.sim.generator import already_generated, generate
    except ImportError:
        raise ConfigError("this build has no data generator yet; run without --customers") from None
    if already_generated(sim):
        console.print("The state file already holds a generated business; serving it as it is.")
        return
    generate(sim, customers=customers, seed=seed, progress=True)


@sim_app.command("export")
def export(
    db: Annotated[Path, typer.Option(help="SQLite file holding the simulator's state.")] = Path(
        ".stripesync/sim.db"
    ),
) -> None:
    """Print every stored object as JSON lines (the ground truth a synced copy is compared with)."""
    if not db.exists():
        raise ConfigError(
            f"no simulator state at {db}; start one with `stripesync sim serve --db {db}`"
        )
    sim = Simulator(db)
    out = sys.stdout
    for row in sim.export_state():
        out.write(json.dumps(row, separators=(",", ":")) + "\n")


@sim_app.command("info")
def info(
    db: Annotated[Path, typer.Option(help="SQLite file holding the simulator's state.")] = Path(
        ".stripesync/sim.db"
    ),
) -> None:
    """Show what a simulator state file holds, and its API keys."""
    if not db.exists():
        raise ConfigError(
            f"no simulator state at {db}; start one with `stripesync sim serve --db {db}`"
        )
    sim = Simulator(db)
    console.print(summary_table(sim))
    for key in sim.keys():  # noqa: SIM118 (API keys, not a dict)
        kind = "restricted" if key["permissions"] is not None else "secret"
        console.print(
            f"{key['account']} {'live' if key['livemode'] else 'test'} {kind}: {key['key']}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
