"""The store's tables (SQLAlchemy Core): sources, raw Stripe objects, sync bookkeeping.

Raw Stripe objects are the source of truth: one table per object type, the full JSON in
``data`` and a few indexed key columns copied out of it, keyed by ``(source_id, id)``.
``version_lo``/``version_hi`` bound *when* the stored copy was true (milliseconds since
the epoch): an API read is true between its request's start and its answer, an event's
snapshot somewhere within the second of its ``created``. The one apply path
(``stripesync.sync.apply``) never replaces a copy by one that is known to be older.

Migrations (``stripesync/store/migrations``) create exactly these tables; a test
compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from stripesync.store.types import JSONType, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

# -- sources ----------------------------------------------------------------------------

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    # active | disconnected (disconnected keeps the data and forgets the key)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("api_key_encrypted", sa.Text, nullable=True),
    sa.Column("key_hint", sa.String(64), nullable=False),
    sa.Column("key_kind", sa.String(16), nullable=False),  # secret | restricted
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("api_base", sa.String(512), nullable=False),
    sa.Column("start_mode", sa.String(8), nullable=False),  # all | date | now
    sa.Column("start_at", sa.BigInteger, nullable=True),  # unix seconds; NULL: all history
    sa.Column("interval_seconds", sa.Integer, nullable=False),
    sa.Column("permissions", JSONType, nullable=False),
    sa.Column("polling_only", sa.Boolean, nullable=False),
    sa.Column("webhook_endpoint_id", sa.String(255), nullable=True),
    sa.Column("webhook_secret_encrypted", sa.Text, nullable=True),
    sa.Column("account_id", sa.String(255), nullable=True),
    sa.Column("profile_settings", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("disconnected_at", UTCDateTime, nullable=True),
)

# -- raw Stripe objects -----------------------------------------------------------------


@dataclass(frozen=True)
class RawTable:
    """Where objects of one Stripe type live, and which extra key columns they have."""

    object_type: str
    table: sa.Table
    #: Extra indexed columns copied out of the object (besides the common ones).
    links: tuple[str, ...] = ()
    #: For child rows (subscription items, invoice lines): the column naming the parent.
    parent: str | None = None


def _raw_table(name: str, *links: str) -> sa.Table:
    columns: list[sa.Column[Any]] = [
        sa.Column(
            "source_id",
            sa.Integer,
            sa.ForeignKey("sources.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("customer", sa.String(255), nullable=True),
        sa.Column("status", sa.String(64), nullable=True),
        sa.Column("created", sa.BigInteger, nullable=True),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        *[sa.Column(link, sa.String(255), nullable=True) for link in links],
        sa.Column("data", JSONType, nullable=False),
        sa.Column("version_lo", sa.BigInteger, nullable=False),
        sa.Column("version_hi", sa.BigInteger, nullable=False),
        sa.Column("synced_at", UTCDateTime, nullable=False),
    ]
    table = sa.Table(name, metadata, *columns)
    sa.Index(None, table.c.source_id, table.c.customer)
    sa.Index(None, table.c.source_id, table.c.created)
    for link in links:
        sa.Index(None, table.c.source_id, table.c[link])
    return table


RAW_TABLES: dict[str, RawTable] = {
    spec.object_type: spec
    for spec in (
        RawTable("customer", _raw_table("stripe_customers")),
        RawTable("product", _raw_table("stripe_products")),
        RawTable("price", _raw_table("stripe_prices", "product"), links=("product",)),
        RawTable("plan", _raw_table("stripe_plans", "product"), links=("product",)),
        RawTable("coupon", _raw_table("stripe_coupons")),
        RawTable("subscription", _raw_table("stripe_subscriptions")),
        RawTable(
            "subscription_item",
            _raw_table("stripe_subscription_items", "subscription", "price"),
            links=("subscription", "price"),
            parent="subscription",
        ),
        RawTable("invoice", _raw_table("stripe_invoices", "subscription"), links=("subscription",)),
        RawTable(
            "line_item",
            _raw_table("stripe_invoice_lines", "invoice", "subscription", "price"),
            links=("invoice", "subscription", "price"),
            parent="invoice",
        ),
        RawTable(
            "charge",
            _raw_table("stripe_charges", "payment_intent"),
            links=("payment_intent",),
        ),
        RawTable("payment_intent", _raw_table("stripe_payment_intents")),
        RawTable(
            "refund",
            _raw_table("stripe_refunds", "charge", "payment_intent"),
            links=("charge", "payment_intent"),
        ),
        RawTable("credit_note", _raw_table("stripe_credit_notes", "invoice"), links=("invoice",)),
    )
}

#: Child object types stored apart from (and alongside) their parent's JSON.
CHILDREN: dict[str, tuple[str, str]] = {
    # parent type: (child type, field of the parent holding the list)
    "subscription": ("subscription_item", "items"),
    "invoice": ("line_item", "lines"),
}

# -- the event ledger -------------------------------------------------------------------

stripe_events = sa.Table(
    "stripe_events",
    metadata,
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("api_version", sa.String(64), nullable=True),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("object_id", sa.String(255), nullable=True),
    sa.Column("data", JSONType, nullable=False),
    # webhook | poll: how it reached us first
    sa.Column("received_via", sa.String(16), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("processed_at", UTCDateTime, nullable=True),
)
sa.Index(None, stripe_events.c.source_id, stripe_events.c.created)
sa.Index(None, stripe_events.c.source_id, stripe_events.c.object_id)

# -- sync bookkeeping -------------------------------------------------------------------

sync_streams = sa.Table(
    "sync_streams",
    metadata,
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("stream", sa.String(64), primary_key=True),
    # pending | running | done | failed | skipped
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("range_lo", sa.BigInteger, nullable=True),  # created >= (NULL: all history)
    sa.Column("range_hi", sa.BigInteger, nullable=True),  # created < (planned so far)
    sa.Column("objects", sa.BigInteger, nullable=False),
    sa.Column("pages", sa.BigInteger, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_error_at", UTCDateTime, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

sync_slices = sa.Table(
    "sync_slices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("stream", sa.String(64), nullable=False),
    sa.Column("lo", sa.BigInteger, nullable=False),  # created >= lo
    sa.Column("hi", sa.BigInteger, nullable=False),  # created < hi
    # The checkpoint: the last object read (Stripe lists newest first) and its `created`.
    sa.Column("cursor", sa.String(255), nullable=True),
    sa.Column("cursor_created", sa.BigInteger, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending | done | failed
    sa.Column("objects", sa.BigInteger, nullable=False),
    sa.Column("pages", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
sa.Index(None, sync_slices.c.source_id, sync_slices.c.stream, sync_slices.c.state)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("state", sa.String(16), nullable=False),  # running | done | failed
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("objects", sa.BigInteger, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("rate_limited", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
)
sa.Index(None, sync_runs.c.source_id, sync_runs.c.started_at)

sync_errors = sa.Table(
    "sync_errors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("stream", sa.String(64), nullable=True),
    sa.Column("slice_id", sa.Integer, nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # transient | terminal
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("code", sa.String(128), nullable=True),
    sa.Column("request_id", sa.String(255), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
)
sa.Index(None, sync_errors.c.source_id, sync_errors.c.occurred_at)


def raw_table(object_type: str) -> sa.Table:
    """The raw table of a Stripe object type (``customer`` → ``stripe_customers``)."""
    return RAW_TABLES[object_type].table


# -- real-time sync: webhooks and event polling (issue 5) --------------------------------

#: Events received but not applied yet (the webhook receiver stores, a job applies).
sa.Index(
    "ix_stripe_events_unprocessed",
    stripe_events.c.source_id,
    stripe_events.c.created,
    postgresql_where=stripe_events.c.processed_at.is_(None),
    sqlite_where=stripe_events.c.processed_at.is_(None),
)

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    ),
    # The event polling cursor: the newest event applied, committed with what it covers.
    sa.Column("poll_cursor", sa.String(255), nullable=True),
    sa.Column("poll_cursor_created", sa.BigInteger, nullable=True),
    sa.Column("poll_started_at", UTCDateTime, nullable=True),  # a poll's claim
    sa.Column("last_poll_at", UTCDateTime, nullable=True),
    sa.Column("last_poll_state", sa.String(16), nullable=True),  # ok | failed | reimported
    sa.Column("last_poll_events", sa.BigInteger, nullable=False),
    sa.Column("last_poll_missed", sa.BigInteger, nullable=False),
    sa.Column("last_poll_note", sa.Text, nullable=True),
    sa.Column("last_webhook_at", UTCDateTime, nullable=True),
    sa.Column("webhooks_received", sa.BigInteger, nullable=False),
    sa.Column("webhook_duplicates", sa.BigInteger, nullable=False),
    sa.Column("endpoint_status", sa.String(32), nullable=True),
    sa.Column("endpoint_checked_at", UTCDateTime, nullable=True),
    sa.Column("reimported_at", UTCDateTime, nullable=True),
    sa.Column("reimport_note", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

webhook_secrets = sa.Table(
    "webhook_secrets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("secret_encrypted", sa.Text, nullable=False),
    sa.Column("hint", sa.String(64), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # added | rotated | endpoint
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
)
sa.Index(None, webhook_secrets.c.source_id)

sync_refetch = sa.Table(
    "sync_refetch",
    metadata,
    sa.Column(
        "source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("object_type", sa.String(64), primary_key=True),
    sa.Column("object_id", sa.String(255), primary_key=True),
    # tie | version | truncated | reimport
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
)


# Derived profile tables (issue 6) are defined with the code that owns them and join this
# metadata here, so migrations, the schema test and source purges see every table.
from stripesync.profiles import store as _profile_tables  # noqa: E402, F401
