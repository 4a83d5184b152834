"""The audit log's hash chain: a sequence number and hashes per event, per tenant.

Adds nullable columns and a unique (tenant, sequence) index, then links the events
already in the table, each tenant's in id order (services/common/audit_chain.py). Events
that a build from before this revision writes during a rolling upgrade stay unlinked
(no sequence): `hacs audit verify` counts them and the chain goes on after them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from alembic import op

from services.common.audit_chain import GENESIS, link
from services.common.db.engine import TENANT_SETTING

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
# New nullable columns and an index: the code before it neither reads nor needs them.
kind = "expand"

BATCH = 5_000


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as table:
        table.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        table.add_column(sa.Column("content_hash", sa.String(64), nullable=True))
        table.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
    op.create_index("ux_audit_events_tenant_seq", "audit_events", ["tenant_id", "seq"], unique=True)
    _link_existing(op.get_bind())


def _link_existing(connection: sa.Connection) -> None:
    events = sa.table(
        "audit_events",
        sa.column("id", sa.BigInteger()),
        sa.column("tenant_id", sa.String()),
        sa.column("event_time", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String()),
        sa.column("method", sa.String()),
        sa.column("permission", sa.String()),
        sa.column("resource", sa.String()),
        sa.column("outcome", sa.String()),
        sa.column("details", sa.JSON()),
        sa.column("seq", sa.BigInteger()),
        sa.column("prev_hash", sa.String()),
        sa.column("content_hash", sa.String()),
        sa.column("chain_hash", sa.String()),
    )
    # Row-level security hides every tenant's rows from a connection without a tenant: each
    # registered tenant's events are linked as that tenant (events of a tenant no longer
    # registered stay unlinked; `hacs audit verify` would count them).
    postgres = connection.dialect.name == "postgresql"
    tenants = [row[0] for row in connection.execute(sa.text("SELECT id FROM tenants"))]
    update = (
        events.update()
        .where(events.c.id == sa.bindparam("event_id"))
        .values(
            seq=sa.bindparam("new_seq"),
            prev_hash=sa.bindparam("new_prev"),
            content_hash=sa.bindparam("new_content"),
            chain_hash=sa.bindparam("new_chain"),
        )
    )
    for tenant in tenants:
        if postgres:
            connection.execute(
                sa.text("SELECT set_config(:setting, :tenant, true)"),
                {"setting": TENANT_SETTING, "tenant": tenant},
            )
        seq, prev, last_id = 0, GENESIS, -1
        while True:
            rows = (
                connection.execute(
                    sa.select(events)
                    .where(events.c.tenant_id == tenant, events.c.id > last_id)
                    .order_by(events.c.id)
                    .limit(BATCH)
                )
                .mappings()
                .all()
            )
            if not rows:
                break
            changes = []
            for row in rows:
                seq += 1
                moment = row["event_time"]
                if moment.tzinfo is None:  # SQLite returns naive UTC
                    moment = moment.replace(tzinfo=UTC)
                fields = link(seq, prev, {**row, "event_time": moment})
                prev = fields.chain_hash
                changes.append(
                    {
                        "event_id": row["id"],
                        "new_seq": seq,
                        "new_prev": fields.prev_hash,
                        "new_content": fields.content_hash,
                        "new_chain": fields.chain_hash,
                    }
                )
            connection.execute(update, changes)
            last_id = rows[-1]["id"]
    if postgres:
        connection.execute(
            sa.text("SELECT set_config(:setting, '', true)"), {"setting": TENANT_SETTING}
        )


def downgrade() -> None:
    op.drop_index("ux_audit_events_tenant_seq", table_name="audit_events")
    with op.batch_alter_table("audit_events") as table:
        table.drop_column("chain_hash")
        table.drop_column("content_hash")
        table.drop_column("prev_hash")
        table.drop_column("seq")
