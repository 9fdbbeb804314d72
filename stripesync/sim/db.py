"""The simulator's state, kept in an embedded SQLite database rather than Python dicts.

A generated account holds millions of objects; keeping them on disk keeps the simulator
under its memory budget and lets it survive a restart. Every Stripe object lives in one
table keyed by ``(acct, id)`` so that ``expand[]`` can resolve any id without knowing its
type. Lists page by the ``(acct, object, created, seq)`` index, never by scanning.

``acct`` is the partition of one Stripe account in one mode: ``acct_x:test`` or
``acct_x:live`` (Stripe keeps test and live data apart).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    acct TEXT NOT NULL,
    id TEXT NOT NULL,
    object TEXT NOT NULL,
    created INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    customer TEXT,
    status TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,
    PRIMARY KEY (acct, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_list ON objects (acct, object, created, seq);
CREATE INDEX IF NOT EXISTS objects_customer ON objects (acct, customer, object, created, seq);
CREATE INDEX IF NOT EXISTS objects_counts ON objects (acct, object, deleted);
CREATE TABLE IF NOT EXISTS links (
    acct TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (acct, key, value, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_by_id ON links (acct, id);
CREATE TABLE IF NOT EXISTS events (
    acct TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created INTEGER NOT NULL,
    type TEXT NOT NULL,
    api_version TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (acct, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_list ON events (acct, created, seq);
CREATE INDEX IF NOT EXISTS events_type ON events (acct, type, created, seq);
CREATE INDEX IF NOT EXISTS events_created ON events (created);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    acct TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt);
CREATE TABLE IF NOT EXISTS idempotency (
    acct TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (acct, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    livemode INTEGER NOT NULL,
    permissions TEXT,
    revoked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    api_version TEXT NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timers (
    acct TEXT NOT NULL,
    kind TEXT NOT NULL,
    obj_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (acct, kind, obj_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_due ON timers (at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

try:  # orjson encodes and decodes the store's JSON several times faster (issue 3)
    import orjson

    def _dumps(obj: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:  # what orjson refuses (integers past 64 bits) json still writes
            return _json_dumps(obj)

    _loads: Any = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency

    def _dumps(obj: Any) -> str:
        return _json_dumps(obj)

    _loads = json.loads


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (what ``copy.deepcopy`` gives, much faster)."""
    return _loads(_dumps(obj))


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool


class SimDB:
    """Thread-safe access to the simulator's SQLite file (one connection, one lock).

    The simulator's request handlers are short and synchronous; one serialized connection
    is faster here than a pool and keeps every handler's writes atomic.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Large pages keep a whole invoice (~4 KB of JSON) in its B-tree cell instead of
        # overflow pages: half the file, half the writes (only applies to a new file).
        self.conn.execute("PRAGMA page_size=16384")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA temp_store=MEMORY")
        self.conn.execute("PRAGMA cache_size=-65536")
        self.conn.executescript(SCHEMA)
        self.lock = threading.RLock()
        self._depth = 0
        self._seq = self._load_counter("seq")

    # -- transactions -------------------------------------------------------------------

    def __enter__(self) -> SimDB:
        self.lock.acquire()
        if self._depth == 0:
            self.conn.execute("BEGIN IMMEDIATE")
        self._depth += 1
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                if exc_type is None:
                    self._save_counter("seq", self._seq)
                    self.conn.execute("COMMIT")
                else:
                    self.conn.execute("ROLLBACK")
                    self._seq = self._load_counter("seq")
        finally:
            self.lock.release()

    def _load_counter(self, name: str) -> int:
        row = self.conn.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _save_counter(self, name: str, value: int) -> None:
        self.conn.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, value),
        )

    def next_seq(self) -> int:
        with self.lock:
            self._seq += 1
            return self._seq

    def counter(self, name: str) -> int:
        """A persistent increasing counter (invoice numbers, ...)."""
        with self:
            value = self._load_counter(name) + 1
            self._save_counter(name, value)
            return value

    # -- objects ------------------------------------------------------------------------

    def get(
        self, acct: str, obj_id: str, *, include_deleted: bool = False
    ) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT data, deleted FROM objects WHERE acct=? AND id=?", (acct, obj_id)
            ).fetchone()
        if row is None or (row[1] and not include_deleted):
            return None
        result: dict[str, Any] = _loads(row[0])
        return result

    def is_deleted(self, acct: str, obj_id: str) -> bool:
        with self.lock:
            row = self.conn.execute(
                "SELECT deleted FROM objects WHERE acct=? AND id=?", (acct, obj_id)
            ).fetchone()
        return bool(row and row[0])

    def put(
        self,
        acct: str,
        obj: dict[str, Any],
        *,
        links: dict[str, Iterable[str] | str | None] | None = None,
        deleted: bool = False,
    ) -> None:
        """Insert or replace an object; ``links`` are extra filterable values (price, ...)."""
        obj_id = obj["id"]
        customer = obj.get("customer")
        if isinstance(customer, dict):
            customer = customer.get("id")
        status = obj.get("status")
        with self:
            row = self.conn.execute(
                "SELECT seq FROM objects WHERE acct=? AND id=?", (acct, obj_id)
            ).fetchone()
            seq = row[0] if row else self.next_seq()
            self.conn.execute(
                "INSERT OR REPLACE INTO objects(acct, id, object, created, seq, customer, status,"
                " deleted, data) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    acct,
                    obj_id,
                    obj["object"],
                    int(obj.get("created") or obj.get("_created") or 0),
                    seq,
                    customer if isinstance(customer, str) else None,
                    status if isinstance(status, str) else None,
                    1 if deleted else 0,
                    _dumps(obj),
                ),
            )
            if links is not None:
                self.conn.execute("DELETE FROM links WHERE acct=? AND id=?", (acct, obj_id))
                rows: builtins.list[tuple[str, str, str, str]] = []
                for key, values in links.items():
                    if values is None:
                        continue
                    items = [values] if isinstance(values, str) else builtins.list(values)
                    rows.extend((acct, key, v, obj_id) for v in set(items) if v)
                if rows:
                    self.conn.executemany(
                        "INSERT OR IGNORE INTO links(acct, key, value, id) VALUES (?,?,?,?)", rows
                    )

    def put_many(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Bulk insert of new objects (the generator's fast path); no links."""
        with self:
            params = []
            for acct, obj in rows:
                customer = obj.get("customer")
                status = obj.get("status")
                params.append(
                    (
                        acct,
                        obj["id"],
                        obj["object"],
                        int(obj.get("created") or obj.get("_created") or 0),
                        self.next_seq(),
                        customer if isinstance(customer, str) else None,
                        status if isinstance(status, str) else None,
                        0,
                        _dumps(obj),
                    )
                )
            self.conn.executemany(
                "INSERT OR REPLACE INTO objects(acct, id, object, created, seq, customer, status,"
                " deleted, data) VALUES (?,?,?,?,?,?,?,?,?)",
                params,
            )

    def add_links(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        with self:
            self.conn.executemany(
                "INSERT OR IGNORE INTO links(acct, key, value, id) VALUES (?,?,?,?)", rows
            )

    def mark_deleted(self, acct: str, obj_id: str) -> None:
        with self:
            self.conn.execute("UPDATE objects SET deleted=1 WHERE acct=? AND id=?", (acct, obj_id))

    def list(
        self,
        acct: str,
        object_type: str,
        *,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
        created: dict[str, int] | None = None,
        customer: str | None = None,
        statuses: Sequence[str] | None = None,
        exclude_statuses: Sequence[str] | None = None,
        links: dict[str, str] | None = None,
        include_deleted: bool = False,
    ) -> Page:
        """Newest first, as Stripe lists; cursors by (created, seq) through the index."""
        where = ["o.acct=?", "o.object=?"]
        params: builtins.list[Any] = [acct, object_type]
        if not include_deleted:
            where.append("o.deleted=0")
        if customer is not None:
            where.append("o.customer=?")
            params.append(customer)
        if statuses:
            where.append(f"o.status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if exclude_statuses:
            where.append(
                f"(o.status IS NULL OR o.status NOT IN ({','.join('?' * len(exclude_statuses))}))"
            )
            params.extend(exclude_statuses)
        for op, value in (created or {}).items():
            sql_op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "="}[op]
            where.append(f"o.created {sql_op} ?")
            params.append(value)
        joins = ""
        link_params: builtins.list[Any] = []
        for i, (link_key, link_value) in enumerate((links or {}).items()):
            joins += (
                f" JOIN links l{i} ON l{i}.acct=o.acct AND l{i}.id=o.id"
                f" AND l{i}.key=? AND l{i}.value=?"
            )
            link_params.extend([link_key, link_value])
        order = "DESC"
        cursor_id = starting_after or ending_before
        with self.lock:
            if cursor_id is not None:
                row = self.conn.execute(
                    "SELECT created, seq FROM objects WHERE acct=? AND id=?", (acct, cursor_id)
                ).fetchone()
                if row is None:
                    raise KeyError(cursor_id)
                # the bare bound lets the index seek to the cursor (never a scan from the top)
                if starting_after is not None:
                    where.append(
                        "o.created <= ? AND (o.created < ? OR (o.created = ? AND o.seq < ?))"
                    )
                else:
                    where.append(
                        "o.created >= ? AND (o.created > ? OR (o.created = ? AND o.seq > ?))"
                    )
                    order = "ASC"
                params.extend([row[0], row[0], row[0], row[1]])
            sql = (
                f"SELECT o.data FROM objects o{joins} WHERE {' AND '.join(where)}"
                f" ORDER BY o.created {order}, o.seq {order} LIMIT ?"
            )
            rows = self.conn.execute(sql, [*link_params, *params, limit + 1]).fetchall()
        has_more = len(rows) > limit
        rows = rows[:limit]
        data = [_loads(r[0]) for r in rows]
        if order == "ASC":
            data.reverse()
        return Page(data, has_more)

    def iter_objects(
        self, acct: str | None = None, object_type: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any], bool]]:
        """Every stored object, in insertion order (for the state export), streamed."""
        where, params = [], []
        if acct is not None:
            where.append("acct=?")
            params.append(acct)
        if object_type is not None:
            where.append("object=?")
            params.append(object_type)
        sql = "SELECT acct, data, deleted FROM objects"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        cur = self.conn.cursor()
        with self.lock:
            cur.execute(sql, params)
            while True:
                batch = cur.fetchmany(500)
                if not batch:
                    break
                for acct_, data, deleted in batch:
                    yield acct_, _loads(data), bool(deleted)

    def count(self, acct: str, object_type: str) -> int:
        with self.lock:
            row = self.conn.execute(
                "SELECT count(*) FROM objects WHERE acct=? AND object=? AND deleted=0",
                (acct, object_type),
            ).fetchone()
        return int(row[0])

    def counts(self, acct: str | None = None) -> dict[str, int]:
        with self.lock:
            if acct is None:
                rows = self.conn.execute(
                    "SELECT object, count(*) FROM objects WHERE deleted=0 GROUP BY object"
                ).fetchall()
            else:
                rows = self.conn.execute(
                    "SELECT object, count(*) FROM objects WHERE acct=? AND deleted=0 GROUP BY object",
                    (acct,),
                ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- events -------------------------------------------------------------------------

    def put_event(self, acct: str, event: dict[str, Any]) -> None:
        with self:
            self.conn.execute(
                "INSERT INTO events(acct, id, seq, created, type, api_version, data)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    acct,
                    event["id"],
                    self.next_seq(),
                    event["created"],
                    event["type"],
                    event["api_version"],
                    _dumps(event),
                ),
            )

    def put_events(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        with self:
            self.conn.executemany(
                "INSERT INTO events(acct, id, seq, created, type, api_version, data)"
                " VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        acct,
                        e["id"],
                        self.next_seq(),
                        e["created"],
                        e["type"],
                        e["api_version"],
                        _dumps(e),
                    )
                    for acct, e in rows
                ],
            )

    def get_event(self, acct: str, event_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT data FROM events WHERE acct=? AND id=?", (acct, event_id)
            ).fetchone()
        return None if row is None else dict(_loads(row[0]))

    def list_events(
        self,
        acct: str,
        *,
        limit: int,
        min_created: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        created: dict[str, int] | None = None,
        types: Sequence[str] | None = None,
    ) -> Page:
        where = ["acct=?", "created >= ?"]
        params: builtins.list[Any] = [acct, min_created]
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            params.extend(types)
        for op, value in (created or {}).items():
            sql_op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "="}[op]
            where.append(f"created {sql_op} ?")
            params.append(value)
        order = "DESC"
        cursor_id = starting_after or ending_before
        with self.lock:
            if cursor_id is not None:
                row = self.conn.execute(
                    "SELECT created, seq FROM events WHERE acct=? AND id=?", (acct, cursor_id)
                ).fetchone()
                if row is None:
                    raise KeyError(cursor_id)
                if starting_after is not None:
                    where.append("created <= ? AND (created < ? OR (created = ? AND seq < ?))")
                else:
                    where.append("created >= ? AND (created > ? OR (created = ? AND seq > ?))")
                    order = "ASC"
                params.extend([row[0], row[0], row[0], row[1]])
            rows = self.conn.execute(
                f"SELECT data FROM events WHERE {' AND '.join(where)}"
                f" ORDER BY created {order}, seq {order} LIMIT ?",
                [*params, limit + 1],
            ).fetchall()
        has_more = len(rows) > limit
        data = [_loads(r[0]) for r in rows[:limit]]
        if order == "ASC":
            data.reverse()
        return Page(data, has_more)

    def prune_events(self, before: int) -> int:
        with self:
            cur = self.conn.execute("DELETE FROM events WHERE created < ?", (before,))
            return cur.rowcount

    # -- timers (what Stripe will do on its own, and when) ------------------------------

    def set_timer(self, acct: str, kind: str, obj_id: str, at: int | None) -> None:
        """Schedule (or with ``at=None`` cancel) the next automatic action on an object."""
        with self:
            if at is None:
                self.conn.execute(
                    "DELETE FROM timers WHERE acct=? AND kind=? AND obj_id=?", (acct, kind, obj_id)
                )
            else:
                self.conn.execute(
                    "INSERT INTO timers(acct, kind, obj_id, at) VALUES (?,?,?,?) "
                    "ON CONFLICT(acct, kind, obj_id) DO UPDATE SET at=excluded.at",
                    (acct, kind, obj_id, int(at)),
                )

    def set_timers(self, rows: Sequence[tuple[str, str, str, int]]) -> None:
        with self:
            self.conn.executemany(
                "INSERT INTO timers(acct, kind, obj_id, at) VALUES (?,?,?,?) "
                "ON CONFLICT(acct, kind, obj_id) DO UPDATE SET at=excluded.at",
                rows,
            )

    def next_timer(self, until: int) -> tuple[str, str, str, int] | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT acct, kind, obj_id, at FROM timers WHERE at <= ? ORDER BY at, obj_id LIMIT 1",
                (until,),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]), int(row[3]))

    def timer_at(self, acct: str, kind: str, obj_id: str) -> int | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT at FROM timers WHERE acct=? AND kind=? AND obj_id=?", (acct, kind, obj_id)
            ).fetchone()
        return None if row is None else int(row[0])

    # -- small key/value tables ---------------------------------------------------------

    def meta_get(self, key: str, default: str | None = None) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        with self:
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def dumps(obj: Any) -> str:
    return _dumps(obj)
