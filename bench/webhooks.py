"""Webhook receiver benchmark: signed events accepted per second, time to 2xx, and the lag
from receipt to derived state, on SQLite and PostgreSQL.

    .venv/bin/python bench/webhooks.py                         # both backends, defaults
    .venv/bin/python bench/webhooks.py --backends postgresql --workers 2 --customers 500

What runs, each in its own process:

* the simulator (``stripesync sim serve``), holding a generated business (``--customers``)
  whose last 30 days of events are the payloads sent: real Stripe events of every kind,
  in the pinned API version. The source is connected to it, so refetches (ties) and the
  derived state work as in production;
* ``stripesync serve --workers N``, the receiver, applying what it receives as it goes
  (jobs in its own processes, derived profiles included);
* the load generator: this script with ``--loadgen``, a small HTTP/1.1 client on asyncio
  that keeps ``--connections`` keep-alive connections open and sends pre-built signed
  requests (signed just before the phase; compact JSON bodies).

Three phases per backend, each with fresh event ids (the ledger would drop repeats), and
each round of the payloads shifted later in time so that it supersedes the previous one
(processing writes, it does not skip):

1. **throughput**: as fast as the connections go, ``--duration`` seconds: accepted/s and
   the latencies; then how long processing took to catch up;
2. **latency**: a fixed 500 events/s (open loop: latency counted from the scheduled send
   time), p50/p99 time to 2xx;
3. **processing**: a fixed 1,000 events/s for ``--duration`` seconds; the lag from
   receipt (``received_at``) to applied-with-derived-state (``processed_at``, set in the
   transaction that recomputes the profiles), p50/p99/max, and the backlog at the end.

Results go to stdout as a table and, with ``--json FILE``, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "whsec_bench" + "b" * 24
SOURCE = "bench"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# -- the load generator (runs in its own process) ---------------------------------------------


def _request(host: str, port: int, path: str, body: bytes, at: int) -> bytes:
    signature = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"User-Agent: Stripe/1.0 (bench)\r\nStripe-Signature: t={at},v1={signature}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1])


async def _load(opts: argparse.Namespace) -> dict[str, Any]:
    bodies = [line.rstrip(b"\n") for line in Path(opts.bodies).read_bytes().splitlines()]
    now = int(time.time())
    path = f"/webhooks/stripe/{SOURCE}"
    requests = [_request(opts.host, opts.port, path, b, now) for b in bodies]
    total = len(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    rate = float(opts.rate)
    duration = float(opts.duration)
    queue: asyncio.Queue[float] = asyncio.Queue()
    started = time.perf_counter()
    stop_at = started + duration

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(opts.host, opts.port)
        try:
            while True:
                if rate > 0:
                    scheduled = await queue.get()
                    if scheduled < 0:
                        return
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    scheduled = time.perf_counter()
                    if scheduled >= stop_at:
                        return
                if next_index >= total:
                    return
                request = requests[next_index]
                next_index += 1
                status = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - scheduled)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    async def scheduler() -> None:
        n = 0
        while True:
            at = started + n / rate
            if at >= stop_at or n >= total:
                break
            queue.put_nowait(at)
            n += 1
            if n % 200 == 0:
                await asyncio.sleep(max(0.0, at - time.perf_counter() - 0.05))
        for _ in range(opts.connections):
            queue.put_nowait(-1.0)

    tasks = [asyncio.create_task(worker()) for _ in range(opts.connections)]
    if rate > 0:
        tasks.append(asyncio.create_task(scheduler()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "sent": len(latencies),
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "statuses": statuses,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def loadgen_main(opts: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_load(opts))))


# -- the benchmark ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stripesync.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"stripesync {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.1)


def make_events(workdir: Path, customers: int, seed: int) -> tuple[Path, list[dict[str, Any]]]:
    """A generated business in a simulator file, and its events (oldest first)."""
    from stripesync.sim.core import Knobs, Simulator
    from stripesync.sim.generator import generate

    path = workdir / "sim.db"
    sim = Simulator(path, knobs=Knobs(rate_limits=False))
    report = generate(sim, customers=customers, seed=seed)
    key = sim.default_key(livemode=False)
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": "100"}
        if cursor:
            params["starting_after"] = cursor
        status, page, _ = sim.request("GET", "/v1/events", params, key=key)
        assert status == 200, page
        events.extend(page["data"])
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    sim.close()
    events.reverse()
    print(
        f"business: {customers:,} customers, {report.total_objects:,} objects, "
        f"{len(events):,} events in its last 30 days",
        flush=True,
    )
    return path, events


class Rounds:
    """Payloads as a live stream would carry them: the business's events in order, with
    fresh ids, ``created`` advancing at the phase's rate from now on (so a batch holds the
    events of the same few seconds, as it does live, and each copy supersedes the last)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.clock = 0
        self.round = 0

    def take(self, count: int, tag: str, per_second: int) -> list[bytes]:
        out: list[bytes] = []
        start = max(self.clock, int(time.time()))
        while len(out) < count:
            self.round += 1
            for event in self.events:
                copy = {
                    **event,
                    "id": f"{event['id']}_{tag}{self.round}",
                    "created": start + len(out) // per_second,
                }
                out.append(json.dumps(copy, separators=(",", ":")).encode())
                if len(out) >= count:
                    break
        self.clock = start + count // per_second + 2
        return out


def loadgen(
    port: int, bodies: list[bytes], workdir: Path, *, rate: float, duration: float, connections: int
) -> dict[str, Any]:
    path = workdir / "bodies.jsonl"
    path.write_bytes(b"\n".join(bodies) + b"\n")
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--loadgen",
            "--bodies",
            str(path),
            "--port",
            str(port),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--connections",
            str(connections),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"load generator failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def backlog(store: Any) -> int:
    import sqlalchemy as sa

    from stripesync.store.schema import stripe_events

    with store.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(stripe_events)
                .where(stripe_events.c.processed_at.is_(None))
            ).scalar_one()
        )


def wait_drained(store: Any, timeout: float = 900) -> float:
    started = time.monotonic()
    while backlog(store):
        if time.monotonic() - started > timeout:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def lag(store: Any, tag: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from stripesync.store.schema import stripe_events

    with store.read() as conn:
        rows = conn.execute(
            sa.select(stripe_events.c.received_at, stripe_events.c.processed_at).where(
                stripe_events.c.id.like(f"%\\_{tag}%", escape="\\")
            )
        ).all()
    lags = sorted((p - r).total_seconds() for r, p in rows if p is not None and r is not None)
    if not lags:
        return {"events": 0}
    return {
        "events": len(rows),
        "applied": len(lags),
        "p50_s": lags[len(lags) // 2],
        "p99_s": lags[min(len(lags) - 1, int(0.99 * len(lags)))],
        "max_s": lags[-1],
    }


def database(backend: str, workdir: Path, admin: str) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", None
    import sqlalchemy as sa

    name = f"stripesync_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{admin.rsplit('/', 1)[0]}/{name}", name


def drop_database(admin: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def run_backend(
    backend: str,
    opts: argparse.Namespace,
    workdir: Path,
    sim_url: str,
    sim_key: str,
    rounds: Rounds,
) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    from stripesync.store import Store
    from stripesync.sync.webhooks import bump_state

    url, pg_name = database(backend, workdir, opts.postgres)
    env = {
        **os.environ,
        "STRIPESYNC_DATABASE_URL": url,
        "STRIPESYNC_DATA_DIR": str(workdir / f"data-{backend}"),
        "STRIPESYNC_SECRET_KEY": Fernet.generate_key().decode(),
        "STRIPESYNC_LOG_LEVEL": "WARNING",
        "STRIPESYNC_STRIPE_BUDGET_TEST": "1000",
        "STRIPESYNC_STRIPE_BUDGET_ENDPOINT": "1000",
    }
    env.pop("STRIPESYNC_PUBLIC_URL", None)
    if opts.receive_only:
        env["_STRIPESYNC_RECEIVE_ONLY"] = "1"  # nothing applies the events: acceptance alone
    port = free_port()
    serve: subprocess.Popen[bytes] | None = None
    store = None
    results: dict[str, Any] = {
        "backend": backend,
        "workers": opts.workers,
        "load_before": os.getloadavg(),
    }
    try:
        cli(env, "connect", "--name", SOURCE, "--api-key", sim_key, "--api-base", sim_url)
        cli(env, "webhook-secret", SOURCE, SECRET)
        store = Store.open(url)
        with store.write() as conn:  # polled just now: the scheduler leaves the API alone
            from stripesync.store.types import utcnow

            bump_state(conn, 1, last_poll_at=utcnow())
        with (workdir / f"serve-{backend}.log").open("wb") as log:
            serve = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stripesync.cli",
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    str(opts.workers),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"http://127.0.0.1:{port}/", serve, "stripesync serve")
        time.sleep(1.0)
        phases = opts.phases.split(",")
        # 1. throughput
        warm = loadgen(
            port,
            rounds.take(2000, "w", 3000),
            workdir,
            rate=0,
            duration=10,
            connections=opts.connections,
        )
        if not opts.receive_only:
            wait_drained(store)
        bodies = rounds.take(int(opts.duration * 6000), "t", 3000)
        t = loadgen(
            port, bodies, workdir, rate=0, duration=opts.duration, connections=opts.connections
        )
        t["catch_up_s"] = 0.0 if opts.receive_only else wait_drained(store)
        t["processed_per_s"] = t["sent"] / (t["seconds"] + t["catch_up_s"])
        results["warmup_per_s"] = warm["per_second"]
        results["throughput"] = t
        print(f"[{backend}] throughput: {json.dumps(t)}", flush=True)
        if opts.receive_only or "latency" not in phases:
            return results
        # 2. latency at 500/s
        latency = loadgen(
            port,
            rounds.take(int(500 * opts.duration), "l", 500),
            workdir,
            rate=500,
            duration=opts.duration,
            connections=opts.connections,
        )
        wait_drained(store)
        results["at_500"] = latency
        print(f"[{backend}] at 500/s: {json.dumps(latency)}", flush=True)
        # 3. processing at 1000/s
        steady = loadgen(
            port,
            rounds.take(int(1000 * opts.processing_duration), "p", 1000),
            workdir,
            rate=1000,
            duration=opts.processing_duration,
            connections=opts.connections,
        )
        steady["backlog_at_end"] = backlog(store)
        steady["catch_up_s"] = wait_drained(store)
        steady["lag"] = lag(store, "p")
        results["at_1000"] = steady
        results["load_after"] = os.getloadavg()
        print(f"[{backend}] at 1000/s: {json.dumps(steady)}", flush=True)
    finally:
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
        if store is not None:
            store.close()
        if pg_name is not None:
            drop_database(opts.postgres, pg_name)
    return results


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) // 1024 // 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other processes on the same cores skew every figure: recorded with them.
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2, help="stripesync serve --workers")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--processing-duration", type=float, default=30.0)
    parser.add_argument(
        "--postgres", default=os.environ.get("STRIPESYNC_BENCH_POSTGRES", DEFAULT_PG)
    )
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--receive-only",
        action="store_true",
        help="measure acceptance alone: the server stores events and applies none",
    )
    parser.add_argument("--phases", default="throughput,latency,processing")
    opts = parser.parse_args()
    if opts.loadgen:
        loadgen_main(opts)
        return
    random.seed(opts.seed)
    workdir = Path(tempfile.mkdtemp(prefix="stripesync-bench-webhooks-"))
    sim: subprocess.Popen[bytes] | None = None
    try:
        sim_path, events = make_events(workdir, opts.customers, opts.seed)
        from stripesync.sim.core import Simulator

        reopened = Simulator(sim_path)
        key = reopened.default_key(livemode=False)
        reopened.close()
        sim_port = free_port()
        with (workdir / "sim.log").open("wb") as log:
            sim = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stripesync.cli",
                    "sim",
                    "serve",
                    "--db",
                    str(sim_path),
                    "--port",
                    str(sim_port),
                    "--no-rate-limits",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_http(f"{sim_url}/_sim/info", sim, "the simulator")
        rounds = Rounds(events)
        report: dict[str, Any] = {
            "machine": machine(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "customers": opts.customers,
            "events_per_round": len(events),
            "results": [],
        }
        for backend in opts.backends.split(","):
            report["results"].append(
                run_backend(backend.strip(), opts, workdir, sim_url, key, rounds)
            )
        print(json.dumps(report, indent=2))
        if opts.json:
            Path(opts.json).write_text(json.dumps(report, indent=2))
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
