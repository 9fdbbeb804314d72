"""Raw store, sources and sync bookkeeping (issue 4).

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Frozen: this file defines its tables itself rather than importing stripesync.store.schema,
so later changes to the schema come as new revisions and never change what this one did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

RAW_TABLES: dict[str, tuple[str, ...]] = {
    "stripe_customers": (),
    "stripe_products": (),
    "stripe_prices": ("product",),
    "stripe_plans": ("product",),
    "stripe_coupons": (),
    "stripe_subscriptions": (),
    "stripe_subscription_items": ("subscription", "price"),
    "stripe_invoices": ("subscription",),
    "stripe_invoice_lines": ("invoice", "subscription", "price"),
    "stripe_charges": ("payment_intent",),
    "stripe_payment_intents": (),
    "stripe_refunds": ("charge", "payment_intent"),
    "stripe_credit_notes": ("invoice",),
}


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _source_fk(table: str, primary_key: bool) -> sa.Column[object]:
    return sa.Column(
        "source_id",
        sa.Integer,
        sa.ForeignKey("sources.id", name=f"fk_{table}_source_id_sources", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("api_key_encrypted", sa.Text, nullable=True),
        sa.Column("key_hint", sa.String(64), nullable=False),
        sa.Column("key_kind", sa.String(16), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("api_base", sa.String(512), nullable=False),
        sa.Column("start_mode", sa.String(8), nullable=False),
        sa.Column("start_at", sa.BigInteger, nullable=True),
        sa.Column("interval_seconds", sa.Integer, nullable=False),
        sa.Column("permissions", JSONType, nullable=False),
        sa.Column("polling_only", sa.Boolean, nullable=False),
        sa.Column("webhook_endpoint_id", sa.String(255), nullable=True),
        sa.Column("webhook_secret_encrypted", sa.Text, nullable=True),
        sa.Column("account_id", sa.String(255), nullable=True),
        sa.Column("profile_settings", JSONType, nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _when("disconnected_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sources"),
        sa.UniqueConstraint("name", name="uq_sources_name"),
    )

    for table, links in RAW_TABLES.items():
        op.create_table(
            table,
            _source_fk(table, primary_key=True),
            sa.Column("id", sa.String(255), primary_key=True),
            sa.Column("customer", sa.String(255), nullable=True),
            sa.Column("status", sa.String(64), nullable=True),
            sa.Column("created", sa.BigInteger, nullable=True),
            sa.Column("livemode", sa.Boolean, nullable=False),
            sa.Column("deleted", sa.Boolean, nullable=False),
            *(sa.Column(link, sa.String(255), nullable=True) for link in links),
            sa.Column("data", JSONType, nullable=False),
            sa.Column("version_lo", sa.BigInteger, nullable=False),
            sa.Column("version_hi", sa.BigInteger, nullable=False),
            _when("synced_at"),
            sa.PrimaryKeyConstraint("source_id", "id", name=f"pk_{table}"),
        )
        for column in ("customer", "created", *links):
            op.create_index(f"ix_{table}_source_id_{column}", table, ["source_id", column])

    op.create_table(
        "stripe_events",
        _source_fk("stripe_events", primary_key=True),
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("api_version", sa.String(64), nullable=True),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("object_id", sa.String(255), nullable=True),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("received_via", sa.String(16), nullable=False),
        _when("received_at"),
        _when("processed_at", nullable=True),
        sa.PrimaryKeyConstraint("source_id", "id", name="pk_stripe_events"),
    )
    op.create_index("ix_stripe_events_source_id_created", "stripe_events", ["source_id", "created"])
    op.create_index(
        "ix_stripe_events_source_id_object_id", "stripe_events", ["source_id", "object_id"]
    )

    op.create_table(
        "sync_streams",
        _source_fk("sync_streams", primary_key=True),
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("range_lo", sa.BigInteger, nullable=True),
        sa.Column("range_hi", sa.BigInteger, nullable=True),
        sa.Column("objects", sa.BigInteger, nullable=False),
        sa.Column("pages", sa.BigInteger, nullable=False),
        _when("started_at", nullable=True),
        _when("finished_at", nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _when("last_error_at", nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("source_id", "stream", name="pk_sync_streams"),
    )

    op.create_table(
        "sync_slices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _source_fk("sync_slices", primary_key=False),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("lo", sa.BigInteger, nullable=False),
        sa.Column("hi", sa.BigInteger, nullable=False),
        sa.Column("cursor", sa.String(255), nullable=True),
        sa.Column("cursor_created", sa.BigInteger, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("objects", sa.BigInteger, nullable=False),
        sa.Column("pages", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_sync_slices"),
    )
    op.create_index(
        "ix_sync_slices_source_id_stream_state", "sync_slices", ["source_id", "stream", "state"]
    )

    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _source_fk("sync_runs", primary_key=False),
        sa.Column("state", sa.String(16), nullable=False),
        _when("started_at"),
        _when("heartbeat_at"),
        _when("finished_at", nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("objects", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("rate_limited", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_index("ix_sync_runs_source_id_started_at", "sync_runs", ["source_id", "started_at"])

    op.create_table(
        "sync_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _source_fk("sync_errors", primary_key=False),
        sa.Column("stream", sa.String(64), nullable=True),
        sa.Column("slice_id", sa.Integer, nullable=True),
        _when("occurred_at"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("code", sa.String(128), nullable=True),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_errors"),
    )
    op.create_index(
        "ix_sync_errors_source_id_occurred_at", "sync_errors", ["source_id", "occurred_at"]
    )


def downgrade() -> None:
    for table in ("sync_errors", "sync_runs", "sync_slices", "sync_streams", "stripe_events"):
        op.drop_table(table)
    for table in reversed(list(RAW_TABLES)):
        op.drop_table(table)
    op.drop_table("sources")
