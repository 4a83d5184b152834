"""The oldest code revision the schema admits, beside alembic_version.

One row, `hacs_schema_compat.min_code_revision`, which `hacs migrate` rewrites
after every upgrade from the kinds the migrations declare
(services/common/db/compatibility.py). A build that finds the database newer
than itself reads it to decide whether it may run: this is what lets a release
be rolled back (docs/deploy-migrations.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
# A new table: code written before it never reads it.
kind = "expand"


def upgrade() -> None:
    op.create_table(
        "hacs_schema_compat",
        sa.Column("min_code_revision", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("min_code_revision", name=op.f("pk_hacs_schema_compat")),
    )


def downgrade() -> None:
    op.drop_table("hacs_schema_compat")
