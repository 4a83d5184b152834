"""Records, their versions, filter rows (codes, labels), the change log and counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db.base import JsonDocument, UtcDateTime
from services.common.db.rls import disable_tenant_isolation, enable_tenant_isolation

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
# New tables and indexes only: code written before it keeps working (compatibility.py).
kind = "expand"

TENANT_OWNED = (
    "records",
    "record_versions",
    "record_codes",
    "record_labels",
    "change_log",
    "tenant_counters",
    "idempotent_requests",
)


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("collection", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=10), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("commit_time", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("previous_patient_id", sa.String(length=64), nullable=True),
        sa.Column("labels", JsonDocument, nullable=False),
        sa.Column("changed_paths", JsonDocument, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "sequence", name=op.f("pk_change_log")),
    )
    op.create_index("ix_change_log_record", "change_log", ["tenant_id", "collection", "record_id"])

    op.create_table(
        "idempotent_requests",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name=op.f("pk_idempotent_requests")),
    )
    op.create_index(
        "ix_idempotent_requests_time", "idempotent_requests", ["tenant_id", "create_time"]
    )

    op.create_table(
        "record_codes",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("collection", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "collection", "id", "system", "code", name=op.f("pk_record_codes")
        ),
    )
    op.create_index("ix_record_codes_code", "record_codes", ["tenant_id", "code", "system"])

    op.create_table(
        "record_labels",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("collection", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("value", sa.String(length=63), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "collection", "id", "key", name=op.f("pk_record_labels")
        ),
    )
    op.create_index("ix_record_labels_key_value", "record_labels", ["tenant_id", "key", "value"])

    op.create_table(
        "record_versions",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("collection", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("delete_time", UtcDateTime(), nullable=True),
        sa.Column("body", JsonDocument, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "collection", "id", "version", name=op.f("pk_record_versions")
        ),
    )
    op.create_table(
        "records",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("collection", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("clinical_time", UtcDateTime(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("delete_time", UtcDateTime(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("body", JsonDocument, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "collection", "id", name=op.f("pk_records")),
    )
    op.create_index(
        "ix_records_patient", "records", ["tenant_id", "patient_id", "collection", "clinical_time"]
    )
    op.create_index(
        "ix_records_type_clinical", "records", ["tenant_id", "collection", "clinical_time", "id"]
    )
    op.create_index(
        "ix_records_type_updated", "records", ["tenant_id", "collection", "update_time", "id"]
    )
    op.create_index(
        "ix_records_updated", "records", ["tenant_id", "update_time", "collection", "id"]
    )

    op.create_table(
        "tenant_counters",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("live_patients", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_counters")),
    )
    for table in TENANT_OWNED:
        enable_tenant_isolation(table)


def downgrade() -> None:
    for table in TENANT_OWNED:
        disable_tenant_isolation(table)
    op.drop_table("tenant_counters")
    op.drop_index("ix_records_updated", table_name="records")
    op.drop_index("ix_records_type_updated", table_name="records")
    op.drop_index("ix_records_type_clinical", table_name="records")
    op.drop_index("ix_records_patient", table_name="records")

    op.drop_table("records")
    op.drop_table("record_versions")
    op.drop_index("ix_record_labels_key_value", table_name="record_labels")

    op.drop_table("record_labels")
    op.drop_index("ix_record_codes_code", table_name="record_codes")

    op.drop_table("record_codes")
    op.drop_index("ix_idempotent_requests_time", table_name="idempotent_requests")

    op.drop_table("idempotent_requests")
    op.drop_index("ix_change_log_record", table_name="change_log")

    op.drop_table("change_log")
