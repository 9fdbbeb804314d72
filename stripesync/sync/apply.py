"""The one path by which Stripe objects enter the raw store: backfill, webhooks, polling.

`apply` upserts objects by ``(source, id)`` into their type's table and never replaces
a stored copy by one known to be older. Each copy carries the window in which it was
true (`Observed`): an API read between its request's start and its answer (exact to the
millisecond), an event's snapshot somewhere in the second of its ``created`` (Stripe
gives no finer time). A copy whose window ends before the stored one's begins is stale
and dropped; one whose window starts after it replaces it; overlapping windows are a
*tie*: neither can be shown newer (two events of the same second, FIELD-NOTES), so the
stored copy stays and the tie is reported for the caller to refetch the object.

Objects are normalized to the current API shape first (``stripe_api.shapes``), so
payloads rendered in versions before 2025-03-31 land in the same columns. Child rows
(subscription items, invoice lines) are replaced with their parent, under the parent's
guard: a late, older parent cannot bring back an item that a newer one removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from stripesync.store.schema import CHILDREN, RAW_TABLES, RawTable, stripe_events
from stripesync.store.types import EncodedJSON, dumps, utcnow
from stripesync.stripe_api import shapes

__all__ = [
    "ApplyResult",
    "Observed",
    "Prepared",
    "apply",
    "apply_event",
    "prepare",
    "record_event",
    "write_prepared",
]


@dataclass(frozen=True)
class Observed:
    """When a copy of an object was true: between ``lo_ms`` and ``hi_ms`` (inclusive)."""

    lo_ms: int
    hi_ms: int

    @classmethod
    def api(cls, sent_ms: int, received_ms: int) -> Observed:
        """An API answer: true at some moment between sending and receiving."""
        return cls(sent_ms, max(sent_ms, received_ms))

    @classmethod
    def event(cls, created: int) -> Observed:
        """An event's snapshot: true at some moment within its ``created`` second."""
        return cls(created * 1000, created * 1000 + 999)


@dataclass
class ApplyResult:
    written: int = 0
    unchanged: int = 0
    stale: int = 0
    #: (object type, id) of copies that can be neither kept nor dropped: refetch them.
    ties: list[tuple[str, str]] = field(default_factory=list)
    #: Objects of types the store has no table for (yet).
    skipped: int = 0
    #: (source id, customer id) of every customer a written object belongs to: whose
    #: derived profile must be recomputed once the transaction commits (issue 6,
    #: `stripesync.profiles.recompute.refresh_after_apply`).
    customers: set[tuple[int, str]] = field(default_factory=set)
    #: (source id, object type, id) of written catalogue objects (prices, plans,
    #: products, coupons): the customers using them are found when recomputing.
    catalog: set[tuple[int, str, str]] = field(default_factory=set)

    def add(self, other: ApplyResult) -> None:
        self.written += other.written
        self.unchanged += other.unchanged
        self.stale += other.stale
        self.ties.extend(other.ties)
        self.skipped += other.skipped
        self.customers |= other.customers
        self.catalog |= other.catalog


def _insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert_statement(conn: Connection, table: sa.Table) -> Any:
    """Insert, or replace only a copy whose window ends before the new one's begins."""
    key = (conn.dialect.name, table.name)
    stmt = _UPSERTS.get(key)
    if stmt is None:  # built once per table: the backfill runs it for every page
        insert = _insert(conn, table)
        stmt = insert.on_conflict_do_update(
            index_elements=[table.c.source_id, table.c.id],
            set_={
                c.name: insert.excluded[c.name]
                for c in table.columns
                if c.name not in ("source_id", "id")
            },
            where=table.c.version_hi < insert.excluded.version_lo,
        )
        _UPSERTS[key] = stmt
    return stmt


def _guarded_upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        _sqlite_upsert(conn, table, rows)
    else:
        conn.execute(_upsert_statement(conn, table), rows)


#: SQLite's limit on bound parameters per statement (32766 since 3.32) with room to spare.
_SQLITE_MAX_PARAMS = 30_000


def _sqlite_value(value: Any) -> Any:
    """What SQLAlchemy's SQLite types would bind: JSON text, 0/1, naive-UTC timestamps."""
    if isinstance(value, EncodedJSON):
        return value.text
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dict | list):
        return dumps(value)
    return value


def _sqlite_upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """The same guarded upsert as one multi-row statement per chunk.

    sqlite3's ``executemany`` steps (and releases the GIL) once per row; among the
    backfill's threads every re-acquisition waits, so a page of 100 rows as 100 steps
    holds SQLite's write lock far longer than one statement of 100 rows does.
    """
    columns = [c.name for c in table.columns]
    quoted = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in ("source_id", "id"))
    one = "(" + ", ".join("?" * len(columns)) + ")"
    per_chunk = max(1, _SQLITE_MAX_PARAMS // len(columns))
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        sql = (
            f'INSERT INTO "{table.name}" ({quoted}) VALUES {", ".join([one] * len(chunk))} '
            f'ON CONFLICT ("source_id", "id") DO UPDATE SET {updates} '
            f'WHERE "{table.name}"."version_hi" < excluded."version_lo"'
        )
        params = tuple(_sqlite_value(row.get(c)) for row in chunk for c in columns)
        conn.exec_driver_sql(sql, params)


# -- key columns ------------------------------------------------------------------------


def _status(obj: Mapping[str, Any]) -> str | None:
    status = obj.get("status")
    if isinstance(status, str):
        return status
    # Catalog objects have no status; their flag is what a filter wants.
    if isinstance(obj.get("active"), bool):
        return "active" if obj["active"] else "inactive"
    if isinstance(obj.get("valid"), bool):
        return "valid" if obj["valid"] else "invalid"
    return None


def _line_subscription(line: Mapping[str, Any]) -> str | None:
    parent = line.get("parent")
    if isinstance(parent, Mapping):
        for key in ("subscription_item_details", "invoice_item_details"):
            details = parent.get(key)
            if isinstance(details, Mapping):
                found = shapes.object_id(details.get("subscription"))
                if found:
                    return found
    return shapes.object_id(line.get("subscription"))


def _links(object_type: str, obj: Mapping[str, Any]) -> dict[str, str | None]:
    oid = shapes.object_id
    if object_type in ("price", "plan"):
        return {"product": oid(obj.get("product"))}
    if object_type == "subscription_item":
        return {"subscription": oid(obj.get("subscription")), "price": oid(obj.get("price"))}
    if object_type == "invoice":
        return {"subscription": shapes.invoice_subscription_id(obj)}
    if object_type == "line_item":
        return {
            "invoice": oid(obj.get("invoice")),
            "subscription": _line_subscription(obj),
            "price": shapes.line_price_id(obj),
        }
    if object_type == "charge":
        return {"payment_intent": oid(obj.get("payment_intent"))}
    if object_type == "refund":
        return {"charge": oid(obj.get("charge")), "payment_intent": oid(obj.get("payment_intent"))}
    if object_type == "credit_note":
        return {"invoice": oid(obj.get("invoice"))}
    return {}


def _row(
    spec: RawTable,
    source_id: int,
    obj: Mapping[str, Any],
    observed: Observed,
    now: datetime,
    *,
    livemode: bool,
) -> dict[str, Any]:
    created = obj.get("created")
    row: dict[str, Any] = {
        "source_id": source_id,
        "id": str(obj["id"]),
        "customer": shapes.object_id(obj.get("customer")),
        "status": _status(obj),
        "created": int(created) if isinstance(created, int | float) else None,
        "livemode": bool(obj.get("livemode", livemode)),
        "deleted": obj.get("deleted") is True,
        "data": EncodedJSON(obj),
        "version_lo": observed.lo_ms,
        "version_hi": observed.hi_ms,
        "synced_at": now,
    }
    links = _links(spec.object_type, obj)
    for link in spec.links:
        row[link] = links.get(link)
    return row


# -- apply ------------------------------------------------------------------------------


def _existing(
    conn: Connection, table: sa.Table, source_id: int, ids: Sequence[str]
) -> dict[str, sa.Row[Any]]:
    columns = [table.c.id, table.c.version_lo, table.c.version_hi, table.c.livemode, table.c.data]
    found: dict[str, sa.Row[Any]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in conn.execute(
            sa.select(*columns).where(table.c.source_id == source_id, table.c.id.in_(chunk))
        ):
            found[row.id] = row
    return found


#: Types no API version before 2025-03-31 rendered differently, and that embed no object
#: that was: `shapes.normalize` returns them unchanged, so a copy is not worth its cost.
_SHAPE_STABLE = frozenset(
    {"charge", "payment_intent", "refund", "product", "price", "plan", "coupon", "credit_note"}
)
_OLD_SUBSCRIPTION_FIELDS = ("current_period_start", "current_period_end", "plan", "discount")
_OLD_INVOICE_FIELDS = (
    "subscription_details",
    "subscription_proration_date",
    "quote",
    "total_tax_amounts",
    "discount",
)


def _is_discount_current(value: Any) -> bool:
    return not isinstance(value, dict) or ("source" in value and "coupon" not in value)


def _is_line_current(line: Any) -> bool:
    return not isinstance(line, dict) or (
        "pricing" in line and "parent" in line and "price" not in line and "plan" not in line
    )


def _is_current_shape(obj: Mapping[str, Any]) -> bool:
    """True only when ``obj`` is certainly in the current shape (normalizing is then a no-op).

    A fast path: most objects come from our own requests, rendered in the pinned version.
    Anything unsure answers False and goes through `shapes.normalize`.
    """
    kind = obj.get("object")
    if kind in _SHAPE_STABLE:
        return True
    if kind == "customer":
        return _is_discount_current(obj.get("discount"))
    if kind == "subscription":
        if any(key in obj for key in _OLD_SUBSCRIPTION_FIELDS):
            return False
        items = obj.get("items")
        data = items.get("data") if isinstance(items, dict) else None
        if not isinstance(data, list) or not all(
            isinstance(i, dict) and "current_period_start" in i for i in data
        ):
            return False
        discounts = obj.get("discounts")
        return isinstance(discounts, list) and all(_is_discount_current(d) for d in discounts)
    if kind == "invoice":
        # Current invoices may still carry `subscription` next to `parent` (as Stripe's do).
        if any(key in obj for key in _OLD_INVOICE_FIELDS):
            return False
        if "parent" not in obj or "total_taxes" not in obj:
            return False
        lines = obj.get("lines")
        data = lines.get("data") if isinstance(lines, dict) else None
        discounts = obj.get("discounts")
        return (
            isinstance(data, list)
            and all(_is_line_current(line) for line in data)
            and isinstance(discounts, list)
            and all(_is_discount_current(d) for d in discounts)
        )
    return False


@dataclass
class _Prepared:
    """One object's row (its JSON already encoded) and its children's rows.

    The parsed object itself is not kept: a page waiting for its turn to be written then
    holds its encoded JSON only, a fraction of the memory of the dicts.
    """

    row: dict[str, Any]
    children: list[dict[str, Any]] | None  # None: the object embeds no child list
    children_complete: bool
    deleted: bool

    @property
    def obj(self) -> Any:
        """The object again (only needed to tell a tie from an unchanged copy)."""
        return orjson.loads(self.row["data"].text)


@dataclass
class Prepared:
    """Objects made ready to write: everything `apply` does that needs no database.

    The backfill prepares a page before taking the write lock, so that the lock is held
    for the statements only.
    """

    source_id: int
    observed: Observed
    by_type: dict[str, dict[str, _Prepared]]
    skipped: int = 0


def prepare(source_id: int, objects: Iterable[Mapping[str, Any]], observed: Observed) -> Prepared:
    """Normalize, extract key columns and encode ``objects`` (any mix of types)."""
    prepared = Prepared(source_id, observed, {})
    now = utcnow()
    for raw in objects:
        if _is_current_shape(raw):
            obj = raw if isinstance(raw, dict) else dict(raw)
        else:
            obj = shapes.normalize(raw)
        object_type = obj.get("object")
        if not isinstance(object_type, str) or object_type not in RAW_TABLES or "id" not in obj:
            prepared.skipped += 1
            continue
        spec = RAW_TABLES[object_type]
        row = _row(spec, source_id, obj, observed, now, livemode=False)
        children, complete = _child_rows(source_id, object_type, obj, observed, now)
        # The last copy of an id in the batch wins.
        prepared.by_type.setdefault(object_type, {})[row["id"]] = _Prepared(
            row, children, complete, obj.get("deleted") is True
        )
    return prepared


def apply(
    conn: Connection,
    source_id: int,
    objects: Iterable[Mapping[str, Any]],
    observed: Observed,
) -> ApplyResult:
    """Upsert ``objects`` (any mix of types) as seen at ``observed``; in ``conn``'s transaction."""
    return write_prepared(conn, prepare(source_id, objects, observed))


def write_prepared(conn: Connection, prepared: Prepared) -> ApplyResult:
    """The database half of `apply`: the ordering guard, then the upserts."""
    result = ApplyResult(skipped=prepared.skipped)
    for object_type, items in prepared.by_type.items():
        result.add(_apply_type(conn, prepared, RAW_TABLES[object_type], items))
    return result


def _apply_type(
    conn: Connection, prepared: Prepared, spec: RawTable, items: dict[str, _Prepared]
) -> ApplyResult:
    result = ApplyResult()
    table = spec.table
    source_id, observed = prepared.source_id, prepared.observed
    existing = _existing(conn, table, source_id, list(items))
    rows: list[dict[str, Any]] = []
    written: list[_Prepared] = []
    for obj_id, item in items.items():
        old = existing.get(obj_id)
        if old is not None:
            if observed.hi_ms < old.version_lo:
                result.stale += 1
                continue
            if observed.lo_ms <= old.version_hi:
                if item.obj == old.data:
                    result.unchanged += 1
                else:
                    result.ties.append((spec.object_type, obj_id))
                continue
            if item.deleted:
                # A deletion keeps the last full copy, flagged: history stays readable.
                kept = dict(old.data)
                kept["deleted"] = True
                rows.append(
                    _row(
                        spec,
                        source_id,
                        kept,
                        observed,
                        item.row["synced_at"],
                        livemode=old.livemode,
                    )
                )
                continue
        rows.append(item.row)
        written.append(item)
    _guarded_upsert(conn, table, rows)
    result.written += len(rows)
    _touched(result, spec.object_type, source_id, rows)
    child = CHILDREN.get(spec.object_type)
    if child is not None and written:
        _apply_children(conn, source_id, RAW_TABLES[child[0]], written, observed)
    return result


_CATALOG_TYPES = frozenset({"price", "plan", "product", "coupon"})


def _touched(
    result: ApplyResult, object_type: str, source_id: int, rows: list[dict[str, Any]]
) -> None:
    """Note whose derived state the written rows change (children follow their parent)."""
    for row in rows:
        if object_type == "customer":
            result.customers.add((source_id, str(row["id"])))
        elif row.get("customer"):
            result.customers.add((source_id, str(row["customer"])))
        elif object_type in _CATALOG_TYPES:
            result.catalog.add((source_id, object_type, str(row["id"])))


def _child_rows(
    source_id: int, object_type: str, parent: dict[str, Any], observed: Observed, now: datetime
) -> tuple[list[dict[str, Any]] | None, bool]:
    child = CHILDREN.get(object_type)
    if child is None:
        return None, False
    child_type, list_field = child
    embedded = parent.get(list_field)
    if not isinstance(embedded, Mapping) or not isinstance(embedded.get("data"), list):
        return None, False
    spec = RAW_TABLES[child_type]
    assert spec.parent is not None
    customer = shapes.object_id(parent.get("customer"))
    rows: list[dict[str, Any]] = []
    for item in embedded["data"]:
        if not isinstance(item, Mapping) or "id" not in item:
            continue
        row = _row(spec, source_id, item, observed, now, livemode=False)
        row[spec.parent] = str(parent["id"])
        row["customer"] = row["customer"] or customer
        rows.append(row)
    return rows, not embedded.get("has_more")


def _apply_children(
    conn: Connection,
    source_id: int,
    spec: RawTable,
    parents: list[_Prepared],
    observed: Observed,
) -> None:
    assert spec.parent is not None
    table = spec.table
    parent_column = table.c[spec.parent]
    complete = [p.row["id"] for p in parents if p.children is not None and p.children_complete]
    rows = [row for p in parents for row in (p.children or ())]
    if complete:
        # Children the new copy no longer lists go, unless a newer copy put them there.
        for start in range(0, len(complete), 500):
            conn.execute(
                sa.delete(table).where(
                    table.c.source_id == source_id,
                    parent_column.in_(complete[start : start + 500]),
                    table.c.version_hi < observed.lo_ms,
                )
            )
    _guarded_upsert(conn, table, rows)


# -- events -----------------------------------------------------------------------------


def record_event(conn: Connection, source_id: int, event: Mapping[str, Any], *, via: str) -> bool:
    """Add an event to the ledger; False when it was already there (a duplicate)."""
    data_object = event.get("data", {}).get("object") if isinstance(event, Mapping) else None
    stmt = (
        _insert(conn, stripe_events)
        .on_conflict_do_nothing(index_elements=[stripe_events.c.source_id, stripe_events.c.id])
        .returning(stripe_events.c.id)
    )
    result = conn.execute(
        stmt,
        {
            "source_id": source_id,
            "id": str(event["id"]),
            "type": str(event.get("type", "")),
            "created": int(event.get("created") or 0),
            "api_version": event.get("api_version"),
            "livemode": bool(event.get("livemode", False)),
            "object_id": shapes.object_id(data_object),
            "data": dict(event),
            "received_via": via,
            "received_at": utcnow(),
            "processed_at": None,
        },
    )
    return result.first() is not None


def apply_event(
    conn: Connection, source_id: int, event: Mapping[str, Any], *, via: str
) -> ApplyResult | None:
    """Record an event and apply its object; None for a duplicate (already applied)."""
    if not record_event(conn, source_id, event, via=via):
        return None
    data_object = event.get("data", {}).get("object")
    result = ApplyResult()
    if isinstance(data_object, Mapping):
        result = apply(conn, source_id, [data_object], Observed.event(int(event["created"])))
    conn.execute(
        sa.update(stripe_events)
        .where(stripe_events.c.source_id == source_id, stripe_events.c.id == str(event["id"]))
        .values(processed_at=utcnow())
    )
    return result
