"""Real-time sync: webhook secrets, the polling cursor and health, refetches (issue 5).

Revision ID: 0002_webhooks
Revises: 0001
Create Date: 2026-11-24

Frozen like 0001: the tables are spelled out here, not imported from the schema module.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_webhooks"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


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
    unprocessed = sa.text("processed_at IS NULL")
    op.create_index(
        "ix_stripe_events_unprocessed",
        "stripe_events",
        ["source_id", "created"],
        postgresql_where=unprocessed,
        sqlite_where=unprocessed,
    )
    op.create_table(
        "sync_state",
        _source_fk("sync_state", primary_key=True),
        sa.Column("poll_cursor", sa.String(255), nullable=True),
        sa.Column("poll_cursor_created", sa.BigInteger, nullable=True),
        _when("poll_started_at", nullable=True),
        _when("last_poll_at", nullable=True),
        sa.Column("last_poll_state", sa.String(16), nullable=True),
        sa.Column("last_poll_events", sa.BigInteger, nullable=False),
        sa.Column("last_poll_missed", sa.BigInteger, nullable=False),
        sa.Column("last_poll_note", sa.Text, nullable=True),
        _when("last_webhook_at", nullable=True),
        sa.Column("webhooks_received", sa.BigInteger, nullable=False),
        sa.Column("webhook_duplicates", sa.BigInteger, nullable=False),
        sa.Column("endpoint_status", sa.String(32), nullable=True),
        _when("endpoint_checked_at", nullable=True),
        _when("reimported_at", nullable=True),
        sa.Column("reimport_note", sa.Text, nullable=True),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("source_id", name="pk_sync_state"),
    )
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _source_fk("webhook_secrets", primary_key=False),
        sa.Column("secret_encrypted", sa.Text, nullable=False),
        sa.Column("hint", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        _when("created_at"),
        _when("expires_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_secrets"),
    )
    op.create_index("ix_webhook_secrets_source_id", "webhook_secrets", ["source_id"])
    op.create_table(
        "sync_refetch",
        _source_fk("sync_refetch", primary_key=True),
        sa.Column("object_type", sa.String(64), primary_key=True),
        sa.Column("object_id", sa.String(255), primary_key=True),
        sa.Column("reason", sa.String(16), nullable=False),
        _when("requested_at"),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint(
            "source_id", "object_type", "object_id", name="pk_sync_refetch"
        ),
    )


def downgrade() -> None:
    op.drop_table("sync_refetch")
    op.drop_index("ix_webhook_secrets_source_id", table_name="webhook_secrets")
    op.drop_table("webhook_secrets")
    op.drop_table("sync_state")
    op.drop_index("ix_stripe_events_unprocessed", table_name="stripe_events")
