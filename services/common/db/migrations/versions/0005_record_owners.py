"""Record owners: who a record belongs to, on the record and on each change.

A record type may have an owner (kernel/records/access.py): a MemoryBlock
belongs to its agent. Lists and change streams filter on it in SQL, so it is
a column, set on every write; existing memories get theirs from their body,
and their past changes the owner the memory has now.

An expand migration: the columns are nullable and code written before it
never reads them. That code, run again after a rollback, writes memories and
changes without an owner, which agents' lists and change streams would then
hide from their owner. So the backfill is also this migration's `reconcile`,
which `hacs migrate` (and HACS_AUTO_MIGRATE) runs on every upgrade, rolling
forward again included: it fills every owner still NULL, and only those.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from services.common.db.engine import TENANT_SETTING

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
# Nullable columns, an index and a backfill: code written before it keeps working.
kind = "expand"

OWNED = "memoryBlocks"


def upgrade() -> None:
    op.add_column("records", sa.Column("owner", sa.String(200), nullable=True))
    op.add_column("change_log", sa.Column("owner", sa.String(200), nullable=True))
    op.create_index("ix_records_owner", "records", ["tenant_id", "collection", "owner"])
    reconcile(op.get_bind())


def reconcile(bind: Any) -> None:
    """Give memories without an owner, and their changes, the agent their body names."""
    postgres = bind.dialect.name == "postgresql"
    tenants = [row[0] for row in bind.execute(sa.text("SELECT id FROM tenants"))]
    for tenant_id in tenants:
        if postgres:  # row-level security: this tenant's rows only, as every transaction
            bind.execute(
                sa.text("SELECT set_config(:setting, :tenant, true)"),
                {"setting": TENANT_SETTING, "tenant": tenant_id},
            )
        rows = bind.execute(
            sa.text(
                "SELECT id, body FROM records "
                "WHERE tenant_id = :t AND collection = :c AND owner IS NULL"
            ),
            {"t": tenant_id, "c": OWNED},
        ).all()
        for record_id, body in rows:
            document = body if isinstance(body, dict) else json.loads(body)
            owner = (document.get("memory_block") or {}).get("agent") or None
            if owner is None:
                continue
            bind.execute(
                sa.text(
                    "UPDATE records SET owner = :owner "
                    "WHERE tenant_id = :t AND collection = :c AND id = :id"
                ),
                {"owner": owner, "t": tenant_id, "c": OWNED, "id": record_id},
            )
        bind.execute(
            sa.text(
                "UPDATE change_log SET owner = (SELECT r.owner FROM records r "
                "WHERE r.tenant_id = change_log.tenant_id AND r.collection = change_log.collection "
                "AND r.id = change_log.record_id) "
                "WHERE tenant_id = :t AND collection = :c AND owner IS NULL AND EXISTS ("
                "SELECT 1 FROM records r WHERE r.tenant_id = change_log.tenant_id "
                "AND r.collection = change_log.collection AND r.id = change_log.record_id "
                "AND r.owner IS NOT NULL)"
            ),
            {"t": tenant_id, "c": OWNED},
        )
    if postgres:
        bind.execute(sa.text("SELECT set_config(:setting, '', true)"), {"setting": TENANT_SETTING})


def downgrade() -> None:
    op.drop_index("ix_records_owner", table_name="records")
    op.drop_column("change_log", "owner")
    op.drop_column("records", "owner")
