"""Profiles benchmark: a full ``rebuild`` from the raw store, and one webhook's recompute.

    .venv/bin/python bench/rebuild.py                          # 100,000 customers, SQLite
    .venv/bin/python bench/rebuild.py --customers 10000 --profile
    .venv/bin/python bench/rebuild.py --backends sqlite postgresql

The raw store is filled directly, through the one apply path (``prepare`` +
``write_prepared``), with what ``stripesync.sim.generator.generate`` makes: two years of a
subscription business (trials, upgrades, seat changes, cancellations, coupons, failed
payments, refunds, app ids in metadata), about 27 objects per customer. Prices are read
through the simulator's API with ``expand[]=data.tiers``, as the backfill stores them.
Building a 100,000-customer raw store takes ~10 minutes, so the filled SQLite file is
kept (``--raw-store``, default ``bench/.cache/raw-<customers>-<seed>.db``) and copied for
each run.

Measured, each in a fresh copy of the raw store:

1. **rebuild, cold**: derived tables empty, every profile, link, stage history row and
   revenue movement written (what ``stripesync rebuild`` does after an upgrade).
2. **rebuild, warm**: the same again over the derived state it left (nothing changed).
3. **webhook**: for ``--webhooks`` customers picked at random, a ``subscription.updated``
   event (one more seat) applied by ``apply_event`` and the customer recomputed by
   ``recompute_customers`` in the same transaction, as the webhook receiver does;
   p50/p99/max of the recompute alone (wall and CPU time: the machine may be shared) and
   of the whole transaction.

Peak resident memory of the process is reported (the rebuild works in batches of 2,000
customers, so it does not grow with the account). ``--profile`` prints cProfile's top
functions of the cold rebuild.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from stripesync.profiles.recompute import (  # noqa: E402
    default_workers,
    rebuild,
    recompute_customers,
)
from stripesync.profiles.settings import ProfileSettings, save_profile_settings  # noqa: E402
from stripesync.profiles.store import (  # noqa: E402
    profile_customers,
    profile_merges,
    profile_overrides,
    profiles,
    revenue_movements,
    stage_history,
)
from stripesync.store import Store  # noqa: E402
from stripesync.store.schema import RAW_TABLES, raw_table, sources  # noqa: E402
from stripesync.store.types import utcnow  # noqa: E402
from stripesync.sync.apply import Observed, apply_event, prepare, write_prepared  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
#: Child rows travel inside their parent (as the backfill stores them).
SKIPPED_TYPES = {"subscription_item", "line_item", "plan"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _add_source(store: Store) -> int:
    now = utcnow()
    with store.write() as conn:
        source_id = int(
            conn.execute(
                sa.insert(sources)
                .values(
                    name="bench",
                    status="active",
                    api_key_encrypted=None,
                    key_hint="sk_test_…bench",
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
        )
        save_profile_settings(
            conn, source_id, ProfileSettings(kind="users", link_key="app_user_id")
        )
    return source_id


def build_raw_store(path: Path, customers: int, seed: int) -> None:
    """Generate the account in a simulator and write its objects into a raw store."""
    from stripesync.sim.core import Knobs, Simulator
    from stripesync.sim.generator import generate

    started = time.monotonic()
    sim_path = path.with_suffix(".sim.db")
    sim_path.unlink(missing_ok=True)
    sim = Simulator(sim_path, knobs=Knobs(rate_limits=False))
    report = generate(sim, customers=customers, seed=seed, progress=True)
    print(f"generated {report.total_objects:,} objects in {report.seconds:.0f}s", file=sys.stderr)
    prices: dict[str, Any] = {}
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": "100", "expand": ["data.tiers"]}
        if after:
            params["starting_after"] = after
        status, body, _ = sim.request("GET", "/v1/prices", params)
        assert status == 200, body
        prices.update({p["id"]: p for p in body["data"]})
        if not body["has_more"]:
            break
        after = body["data"][-1]["id"]
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    store = Store.open(f"sqlite:///{tmp}")
    source_id = _add_source(store)
    moment = int(time.time() * 1000)
    batch: list[dict[str, Any]] = []
    written = 0

    def flush() -> None:
        nonlocal written
        prepared = prepare(source_id, batch, Observed.api(moment, moment))
        with store.write() as conn:
            write_prepared(conn, prepared)
        written += len(batch)
        batch.clear()

    for row in sim.export_state():
        obj = row["object"]
        kind = obj.get("object")
        if row["deleted"] or kind not in RAW_TABLES or kind in SKIPPED_TYPES:
            continue
        batch.append(prices.get(obj["id"], obj) if kind == "price" else obj)
        if len(batch) >= 5000:
            flush()
    if batch:
        flush()
    store.close()
    sim.close()
    for leftover in (sim_path, Path(f"{sim_path}-wal"), Path(f"{sim_path}-shm")):
        leftover.unlink(missing_ok=True)
    tmp.rename(path)
    print(
        f"raw store {path} filled with {written:,} objects in {time.monotonic() - started:.0f}s",
        file=sys.stderr,
    )


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


def _copy_to_postgres(sqlite_path: Path, url: str) -> Store:
    """A PostgreSQL store holding the same raw rows as the cached SQLite one."""
    source = Store.open(f"sqlite:///{sqlite_path}")
    target = Store.open(url)
    tables = [sources, *(spec.table for spec in RAW_TABLES.values())]
    with source.read() as src:
        for table in tables:
            rows: list[dict[str, Any]] = []
            for row in src.execute(sa.select(table)):
                rows.append(dict(row._mapping))
                if len(rows) >= 5000:
                    with target.write() as dst:
                        dst.execute(sa.insert(table), rows)
                    rows.clear()
            if rows:
                with target.write() as dst:
                    dst.execute(sa.insert(table), rows)
    with target.write() as dst:
        dst.execute(sa.text("SELECT setval('sources_id_seq', (SELECT max(id) FROM sources))"))
    source.close()
    return target


def _webhooks(store: Store, source_id: int, count: int, seed: int) -> dict[str, float]:
    subs = raw_table("subscription")
    with store.read() as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                sa.select(subs.c.id).where(subs.c.source_id == source_id, subs.c.status == "active")
            )
        ]
        chosen = random.Random(seed).sample(ids, min(count, len(ids)))
        picked = [
            (r.customer, r.data)
            for r in conn.execute(
                sa.select(subs.c.customer, subs.c.data).where(
                    subs.c.source_id == source_id, subs.c.id.in_(chosen)
                )
            )
        ]
    recompute_ms: list[float] = []
    recompute_cpu_ms: list[float] = []
    total_ms: list[float] = []
    created = int(time.time()) + 10
    for n, (customer, data) in enumerate(picked):
        sub = copy.deepcopy(data)
        item = sub["items"]["data"][0]
        item["quantity"] = (item.get("quantity") or 1) + 1
        event = {
            "id": f"evt_bench{n:08d}",
            "object": "event",
            "type": "customer.subscription.updated",
            "created": created + n,
            "api_version": "2026-10-28.endive",
            "livemode": False,
            "data": {"object": sub},
        }
        began = time.perf_counter()
        with store.write() as conn:
            apply_event(conn, source_id, event, via="webhook")
            before = time.perf_counter()
            cpu_before = time.process_time()
            recompute_customers(conn, source_id, [customer])
            recompute_cpu_ms.append((time.process_time() - cpu_before) * 1000)
            recompute_ms.append((time.perf_counter() - before) * 1000)
        total_ms.append((time.perf_counter() - began) * 1000)

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "samples": len(recompute_ms),
        "recompute_p50_ms": round(statistics.median(recompute_ms), 2),
        "recompute_p99_ms": round(p(recompute_ms, 0.99), 2),
        "recompute_max_ms": round(max(recompute_ms), 2),
        "recompute_cpu_p50_ms": round(statistics.median(recompute_cpu_ms), 2),
        "recompute_cpu_p99_ms": round(p(recompute_cpu_ms, 0.99), 2),
        "transaction_p50_ms": round(statistics.median(total_ms), 2),
        "transaction_p99_ms": round(p(total_ms, 0.99), 2),
    }


def run(backend: str, raw: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = CACHE / f"run-{os.getpid()}.db"
    shutil.copyfile(raw, work)
    for suffix in ("-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    dropped: tuple[str, str] | None = None
    if backend == "sqlite":
        store = Store.open(f"sqlite:///{work}")
    else:
        from tests.conftest import _admin_url, make_postgres_database

        url, name = make_postgres_database(_admin_url())
        dropped = (_admin_url(), name)
        store = _copy_to_postgres(work, url)
    try:
        with store.read() as conn:
            source_id = int(conn.execute(sa.select(sources.c.id)).scalar_one())
            customers = int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(raw_table("customer"))
                    .where(raw_table("customer").c.source_id == source_id)
                ).scalar_one()
            )
        _wipe_derived(store)
        load_before = os.getloadavg()[0]
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        cold = rebuild(store, source_id, workers=args.workers)
        if profiler is not None:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue(), file=sys.stderr)
        warm = rebuild(store, source_id, workers=args.workers)
        hooks = _webhooks(store, source_id, args.webhooks, args.seed)
        return {
            "backend": backend,
            "customers": customers,
            "rebuild_cold_s": round(cold.seconds, 2),
            "rebuild_cold_per_s": round(cold.rate),
            "rebuild_warm_s": round(warm.seconds, 2),
            "rebuild_warm_per_s": round(warm.rate),
            "profiles": len(cold.profiles),
            "merges": cold.merges,
            "stage_changes": cold.stage_changes,
            "movements": cold.movements_written,
            "errors": len(cold.errors),
            "webhook": hooks,
            "peak_rss_mb": round(_rss_mb()),
            "workers": args.workers if args.workers is not None else default_workers(),
            "load_average_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        }
    finally:
        store.close()
        if dropped is not None:
            from tests.conftest import drop_postgres_database

            drop_postgres_database(*dropped)
        work.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{work}{suffix}").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["sqlite"])
    parser.add_argument("--raw-store", type=Path, default=None)
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--workers", type=int, default=None, help="Compute processes (default: per CPU)."
    )
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = args.raw_store or CACHE / f"raw-{args.customers}-{args.seed}.db"
    if not raw.exists():
        build_raw_store(raw, args.customers, args.seed)
    results = [run(backend, raw, args) for backend in args.backends]
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python "
                f"{platform.python_version()}",
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
