"""Backfill benchmark: stripesync vs the naive SDK loop, against the simulator at live limits.

    .venv/bin/python bench/backfill.py                      # 20,000 customers, both backends
    .venv/bin/python bench/backfill.py --customers 2000 --backends sqlite --skip-baseline

The simulator runs in its own process with Stripe's live limits (100 requests/s per
account, 25/s per endpoint) and 150 ms added to every call. The fastest any client can
import its lists is the *ceiling*, max(total pages / 100, largest endpoint's pages / 25)
seconds at 100 objects a page; each run reports its time, objects/s, ceiling / time, and
the peak resident memory of its process. stripesync runs as a person runs it
(``stripesync connect`` then ``stripesync sync`` in a fresh process, on SQLite and on
PostgreSQL); the baseline is what a user would write with the SDK: ``auto_paging_iter``
over each list in turn (it stores nothing, so it is an optimistic baseline). After each
stripesync run the stored counts are checked against the simulator's.

Until ``stripesync.sim.generator.generate`` exists, the account is filled by
`seed_temporary` below (TEMPORARY, marked as such): clones of objects the simulator's own
API built, with new ids, customers and creation times over two years.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = 86_400
HISTORY_DAYS = 730
PAGE = 100
#: The lists each importer reads, with the parameters that make them complete.
LISTS: list[tuple[str, str, dict[str, Any]]] = [
    ("products", "/v1/products", {}),
    ("prices", "/v1/prices", {"expand": ["data.tiers"]}),
    ("plans", "/v1/plans", {"expand": ["data.tiers"]}),
    ("coupons", "/v1/coupons", {"expand": ["data.applies_to"]}),
    ("customers", "/v1/customers", {}),
    ("subscriptions", "/v1/subscriptions", {"status": "all", "expand": ["data.discounts"]}),
    ("invoices", "/v1/invoices", {}),
    ("charges", "/v1/charges", {}),
    ("payment_intents", "/v1/payment_intents", {}),
    ("refunds", "/v1/refunds", {}),
    ("credit_notes", "/v1/credit_notes", {}),
]
OBJECT_OF = {
    "products": "product",
    "prices": "price",
    "plans": "price",
    "coupons": "coupon",
    "customers": "customer",
    "subscriptions": "subscription",
    "invoices": "invoice",
    "charges": "charge",
    "payment_intents": "payment_intent",
    "refunds": "refund",
    "credit_notes": "credit_note",
}


# -- the simulated account ------------------------------------------------------------


def seed_temporary(db_path: Path, customers: int, seed: int) -> None:
    """TEMPORARY (until the generator lands): a live-mode account of ``customers`` customers.

    Templates come from the simulator's own API (so every object has Stripe's full field
    set); the history is cloned from them in bulk with ``sim.db.put_many``: signups
    growing over two years, ~90% subscribed, a third of those canceled since, a monthly
    invoice per active month (95% paid, each with its payment intent and charge), 2% of
    charges refunded, 1% of invoices credited.
    """
    from stripesync.sim.core import Knobs, Simulator
    from tests.sync.seed import call, seed_account

    sim = Simulator(db_path, knobs=Knobs(rate_limits=False, seed=seed))
    key = sim.default_key(livemode=True)
    acct = sim.context(key).acct
    end = int(time.time()) - 3600
    start = end - HISTORY_DAYS * DAY
    ids = seed_account(sim, customers=6, start=start - 120 * DAY, months=2, key=key)
    sim.db.meta_set("clock_mode", "real")
    sim.db.meta_set("clock_offset", "0")
    templates = {
        kind: json.dumps(call(sim, "GET", path, {"limit": "1"}, key=key)["data"][0])
        for kind, path in (
            ("charge", "/v1/charges"),
            ("payment_intent", "/v1/payment_intents"),
            ("refund", "/v1/refunds"),
            ("credit_note", "/v1/credit_notes"),
        )
    }
    templates["customer"] = json.dumps(
        call(sim, "GET", f"/v1/customers/{ids['customers'][1]}", key=key)
    )
    templates["subscription"] = json.dumps(
        call(sim, "GET", f"/v1/subscriptions/{ids['subscriptions'][0]}", key=key)
    )
    invoice = next(
        i
        for i in call(sim, "GET", "/v1/invoices", {"limit": "100"}, key=key)["data"]
        if i["status"] == "paid" and i["parent"] and len(i["lines"]["data"]) <= 2
    )
    templates["invoice"] = json.dumps(invoice)
    rng = random.Random(seed)
    batch: list[tuple[str, dict[str, Any]]] = []

    def put(obj: dict[str, Any]) -> None:
        batch.append((acct, obj))
        if len(batch) >= 5000:
            sim.db.put_many(batch)
            batch.clear()

    def clone(kind: str, **fields: Any) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(templates[kind])
        obj.update(fields)
        return obj

    for i in range(customers):
        signup = start + int(HISTORY_DAYS * DAY * rng.random() ** 0.6)
        cus = f"cus_B{i:07d}"
        put(clone("customer", id=cus, created=signup, email=f"user{i}@example.com",
                  name=f"User {i}", metadata={"app_user_id": str(i)}))  # fmt: skip
        if rng.random() > 0.9:
            continue
        sub_id = f"sub_B{i:07d}"
        canceled = rng.random() < 0.33
        stop = signup + int((end - signup) * rng.random()) if canceled else end
        sub = clone("subscription", id=sub_id, created=signup, customer=cus, start_date=signup,
                    billing_cycle_anchor=signup)  # fmt: skip
        for n, item in enumerate(sub["items"]["data"]):
            item.update(id=f"si_B{i:07d}{n}", subscription=sub_id, created=signup)
        if canceled:
            sub.update(status="canceled", canceled_at=stop, ended_at=stop)
        put(sub)
        months = max(1, (stop - signup) // (30 * DAY) + 1)
        for k in range(months):
            at = signup + k * 30 * DAY
            if at > end:
                break
            inv_id = f"in_B{i:07d}_{k}"
            paid = rng.random() < 0.95
            inv = clone("invoice", id=inv_id, created=at, customer=cus,
                        status="paid" if paid else "open", period_start=at,
                        period_end=at + 30 * DAY)  # fmt: skip
            inv["parent"]["subscription_details"]["subscription"] = sub_id
            for n, line in enumerate(inv["lines"]["data"]):
                line.update(id=f"il_B{i:07d}_{k}_{n}", invoice=inv_id)
            put(inv)
            if not paid:
                continue
            pi_id, ch_id = f"pi_B{i:07d}_{k}", f"ch_B{i:07d}_{k}"
            put(clone("payment_intent", id=pi_id, created=at, customer=cus, latest_charge=ch_id))
            put(clone("charge", id=ch_id, created=at, customer=cus, payment_intent=pi_id))
            if rng.random() < 0.02:
                put(clone("refund", id=f"re_B{i:07d}_{k}", created=at + DAY, charge=ch_id,
                          payment_intent=pi_id))  # fmt: skip
            if rng.random() < 0.01:
                put(clone("credit_note", id=f"cn_B{i:07d}_{k}", created=at + 2 * DAY,
                          invoice=inv_id, customer=cus))  # fmt: skip
    if batch:
        sim.db.put_many(batch)
    sim.db.meta_set("bench_customers", str(customers))
    sim.close()


def build_account(db_path: Path, customers: int, seed: int) -> str:
    """The simulator's state file (reused when it already holds this account); how it was made."""
    from stripesync.sim.core import Simulator

    if db_path.exists():
        sim = Simulator(db_path)
        made = sim.db.meta_get("bench_customers")
        sim.close()
        if made == str(customers):
            return "reused"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from stripesync.sim.generator import generate
    except ImportError:
        seed_temporary(db_path, customers, seed)
        return "temporary seed (bench/backfill.py seed_temporary)"
    from stripesync.sim.core import DEFAULT_ACCOUNT

    sim = Simulator(db_path)
    # Live mode: the benchmark runs at Stripe's live limits.
    generate(sim, customers=customers, seed=seed, acct=f"{DEFAULT_ACCOUNT}:live")
    sim.db.meta_set("bench_customers", str(customers))
    sim.close()
    return "stripesync.sim.generator"


@dataclass
class Shape:
    """What the account holds, per list, and the ceiling it implies."""

    objects: dict[str, int]
    pages: dict[str, int]
    nested_pages: int
    acct: str
    live_key: str

    @property
    def total_objects(self) -> int:
        return sum(self.objects.values())

    @property
    def total_pages(self) -> int:
        return sum(self.pages.values()) + self.nested_pages

    @property
    def ceiling_seconds(self) -> float:
        largest = max(self.pages.values())
        return max(self.total_pages / 100.0, largest / 25.0)


def measure_account(db_path: Path) -> Shape:
    from stripesync.sim.core import Simulator

    sim = Simulator(db_path)
    key = sim.default_key(livemode=True)
    acct = sim.context(key).acct
    objects: dict[str, int] = {}
    for name, _, params in LISTS:
        kind = OBJECT_OF[name]
        if name == "plans":
            rows = sim.db.execute(
                "SELECT count(*) FROM objects WHERE acct=? AND object='price' AND deleted=0"
                " AND json_extract(data, '$.recurring') IS NOT NULL",
                (acct,),
            )
            objects[name] = int(rows[0][0])
        elif name == "subscriptions":
            objects[name] = sim.db.count(acct, kind)
        else:
            objects[name] = sim.db.count(acct, kind)
        del params
    pages = {name: max(1, math.ceil(count / PAGE)) for name, count in objects.items()}
    nested = 0
    for sql in (
        "SELECT json_array_length(data, '$.lines.data') FROM objects WHERE acct=? AND"
        " object='invoice' AND json_array_length(data, '$.lines.data') > 10",
        "SELECT json_array_length(data, '$.items.data') FROM objects WHERE acct=? AND"
        " object='subscription' AND json_array_length(data, '$.items.data') > 10",
    ):
        nested += sum(max(1, math.ceil(int(n) / PAGE)) for (n,) in sim.db.execute(sql, (acct,)))
    sim.close()
    return Shape(objects, pages, nested, acct, key)


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimProcess:
    def __init__(self, db_path: Path, latency_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve-sim",
                str(db_path),
                str(self.port),
                str(latency_ms),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"simulator died: {self.proc.stderr}") from None
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@dataclass
class Result:
    name: str
    seconds: float
    objects: int
    peak_rss_mb: float
    sim_cpu_seconds: float
    ceiling_seconds: float
    cpu_seconds: float = 0.0
    load_average: float = 0.0
    requests: int | None = None
    rate_limited: int | None = None
    checked: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def objects_per_second(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.ceiling_seconds / self.seconds if self.seconds else 0.0


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str, str]:
    """Run a command; (wall s, peak RSS MB and CPU s of that process, stdout, stderr)."""
    out_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{uuid.uuid4().hex}.out"
    err_file = out_file.with_suffix(".err")
    started = time.monotonic()
    with out_file.open("wb") as out, err_file.open("wb") as err:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_file.read_text(), err_file.read_text()
    out_file.unlink()
    err_file.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({proc.returncode}): {stderr}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, usage.ru_maxrss / 1024, cpu, stdout, stderr


def postgres_database(admin: str) -> Iterator[str]:
    import sqlalchemy as sa

    name = f"stripesync_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def check_counts(database_url: str, shape: Shape) -> str:
    import sqlalchemy as sa

    from stripesync.store.schema import RAW_TABLES

    engine = sa.create_engine(database_url)
    problems = []
    with engine.connect() as conn:
        for name, count in shape.objects.items():
            kind = "plan" if name == "plans" else OBJECT_OF[name]
            table = RAW_TABLES[kind].table
            stored = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if stored != count:
                problems.append(f"{name}: stored {stored}, account has {count}")
    engine.dispose()
    return "all counts match" if not problems else "; ".join(problems)


def run_stripesync(
    backend: str, database_url: str, workdir: Path, sim: SimProcess, shape: Shape
) -> Result:
    from cryptography.fernet import Fernet

    data = workdir / f"data-{backend}"
    env = {
        **os.environ,
        "STRIPESYNC_DATABASE_URL": database_url,
        "STRIPESYNC_DATA_DIR": str(data),
        "STRIPESYNC_SECRET_KEY": Fernet.generate_key().decode(),
        "STRIPESYNC_CONFIG": "",
    }
    env.pop("STRIPESYNC_CONFIG")
    cli = [sys.executable, "-m", "stripesync.cli"]
    subprocess.run(
        [*cli, "connect", "--name", "bench", "--api-key", shape.live_key, "--api-base", sim.url],
        env=env, cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    time.sleep(1.1)  # let the probes' second of budget pass
    cpu_before = sim.cpu()
    seconds, peak, cpu, _, _ = run_measured([*cli, "sync", "bench"], env)
    sim_cpu = sim.cpu() - cpu_before
    load = os.getloadavg()[0]
    status = json.loads(
        subprocess.run(
            [*cli, "status", "--json"], env=env, cwd=ROOT, check=True, capture_output=True
        ).stdout
    )["sources"][0]
    run = status["last_run"]
    # The import itself, as the run recorded it; the process also recomputes profiles
    # after the import (issue 6), which is not part of this benchmark.
    imported = (_parse_time(run["finished_at"]) - _parse_time(run["started_at"])).total_seconds()
    return Result(
        name=f"stripesync ({backend})",
        seconds=imported,
        objects=shape.total_objects,
        peak_rss_mb=peak,
        sim_cpu_seconds=sim_cpu,
        ceiling_seconds=shape.ceiling_seconds,
        requests=run["requests"],
        rate_limited=run["rate_limited"],
        checked=check_counts(database_url, shape),
        cpu_seconds=cpu,
        load_average=load,
        extra={"process_seconds": seconds},
    )


def serve_sim(db_path: Path, port: int, latency_ms: float) -> None:
    """The simulator at Stripe's live limits (what `stripesync sim serve` does)."""
    from stripesync.sim.core import Knobs, Simulator
    from stripesync.sim.server import serve_forever

    knobs = Knobs(rate_limit_live=100, rate_limit_endpoint=25, latency_ms=latency_ms)
    serve_forever(Simulator(db_path, knobs=knobs), "127.0.0.1", port)


def _parse_time(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def baseline_child(url: str, key: str) -> None:
    """The naive importer: one list after the other, the SDK's auto-pagination."""
    import stripe

    client = stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=3)
    services = {
        "products": client.v1.products,
        "prices": client.v1.prices,
        "plans": client.v1.plans,
        "coupons": client.v1.coupons,
        "customers": client.v1.customers,
        "subscriptions": client.v1.subscriptions,
        "invoices": client.v1.invoices,
        "charges": client.v1.charges,
        "payment_intents": client.v1.payment_intents,
        "refunds": client.v1.refunds,
        "credit_notes": client.v1.credit_notes,
    }
    counts: dict[str, int] = {}
    for name, _, params in LISTS:
        n = 0
        for _obj in services[name].list(params={"limit": 100, **params}).auto_paging_iter():
            n += 1
        counts[name] = n
    print(json.dumps(counts))


def run_baseline(sim: SimProcess, shape: Shape) -> Result:
    cpu_before = sim.cpu()
    seconds, peak, cpu, out, _ = run_measured(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--baseline-child",
            sim.url,
            shape.live_key,
        ],
        dict(os.environ),
    )
    counts = json.loads(out.strip().splitlines()[-1])
    return Result(
        name="naive baseline (auto_paging_iter, stores nothing)",
        seconds=seconds,
        objects=sum(counts.values()),
        peak_rss_mb=peak,
        sim_cpu_seconds=sim.cpu() - cpu_before,
        ceiling_seconds=shape.ceiling_seconds,
        checked="all counts match" if counts == shape.objects else f"read {counts}",
        cpu_seconds=cpu,
        load_average=os.getloadavg()[0],
    )


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "STRIPESYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="admin URL of a PostgreSQL server (a database is created and dropped)",
    )
    parser.add_argument("--baseline-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-sim", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sim:
        serve_sim(Path(args.serve_sim[0]), int(args.serve_sim[1]), float(args.serve_sim[2]))
        return
    if args.baseline_child:
        baseline_child(*args.baseline_child)
        return
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / f"sim-{args.customers}.db"
    started = time.monotonic()
    made = build_account(db_path, args.customers, args.seed)
    print(f"account: {made} in {time.monotonic() - started:.0f}s ({db_path})", flush=True)
    shape = measure_account(db_path)
    print(
        f"{shape.total_objects:,} objects, {shape.total_pages:,} pages "
        f"(largest list {max(shape.pages.values()):,} pages); ceiling "
        f"{shape.ceiling_seconds:.1f}s",
        flush=True,
    )
    results: list[Result] = []
    sim = SimProcess(db_path, args.latency_ms)
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{workdir / 'bench.db'}{suffix}").unlink(missing_ok=True)
                result = run_stripesync(
                    backend, f"sqlite:///{workdir / 'bench.db'}", workdir, sim, shape
                )
            else:
                databases = postgres_database(args.postgres)
                url = next(databases)
                try:
                    result = run_stripesync(backend, url, workdir, sim, shape)
                finally:
                    for _ in databases:
                        pass
            results.append(result)
            print(_line(result), flush=True)
            time.sleep(1.1)
        if not args.skip_baseline:
            result = run_baseline(sim, shape)
            results.append(result)
            print(_line(result), flush=True)
    finally:
        sim.stop()
    report = {
        "command": " ".join(["bench/backfill.py", *sys.argv[1:]]),
        "machine": machine(),
        "account": made,
        "latency_ms": args.latency_ms,
        "objects": shape.objects,
        "pages": shape.pages,
        "nested_pages": shape.nested_pages,
        "ceiling_seconds": shape.ceiling_seconds,
        "results": [
            {**asdict(r), "objects_per_second": r.objects_per_second, "ratio": r.ratio}
            for r in results
        ],
    }
    out = workdir / f"results-{args.customers}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")


def _line(r: Result) -> str:
    extra = f", {r.requests:,} requests, {r.rate_limited:,} 429s" if r.requests else ""
    if "process_seconds" in r.extra:
        extra += f", process {r.extra['process_seconds']:.1f}s with the profile refresh"
    return (
        f"{r.name}: {r.seconds:.1f}s, {r.objects_per_second:,.0f} objects/s, "
        f"ceiling/time {r.ratio:.0%}, peak {r.peak_rss_mb:.0f} MB, CPU {r.cpu_seconds:.0f}s, "
        f"simulator CPU {r.sim_cpu_seconds:.0f}s, load {r.load_average:.1f}{extra}; {r.checked}"
    )


if __name__ == "__main__":
    main()
