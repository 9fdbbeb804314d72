"""Customer profiles: profiles, their Stripe customers, merges, pins, stage history and
revenue movements (issue 6).

Revision ID: 0003_profiles
Revises: 0002_webhooks
Create Date: 2026-11-24

Frozen like 0001: the tables are spelled out here, not imported from
stripesync.profiles.store, so later schema changes come as new revisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003_profiles"
down_revision: str | None = "0002_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    referred = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column], [target], name=f"fk_{table}_{column}_{referred}", ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("link_id", sa.String(255), nullable=False),
        sa.Column("created_via", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("merged_into", sa.Integer, nullable=True),
        sa.Column("traits", JSONType, nullable=False),
        sa.Column("app_traits", JSONType, nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("mrr", JSONType, nullable=False),
        sa.Column("arr", JSONType, nullable=False),
        sa.Column("reporting_currency", sa.String(3), nullable=True),
        sa.Column("reporting_mrr", sa.BigInteger, nullable=True),
        sa.Column("reporting_arr", sa.BigInteger, nullable=True),
        sa.Column("paying", sa.Boolean, nullable=False),
        sa.Column("stage", sa.String(64), nullable=True),
        _when("stage_since", nullable=True),
        _when("renewal_at", nullable=True),
        _when("first_seen_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_profiles"),
        sa.UniqueConstraint("kind", "link_id", name="uq_profiles_kind_link_id"),
    )
    op.create_index("ix_profiles_stage", "profiles", ["stage"])
    op.create_index("ix_profiles_status", "profiles", ["status"])

    op.create_table(
        "profile_merges",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("profile_id", sa.Integer, nullable=False),
        sa.Column("customers", JSONType, nullable=False),
        sa.Column("added", JSONType, nullable=False),
        _when("merged_at"),
        _when("undone_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_profile_merges"),
        _fk("profile_merges", "profile_id", "profiles.id", "CASCADE"),
    )
    op.create_index("ix_profile_merges_profile_id", "profile_merges", ["profile_id"])

    op.create_table(
        "profile_customers",
        sa.Column("source_id", sa.Integer, nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("profile_id", sa.Integer, nullable=True),
        sa.Column("link_id", sa.String(255), nullable=True),
        sa.Column("link_source", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("traits", JSONType, nullable=False),
        sa.Column("mrr", JSONType, nullable=False),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("merge_id", sa.Integer, nullable=True),
        sa.Column("history_digest", sa.String(32), nullable=True),
        _when("linked_at", nullable=True),
        _when("computed_at"),
        sa.PrimaryKeyConstraint("source_id", "customer_id", name="pk_profile_customers"),
        _fk("profile_customers", "source_id", "sources.id", "CASCADE"),
        _fk("profile_customers", "profile_id", "profiles.id", "SET NULL"),
    )
    op.create_index("ix_profile_customers_profile_id", "profile_customers", ["profile_id"])

    op.create_table(
        "profile_overrides",
        sa.Column("source_id", sa.Integer, nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("profile_id", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("source_id", "customer_id", name="pk_profile_overrides"),
        _fk("profile_overrides", "source_id", "sources.id", "CASCADE"),
        _fk("profile_overrides", "profile_id", "profiles.id", "CASCADE"),
    )

    op.create_table(
        "profile_stage_history",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("profile_id", sa.Integer, nullable=False),
        sa.Column("from_stage", sa.String(64), nullable=True),
        sa.Column("to_stage", sa.String(64), nullable=True),
        _when("at"),
        _when("recorded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_profile_stage_history"),
        _fk("profile_stage_history", "profile_id", "profiles.id", "CASCADE"),
    )
    op.create_index(
        "ix_profile_stage_history_profile_id_at", "profile_stage_history", ["profile_id", "at"]
    )

    op.create_table(
        "revenue_movements",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("source_id", sa.Integer, nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("mrr_before", sa.BigInteger, nullable=False),
        sa.Column("mrr_after", sa.BigInteger, nullable=False),
        sa.Column("arr_before", sa.BigInteger, nullable=False),
        sa.Column("arr_after", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_revenue_movements"),
        _fk("revenue_movements", "source_id", "sources.id", "CASCADE"),
    )
    op.create_index(
        "ix_revenue_movements_source_id_customer_id",
        "revenue_movements",
        ["source_id", "customer_id"],
    )
    op.create_index("ix_revenue_movements_at", "revenue_movements", ["at"])


def downgrade() -> None:
    op.drop_index("ix_revenue_movements_at", table_name="revenue_movements")
    op.drop_index("ix_revenue_movements_source_id_customer_id", table_name="revenue_movements")
    op.drop_table("revenue_movements")
    op.drop_index("ix_profile_stage_history_profile_id_at", table_name="profile_stage_history")
    op.drop_table("profile_stage_history")
    op.drop_table("profile_overrides")
    op.drop_index("ix_profile_customers_profile_id", table_name="profile_customers")
    op.drop_table("profile_customers")
    op.drop_index("ix_profile_merges_profile_id", table_name="profile_merges")
    op.drop_table("profile_merges")
    op.drop_index("ix_profiles_status", table_name="profiles")
    op.drop_index("ix_profiles_stage", table_name="profiles")
    op.drop_table("profiles")
