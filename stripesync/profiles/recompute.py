"""Derived state from the raw store: recompute the profiles of some customers, or all.

`recompute_customers` is the one way profiles change after Stripe data does; the apply
path (`refresh_after_apply`, called once the transaction that applied the objects has
committed: per webhook or polled batch, and once at the end of a backfill run) and
``stripesync rebuild`` both go through the same batch pipeline, so the two always agree:

1. **Load, set-based.** One batch of customers (up to `BATCH` of them) costs a handful of
   queries, ordered by customer: the customers, their subscriptions, the key columns of
   their invoices and charges (then the full JSON of only the invoices and charges a
   trait can depend on: the newest issued one per customer and per subscription, the
   three newest paid per subscription, the three newest charges and succeeded charges,
   with exact follow-ups when those do not settle a trait), the scalar fields of their
   invoice lines (period, price, quantity, proration) for the revenue history, and the
   catalogue (prices with tiers, products, coupons), cached across batches.
2. **Compute, pure.** `compute_traits` (with ``normalized=True``: the raw store holds
   current shapes), `link_id`, `lifecycle_stage`, and `revenue.history.customer_history`.
3. **Plan links.** `identity.plan_links` against the current mapping of every profile
   involved (so merges, re-links and retirements see whole profiles) and the override
   pins an unmerge left.
4. **Write, in bulk.** Upserts with executemany: profiles, profile_customers, merges,
   stage history (appended), revenue movements (rewritten only when they changed).

The signature of `recompute_customers` is stable (issue 5's webhooks and polling call
it): ``recompute_customers(conn_or_store, source_id, customer_ids, *, at=None)``. With a
`Store` it commits per batch; with a `Connection` it writes in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from stripesync.errors import InvalidInput, NotFound
from stripesync.profiles.identity import (
    Attach,
    CreateProfile,
    CustomerRef,
    Detach,
    LinkId,
    LinkPlan,
    MergeRecord,
    ProfileOrigin,
    ProfileRef,
    Relink,
    Resolution,
    RetireProfile,
    Skip,
    link_id,
    plan_links,
    plan_unmerge,
)
from stripesync.profiles.settings import ProfileSettings, load_profile_settings
from stripesync.profiles.stages import (
    StageRecord,
    StageRules,
    StageTransition,
    stage_for_statuses,
    stage_history,
)
from stripesync.profiles.store import (
    profile_customers,
    profile_merges,
    profile_overrides,
    profiles,
    revenue_movements,
)
from stripesync.profiles.store import (
    stage_history as stage_history_table,
)
from stripesync.profiles.traits import STATUS_PRECEDENCE, compute_traits, expand_coupons
from stripesync.revenue import RevenueRules, to_reporting_currency
from stripesync.revenue.history import LineFact, MovementRecord, customer_history
from stripesync.store.schema import raw_table, sources
from stripesync.store.types import EncodedJSON, utcnow
from stripesync.stripe_api.shapes import discount_coupon_id, object_id

if TYPE_CHECKING:
    from stripesync.store import Store
    from stripesync.sync.apply import ApplyResult

__all__ = [
    "BATCH",
    "CustomerExplanation",
    "RebuildResult",
    "RecomputeResult",
    "default_workers",
    "explain_profile",
    "rebuild",
    "recompute_customers",
    "refresh_after_apply",
    "unmerge",
]

#: Customers per batch: large enough for set-based loading to pay, small enough that a
#: batch's objects stay a few tens of MB whatever the account's size.
BATCH = 2000
_ISSUED = ("paid", "open", "uncollectible")
_RECURRING = frozenset({"subscription_cycle", "subscription_create"})
#: Newest objects read in full per customer (or subscription) before follow-ups.
_LEAN = 3
#: Newest paid invoices read per subscription: rule 13 reads the newest paid plan one.
_LEAN_PAID = 1
_IN_CHUNK = 900

ProgressHook = Callable[[int, int], None]


# -- results ----------------------------------------------------------------------------


@dataclass
class RecomputeResult:
    """What a recompute did (counts, and the customers it could not compute)."""

    customers: int = 0
    #: Profiles whose row was rewritten.
    profiles: set[int] = field(default_factory=set)
    created: int = 0
    merges: int = 0
    relinked: int = 0
    retired: int = 0
    #: Customers asked for but absent from the raw store.
    missing: int = 0
    #: (customer id, reason) of customers left unlinked (create-missing off).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (customer id, error) of customers whose objects could not be computed.
    errors: list[tuple[str, str]] = field(default_factory=list)
    stage_changes: int = 0
    movements_written: int = 0
    seconds: float = 0.0

    def add(self, other: RecomputeResult) -> None:
        self.customers += other.customers
        self.profiles |= other.profiles
        self.created += other.created
        self.merges += other.merges
        self.relinked += other.relinked
        self.retired += other.retired
        self.missing += other.missing
        self.skipped.extend(other.skipped)
        self.errors.extend(other.errors)
        self.stage_changes += other.stage_changes
        self.movements_written += other.movements_written
        self.seconds += other.seconds


@dataclass
class RebuildResult(RecomputeResult):
    sources: int = 0

    @property
    def rate(self) -> float:
        return self.customers / self.seconds if self.seconds > 0 else 0.0


# -- loading ----------------------------------------------------------------------------


@dataclass
class _Inputs:
    """One customer's raw objects, as much of them as its derived state depends on."""

    customer_id: str
    customer: dict[str, Any] | None = None
    #: Newest version bound (ms) of the customer and its subscriptions: when the
    #: current state was known true (dates a stage change no object timestamp dates).
    observed_ms: int = 0
    customer_observed_ms: int = 0
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    sub_observed_ms: dict[str, int] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: list[LineFact] = field(default_factory=list)


def _text(conn: Connection, column: Any) -> Any:
    """A JSON column read as text (decoded once, with orjson, by the caller)."""
    if conn.dialect.name == "postgresql":
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, sa.Text)


def _rows(conn: Connection, query: Any) -> Iterator[Any]:
    """Result rows, untyped (their columns vary by query)."""
    yield from conn.execute(query)


def _loads(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


class _Where:
    """Which rows a query covers: an id list (recompute) or an id range (rebuild).

    Statements are built once per shape (`_statement`) with bound parameters, so a
    webhook's recompute pays for executing its dozen queries, not for building them.
    """

    def __init__(self, ids: Iterable[str] | None = None, lo: str = "", hi: str = "") -> None:
        self.ids = sorted(ids) if ids is not None else None
        self.lo, self.hi = lo, hi

    @property
    def kind(self) -> str:
        return "range" if self.ids is None else "ids"

    def condition(self, column: Any) -> Any:
        if self.ids is None:
            return column.between(sa.bindparam("lo"), sa.bindparam("hi"))
        return column.in_(sa.bindparam("ids", expanding=True))

    def params(self) -> Iterator[dict[str, Any]]:
        if self.ids is None:
            yield {"lo": self.lo, "hi": self.hi}
            return
        for start in range(0, len(self.ids), _IN_CHUNK):
            yield {"ids": self.ids[start : start + _IN_CHUNK]}


_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _statement(conn: Connection, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """A statement built once per dialect and shape (SQLAlchemy then reuses its SQL)."""
    full = (conn.dialect.name, *key)
    stmt = _STATEMENTS.get(full)
    if stmt is None:
        stmt = _STATEMENTS[full] = build()
    return stmt


def _select(
    conn: Connection,
    name: str,
    where: _Where,
    build: Callable[[Callable[[Any], Any]], Any],
    **params: Any,
) -> Iterator[Any]:
    """Rows of the statement ``build(condition)`` for each chunk of ``where``."""
    stmt = _statement(conn, (name, where.kind), lambda: build(where.condition))
    for chunk in where.params():
        yield from conn.execute(stmt, {**params, **chunk})


_SOURCE: Any = sa.bindparam("source_id")


def _whole_table(conn: Connection, table: sa.Table) -> Any:
    return sa.select(table.c.id, _text(conn, table.c.data)).where(table.c.source_id == _SOURCE)


def _by_customer(conn: Connection, table: sa.Table, cond: Callable[[Any], Any]) -> Any:
    return sa.select(table.c.customer, table.c.id, _text(conn, table.c.data)).where(
        table.c.source_id == _SOURCE, cond(table.c.customer)
    )


class _Catalog:
    """Prices (with tiers), plans, products and coupons of a source, by id, cached."""

    def __init__(self, source_id: int) -> None:
        self.source_id = source_id
        self.objects: dict[str, dict[str, dict[str, Any]]] = {
            "price": {},
            "plan": {},
            "product": {},
            "coupon": {},
        }
        self.absent: set[tuple[str, str]] = set()

        self._prices: dict[str, dict[str, Any]] | None = None

    def preload(self, conn: Connection) -> None:
        for kind in self.objects:
            table = raw_table(kind)
            stmt = _statement(conn, ("catalog", kind), partial(_whole_table, conn, table))
            for row in conn.execute(stmt, {"source_id": self.source_id}):
                self.objects[kind][row[0]] = _loads(row[1])
        self._prices = None

    def ensure(self, conn: Connection, kind: str, ids: Iterable[str]) -> None:
        wanted = [
            i for i in set(ids) if i not in self.objects[kind] and (kind, i) not in self.absent
        ]
        if not wanted:
            return
        table = raw_table(kind)
        for row in _select(
            conn,
            f"catalog-{kind}",
            _Where(wanted),
            lambda cond: sa.select(table.c.id, _text(conn, table.c.data)).where(
                table.c.source_id == _SOURCE, cond(table.c.id)
            ),
            source_id=self.source_id,
        ):
            self.objects[kind][row[0]] = _loads(row[1])
        self.absent.update((kind, i) for i in wanted if i not in self.objects[kind])
        self._prices = None

    @property
    def prices(self) -> dict[str, dict[str, Any]]:
        if self._prices is None:
            self._prices = {**self.objects["plan"], **self.objects["price"]}
        return self._prices


def _line_fields(conn: Connection) -> Any:
    data = raw_table("line_item").c.data
    if conn.dialect.name == "postgresql":
        # JSONB keeps documents parsed: reading paths costs no parse, unlike SQLite's.
        return sa.literal_column(
            "CAST(jsonb_build_array(data #> '{period,start}', data #> '{period,end}', "
            "data -> 'quantity', data -> 'amount', "
            "data #> '{parent,subscription_item_details,proration}', "
            "data #> '{parent,type}', data -> 'proration') AS TEXT)"
        )
    return sa.func.json_extract(
        data,
        "$.period.start",
        "$.period.end",
        "$.quantity",
        "$.amount",
        "$.parent.subscription_item_details.proration",
        "$.parent.type",
        "$.proration",
    )


def _load(
    conn: Connection,
    source_id: int,
    where: _Where,
    catalog: _Catalog,
    settings: ProfileSettings,
) -> dict[str, _Inputs]:
    customers_t = raw_table("customer")
    subs_t = raw_table("subscription")
    lines_t = raw_table("line_item")
    inputs: dict[str, _Inputs] = {}
    for row in _select(
        conn,
        "customers",
        where,
        lambda cond: sa.select(
            customers_t.c.id, _text(conn, customers_t.c.data), customers_t.c.version_hi
        ).where(customers_t.c.source_id == _SOURCE, cond(customers_t.c.id)),
        source_id=source_id,
    ):
        inputs[row[0]] = _Inputs(
            row[0], _loads(row[1]), int(row[2]), customer_observed_ms=int(row[2])
        )
    if not inputs:
        return inputs
    for row in _select(
        conn,
        "subscriptions",
        where,
        lambda cond: sa.select(
            subs_t.c.customer,
            subs_t.c.id,
            _text(conn, subs_t.c.data),
            subs_t.c.version_lo,
            subs_t.c.version_hi,
        ).where(subs_t.c.source_id == _SOURCE, cond(subs_t.c.customer)),
        source_id=source_id,
    ):
        found = inputs.get(row[0])
        if found is None:
            continue
        found.subscriptions.append(_loads(row[2]))
        found.sub_observed_ms[row[1]] = int(row[3])
        found.observed_ms = max(found.observed_ms, int(row[4]))

    # Even for one customer (a webhook's), choosing which invoices and charges to decode
    # beats decoding all of them: a two-year customer has dozens of each.
    invoice_status = _load_lean(conn, source_id, where, inputs, settings)

    # Invoice lines, scalar fields only: what the revenue history reads.
    for row in _select(
        conn,
        "lines",
        where,
        lambda cond: sa.select(
            lines_t.c.customer,
            lines_t.c.invoice,
            lines_t.c.subscription,
            lines_t.c.price,
            _line_fields(conn),
        ).where(lines_t.c.source_id == _SOURCE, cond(lines_t.c.customer)),
        source_id=source_id,
    ):
        found = inputs.get(row[0])
        if found is None:
            continue
        start, end, quantity, amount, proration, parent_type, legacy = orjson.loads(row[4])
        found.lines.append(
            LineFact(
                invoice_id=row[1] or "",
                invoice_status=invoice_status.get(row[1] or ""),
                subscription_id=row[2],
                price_id=row[3],
                quantity=quantity if isinstance(quantity, int) else None,
                period_start=start if isinstance(start, int) else None,
                period_end=end if isinstance(end, int) else None,
                proration=bool(proration if proration is not None else legacy),
                amount=amount if isinstance(amount, int) else None,
                subscription_charge=parent_type in (None, "subscription_item_details"),
            )
        )

    # The catalogue these customers use.
    price_ids: set[str] = set()
    coupon_ids: set[str] = set()
    product_ids: set[str] = set()
    for found in inputs.values():
        for subscription in found.subscriptions:
            for item in (subscription.get("items") or {}).get("data") or ():
                priced: Any = item.get("price") or item.get("plan") or {}
                pid = object_id(priced)
                if pid:
                    price_ids.add(pid)
                product = object_id(priced.get("product")) if isinstance(priced, Mapping) else None
                if product:
                    product_ids.add(product)
                coupon_ids.update(_coupon_ids(item.get("discounts")))
            coupon_ids.update(_coupon_ids(subscription.get("discounts")))
            coupon_ids.update(_coupon_ids([subscription.get("discount")]))
        if found.customer is not None:
            coupon_ids.update(_coupon_ids([found.customer.get("discount")]))
        price_ids.update(f.price_id for f in found.lines if f.price_id)
    catalog.ensure(conn, "price", price_ids)
    catalog.ensure(conn, "plan", price_ids - set(catalog.objects["price"]))
    for price_id in price_ids:
        stored = catalog.objects["price"].get(price_id) or catalog.objects["plan"].get(price_id)
        if stored is not None and object_id(stored.get("product")):
            product_ids.add(str(object_id(stored.get("product"))))
    catalog.ensure(conn, "product", product_ids)
    catalog.ensure(conn, "coupon", coupon_ids)
    return inputs


def _load_lean(
    conn: Connection,
    source_id: int,
    where: _Where,
    inputs: dict[str, _Inputs],
    settings: ProfileSettings,
) -> dict[str, str | None]:
    """Invoices and charges of many customers: key columns of all, then the full JSON of
    only those a trait can depend on (plus exact follow-ups). Returns invoice statuses."""
    inv_t = raw_table("invoice")
    ch_t = raw_table("charge")
    # Invoices: key columns of all, full JSON of those traits can depend on.
    inv_keys: dict[str, list[tuple[str, str | None, str | None, int, str]]] = {}
    for row in _select(
        conn,
        "invoice-keys",
        where,
        lambda cond: sa.select(
            inv_t.c.customer, inv_t.c.subscription, inv_t.c.status, inv_t.c.created, inv_t.c.id
        ).where(inv_t.c.source_id == _SOURCE, cond(inv_t.c.customer)),
        source_id=source_id,
    ):
        if row[0] in inputs:
            inv_keys.setdefault(row[0], []).append(
                (row[0], row[1], row[2], int(row[3] or 0), row[4])
            )
    wanted_inv: set[str] = set()
    invoice_status: dict[str, str | None] = {}
    for rows in inv_keys.values():
        rows.sort(key=lambda r: (r[3], r[4]), reverse=True)
        newest_issued = False
        per_sub_issued: set[str | None] = set()
        per_sub_paid: dict[str | None, int] = {}
        for _, sub, status, _, inv_id in rows:
            invoice_status[inv_id] = status
            if status in _ISSUED:
                if not newest_issued:
                    wanted_inv.add(inv_id)
                    newest_issued = True
                if sub is not None and sub not in per_sub_issued:
                    wanted_inv.add(inv_id)
                    per_sub_issued.add(sub)
            if status == "paid" and sub is not None and per_sub_paid.get(sub, 0) < _LEAN_PAID:
                wanted_inv.add(inv_id)
                per_sub_paid[sub] = per_sub_paid.get(sub, 0) + 1
    _fetch(conn, inv_t, source_id, wanted_inv, inputs, "invoices")

    ch_keys: dict[str, list[tuple[str, str | None, int, str]]] = {}
    for row in _select(
        conn,
        "charge-keys",
        where,
        lambda cond: sa.select(ch_t.c.customer, ch_t.c.status, ch_t.c.created, ch_t.c.id).where(
            ch_t.c.source_id == _SOURCE, cond(ch_t.c.customer)
        ),
        source_id=source_id,
    ):
        if row[0] in inputs:
            ch_keys.setdefault(row[0], []).append((row[0], row[1], int(row[2] or 0), row[3]))
    wanted_ch: set[str] = set()
    for charge_rows in ch_keys.values():
        charge_rows.sort(key=lambda r: (r[2], r[3]), reverse=True)
        wanted_ch.update(r[3] for r in charge_rows[:_LEAN])
        wanted_ch.update([r[3] for r in charge_rows if r[1] == "succeeded"][:_LEAN])
    _fetch(conn, ch_t, source_id, wanted_ch, inputs, "charges")

    # Exact follow-ups where the newest objects do not settle a trait.
    more_inv: set[str] = set()
    more_ch: set[str] = set()
    fallback: list[str] = []
    for cid, found in inputs.items():
        keys = inv_keys.get(cid, [])
        charges = ch_keys.get(cid, [])
        if _needs_link_fallback(found, settings.link_key):
            fallback.append(cid)
        loaded_charges = list(found.charges.values())
        if not any(_paid_charge(c) for c in loaded_charges):
            # Last payment falls back to paid invoices; the card to charge details.
            more_ch.update(r[3] for r in charges if r[1] == "succeeded")
            more_inv.update(r[4] for r in keys if r[2] == "paid")
        if len(charges) > len(loaded_charges) and not any(
            c.get("receipt_email") for c in loaded_charges
        ):
            more_ch.update(r[3] for r in charges)
        for sub_id in {r[1] for r in keys if r[1] is not None}:
            paid = [r[4] for r in keys if r[1] == sub_id and r[2] == "paid"]
            if len(paid) > _LEAN_PAID and not any(
                _plan_invoice(found.invoices.get(i, {})) for i in paid[:_LEAN_PAID]
            ):
                more_inv.update(paid)
    if fallback and settings.link_key is not None:
        # The link id may sit on any invoice or charge: read those naming the key only.
        more_inv |= _mentioning(conn, inv_t, source_id, fallback, settings.link_key)
        more_ch |= _mentioning(conn, ch_t, source_id, fallback, settings.link_key)
    _fetch(conn, inv_t, source_id, more_inv - wanted_inv, inputs, "invoices")
    _fetch(conn, ch_t, source_id, more_ch - wanted_ch, inputs, "charges")
    return invoice_status


def _coupon_ids(entries: Any) -> Iterator[str]:
    if not isinstance(entries, list):
        return
    for entry in entries:
        if isinstance(entry, Mapping):
            found = discount_coupon_id(entry)
            if found:
                yield found


def _fetch(
    conn: Connection,
    table: sa.Table,
    source_id: int,
    ids: set[str],
    inputs: dict[str, _Inputs],
    into: str,
) -> None:
    if not ids:
        return
    for row in _select(
        conn,
        f"fetch-{table.name}",
        _Where(ids),
        lambda cond: sa.select(table.c.customer, table.c.id, _text(conn, table.c.data)).where(
            table.c.source_id == _SOURCE, cond(table.c.id)
        ),
        source_id=source_id,
    ):
        found = inputs.get(row[0])
        if found is not None:
            getattr(found, into)[row[1]] = _loads(row[2])


def _plan_invoice(invoice: Mapping[str, Any]) -> bool:
    """Whether rule 13 can read this invoice: a plan invoice, not prorations only."""
    if invoice.get("billing_reason") not in _RECURRING:
        return False
    lines = (invoice.get("lines") or {}).get("data") or []
    return not lines or not all(
        ((line.get("parent") or {}).get("subscription_item_details") or {}).get("proration")
        for line in lines
    )


def _paid_charge(charge: Mapping[str, Any]) -> bool:
    return (
        charge.get("status") == "succeeded"
        and charge.get("paid", True) is not False
        and charge.get("captured", True) is not False
    )


def _mentioning(
    conn: Connection, table: sa.Table, source_id: int, customer_ids: Sequence[str], key: str
) -> set[str]:
    """Ids of these customers' objects whose JSON names the metadata key at all.

    A superset of the objects holding it (the caller checks where it sits), found by the
    database without decoding documents: a text search on SQLite, key tests on JSONB.
    """
    if conn.dialect.name == "postgresql":
        test: Any = sa.text(
            f"(({table.name}.data -> 'metadata') ? :link_key OR "
            f"({table.name}.data #> '{{parent,subscription_details,metadata}}') ? :link_key)"
        ).bindparams(link_key=key)
    else:
        test = sa.func.instr(sa.type_coerce(table.c.data, sa.Text), orjson.dumps(key).decode()) > 0
    found: set[str] = set()
    for start in range(0, len(customer_ids), _IN_CHUNK):
        found.update(
            str(r[0])
            for r in _rows(
                conn,
                sa.select(table.c.id).where(
                    table.c.source_id == source_id,
                    table.c.customer.in_(customer_ids[start : start + _IN_CHUNK]),
                    test,
                ),
            )
        )
    return found


def _needs_link_fallback(found: _Inputs, key: str | None) -> bool:
    """Whether the link id must be looked for on invoices and charges (all of them)."""
    if key is None or found.customer is None:
        return False
    objects = [found.customer, *found.subscriptions]
    for obj in objects:
        metadata = obj.get("metadata")
        if isinstance(metadata, Mapping):
            value = metadata.get(key)
            if isinstance(value, str) and value.strip():
                return False
    return True


# -- computing --------------------------------------------------------------------------


@dataclass
class _Outcome:
    customer_id: str
    deleted: bool
    traits: dict[str, Any]
    link: str
    link_source: str
    stage: str | None
    #: (moment, stage) points of this customer's own timeline, oldest first.
    stage_points: list[tuple[int, str | None]]
    movements: list[MovementRecord]
    mrr: dict[str, int]
    arr: dict[str, int]


def _card_methods(charges: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Card payment methods as the customer's charges show them.

    The raw store has no payment-method table (Stripe lists them only per customer,
    FIELD-NOTES); each charge carries its card's brand, last four digits and expiry, and
    the id of its payment method, which is what the customer's default points at.
    """
    methods: dict[str, dict[str, Any]] = {}
    for charge in sorted(charges, key=lambda c: (c.get("created") or 0, c.get("id") or "")):
        details = charge.get("payment_method_details")
        card = details.get("card") if isinstance(details, Mapping) else None
        method_id = object_id(charge.get("payment_method"))
        if not isinstance(card, Mapping) or method_id is None:
            continue
        methods[method_id] = {
            "id": method_id,
            "object": "payment_method",
            "type": "card",
            "customer": object_id(charge.get("customer")),
            "created": charge.get("created"),
            "card": {
                "brand": card.get("brand"),
                "last4": card.get("last4"),
                "exp_month": card.get("exp_month"),
                "exp_year": card.get("exp_year"),
            },
        }
    return list(methods.values())


def _with_tiers(subscription: dict[str, Any], prices: Mapping[str, Mapping[str, Any]]) -> None:
    """Give each item's price the tiers the stored price has (Stripe embeds prices without
    them unless expanded, and the backfill expands ``data.tiers`` on the price list)."""
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    if not isinstance(data, list):
        return
    for item in data:
        for key in ("price", "plan"):
            price = item.get(key)
            if not isinstance(price, dict) or price.get("tiers") is not None:
                continue
            if price.get("billing_scheme") != "tiered":
                continue
            stored = prices.get(str(price.get("id")))
            if stored is not None and stored.get("tiers") is not None:
                item[key] = {**price, "tiers": stored["tiers"]}


def _statuses_at(segments: Mapping[str, Sequence[Any]], moment: int) -> list[str]:
    out: list[str] = []
    for segs in segments.values():
        for segment in segs:
            if segment.start <= moment and (segment.end is None or moment < segment.end):
                out.append(_as_stripe_status(segment.status))
                break
    return out


def _as_stripe_status(state: str) -> str:
    # History's extra states keep the subscription status Stripe shows meanwhile.
    if state in ("collection_paused", "cancellation_requested"):
        return "active"
    return state


def _compute(
    found: _Inputs,
    settings: ProfileSettings,
    catalog: _Catalog,
    at: datetime,
) -> _Outcome:
    assert found.customer is not None
    now = int(at.timestamp())
    coupons = catalog.objects["coupon"]
    products = catalog.objects["product"]
    prices = catalog.prices
    customer = expand_coupons(dict(found.customer), coupons)
    subs = []
    for raw in found.subscriptions:
        sub = expand_coupons(dict(raw), coupons)
        _with_tiers(sub, prices)
        subs.append(sub)
    invoices = list(found.invoices.values())
    charges = list(found.charges.values())
    traits = compute_traits(
        customer,
        subs,
        invoices,
        charges,
        _card_methods(charges),
        mode=settings.subscription_mode,
        at=at,
        rules=settings.revenue,
        coupons=coupons,
        products=products,
        normalized=True,
    )
    link = _link(customer, subs, invoices, charges, settings.link_key)
    deleted = customer.get("deleted") is True
    current = {
        str(view["id"]): (int(view["mrr"]), Fraction(0))
        for view in traits.get("subscriptions", [])
        if view.get("id")
    }
    exact = _exact_by_subscription(traits)
    for sub_id, value in exact.items():
        if sub_id in current:
            current[sub_id] = (current[sub_id][0], value)
    history = customer_history(
        subs,
        lines=found.lines,
        prices=prices,
        customer=customer,
        rules=settings.revenue,
        now=now,
        observed_at={k: v // 1000 for k, v in found.sub_observed_ms.items()},
        current=current,
    )
    rules = settings.stages
    stage = stage_for_statuses([s.get("status") for s in subs], deleted=deleted, rules=rules)
    points = _stage_points(history.segments, rules)
    if deleted:
        points.append((found.customer_observed_ms // 1000, rules.deleted_stage))
    observed = max(found.observed_ms, found.customer_observed_ms) // 1000
    if not points or points[-1][1] != stage:
        points.append((max(observed, points[-1][0] if points else 0), stage))
    return _Outcome(
        customer_id=found.customer_id,
        deleted=deleted,
        traits=traits,
        link=link.value,
        link_source=link.source,
        stage=stage,
        stage_points=points,
        movements=history.movements,
        mrr=dict(traits.get("all_mrr_by_currency") or {}),
        arr=dict(traits.get("arr_by_currency") or {}),
    )


def _link(
    customer: dict[str, Any],
    subs: list[dict[str, Any]],
    invoices: list[dict[str, Any]],
    charges: list[dict[str, Any]],
    key: str | None,
) -> LinkId:
    """`identity.link_id`, handed only the objects it will read.

    It reads the customer first, then subscriptions, then invoices and charges, and
    normalizes every object it is given; when the customer (or a subscription) holds the
    key, the rest is never read, so it is not handed over.
    """
    if key is None or _metadata_value(customer, key):
        return link_id(customer, (), (), (), key=key)
    if any(_metadata_value(sub, key) and sub.get("deleted") is not True for sub in subs):
        return link_id(customer, subs, (), (), key=key)
    tagged_invoices = [
        inv
        for inv in invoices
        if _metadata_value(inv, key)
        or _metadata_value(((inv.get("parent") or {}).get("subscription_details") or {}), key)
    ]
    tagged_charges = [ch for ch in charges if _metadata_value(ch, key)]
    return link_id(customer, (), tagged_invoices, tagged_charges, key=key)


def _metadata_value(obj: Mapping[str, Any], key: str) -> bool:
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return isinstance(value, str) and bool(value.strip())


def _exact_by_subscription(traits: Mapping[str, Any]) -> dict[str, Fraction]:
    """Each subscription's exact MRR, recovered from its rounded ARR where they agree.

    The traits keep rounded MRR and ARR; the history needs the exact figure only to sum
    ARR (rule 10), so ARR / 12 (exact enough to round back to the same ARR) is used.
    """
    out: dict[str, Fraction] = {}
    for view in traits.get("subscriptions", []):
        sub_id = view.get("id")
        arr = view.get("arr")
        if isinstance(sub_id, str) and isinstance(arr, int):
            out[sub_id] = Fraction(arr, 12) if arr else Fraction(int(view.get("mrr") or 0))
    return out


def _stage_points(
    segments: Mapping[str, Sequence[Any]], rules: StageRules
) -> list[tuple[int, str | None]]:
    moments = sorted({seg.start for segs in segments.values() for seg in segs})
    points: list[tuple[int, str | None]] = []
    for moment in moments:
        stage = stage_for_statuses(_statuses_at(segments, moment), rules=rules)
        if not points or points[-1][1] != stage:
            points.append((moment, stage))
    return points


# -- persisting -------------------------------------------------------------------------


def _insert(conn: Connection, table: sa.Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _dt(moment: int | None) -> datetime | None:
    return datetime.fromtimestamp(moment, UTC) if moment is not None else None


def _parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _rank(stage: str | None, rules: StageRules) -> int:
    return rules.precedence.index(stage) if stage in rules.precedence else len(rules.precedence)


def _best_stage(stages: Iterable[str | None], rules: StageRules) -> str | None:
    chosen: list[str | None] = sorted(stages, key=lambda s: (_rank(s, rules), s is None, s or ""))
    return chosen[0] if chosen else rules.no_subscription_stage


def _merge_traits(members: list[dict[str, Any]]) -> dict[str, Any]:
    """One profile's traits from its customers' (see docs/profiles.md, "Merged profiles")."""
    if len(members) == 1:
        out = dict(members[0])
        out["customer_ids"] = [members[0].get("customer_id")]
        return out

    def rank(traits: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            not traits.get("deleted"),
            traits.get("subscription_paying_count") or 0,
            traits.get("subscription_trialing_count") or 0,
            traits.get("created") or "",
            traits.get("customer_id") or "",
        )

    ordered = sorted(members, key=rank, reverse=True)
    out = dict(ordered[0])
    out["customer_ids"] = [t.get("customer_id") for t in ordered]
    for key in ("all_mrr_by_currency", "arr_by_currency"):
        total: dict[str, int] = {}
        for traits in ordered:
            for currency, amount in (traits.get(key) or {}).items():
                total[currency] = total.get(currency, 0) + int(amount)
        out[key] = total
    for key in ("subscription_paying_count", "subscription_trialing_count"):
        out[key] = sum(int(t.get(key) or 0) for t in ordered)
    currencies = {t.get("revenue_currency") for t in ordered if t.get("all_mrr")}
    if len(currencies) <= 1:
        for key in ("all_mrr", "arr", "subscription_amounts_total"):
            out[key] = sum(int(t.get(key) or 0) for t in ordered)
    for key in (
        "subscription_ids",
        "subscription_statuses",
        "subscriptions",
        "last_invoice_ids",
        "last_invoice_amounts",
        "plan_ids",
        "plan_names",
        "plan_amounts",
    ):
        out[key] = [v for t in ordered for v in (t.get(key) or [])]
    for key in ("product_ids", "product_names"):
        out[key] = list(dict.fromkeys(v for t in ordered for v in (t.get(key) or [])))
    renewals = [str(t["renewal_date"]) for t in ordered if t.get("renewal_date")]
    out["renewal_date"] = min(renewals) if renewals else None
    rank_status = {s: i for i, s in enumerate(STATUS_PRECEDENCE)}
    known: list[str] = [
        str(t["current_subscription_status"])
        for t in ordered
        if t.get("current_subscription_status")
    ]
    out["current_subscription_status"] = (
        min(known, key=lambda s: rank_status.get(s, len(rank_status))) if known else None
    )
    return out


def _digest(movements: Sequence[MovementRecord]) -> str:
    text = ";".join(
        f"{m.at},{m.currency},{m.before},{m.after},{m.kind},{m.arr_before},{m.arr_after}"
        for m in movements
    )
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass
class _Profiles:
    """The profiles a batch involves: by id and by reference."""

    by_id: dict[int, sa.Row[Any]] = field(default_factory=dict)
    by_ref: dict[ProfileRef, int] = field(default_factory=dict)

    def add(self, row: sa.Row[Any]) -> None:
        self.by_id[int(row.id)] = row
        self.by_ref[ProfileRef(row.kind, row.link_id)] = int(row.id)

    def ref(self, profile_id: int) -> ProfileRef:
        row = self.by_id[profile_id]
        return ProfileRef(row.kind, row.link_id)


def _load_profiles_by_id(conn: Connection, found: _Profiles, ids: Iterable[int]) -> None:
    wanted = sorted(set(ids) - set(found.by_id))
    if not wanted:
        return
    stmt = _statement(
        conn,
        ("profiles-by-id",),
        lambda: sa.select(profiles).where(profiles.c.id.in_(sa.bindparam("ids", expanding=True))),
    )
    for start in range(0, len(wanted), _IN_CHUNK):
        for row in conn.execute(stmt, {"ids": wanted[start : start + _IN_CHUNK]}):
            found.add(row)


def _load_profiles_by_ref(conn: Connection, found: _Profiles, refs: Iterable[ProfileRef]) -> None:
    by_kind: dict[str, list[str]] = {}
    for ref in set(refs):
        if ref not in found.by_ref:
            by_kind.setdefault(ref.kind, []).append(ref.id)
    for kind, ids in by_kind.items():
        for row in _select(
            conn,
            "profiles-by-ref",
            _Where(ids),
            lambda cond: sa.select(profiles).where(
                profiles.c.kind == sa.bindparam("kind"), cond(profiles.c.link_id)
            ),
            kind=kind,
        ):
            found.add(row)


def _members_of(conn: Connection, profile_ids: Iterable[int]) -> dict[tuple[int, str], int]:
    ids = sorted(set(profile_ids))
    out: dict[tuple[int, str], int] = {}
    if not ids:
        return out
    stmt = _statement(
        conn,
        ("members",),
        lambda: sa.select(
            profile_customers.c.source_id,
            profile_customers.c.customer_id,
            profile_customers.c.profile_id,
        ).where(profile_customers.c.profile_id.in_(sa.bindparam("ids", expanding=True))),
    )
    for start in range(0, len(ids), _IN_CHUNK):
        for row in conn.execute(stmt, {"ids": ids[start : start + _IN_CHUNK]}):
            out[(int(row[0]), str(row[1]))] = int(row[2])
    return out


def _upsert_links(conn: Connection) -> Any:
    stmt = _insert(conn, profile_customers)
    return stmt.on_conflict_do_update(
        index_elements=[profile_customers.c.source_id, profile_customers.c.customer_id],
        set_={
            c.name: stmt.excluded[c.name]
            for c in profile_customers.columns
            if c.name not in ("source_id", "customer_id")
        },
    )


def _create_statement(conn: Connection) -> Any:
    stmt = _insert(conn, profiles)
    return stmt.on_conflict_do_update(
        index_elements=[profiles.c.kind, profiles.c.link_id],
        set_={"status": "active", "merged_into": None, "updated_at": stmt.excluded.updated_at},
    )


_PROFILE_FIELDS = (
    "traits",
    "customers",
    "mrr",
    "arr",
    "reporting_currency",
    "reporting_mrr",
    "reporting_arr",
    "paying",
    "stage",
    "stage_since",
    "renewal_at",
    "updated_at",
)


def _update_profile() -> Any:
    return (
        sa.update(profiles)
        .where(profiles.c.id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(name) for name in _PROFILE_FIELDS})
    )


def _ref_key(ref: CustomerRef) -> tuple[int, str]:
    return int(ref.source), ref.customer_id


class _Writer:
    """Applies one batch's results in the caller's transaction."""

    def __init__(self, conn: Connection, source_id: int, settings: ProfileSettings) -> None:
        self.conn = conn
        self.source_id = source_id
        self.settings = settings
        self.now = utcnow()

    def write(
        self,
        outcomes: Mapping[str, _Outcome],
        gone: Sequence[str],
        result: RecomputeResult,
        *,
        newer_than: datetime | None = None,
    ) -> None:
        """Write a batch; with ``newer_than`` (when it was loaded), customers recomputed
        since then (a webhook during a rebuild) keep that newer state."""
        conn, source_id, settings = self.conn, self.source_id, self.settings
        batch_keys = [(source_id, cid) for cid in (*outcomes, *gone)]
        existing_rows: dict[str, Any] = {}
        pins: dict[tuple[int, str], int] = {}
        pc, po = profile_customers, profile_overrides
        for row in _select(
            conn,
            "existing-links",
            _Where(cid for _, cid in batch_keys),
            lambda cond: (
                sa.select(
                    pc.c.customer_id,
                    pc.c.profile_id,
                    pc.c.history_digest,
                    pc.c.merge_id,
                    pc.c.linked_at,
                    pc.c.computed_at,
                    po.c.profile_id.label("pinned_to"),
                )
                .select_from(
                    pc.outerjoin(
                        po,
                        sa.and_(
                            po.c.source_id == pc.c.source_id, po.c.customer_id == pc.c.customer_id
                        ),
                    )
                )
                .where(pc.c.source_id == _SOURCE, cond(pc.c.customer_id))
            ),
            source_id=source_id,
        ):
            existing_rows[row[0]] = row
            if row.pinned_to is not None:
                pins[(source_id, row[0])] = int(row.pinned_to)
        if newer_than is not None:
            fresher = {
                cid
                for cid, row in existing_rows.items()
                if row.computed_at is not None and row.computed_at >= newer_than
            }
            if fresher:
                outcomes = {k: v for k, v in outcomes.items() if k not in fresher}
                batch_keys = [(source_id, cid) for cid in (*outcomes, *gone)]
        involved = _Profiles()
        current_ids = {r.profile_id for r in existing_rows.values() if r.profile_id is not None}
        _load_profiles_by_id(conn, involved, {*current_ids, *pins.values()})
        targets = {ProfileRef(settings.kind, o.link) for o in outcomes.values()}
        _load_profiles_by_ref(conn, involved, targets)
        relevant = {*current_ids, *(involved.by_ref[t] for t in targets if t in involved.by_ref)}
        member_rows = _members_of(conn, relevant)
        current: dict[CustomerRef, ProfileRef] = {}
        for (s_id, cid), pid in member_rows.items():
            if pid in involved.by_id:
                current[CustomerRef(str(s_id), cid)] = involved.ref(pid)
        origins: dict[ProfileRef, ProfileOrigin] = {
            ProfileRef(row.kind, row.link_id): ("api" if row.created_via == "api" else "sync")
            for row in involved.by_id.values()
            if row.status == "active"
        }
        overrides = {
            CustomerRef(str(s), c): involved.ref(pid)
            for (s, c), pid in pins.items()
            if pid in involved.by_id
        }
        resolved: dict[CustomerRef, Resolution] = {}
        for cid, outcome in outcomes.items():
            resolved[CustomerRef(str(source_id), cid)] = Resolution(
                link_id=outcome.link,
                kind=settings.kind,
                create_missing=settings.create_missing,
                link_source=outcome.link_source,  # type: ignore[arg-type]
            )
        for cid in gone:
            resolved[CustomerRef(str(source_id), cid)] = Resolution(None, settings.kind)
        plan = plan_links(current, resolved, existing=origins, overrides=overrides)
        self._apply_plan(plan, involved, result, outcomes, existing_rows)

    # -- applying a link plan --------------------------------------------------------

    def _apply_plan(
        self,
        plan: LinkPlan,
        involved: _Profiles,
        result: RecomputeResult,
        outcomes: Mapping[str, _Outcome],
        existing_rows: Mapping[str, sa.Row[Any]],
    ) -> None:
        conn, source_id, now = self.conn, self.source_id, self.now
        created = [a.profile for a in plan.actions if isinstance(a, CreateProfile)]
        if created:
            self._create_profiles(created, involved)
            result.created += len(created)
        states: dict[CustomerRef, tuple[str, str | None, str | None]] = {}
        for action in plan.actions:
            if isinstance(action, Attach | Relink):
                states[action.customer] = ("linked", action.link_source, None)
                if isinstance(action, Relink):
                    result.relinked += 1
            elif isinstance(action, Detach):
                states[action.customer] = ("detached", None, action.reason)
            elif isinstance(action, Skip):
                states[action.customer] = ("skipped", None, action.reason)
                result.skipped.append((action.customer.customer_id, action.reason))
        merge_ids = self._record_merges(plan.merges, involved)
        result.merges += len(plan.merges)
        retired = [a for a in plan.actions if isinstance(a, RetireProfile)]
        for action in retired:
            conn.execute(
                sa.update(profiles)
                .where(profiles.c.id == involved.by_ref[action.profile])
                .values(
                    status="retired",
                    customers=0,
                    merged_into=involved.by_ref.get(action.merged_into)
                    if action.merged_into is not None
                    else None,
                    updated_at=now,
                )
            )
        result.retired += len(retired)

        # profile_customers: every batch customer, linked or not.
        rows: list[dict[str, Any]] = []
        moved_customers: list[tuple[int, str]] = []
        for cid, outcome in outcomes.items():
            ref = CustomerRef(str(source_id), cid)
            target = plan.mapping.get(ref)
            state, link_source, reason = states.get(
                ref, ("linked" if target is not None else "skipped", None, None)
            )
            old = existing_rows.get(cid)
            profile_id = involved.by_ref.get(target) if target is not None else None
            if link_source is None and target is not None:
                link_source = "override" if ref in plan.overrides else outcome.link_source
            digest = _digest(outcome.movements)
            if old is None or old.history_digest != digest:
                moved_customers.append((source_id, cid))
            rows.append(
                {
                    "source_id": source_id,
                    "customer_id": cid,
                    "profile_id": profile_id,
                    "link_id": outcome.link,
                    "link_source": link_source,
                    "state": "linked" if profile_id is not None else state,
                    "reason": reason if profile_id is None else None,
                    "traits": EncodedJSON(outcome.traits),
                    "mrr": outcome.mrr,
                    "stage": outcome.stage,
                    "deleted": outcome.deleted,
                    "merge_id": merge_ids.get(ref, old.merge_id if old is not None else None),
                    "history_digest": digest,
                    "linked_at": (
                        now
                        if ref in states and states[ref][0] == "linked"
                        else (old.linked_at if old is not None else None)
                    ),
                    "computed_at": now,
                }
            )
        if rows:
            conn.execute(_statement(conn, ("upsert-links",), partial(_upsert_links, conn)), rows)
        gone = [c.customer_id for c, s in states.items() if s[0] == "detached"]
        gone = [cid for cid in gone if cid not in outcomes]
        if gone:
            conn.execute(
                sa.update(profile_customers)
                .where(
                    profile_customers.c.source_id == source_id,
                    profile_customers.c.customer_id.in_(gone),
                )
                .values(profile_id=None, state="detached", reason="gone from the raw store")
            )
        result.movements_written += self._write_movements(outcomes, moved_customers, existing_rows)

        # The profiles to refresh: where batch customers are now, and where they left.
        touched: set[int] = set()
        for cid in (*outcomes, *gone):
            ref = CustomerRef(str(source_id), cid)
            target = plan.mapping.get(ref)
            if target is not None and target in involved.by_ref:
                touched.add(involved.by_ref[target])
            old = existing_rows.get(cid)
            if old is not None and old.profile_id is not None:
                touched.add(int(old.profile_id))
        touched -= {involved.by_ref[a.profile] for a in retired}
        self._refresh_profiles(touched, plan, involved, outcomes, result)

    def _create_profiles(self, refs: Sequence[ProfileRef], involved: _Profiles) -> None:
        conn, now = self.conn, self.now
        rows: list[dict[str, Any]] = [
            {
                "kind": ref.kind,
                "link_id": ref.id,
                "created_via": "sync",
                "status": "active",
                "merged_into": None,
                "traits": {},
                "app_traits": {},
                "customers": 0,
                "mrr": {},
                "arr": {},
                "paying": False,
                "first_seen_at": now,
                "updated_at": now,
            }
            for ref in refs
        ]
        conn.execute(_statement(conn, ("create-profiles",), partial(_create_statement, conn)), rows)
        for ref in refs:
            involved.by_ref.pop(ref, None)
        _load_profiles_by_ref(conn, involved, refs)

    def _record_merges(
        self, merges: Sequence[MergeRecord], involved: _Profiles
    ) -> dict[CustomerRef, int]:
        out: dict[CustomerRef, int] = {}
        for record in merges:
            profile_id = involved.by_ref[record.profile]
            added = [
                {
                    "source_id": int(customer.source),
                    "customer_id": customer.customer_id,
                    "from_profile_id": involved.by_ref.get(before) if before is not None else None,
                    "from_link_id": before.id if before is not None else None,
                }
                for customer, before in record.added
            ]
            inserted = self.conn.execute(
                sa.insert(profile_merges)
                .values(
                    profile_id=profile_id,
                    customers=[[int(c.source), c.customer_id] for c in record.customers],
                    added=added,
                    merged_at=self.now,
                    undone_at=None,
                )
                .returning(profile_merges.c.id)
            ).scalar_one()
            for customer, _ in record.added:
                out[customer] = int(inserted)
        return out

    def _write_movements(
        self,
        outcomes: Mapping[str, _Outcome],
        changed: Sequence[tuple[int, str]],
        known: Mapping[str, Any],
    ) -> int:
        if not changed:
            return 0
        conn = self.conn
        ids = [cid for _, cid in changed]
        # Customers never computed before have no movements to replace.
        stale = [cid for cid in ids if cid in known]
        if stale:
            where = _Where(stale)
            stmt = _statement(
                conn,
                ("drop-movements", where.kind),
                lambda: sa.delete(revenue_movements).where(
                    revenue_movements.c.source_id == _SOURCE,
                    where.condition(revenue_movements.c.customer_id),
                ),
            )
            for chunk in where.params():
                conn.execute(stmt, {"source_id": self.source_id, **chunk})
        rows = [
            {
                "source_id": self.source_id,
                "customer_id": cid,
                "at": m.at,
                "currency": m.currency,
                "kind": m.kind,
                "mrr_before": m.before,
                "mrr_after": m.after,
                "arr_before": m.arr_before,
                "arr_after": m.arr_after,
            }
            for cid in ids
            for m in outcomes[cid].movements
        ]
        if rows:
            conn.execute(
                _statement(conn, ("movements",), lambda: sa.insert(revenue_movements)), rows
            )
        return len(rows)

    def _refresh_profiles(
        self,
        touched: set[int],
        plan: LinkPlan,
        involved: _Profiles,
        outcomes: Mapping[str, _Outcome],
        result: RecomputeResult,
    ) -> None:
        if not touched:
            return
        conn, source_id, now = self.conn, self.source_id, self.now
        rules = self.settings.stages
        members: dict[int, list[tuple[int, str]]] = {pid: [] for pid in touched}
        for ref, target in plan.mapping.items():
            pid = involved.by_ref.get(target)
            if pid in members:
                members[pid].append(_ref_key(ref))
        # Customers of these profiles outside the batch keep their stored traits.
        outside = [
            key
            for keys in members.values()
            for key in keys
            if key[0] != source_id or key[1] not in outcomes
        ]
        stored: dict[tuple[int, str], tuple[dict[str, Any], str | None]] = {}
        by_source: dict[int, list[str]] = {}
        for s_id, cid in outside:
            by_source.setdefault(s_id, []).append(cid)
        for s_id, cids in by_source.items():
            for start in range(0, len(cids), _IN_CHUNK):
                for row in _rows(
                    conn,
                    sa.select(
                        profile_customers.c.customer_id,
                        _text(conn, profile_customers.c.traits),
                        profile_customers.c.stage,
                    ).where(
                        profile_customers.c.source_id == s_id,
                        profile_customers.c.customer_id.in_(cids[start : start + _IN_CHUNK]),
                    ),
                ):
                    stored[(s_id, row[0])] = (_loads(row[1]), row[2])
        updates: list[dict[str, Any]] = []
        history_rows: list[dict[str, Any]] = []
        for pid in sorted(touched):
            keys = sorted(members[pid])
            traits_list: list[dict[str, Any]] = []
            timelines: list[list[tuple[int, str | None]]] = []
            for key in keys:
                if key[0] == source_id and key[1] in outcomes:
                    outcome = outcomes[key[1]]
                    traits_list.append(outcome.traits)
                    timelines.append(outcome.stage_points)
                elif key in stored:
                    traits_list.append(stored[key][0])
                    timelines.append([(0, stored[key][1])])
            merged = _merge_traits(traits_list) if traits_list else {}
            mrr = dict(merged.get("all_mrr_by_currency") or {})
            arr = dict(merged.get("arr_by_currency") or {})
            row = involved.by_id[pid]
            stage = _best_stage([t[-1][1] for t in timelines if t], rules) if keys else None
            observations = _profile_observations(timelines, rules)
            previous = (
                StageRecord(row.stage, row.stage_since) if row.stage_since is not None else None
            )
            transitions = stage_history(observations, previous=previous)
            last = transitions[-1].record if transitions else previous
            if (last.stage if last is not None else None) != stage:
                # Today's stage must hold whatever the fold kept (an observation older than
                # the stored record is never replayed): record it as of now.
                moment = max(
                    [now, *([last.since] if last is not None else [])]
                    if not observations
                    else [_dt(observations[-1][0]) or now, *([last.since] if last else [])]
                )
                transitions.append(
                    StageTransition(last.stage if last is not None else None, stage, moment)
                )
            for transition in transitions:
                history_rows.append(
                    {
                        "profile_id": pid,
                        "from_stage": transition.from_stage,
                        "to_stage": transition.to_stage,
                        "at": transition.at,
                        "recorded_at": now,
                    }
                )
            since = transitions[-1].at if transitions else row.stage_since
            reporting = self.settings.revenue
            updates.append(
                {
                    "b_id": pid,
                    "traits": EncodedJSON(merged),
                    "customers": len(keys),
                    "mrr": mrr,
                    "arr": arr,
                    "reporting_currency": reporting.reporting_currency,
                    "reporting_mrr": _reporting(mrr, reporting),
                    "reporting_arr": _reporting(arr, reporting),
                    "paying": bool(merged.get("subscription_paying_count")),
                    "stage": stage,
                    "stage_since": since,
                    "renewal_at": _parse_iso(merged.get("renewal_date")),
                    "updated_at": now,
                }
            )
        if history_rows:
            conn.execute(
                _statement(conn, ("history",), lambda: sa.insert(stage_history_table)),
                history_rows,
            )
            result.stage_changes += len(history_rows)
        conn.execute(_statement(conn, ("update-profiles",), _update_profile), updates)
        result.profiles.update(touched)


def _reporting(amounts: Mapping[str, int], rules: RevenueRules) -> int | None:
    if rules.reporting_currency is None:
        return None
    return to_reporting_currency({k: v for k, v in amounts.items() if v}, rules)


def _profile_observations(
    timelines: Sequence[Sequence[tuple[int, str | None]]], rules: StageRules
) -> list[tuple[int, str | None]]:
    """A profile's stage at each moment any of its customers' stage changed."""
    moments = sorted({m for timeline in timelines for m, _ in timeline})
    observations: list[tuple[int, str | None]] = []
    for moment in moments:
        stages = []
        for timeline in timelines:
            current = None
            seen = False
            for at, stage in timeline:
                if at <= moment:
                    current, seen = stage, True
                else:
                    break
            if seen:
                stages.append(current)
        stage = _best_stage(stages, rules)
        if not observations or observations[-1][1] != stage:
            observations.append((moment, stage))
    return [(m, s) for m, s in observations if m > 0]


# -- the entry points -------------------------------------------------------------------


@dataclass
class _Batch:
    """One batch computed (in this process or a worker), ready to write."""

    outcomes: dict[str, _Outcome]
    errors: list[tuple[str, str]]
    found: set[str]
    loaded_at: datetime
    seconds: float


def _compute_batch(
    conn: Connection,
    source_id: int,
    settings: ProfileSettings,
    catalog: _Catalog,
    where: _Where,
    at: datetime,
) -> _Batch:
    started = time.perf_counter()
    loaded_at = utcnow()
    inputs = _load(conn, source_id, where, catalog, settings)
    outcomes: dict[str, _Outcome] = {}
    errors: list[tuple[str, str]] = []
    for cid in sorted(inputs):
        try:
            outcomes[cid] = _compute(inputs[cid], settings, catalog, at)
        except InvalidInput as exc:
            # One malformed object must not hold back the other customers.
            errors.append((cid, str(exc)))
    return _Batch(outcomes, errors, set(inputs), loaded_at, time.perf_counter() - started)


def _write_batch(
    conn: Connection,
    source_id: int,
    settings: ProfileSettings,
    batch: _Batch,
    *,
    asked: Sequence[str] | None = None,
    newer_wins: bool = False,
) -> RecomputeResult:
    started = time.perf_counter()
    result = RecomputeResult(errors=list(batch.errors))
    gone: list[str] = []
    if asked is not None:
        missing = [cid for cid in asked if cid not in batch.found]
        result.missing += len(missing)
        gone = _linked(conn, source_id, missing)
    if batch.outcomes or gone:
        _Writer(conn, source_id, settings).write(
            batch.outcomes, gone, result, newer_than=batch.loaded_at if newer_wins else None
        )
    result.customers += len(batch.outcomes)
    result.seconds += batch.seconds + time.perf_counter() - started
    return result


def _run_batch(
    conn: Connection,
    source_id: int,
    settings: ProfileSettings,
    catalog: _Catalog,
    where: _Where,
    at: datetime,
    asked: Sequence[str] | None = None,
) -> RecomputeResult:
    batch = _compute_batch(conn, source_id, settings, catalog, where, at)
    return _write_batch(conn, source_id, settings, batch, asked=asked)


def _linked(conn: Connection, source_id: int, customer_ids: Sequence[str]) -> list[str]:
    found: list[str] = []
    for start in range(0, len(customer_ids), _IN_CHUNK):
        found.extend(
            str(r[0])
            for r in conn.execute(
                sa.select(profile_customers.c.customer_id).where(
                    profile_customers.c.source_id == source_id,
                    profile_customers.c.customer_id.in_(customer_ids[start : start + _IN_CHUNK]),
                    profile_customers.c.profile_id.is_not(None),
                )
            )
        )
    return found


def recompute_customers(
    conn_or_store: Connection | Store,
    source_id: int,
    customer_ids: Iterable[str],
    *,
    at: datetime | None = None,
) -> RecomputeResult:
    """Recompute the profiles of these customers of one source from the raw store.

    Loads their raw objects, computes traits, revenue, stage and revenue history, plans
    links (merges, re-links, retirements) and writes profiles, links, stage history and
    movements. Customers not in the raw store are detached from their profile. ``at`` is
    the compute moment (default now): it decides which discounts have ended and becomes
    ``last_sync_at``.

    With a `Store`, each batch of `BATCH` customers is its own write transaction; with a
    `Connection`, everything happens in the caller's transaction (call it after the
    objects are applied, in the same or a later transaction).
    """
    ids = sorted({str(c) for c in customer_ids if c})
    moment = at or utcnow()
    result = RecomputeResult()
    if not ids:
        return result
    if isinstance(conn_or_store, Connection):
        settings = load_profile_settings(conn_or_store, source_id)
        catalog = _Catalog(source_id)
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            result.add(
                _run_batch(
                    conn_or_store, source_id, settings, catalog, _Where(chunk), moment, chunk
                )
            )
        return result
    store = conn_or_store
    with store.read() as conn:
        settings = load_profile_settings(conn, source_id)
    chunks = [ids[start : start + BATCH] for start in range(0, len(ids), BATCH)]
    workers = default_workers() if len(ids) >= 4 * BATCH else 0
    _run_many(
        store,
        source_id,
        settings,
        ((_Where(chunk), chunk, len(chunk)) for chunk in chunks),
        moment,
        workers,
        result,
    )
    return result


def _catalog_customers(conn: Connection, source_id: int, kind: str, ids: Sequence[str]) -> set[str]:
    """Customers whose subscriptions use these prices, plans, products or coupons."""
    items = raw_table("subscription_item")
    found: set[str] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[start : start + _IN_CHUNK])
        if kind in ("price", "plan"):
            query = sa.select(items.c.customer).where(
                items.c.source_id == source_id, items.c.price.in_(chunk)
            )
        elif kind == "product":
            prices = raw_table("price")
            query = sa.select(items.c.customer).where(
                items.c.source_id == source_id,
                items.c.price.in_(
                    sa.select(prices.c.id).where(
                        prices.c.source_id == source_id, prices.c.product.in_(chunk)
                    )
                ),
            )
        else:
            # Coupons have no key column: match their quoted id in the stored JSON. Coupon
            # changes are rare and come one event at a time.
            subs = raw_table("subscription")
            customers = raw_table("customer")
            for table, column in ((subs, subs.c.customer), (customers, customers.c.id)):
                text = sa.cast(table.c.data, sa.Text)
                found.update(
                    str(r[0])
                    for r in conn.execute(
                        sa.select(column).where(
                            table.c.source_id == source_id,
                            sa.or_(*(text.contains(f'"{cid}"') for cid in chunk)),
                        )
                    )
                    if r[0]
                )
            continue
        found.update(str(r[0]) for r in conn.execute(query.distinct()) if r[0])
    return found


def refresh_after_apply(
    store: Store,
    results: ApplyResult | Iterable[ApplyResult] | Iterable[tuple[int, str]],
    *,
    at: datetime | None = None,
) -> RecomputeResult:
    """Recompute what applied objects touched, after their transaction committed.

    Takes `ApplyResult` values (their ``customers`` and ``catalog``) or plain
    ``(source_id, customer_id)`` pairs. Catalogue objects (a renamed product, a coupon)
    reach the customers whose subscriptions use them.
    """
    from stripesync.sync.apply import ApplyResult

    customers: dict[int, set[str]] = {}
    catalog: dict[tuple[int, str], set[str]] = {}
    items: Iterable[Any] = [results] if isinstance(results, ApplyResult) else results
    for entry in items:
        if isinstance(entry, ApplyResult):
            for source_id, cid in entry.customers:
                customers.setdefault(source_id, set()).add(cid)
            for source_id, kind, oid in entry.catalog:
                catalog.setdefault((source_id, kind), set()).add(oid)
        else:
            source_id, cid = entry
            customers.setdefault(int(source_id), set()).add(str(cid))
    if catalog:
        with store.read() as conn:
            for (source_id, kind), ids in catalog.items():
                customers.setdefault(source_id, set()).update(
                    _catalog_customers(conn, source_id, kind, sorted(ids))
                )
    result = RecomputeResult()
    for source_id in sorted(customers):
        result.add(recompute_customers(store, source_id, customers[source_id], at=at))
    return result


def default_workers() -> int:
    """Processes a large rebuild computes in: one per CPU beyond the first, at most 4
    (0: compute in this process)."""
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(4, cpus)


_WORKER: dict[str, Any] = {}


def _worker_init(url: str) -> None:
    from stripesync.store.engine import make_engine

    _WORKER["engine"] = make_engine(url, pool_size=1, max_overflow=2)
    _WORKER["catalogs"] = {}


def _worker_batch(
    source_id: int, settings_json: dict[str, Any], where: _Where, at: datetime
) -> _Batch:
    """Load and compute one batch in a worker process (reads only; the parent writes)."""
    engine = _WORKER["engine"]
    settings = ProfileSettings.from_json(settings_json)
    with engine.connect() as conn:
        catalog = _WORKER["catalogs"].get(source_id)
        if catalog is None:
            catalog = _WORKER["catalogs"][source_id] = _Catalog(source_id)
            catalog.preload(conn)
        return _compute_batch(conn, source_id, settings, catalog, where, at)


def _run_many(
    store: Store,
    source_id: int,
    settings: ProfileSettings,
    batches: Iterable[tuple[_Where, list[str] | None, int]],
    at: datetime,
    workers: int,
    result: RecomputeResult,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Compute batches (in ``workers`` processes, or here) outside the write lock, and
    write each in one short transaction; newer state written meanwhile wins."""
    pool: ProcessPoolExecutor | None = None
    if workers > 0:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(store.engine.url.render_as_string(hide_password=False),),
        )
    catalog = _Catalog(source_id)
    pending: deque[tuple[Future[_Batch], list[str] | None, int]] = deque()

    def write(batch: _Batch, asked: list[str] | None, count: int) -> None:
        with store.write() as conn:
            result.add(_write_batch(conn, source_id, settings, batch, asked=asked, newer_wins=True))
        if progress is not None:
            progress(count)

    try:
        if pool is None:
            with store.read() as conn:
                catalog.preload(conn)
        for where, asked, count in batches:
            if pool is None:
                with store.read() as conn:
                    batch = _compute_batch(conn, source_id, settings, catalog, where, at)
                write(batch, asked, count)
                continue
            future = pool.submit(_worker_batch, source_id, settings.to_json(), where, at)
            pending.append((future, asked, count))
            while len(pending) > 2 * workers:
                done, asked_done, n = pending.popleft()
                write(done.result(), asked_done, n)
        while pending:
            done, asked_done, n = pending.popleft()
            write(done.result(), asked_done, n)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _batches(store: Store, source_id: int, size: int) -> Iterator[tuple[str, str, int]]:
    """(first id, last id, count) of consecutive customer batches, in id order."""
    customers_t = raw_table("customer")
    last: str | None = None
    while True:
        with store.read() as conn:
            query = (
                sa.select(customers_t.c.id)
                .where(customers_t.c.source_id == source_id)
                .order_by(customers_t.c.id)
                .limit(size)
            )
            if last is not None:
                query = query.where(customers_t.c.id > last)
            batch = [str(r[0]) for r in conn.execute(query)]
        if not batch:
            return
        last = batch[-1]
        yield batch[0], last, len(batch)


def rebuild(
    store: Store,
    source_id: int | None = None,
    *,
    progress: ProgressHook | None = None,
    batch_size: int = BATCH,
    at: datetime | None = None,
    workers: int | None = None,
) -> RebuildResult:
    """Recompute every customer of one source (or all) from the raw store.

    Walks customers in id order, ``batch_size`` at a time (bounded memory), and calls
    ``progress(done, total)`` after each batch. Batches are loaded and computed outside
    the write lock (by ``workers`` processes when the source is large: default one per
    CPU, at most 4), then written in one short transaction each; a customer recomputed
    by a webhook meanwhile keeps that newer state. Stage history is appended to, never
    rewritten: a rebuild adds what the raw objects date that the history lacks.
    """
    if batch_size < 1:
        raise InvalidInput(f"batch size {batch_size} must be at least 1")
    started = time.perf_counter()
    moment = at or utcnow()
    customers_t = raw_table("customer")
    with store.read() as conn:
        ids = [int(r[0]) for r in conn.execute(sa.select(sources.c.id).order_by(sources.c.id))]
        if source_id is not None:
            if source_id not in ids:
                raise NotFound(f"no source with id {source_id}; `stripesync sources` lists them")
            ids = [source_id]
        totals = {
            s: int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(customers_t)
                    .where(customers_t.c.source_id == s)
                ).scalar_one()
            )
            for s in ids
        }
    total = sum(totals.values())
    wanted = default_workers() if workers is None else workers
    if total < 4 * batch_size:
        wanted = 0  # not worth starting processes
    result = RebuildResult(sources=len(ids))
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    for s_id in ids:
        with store.read() as conn:
            settings = load_profile_settings(conn, s_id)
        _run_many(
            store,
            s_id,
            settings,
            (
                (_Where(lo=lo, hi=hi), None, count)
                for lo, hi, count in _batches(store, s_id, batch_size)
            ),
            moment,
            wanted,
            result,
            advance,
        )
    result.seconds = time.perf_counter() - started
    return result


# -- unmerge ----------------------------------------------------------------------------


def unmerge(store: Store, merge_id: int, *, at: datetime | None = None) -> RecomputeResult:
    """Reverse a merge: its added customers go back where they were, pinned there.

    The pins (``profile_overrides``) keep the next sync from merging them again; drop one
    with `store.drop_override` to let the link id decide. Raises `NotFound` for an unknown
    merge and `InvalidInput` for one already undone.
    """
    now = utcnow()
    with store.write() as conn:
        row = conn.execute(sa.select(profile_merges).where(profile_merges.c.id == merge_id)).first()
        if row is None:
            raise NotFound(f"no merge {merge_id}; `stripesync profiles show ID` lists a profile's")
        if row.undone_at is not None:
            raise InvalidInput(f"merge {merge_id} was already undone at {row.undone_at:%Y-%m-%d}")
        involved = _Profiles()
        from_ids = [a.get("from_profile_id") for a in row.added if a.get("from_profile_id")]
        _load_profiles_by_id(conn, involved, [int(row.profile_id), *map(int, from_ids)])
        merged_ref = involved.ref(int(row.profile_id))
        added: list[tuple[CustomerRef, ProfileRef | None]] = []
        for entry in row.added:
            before_id = entry.get("from_profile_id")
            before: ProfileRef | None = None
            if before_id is not None and int(before_id) in involved.by_id:
                before = involved.ref(int(before_id))
            elif entry.get("from_link_id"):
                before = ProfileRef(merged_ref.kind, str(entry["from_link_id"]))
            added.append((CustomerRef(str(entry["source_id"]), str(entry["customer_id"])), before))
        record = MergeRecord(
            profile=merged_ref,
            customers=tuple(CustomerRef(str(s), str(c)) for s, c in row.customers),
            added=tuple(added),
        )
        members = _members_of(conn, [int(row.profile_id)])
        current = {
            CustomerRef(str(s), c): involved.ref(pid)
            for (s, c), pid in members.items()
            if pid in involved.by_id
        }
        _load_profiles_by_ref(conn, involved, [b for _, b in added if b is not None])
        origins: dict[ProfileRef, ProfileOrigin] = {
            ProfileRef(r.kind, r.link_id): ("api" if r.created_via == "api" else "sync")
            for r in involved.by_id.values()
            if r.status == "active"
        }
        plan = plan_unmerge(record, current, existing=origins)
        created = [a.profile for a in plan.actions if isinstance(a, CreateProfile)]
        writer = _Writer(conn, 0, ProfileSettings())
        writer.now = now
        if created:
            writer._create_profiles(created, involved)
        for action in plan.actions:
            if isinstance(action, Relink):
                s_id, cid = _ref_key(action.customer)
                target_id = involved.by_ref[action.to_profile]
                conn.execute(
                    sa.update(profile_customers)
                    .where(
                        profile_customers.c.source_id == s_id,
                        profile_customers.c.customer_id == cid,
                    )
                    .values(
                        profile_id=target_id,
                        link_source="unmerge",
                        state="linked",
                        merge_id=None,
                        linked_at=now,
                    )
                )
                stmt = _insert(conn, profile_overrides)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[
                            profile_overrides.c.source_id,
                            profile_overrides.c.customer_id,
                        ],
                        set_={"profile_id": target_id, "reason": "unmerge", "created_at": now},
                    ),
                    {
                        "source_id": s_id,
                        "customer_id": cid,
                        "profile_id": target_id,
                        "reason": "unmerge",
                        "created_at": now,
                    },
                )
        conn.execute(
            sa.update(profile_merges).where(profile_merges.c.id == merge_id).values(undone_at=now)
        )
    result = RecomputeResult()
    by_source: dict[int, list[str]] = {}
    for customer in record.customers:
        s_id, cid = _ref_key(customer)
        by_source.setdefault(s_id, []).append(cid)
    for s_id, cids in sorted(by_source.items()):
        result.add(recompute_customers(store, s_id, cids, at=at))
    return result


# -- explain ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerExplanation:
    """How one Stripe customer's MRR is made: each subscription's explanation."""

    source_id: int
    source: str
    customer_id: str
    rules: RevenueRules
    subscriptions: list[tuple[dict[str, Any], Any]]
    #: Rule 13's single-subscription ``mrr`` trait and its parts.
    mrr_trait: int | None
    mrr_currency: str | None
    all_mrr: dict[str, int]
    arr: dict[str, int]


def explain_profile(
    conn: Connection, profile_id: int, *, at: datetime | None = None
) -> list[CustomerExplanation]:
    """Explain a profile's MRR from the raw store, customer by customer, item by item.

    The same inputs as a recompute (coupons and price tiers resolved from the store),
    through `revenue.explain_subscription_mrr`, so every figure shown adds up to the one
    stored on the profile.
    """
    from stripesync.revenue import customer_revenue

    moment = at or utcnow()
    keys = sorted(
        (int(r[0]), str(r[1]), str(r[2]))
        for r in _rows(
            conn,
            sa.select(
                profile_customers.c.source_id, profile_customers.c.customer_id, sources.c.name
            )
            .select_from(
                profile_customers.join(sources, sources.c.id == profile_customers.c.source_id)
            )
            .where(profile_customers.c.profile_id == profile_id),
        )
    )
    out: list[CustomerExplanation] = []
    for source_id, customer_id, source_name in keys:
        settings = load_profile_settings(conn, source_id)
        catalog = _Catalog(source_id)
        found = _load(conn, source_id, _Where([customer_id]), catalog, settings).get(customer_id)
        if found is None or found.customer is None:
            continue
        coupons = catalog.objects["coupon"]
        customer = expand_coupons(dict(found.customer), coupons)
        subs = []
        for raw in sorted(
            found.subscriptions, key=lambda s: (s.get("created") or 0, s.get("id") or "")
        ):
            sub = expand_coupons(dict(raw), coupons)
            _with_tiers(sub, catalog.prices)
            subs.append(sub)
        revenue = customer_revenue(
            customer, subs, list(found.invoices.values()), at=moment, rules=settings.revenue
        )
        out.append(
            CustomerExplanation(
                source_id=source_id,
                source=source_name,
                customer_id=customer_id,
                rules=settings.revenue,
                subscriptions=[
                    (sub, row.explanation)
                    for sub, row in zip(subs, revenue.subscriptions, strict=True)
                ],
                mrr_trait=revenue.mrr,
                mrr_currency=revenue.mrr_currency,
                all_mrr=dict(revenue.all_mrr),
                arr=dict(revenue.arr),
            )
        )
    return out
