"""Hospital sign-in: identity providers per tenant, the people linked through them, and
the one-use values of browser sign-in (OIDC states, SAML request and assertion ids).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db.base import JsonDocument, UtcDateTime
from services.common.db.rls import disable_tenant_isolation, enable_tenant_isolation

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None
# New tables: code written before them never reads them.
kind = "expand"

TABLES = ("identity_providers", "external_identities", "sign_in_nonces")


def upgrade() -> None:
    op.create_table(
        "identity_providers",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("config", JsonDocument, nullable=False),
        sa.Column("role_mappings", JsonDocument, nullable=False),
        sa.Column("allowed_groups", JsonDocument, nullable=False),
        sa.Column("jit_provisioning", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("update_time", UtcDateTime, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_identity_providers")),
    )
    op.create_table(
        "external_identities",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("actor_id", sa.String(40), nullable=False),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("groups", JsonDocument, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("create_time", UtcDateTime, nullable=False),
        sa.Column("last_sign_in_time", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "provider_id", "subject", name=op.f("pk_external_identities")
        ),
    )
    op.create_index(
        "ix_external_identities_actor", "external_identities", ["tenant_id", "actor_id"]
    )
    op.create_table(
        "sign_in_nonces",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("provider_id", sa.String(40), nullable=False),
        sa.Column("data", JsonDocument, nullable=False),
        sa.Column("expire_time", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "value", name=op.f("pk_sign_in_nonces")),
    )
    for table in TABLES:
        enable_tenant_isolation(table)


def downgrade() -> None:
    for table in TABLES:
        disable_tenant_isolation(table)
    op.drop_table("sign_in_nonces")
    op.drop_index("ix_external_identities_actor", table_name="external_identities")
    op.drop_table("external_identities")
    op.drop_table("identity_providers")
