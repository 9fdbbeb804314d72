"""``stripesync demo``: the main job on the embedded default, end to end, on one machine.

The simulator with a generated SaaS business, synced into SQLite, served on localhost.
Each stage uses the same code a real deployment uses; only the Stripe server is simulated.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stripesync.sim.commands import summary_table
from stripesync.sim.core import Knobs, Simulator

console = Console()


def _optional(module: str) -> Any:
    """A later stage of the pipeline, when this build has it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def demo(
    customers: Annotated[int, typer.Option(min=1, max=100_000, help="Customers in the simulated business.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the generated business.")] = 1,
    sim_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the Stripe API simulator.")] = 12111,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the stripesync web app.")] = 8000,
    speed: Annotated[float, typer.Option(min=0, help="Simulated seconds per real second (live activity).")] = 600.0,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its state.")] = Path(".stripesync/demo"),
    fresh: Annotated[bool, typer.Option(help="Start from a new simulated business.")] = True,
) -> None:
    """Run the simulator with a generated business, sync it, and serve it on localhost."""
    from stripesync.sim.generator import generate
    from stripesync.sim.server import SimServer

    data_dir.mkdir(parents=True, exist_ok=True)
    sim_db = data_dir / "sim.db"
    if fresh:
        for path in data_dir.glob("*.db*"):
            path.unlink()
    sim = Simulator(sim_db, knobs=Knobs(seed=seed))
    if sim.db.count(f"{sim.context().acct}", "customer") == 0:
        console.print(f"Generating a SaaS business with {customers:,} customers (seed {seed})…")
        generate(sim, customers=customers, seed=seed, progress=True)
    console.print(summary_table(sim))
    if speed > 0:
        from stripesync.sim.live import enable_live_activity

        enable_live_activity(sim, seed=seed)
    server = SimServer(sim=sim, port=sim_port, clock_speed=speed).start()
    console.print(f"Stripe API simulator: {server.url}  (test key {server.secret_key})")
    pipeline = _optional("stripesync.demo_pipeline")
    try:
        if pipeline is not None:
            pipeline.run(server=server, data_dir=data_dir, port=port)
        else:
            console.print("Simulator running with live activity; Ctrl-C to stop.")
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("Stopping.")
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
