"""Tenants, actors, API keys, audit events and usage counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db.base import JsonDocument, UtcDateTime
from services.common.db.rls import disable_tenant_isolation, enable_tenant_isolation

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
# New tables and indexes only: code written before it keeps working (compatibility.py).
kind = "expand"

TENANT_OWNED = ("actors", "api_keys", "audit_events", "usage_counters")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(20), nullable=False),
        sa.Column("max_users", sa.Integer(), nullable=False),
        sa.Column("max_patients", sa.BigInteger(), nullable=False),
        sa.Column("calls_per_minute", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("labels", JsonDocument, nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "actors",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("permissions", JsonDocument, nullable=False),
        sa.Column("organization", sa.String(200), nullable=False),
        sa.Column("department", sa.String(200), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("security_level", sa.String(20), nullable=False),
        sa.Column("labels", JsonDocument, nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_actors_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_actors")),
    )
    op.create_table(
        "api_keys",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("actor_id", sa.String(40), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("secret_prefix", sa.String(40), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=True),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("revoke_time", UtcDateTime(), nullable=True),
        sa.Column("last_use_time", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "actor_id"],
            ["actors.tenant_id", "actors.id"],
            name=op.f("fk_api_keys_tenant_id_actor_id_actors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_api_keys")),
    )
    op.create_index("ix_api_keys_tenant_actor", "api_keys", ["tenant_id", "actor_id"])
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("event_time", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("permission", sa.String(80), nullable=False),
        sa.Column("resource", sa.String(400), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("details", JsonDocument, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_tenant_time", "audit_events", ["tenant_id", "event_time"])
    op.create_table(
        "usage_counters",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "method", name=op.f("pk_usage_counters")),
    )
    for table in TENANT_OWNED:
        enable_tenant_isolation(table)


def downgrade() -> None:
    for table in TENANT_OWNED:
        disable_tenant_isolation(table)
    op.drop_table("usage_counters")
    op.drop_index("ix_audit_events_tenant_time", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_api_keys_tenant_actor", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("actors")
    op.drop_table("tenants")
