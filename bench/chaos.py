"""The large chaos run: 10,000 customers, a simulated month, webhooks under chaos, kills.

    .venv/bin/python bench/chaos.py                               # SQLite, 10,000 customers
    .venv/bin/python bench/chaos.py --backend postgresql --customers 10000 --days 30

The same as ``tests/sync/test_chaos.py`` (whose helpers it uses), at scale: the
simulator (in this process, serving over HTTP) generates the business, stripesync
connects (registering its webhook endpoint) and imports it (``stripesync sync``, a
subprocess), ``stripesync serve`` receives in another subprocess. Then the simulated
clock runs ``--days`` days, a day per step, with the simulator's live activity (signups,
upgrades, cancellations, failing cards) on top of Stripe's own renewals, retries and
trial ends, while the webhooks are duplicated (10%), shuffled, dropped (5%) and the API
answers 2% 5xx and 2% 429. ``stripesync serve`` is killed with SIGKILL ``--kills``
times; ``stripesync sync --poll-only`` runs every ``--poll-every`` days (the hourly poll
of a real deployment, which keeps the cursor inside Stripe's 30 days) and once at the
end. Then every stored object is compared with the simulator's, and the run reports the
events, the time each stage took and any difference (there must be none).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--poll-every", type=int, default=10, help="days between polls")
    parser.add_argument("--rate-per-day", type=float, default=None, help="live activity rate")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--postgres", default=os.environ.get("STRIPESYNC_BENCH_POSTGRES", DEFAULT_PG)
    )
    parser.add_argument("--json", help="write the report here too")
    opts = parser.parse_args()

    import httpx
    import sqlalchemy as sa
    from cryptography.fernet import Fernet

    from stripesync.sim.generator import generate
    from stripesync.sim.live import disable_live_activity, enable_live_activity
    from stripesync.sim.server import SimServer, free_port
    from stripesync.store import Store
    from stripesync.store.schema import stripe_events
    from tests.sync.helpers import connect, make_settings
    from tests.sync.test_chaos import CHAOS, Serve, chaos_knobs, compare, run_cli, settle

    workdir = Path(tempfile.mkdtemp(prefix="stripesync-bench-chaos-"))
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "customers": opts.customers,
        "days": opts.days,
        "backend": opts.backend,
        "load_before": os.getloadavg(),
        "seconds": {},
    }
    pg_name: str | None = None
    if opts.backend == "sqlite":
        url = f"sqlite:///{workdir / 'stripesync.db'}"
    else:
        pg_name = f"stripesync_chaos_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(opts.postgres, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{pg_name}"'))
        engine.dispose()
        url = f"{opts.postgres.rsplit('/', 1)[0]}/{pg_name}"

    def stage(name: str, began: float) -> None:
        report["seconds"][name] = round(time.monotonic() - began, 1)
        print(f"{name}: {report['seconds'][name]}s", flush=True)

    with SimServer(workdir / "sim.db", knobs=chaos_knobs(opts.seed)) as server:
        knobs = server.sim.knobs
        saved = {name: getattr(knobs, name) for name in CHAOS}
        for name in CHAOS:
            setattr(knobs, name, type(saved[name])(0))
        knobs.rate_limits = False
        began = time.monotonic()
        generated = generate(server.sim, customers=opts.customers, seed=opts.seed)
        report["objects_generated"] = generated.total_objects
        stage("generate", began)
        port = free_port()
        secret = Fernet.generate_key().decode()
        settings = make_settings(
            workdir,
            url,
            secret_key=secret,
            public_url=f"http://127.0.0.1:{port}",
            stripe_max_network_retries=3,
        )
        store = Store.open(settings.resolved_database_url)
        serve: Serve | None = None
        try:
            source = connect(store, settings, server)
            env = {
                **os.environ,
                "STRIPESYNC_DATABASE_URL": url,
                "STRIPESYNC_DATA_DIR": str(settings.data_dir),
                "STRIPESYNC_SECRET_KEY": secret,
                "STRIPESYNC_PUBLIC_URL": settings.public_url,
                "STRIPESYNC_STRIPE_BUDGET_TEST": "2000",
                "STRIPESYNC_STRIPE_BUDGET_ENDPOINT": "2000",
                "STRIPESYNC_STRIPE_MAX_NETWORK_RETRIES": "3",
                "STRIPESYNC_LOG_LEVEL": "WARNING",
            }
            for name, value in saved.items():
                setattr(knobs, name, value)
            knobs.rate_limits = True
            serve = Serve(env, port, workdir / "serve.log")
            serve.start()
            began = time.monotonic()
            run_cli(env, "sync", "acme", timeout=3600)
            stage("backfill", began)
            enable_live_activity(server.sim, seed=opts.seed, rate_per_day=opts.rate_per_day)
            kill_days = {max(1, (k + 1) * opts.days // (opts.kills + 1)) for k in range(opts.kills)}
            began = time.monotonic()
            events_before = server.sim.db.execute("SELECT count(*) FROM events")[0][0]
            with httpx.Client(base_url=server.url, timeout=600) as control:
                for day in range(1, opts.days + 1):
                    response = control.post("/_sim/advance", json={"seconds": 86_400})
                    response.raise_for_status()
                    if day in kill_days:
                        time.sleep(0.5)
                        serve.kill()
                        time.sleep(1.0)
                        serve.start()
                    if day % opts.poll_every == 0:
                        run_cli(env, "sync", "acme", "--poll-only", timeout=3600)
                    print(
                        f"  day {day}: {server.sim.db.execute('SELECT count(*) FROM events')[0][0] - events_before:,} events",
                        flush=True,
                    )
            disable_live_activity(server.sim)
            stage("month", began)
            began = time.monotonic()
            settle(server, store, timeout=3600)
            run_cli(env, "sync", "acme", "--poll-only", timeout=3600)
            settle(server, store, timeout=3600)
            stage("final poll and settle", began)
            began = time.monotonic()
            problems = compare(server, store, source.id)
            stage("compare", began)
            deliverer = server.app.state.deliverer
            with store.read() as conn:
                via = dict(
                    conn.execute(
                        sa.select(stripe_events.c.received_via, sa.func.count()).group_by(
                            stripe_events.c.received_via
                        )
                    ).all()
                )
            report.update(
                events_in_month=int(server.sim.db.execute("SELECT count(*) FROM events")[0][0])
                - int(events_before),
                deliveries={
                    "sent": deliverer.sent,
                    "dropped": deliverer.dropped,
                    "failed": deliverer.failed,
                },
                ledger=via,
                differences={k: len(v) for k, v in problems.items()},
                difference_samples={k: v[:5] for k, v in problems.items()},
                load_after=os.getloadavg(),
            )
        finally:
            if serve is not None:
                serve.stop()
            store.close()
    if pg_name is not None:
        engine = sa.create_engine(opts.postgres, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        engine.dispose()
    print(json.dumps(report, indent=2))
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2))
    if report.get("differences"):
        raise SystemExit("the stored objects differ from the simulator's")


if __name__ == "__main__":
    main()
