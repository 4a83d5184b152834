"""Registered embedding models and the indexer's per-tenant cursors.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db.base import UtcDateTime
from services.common.db.rls import disable_tenant_isolation, enable_tenant_isolation

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
# New tables and indexes only: code written before it keeps working (compatibility.py).
kind = "expand"


def upgrade() -> None:
    op.create_table(
        "embedding_models",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("pooling", sa.String(10), nullable=False),
        sa.Column("max_length", sa.Integer(), nullable=False),
        sa.Column("normalize", sa.Boolean(), nullable=False),
        sa.Column("query_prefix", sa.String(200), nullable=False),
        sa.Column("document_prefix", sa.String(200), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embedding_models")),
    )
    op.create_table(
        "index_cursors",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("index_name", sa.String(100), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "index_name", name=op.f("pk_index_cursors")),
    )
    enable_tenant_isolation("index_cursors")


def downgrade() -> None:
    disable_tenant_isolation("index_cursors")
    op.drop_table("index_cursors")
    op.drop_table("embedding_models")
