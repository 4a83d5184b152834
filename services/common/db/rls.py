"""Row-level security for tenant-owned tables (PostgreSQL only).

The policy compares each row's `tenant_id` with the `hacs.tenant_id` setting
that `Database.transaction()` sets per transaction. FORCE makes it apply to
the table owner too, so the service's own role cannot bypass it; only a
superuser can, and HACS never connects as one (the test suite checks).
"""

from __future__ import annotations

from alembic import op

from services.common.db.engine import TENANT_SETTING


def enable_tenant_isolation(table: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    current = f"current_setting('{TENANT_SETTING}', true)"
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING (tenant_id = {current}) WITH CHECK (tenant_id = {current})"
    )


def disable_tenant_isolation(table: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
    op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
