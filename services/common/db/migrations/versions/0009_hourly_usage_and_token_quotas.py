"""Usage per tenant and hour, the actors seen each hour, and two token quotas on tenants.

`usage_hourly` holds one value per (tenant, UTC hour, metric, dimension) and
`usage_active_actors` one row per actor seen in an hour (services/common/hourly_usage.py);
both are tenant-owned and row-level secured. `tenants` gains the overrides of the plans'
token quotas, `embedding_tokens_per_month` and `llm_tokens_per_day` (0: the plan's).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db.base import UtcDateTime
from services.common.db.rls import disable_tenant_isolation, enable_tenant_isolation

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
# New tables, and columns with a server default: code written before it neither reads them
# nor fails to write tenants without them.
kind = "expand"

TENANT_OWNED = ("usage_hourly", "usage_active_actors")


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("hour", UtcDateTime(), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("dimension", sa.String(200), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "hour", "metric", "dimension", name=op.f("pk_usage_hourly")
        ),
    )
    op.create_table(
        "usage_active_actors",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("hour", UtcDateTime(), nullable=False),
        sa.Column("actor_id", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "hour", "actor_id", name=op.f("pk_usage_active_actors")
        ),
    )
    for table in TENANT_OWNED:
        enable_tenant_isolation(table)
    op.add_column(
        "tenants",
        sa.Column(
            "embedding_tokens_per_month", sa.BigInteger(), nullable=False, server_default="0"
        ),
    )
    op.add_column(
        "tenants",
        sa.Column("llm_tokens_per_day", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("tenants") as table:
        table.drop_column("llm_tokens_per_day")
        table.drop_column("embedding_tokens_per_month")
    for table_name in TENANT_OWNED:
        disable_tenant_isolation(table_name)
    op.drop_table("usage_active_actors")
    op.drop_table("usage_hourly")
