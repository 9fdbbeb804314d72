"""Benchmark: generate a SaaS business into a fresh simulator file, then use it.

    .venv/bin/python bench/sim_generate.py --customers 100000 --seed 1

Reports the wall time of each generation phase, the objects by type, the peak memory of
the process (``ru_maxrss``), whether the file survives a restart (reopened by a new
Simulator: same counts, a list call served), and list-call latency at that size: first
page, a deep page through ``starting_after``, lists filtered by customer, a
``created`` range, subscriptions with ``status=all``. Targets (issue 3): under 3 minutes,
under 1 GB, list calls that page through indexes (flat latency however deep the page).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stripesync.sim.core import Knobs, Simulator  # noqa: E402
from stripesync.sim.generator import generate  # noqa: E402


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_mb": ram, "python": platform.python_version()}


def _fresh(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _timed(sim: Simulator, path: str, params: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Median and worst latency (ms) of an in-process API call, and its page size."""
    samples = []
    body: dict[str, Any] = {}
    for _ in range(repeat):
        began = time.perf_counter()
        status, body, _ = sim.request("GET", path, dict(params))
        samples.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise SystemExit(f"GET {path} {params} answered {status}: {body}")
    return {
        "median_ms": round(statistics.median(samples), 2),
        "max_ms": round(max(samples), 2),
        "returned": len(body.get("data", [])),
        "has_more": body.get("has_more"),
    }


def _latency(sim: Simulator, repeat: int) -> dict[str, Any]:
    acct = sim.context().acct
    db = sim.db

    def id_at(object_type: str, fraction: float) -> str:
        total = db.count(acct, object_type)
        row = db.execute(
            "SELECT id FROM objects WHERE acct=? AND object=? AND deleted=0"
            " ORDER BY created DESC, seq DESC LIMIT 1 OFFSET ?",
            (acct, object_type, int(total * fraction)),
        )
        return str(row[0][0])

    customer = db.execute(
        "SELECT customer FROM objects WHERE acct=? AND object='invoice'"
        " GROUP BY customer ORDER BY count(*) DESC LIMIT 1",
        (acct,),
    )[0][0]
    newest = int(db.execute("SELECT max(created) FROM objects WHERE acct=?", (acct,))[0][0])
    month = {"gte": str(newest - 400 * 86400), "lt": str(newest - 370 * 86400)}
    return {
        "customers, first page": _timed(sim, "/v1/customers", {"limit": "100"}, repeat),
        "customers, deep page (90%)": _timed(
            sim,
            "/v1/customers",
            {"limit": "100", "starting_after": id_at("customer", 0.9)},
            repeat,
        ),
        "invoices, first page": _timed(sim, "/v1/invoices", {"limit": "100"}, repeat),
        "invoices, deep page (90%)": _timed(
            sim,
            "/v1/invoices",
            {"limit": "100", "starting_after": id_at("invoice", 0.9)},
            repeat,
        ),
        "invoices of one customer": _timed(
            sim, "/v1/invoices", {"limit": "100", "customer": customer}, repeat
        ),
        "charges, created range (a month a year ago)": _timed(
            sim, "/v1/charges", {"limit": "100", "created": month}, repeat
        ),
        "subscriptions, status=all": _timed(
            sim, "/v1/subscriptions", {"limit": "100", "status": "all"}, repeat
        ),
        "events, first page": _timed(sim, "/v1/events", {"limit": "100"}, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--db", type=Path, default=Path("/tmp/stripesync-bench/sim.db"))
    parser.add_argument("--repeat", type=int, default=20, help="samples per list call")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = parser.parse_args()

    _fresh(args.db)
    sim = Simulator(args.db, knobs=Knobs(seed=args.seed, rate_limits=False))
    report = generate(
        sim, customers=args.customers, seed=args.seed, years=args.years, progress=not args.json
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = sim.db.counts()
    events = int(sim.db.execute("SELECT count(*) FROM events")[0][0])
    sim.close()

    began = time.perf_counter()
    reopened = Simulator(args.db, knobs=Knobs(seed=args.seed, rate_limits=False))
    reopen_ms = (time.perf_counter() - began) * 1000
    survived = (
        reopened.db.counts() == counts
        and int(reopened.db.execute("SELECT count(*) FROM events")[0][0]) == events
    )
    latency = _latency(reopened, args.repeat)
    reopened.close()

    results = {
        "machine": _machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "customers": args.customers,
        "seed": args.seed,
        "wall_seconds": round(report.seconds, 1),
        "history_seconds": round(report.history_seconds, 1),
        "window_seconds": round(report.window_seconds, 1),
        "window_actions": report.window_actions,
        "window_api_calls": report.window_calls,
        "objects_total": sum(counts.values()),
        "objects": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "events_last_30_days": events,
        "peak_rss_mb": round(peak_mb),
        "file_mb": round(
            sum(
                Path(f"{args.db}{s}").stat().st_size
                for s in ("", "-wal")
                if Path(f"{args.db}{s}").exists()
            )
            / 2**20
        ),
        "restart": {"counts_unchanged": survived, "reopen_ms": round(reopen_ms, 1)},
        "list_latency": latency,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
