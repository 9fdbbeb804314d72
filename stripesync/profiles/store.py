"""Where profiles live: derived tables next to the raw store, and reading them back.

Everything here is derived from the raw Stripe objects (`stripesync.profiles.recompute`
writes it, ``stripesync rebuild`` can write it all again), except what people decide:
profiles created through the API (`create_profile`), and the override pins an unmerge
leaves (`profile_overrides`).

- ``profiles``: one row per profile, keyed ``(kind, link_id)``: the merged traits of its
  Stripe customers (namespace ``stripe``, docs/traits.md), MRR and ARR per currency, the
  reporting-currency figures, lifecycle stage and renewal date. ``status`` is ``active``
  or ``retired`` (a profile stripesync made that no customer backs any more; kept, with
  ``merged_into``, so links to it keep working).
- ``profile_customers``: each Stripe customer of each source, the profile it is linked to
  (NULL when it is left unlinked, with the reason), its link id and where the id was
  found, its own traits and MRR, and the merge that brought it there.
- ``profile_merges``: every merge a link plan made (`identity.MergeRecord`), reversible
  with ``stripesync profiles unmerge``.
- ``profile_overrides``: customers pinned to a profile whatever their link id says.
- ``profile_stage_history``: every stage change with its moment.
- ``revenue_movements``: each customer's MRR changes over time (rule 11 movements, per
  currency, with ARR after), reconstructed from the subscription and invoice history
  (`stripesync.revenue.history`): the data of ``stripesync revenue``.

The tables join `stripesync.store.schema.metadata`, so the Alembic migration
``0002_profiles`` and the schema test cover them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stripesync.errors import InvalidInput, NotFound
from stripesync.profiles.identity import ProfileKind
from stripesync.store.schema import metadata
from stripesync.store.types import JSONType, UTCDateTime, utcnow

if TYPE_CHECKING:
    from stripesync.store import Store

__all__ = [
    "ProfileRecord",
    "create_profile",
    "find_profile",
    "list_profiles",
    "paid_invoices",
    "profile_customers",
    "profile_merges",
    "profile_movements",
    "profile_overrides",
    "profiles",
    "revenue_movements",
    "revenue_series",
    "stage_history",
    "stage_history_of",
]

_PROFILE_FK = "profiles.id"
_SOURCE_FK = "sources.id"

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # users | accounts
    sa.Column("link_id", sa.String(255), nullable=False),
    sa.Column("created_via", sa.String(8), nullable=False),  # sync | api
    sa.Column("status", sa.String(16), nullable=False),  # active | retired
    sa.Column("merged_into", sa.Integer, nullable=True),
    sa.Column("traits", JSONType, nullable=False),
    sa.Column("app_traits", JSONType, nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("mrr", JSONType, nullable=False),  # {currency: minor units}
    sa.Column("arr", JSONType, nullable=False),
    sa.Column("reporting_currency", sa.String(3), nullable=True),
    sa.Column("reporting_mrr", sa.BigInteger, nullable=True),
    sa.Column("reporting_arr", sa.BigInteger, nullable=True),
    sa.Column("paying", sa.Boolean, nullable=False),
    sa.Column("stage", sa.String(64), nullable=True),
    sa.Column("stage_since", UTCDateTime, nullable=True),
    sa.Column("renewal_at", UTCDateTime, nullable=True),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("kind", "link_id"),
)
sa.Index(None, profiles.c.stage)
sa.Index(None, profiles.c.status)

profile_merges = sa.Table(
    "profile_merges",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "profile_id", sa.Integer, sa.ForeignKey(_PROFILE_FK, ondelete="CASCADE"), nullable=False
    ),
    # [[source_id, customer_id], ...]: every customer on the profile after the merge
    sa.Column("customers", JSONType, nullable=False),
    # [{"source_id", "customer_id", "from_profile_id"}, ...]: those the merge brought
    sa.Column("added", JSONType, nullable=False),
    sa.Column("merged_at", UTCDateTime, nullable=False),
    sa.Column("undone_at", UTCDateTime, nullable=True),
)
sa.Index(None, profile_merges.c.profile_id)

profile_customers = sa.Table(
    "profile_customers",
    metadata,
    sa.Column(
        "source_id",
        sa.Integer,
        sa.ForeignKey(_SOURCE_FK, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column(
        "profile_id", sa.Integer, sa.ForeignKey(_PROFILE_FK, ondelete="SET NULL"), nullable=True
    ),
    sa.Column("link_id", sa.String(255), nullable=True),
    # customer.metadata | subscription.metadata | ... | customer.id | override | unmerge
    sa.Column("link_source", sa.String(32), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # linked | skipped | detached
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("traits", JSONType, nullable=False),
    sa.Column("mrr", JSONType, nullable=False),
    sa.Column("stage", sa.String(64), nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("merge_id", sa.Integer, nullable=True),
    # A digest of the revenue movements last written, so unchanged ones are not rewritten.
    sa.Column("history_digest", sa.String(32), nullable=True),
    sa.Column("linked_at", UTCDateTime, nullable=True),
    sa.Column("computed_at", UTCDateTime, nullable=False),
)
sa.Index(None, profile_customers.c.profile_id)

profile_overrides = sa.Table(
    "profile_overrides",
    metadata,
    sa.Column(
        "source_id",
        sa.Integer,
        sa.ForeignKey(_SOURCE_FK, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column(
        "profile_id", sa.Integer, sa.ForeignKey(_PROFILE_FK, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

stage_history = sa.Table(
    "profile_stage_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "profile_id", sa.Integer, sa.ForeignKey(_PROFILE_FK, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("from_stage", sa.String(64), nullable=True),
    sa.Column("to_stage", sa.String(64), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
)
sa.Index(None, stage_history.c.profile_id, stage_history.c.at)

revenue_movements = sa.Table(
    "revenue_movements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey(_SOURCE_FK, ondelete="CASCADE"), nullable=False
    ),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),  # unix seconds
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # new | expansion | ... | churn
    sa.Column("mrr_before", sa.BigInteger, nullable=False),
    sa.Column("mrr_after", sa.BigInteger, nullable=False),
    sa.Column("arr_before", sa.BigInteger, nullable=False),
    sa.Column("arr_after", sa.BigInteger, nullable=False),
)
sa.Index(None, revenue_movements.c.source_id, revenue_movements.c.customer_id)
sa.Index(None, revenue_movements.c.at)


# -- records ------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


@dataclass(frozen=True)
class ProfileRecord:
    """A profile as stored, with what ``profiles show`` prints."""

    id: int
    kind: str
    link_id: str
    created_via: str
    status: str
    merged_into: int | None
    traits: dict[str, Any]
    app_traits: dict[str, Any]
    customers: int
    mrr: dict[str, int]
    arr: dict[str, int]
    reporting_currency: str | None
    reporting_mrr: int | None
    reporting_arr: int | None
    paying: bool
    stage: str | None
    stage_since: datetime | None
    renewal_at: datetime | None
    first_seen_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> ProfileRecord:
        m = row._mapping
        return cls(
            id=int(m["id"]),
            kind=m["kind"],
            link_id=m["link_id"],
            created_via=m["created_via"],
            status=m["status"],
            merged_into=m["merged_into"],
            traits=dict(m["traits"] or {}),
            app_traits=dict(m["app_traits"] or {}),
            customers=int(m["customers"]),
            mrr=dict(m["mrr"] or {}),
            arr=dict(m["arr"] or {}),
            reporting_currency=m["reporting_currency"],
            reporting_mrr=m["reporting_mrr"],
            reporting_arr=m["reporting_arr"],
            paying=bool(m["paying"]),
            stage=m["stage"],
            stage_since=m["stage_since"],
            renewal_at=m["renewal_at"],
            first_seen_at=m["first_seen_at"],
            updated_at=m["updated_at"],
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "link_id": self.link_id,
            "created_via": self.created_via,
            "status": self.status,
            "merged_into": self.merged_into,
            "customers": self.customers,
            "mrr": self.mrr,
            "arr": self.arr,
            "reporting_currency": self.reporting_currency,
            "reporting_mrr": self.reporting_mrr,
            "reporting_arr": self.reporting_arr,
            "paying": self.paying,
            "stage": self.stage,
            "stage_since": _iso(self.stage_since),
            "renewal_date": _iso(self.renewal_at),
            "first_seen_at": _iso(self.first_seen_at),
            "updated_at": _iso(self.updated_at),
            "traits": {
                "stripe": self.traits,
                **({"app": self.app_traits} if self.app_traits else {}),
            },
        }


# -- profiles created by the app --------------------------------------------------------


def create_profile(
    store: Store,
    kind: ProfileKind,
    link_id: str,
    traits: Mapping[str, Any] | None = None,
) -> ProfileRecord:
    """Create a profile from the app's side (the REST API's call), or update its traits.

    A source with ``create_missing`` off enriches only such profiles: its customers whose
    link id is ``link_id`` attach here on their next recompute (or ``stripesync rebuild``).
    Idempotent: an existing profile keeps its id and gets ``traits`` merged into its app
    traits; a retired one becomes active again.
    """
    if kind not in ("users", "accounts"):
        raise InvalidInput(f"profile kind is {kind!r}; use 'users' or 'accounts'")
    if not isinstance(link_id, str) or not link_id.strip():
        raise InvalidInput("the profile's link id is empty; give your own id for it")
    link_id = link_id.strip()
    now = utcnow()
    with store.write() as conn:
        row = conn.execute(
            sa.select(profiles).where(profiles.c.kind == kind, profiles.c.link_id == link_id)
        ).first()
        if row is None:
            conn.execute(
                sa.insert(profiles).values(
                    kind=kind,
                    link_id=link_id,
                    created_via="api",
                    status="active",
                    merged_into=None,
                    traits={},
                    app_traits=dict(traits or {}),
                    customers=0,
                    mrr={},
                    arr={},
                    paying=False,
                    first_seen_at=now,
                    updated_at=now,
                )
            )
        else:
            merged = {**dict(row.app_traits or {}), **dict(traits or {})}
            conn.execute(
                sa.update(profiles)
                .where(profiles.c.id == row.id)
                .values(app_traits=merged, status="active", merged_into=None, updated_at=now)
            )
        found = conn.execute(
            sa.select(profiles).where(profiles.c.kind == kind, profiles.c.link_id == link_id)
        ).one()
    return ProfileRecord.from_row(found)


# -- reading ----------------------------------------------------------------------------


def find_profile(conn: Connection, ref: str | int) -> ProfileRecord:
    """A profile by id (``42``), ``kind:link_id`` (``accounts:org_7``), link id, or Stripe
    customer id (``cus_…``, in any source). `NotFound` names what was tried."""
    text = str(ref).strip()
    if not text:
        raise InvalidInput("give a profile: its id, kind:link_id, link id or a cus_… id")
    query = sa.select(profiles)
    row = None
    if text.isdigit():
        row = conn.execute(query.where(profiles.c.id == int(text))).first()
    if row is None and ":" in text:
        kind, _, link = text.partition(":")
        if kind in ("users", "accounts"):
            row = conn.execute(
                query.where(profiles.c.kind == kind, profiles.c.link_id == link)
            ).first()
    if row is None:
        rows = conn.execute(query.where(profiles.c.link_id == text).order_by(profiles.c.id)).all()
        if len(rows) > 1:
            raise InvalidInput(
                f"{text!r} is the link id of a users and an accounts profile; say which: "
                f"users:{text} or accounts:{text}"
            )
        row = rows[0] if rows else None
    if row is None:
        row = conn.execute(
            query.select_from(
                profiles.join(profile_customers, profile_customers.c.profile_id == profiles.c.id)
            )
            .where(profile_customers.c.customer_id == text)
            .order_by(profiles.c.id)
        ).first()
    if row is None:
        raise NotFound(
            f"no profile {text!r} (tried id, kind:link_id, link id and Stripe customer id); "
            "`stripesync profiles list` shows them"
        )
    return ProfileRecord.from_row(row)


def list_profiles(
    conn: Connection,
    *,
    stage: str | None = None,
    kind: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    include_retired: bool = False,
) -> list[ProfileRecord]:
    """Profiles in id order (active ones unless ``include_retired``)."""
    if limit is not None and limit < 0:
        raise InvalidInput(f"--limit {limit} is negative; give 0 or more")
    query = sa.select(profiles).order_by(profiles.c.id)
    if not include_retired:
        query = query.where(profiles.c.status == "active")
    if stage is not None:
        query = query.where(profiles.c.stage == stage)
    if kind is not None:
        query = query.where(profiles.c.kind == kind)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [ProfileRecord.from_row(row) for row in conn.execute(query)]


def customers_of(conn: Connection, profile_id: int) -> list[dict[str, Any]]:
    """The Stripe customers linked to a profile, with their source's name."""
    from stripesync.store.schema import sources

    rows = conn.execute(
        sa.select(
            profile_customers.c.source_id,
            sources.c.name.label("source"),
            profile_customers.c.customer_id,
            profile_customers.c.link_id,
            profile_customers.c.link_source,
            profile_customers.c.stage,
            profile_customers.c.mrr,
            profile_customers.c.deleted,
            profile_customers.c.merge_id,
            profile_customers.c.linked_at,
        )
        .select_from(profile_customers.join(sources, sources.c.id == profile_customers.c.source_id))
        .where(profile_customers.c.profile_id == profile_id)
        .order_by(profile_customers.c.source_id, profile_customers.c.customer_id)
    )
    return [
        {
            "source_id": r.source_id,
            "source": r.source,
            "customer_id": r.customer_id,
            "link_id": r.link_id,
            "link_source": r.link_source,
            "stage": r.stage,
            "mrr": dict(r.mrr or {}),
            "deleted": bool(r.deleted),
            "merge_id": r.merge_id,
            "linked_at": _iso(r.linked_at),
        }
        for r in rows
    ]


def stage_history_of(conn: Connection, profile_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(stage_history)
        .where(stage_history.c.profile_id == profile_id)
        .order_by(stage_history.c.at, stage_history.c.id)
    )
    return [{"from": r.from_stage, "to": r.to_stage, "at": _iso(r.at)} for r in rows]


def merges_of(conn: Connection, profile_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(profile_merges)
        .where(profile_merges.c.profile_id == profile_id)
        .order_by(profile_merges.c.id)
    )
    return [
        {
            "id": r.id,
            "customers": [list(c) for c in r.customers],
            "added": list(r.added),
            "merged_at": _iso(r.merged_at),
            "undone_at": _iso(r.undone_at),
        }
        for r in rows
    ]


def _profile_customer_keys(conn: Connection, profile_id: int) -> list[tuple[int, str]]:
    return [
        (int(r.source_id), str(r.customer_id))
        for r in conn.execute(
            sa.select(profile_customers.c.source_id, profile_customers.c.customer_id).where(
                profile_customers.c.profile_id == profile_id
            )
        )
    ]


def paid_invoices(conn: Connection, profile_id: int) -> list[dict[str, Any]]:
    """Every paid invoice of the profile's customers, newest first (seed 002's history)."""
    from stripesync.store.schema import raw_table

    invoices = raw_table("invoice")
    out: list[dict[str, Any]] = []
    by_source: dict[int, list[str]] = {}
    for source_id, customer_id in _profile_customer_keys(conn, profile_id):
        by_source.setdefault(source_id, []).append(customer_id)
    for source_id, customer_ids in by_source.items():
        for start in range(0, len(customer_ids), 500):
            rows = conn.execute(
                sa.select(invoices.c.id, invoices.c.customer, invoices.c.data).where(
                    invoices.c.source_id == source_id,
                    invoices.c.customer.in_(customer_ids[start : start + 500]),
                    invoices.c.status == "paid",
                )
            )
            for row in rows:
                data = row.data
                transitions = data.get("status_transitions") or {}
                out.append(
                    {
                        "id": row.id,
                        "source_id": source_id,
                        "customer_id": row.customer,
                        "number": data.get("number"),
                        "billing_reason": data.get("billing_reason"),
                        "currency": data.get("currency"),
                        "amount_paid": data.get("amount_paid"),
                        "total": data.get("total"),
                        "created": data.get("created"),
                        "paid_at": transitions.get("paid_at") or data.get("created"),
                        "period_start": data.get("period_start"),
                        "period_end": data.get("period_end"),
                        "subscription": _invoice_subscription(data),
                    }
                )
    out.sort(key=lambda inv: (inv["paid_at"] or 0, inv["id"]), reverse=True)
    return out


def _invoice_subscription(data: Mapping[str, Any]) -> str | None:
    from stripesync.stripe_api.shapes import invoice_subscription_id

    return invoice_subscription_id(data)


def profile_movements(conn: Connection, profile_id: int) -> list[dict[str, Any]]:
    """The profile's customers' MRR movements, oldest first."""
    keys = _profile_customer_keys(conn, profile_id)
    out: list[dict[str, Any]] = []
    for source_id, customer_id in keys:
        for r in conn.execute(
            sa.select(revenue_movements).where(
                revenue_movements.c.source_id == source_id,
                revenue_movements.c.customer_id == customer_id,
            )
        ):
            out.append(
                {
                    "at": r.at,
                    "source_id": source_id,
                    "customer_id": customer_id,
                    "currency": r.currency,
                    "kind": r.kind,
                    "mrr_before": r.mrr_before,
                    "mrr_after": r.mrr_after,
                    "arr_after": r.arr_after,
                }
            )
    out.sort(key=lambda m: (m["at"], m["customer_id"], m["currency"]))
    return out


def overrides_for(conn: Connection, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Pins of these customers: (source_id, customer_id) → profile id."""
    found: dict[tuple[int, str], int] = {}
    by_source: dict[int, list[str]] = {}
    for source_id, customer_id in keys:
        by_source.setdefault(source_id, []).append(customer_id)
    for source_id, ids in by_source.items():
        for start in range(0, len(ids), 900):
            for r in conn.execute(
                sa.select(profile_overrides).where(
                    profile_overrides.c.source_id == source_id,
                    profile_overrides.c.customer_id.in_(ids[start : start + 900]),
                )
            ):
                found[(int(r.source_id), str(r.customer_id))] = int(r.profile_id)
    return found


def drop_override(store: Store, source_id: int, customer_id: str) -> bool:
    """Unpin a customer (its link id decides again on its next recompute)."""
    with store.write() as conn:
        result = conn.execute(
            sa.delete(profile_overrides).where(
                profile_overrides.c.source_id == source_id,
                profile_overrides.c.customer_id == customer_id,
            )
        )
    return bool(result.rowcount)


# -- the revenue report -----------------------------------------------------------------


def _rate_table(
    currency: str | None,
    rates: Mapping[str, Any] | None,
    settings: Sequence[Any],
) -> Any:
    """A `RateTable` from --currency/--rates, else from the sources' settings (or None)."""
    from stripesync.errors import ConfigError
    from stripesync.revenue import RevenueRules
    from stripesync.revenue.history import RateTable

    if currency is None:
        chosen = {s.revenue.reporting_currency for s in settings if s.revenue.reporting_currency}
        if not chosen:
            return None
        if len(chosen) > 1:
            raise ConfigError(
                f"the sources report in {', '.join(sorted(c.upper() for c in chosen))}; "
                "choose one with --currency"
            )
        currency = chosen.pop()
    currency = currency.strip().lower()
    if rates is None:
        merged: dict[str, Any] = {}
        for s in settings:
            if s.revenue.reporting_currency == currency:
                merged.update(s.revenue.exchange_rates)
        return RateTable(((0, RevenueRules(reporting_currency=currency, exchange_rates=merged)),))
    if all(isinstance(v, Mapping) for v in rates.values()) and rates:
        dated: list[tuple[int, RevenueRules]] = []
        for day, table in sorted(rates.items()):
            try:
                moment = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
            except ValueError:
                raise ConfigError(f"--rates key {day!r} is not a YYYY-MM-DD date") from None
            dated.append((moment, RevenueRules(reporting_currency=currency, exchange_rates=table)))
        return RateTable(tuple(dated))
    return RateTable(((0, RevenueRules(reporting_currency=currency, exchange_rates=rates)),))


def revenue_series(
    store: Store,
    *,
    source: str | None = None,
    granularity: str = "month",
    start: int | None = None,
    end: int | None = None,
    currency: str | None = None,
    rates: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The revenue report (``stripesync revenue``) as JSON-ready data.

    Reads every customer's stored movements (one source's, or all: the overall view
    counts each source's customers apart) and folds them with `revenue.revenue_report`.
    Default window: the last 12 months by month, the last 30 days by day.
    """
    from stripesync.profiles.settings import load_profile_settings
    from stripesync.revenue.history import MovementRecord, revenue_report, round_ratio
    from stripesync.store.schema import sources

    now = int(utcnow().timestamp())
    with store.read() as conn:
        query = sa.select(sources.c.id, sources.c.name).order_by(sources.c.id)
        if source is not None:
            query = query.where(sources.c.name == source)
        chosen = [(int(r[0]), str(r[1])) for r in conn.execute(query)]
        if source is not None and not chosen:
            raise NotFound(f"no source named {source!r}; `stripesync sources` lists them")
        settings = [load_profile_settings(conn, s_id) for s_id, _ in chosen]
        table = _rate_table(currency, rates, settings)
        # Exclusive: one second past now, so what was computed this second is in.
        end = end or now + 1
        if start is None:
            start = end - (365 if granularity == "month" else 30) * 86400
        pairs: list[tuple[Any, MovementRecord]] = []
        ids = [s_id for s_id, _ in chosen]
        rows = conn.execute(
            sa.select(
                revenue_movements.c.source_id,
                revenue_movements.c.customer_id,
                revenue_movements.c.at,
                revenue_movements.c.currency,
                revenue_movements.c.kind,
                revenue_movements.c.mrr_before,
                revenue_movements.c.mrr_after,
                revenue_movements.c.arr_before,
                revenue_movements.c.arr_after,
            )
            .where(revenue_movements.c.source_id.in_(ids), revenue_movements.c.at < end)
            .order_by(revenue_movements.c.at)
        )
        for r in rows:
            pairs.append(
                (
                    (int(r[0]), str(r[1])),
                    MovementRecord(
                        int(r[2]), str(r[3]), int(r[5]), int(r[6]), r[4], int(r[7]), int(r[8])
                    ),
                )
            )
    report = revenue_report(
        pairs,
        start=start,
        end=end,
        granularity="day" if granularity == "day" else "month",
        rates=table,
    )
    return {
        "sources": [name for _, name in chosen],
        "granularity": report.granularity,
        "reporting_currency": report.reporting_currency,
        "start": start,
        "end": end,
        "churn_rate_30d": round_ratio(report.churn_rate_30d),
        "periods": [
            {
                "period": p.period,
                "mrr": p.mrr,
                "arr": p.arr,
                "paying_customers": p.paying_customers,
                "movements": p.movements,
                "movement_counts": p.movement_counts,
                "reporting_mrr": p.reporting_mrr,
                "reporting_arr": p.reporting_arr,
                "reporting_movements": p.reporting_movements,
                "fx": p.fx,
                "arpu": float(p.arpu) if p.arpu is not None else None,
                "arpu_by_currency": {k: float(v) for k, v in p.arpu_by_currency.items()},
                "subscriber_churn_rate": round_ratio(p.subscriber_churn_rate),
                "gross_mrr_churn_rate": round_ratio(p.gross_mrr_churn_rate),
                "net_mrr_churn_rate": round_ratio(p.net_mrr_churn_rate),
            }
            for p in report.periods
        ],
    }
