"""A tenant's standing (active? calls per minute?) for the rate limiter.

Every service consults it, whichever process it runs in: in mesh mode all
services share the PostgreSQL database, so they read the tenant registry
directly instead of calling the tenant service on every request.
"""

from __future__ import annotations

from sqlalchemy import select

from services.common.db.engine import Database
from services.common.runtime.rate_limit import StandingLookup, TenantStanding
from services.tenant.models import ACTIVE, PLANS, Limits
from services.tenant.tables import TenantRow


def standing_lookup(db: Database) -> StandingLookup:
    async def lookup(tenant_id: str) -> TenantStanding | None:
        async with db.transaction(tenant_id) as session:
            row = await session.scalar(select(TenantRow).where(TenantRow.id == tenant_id))
        if row is None:
            return None
        overrides = Limits(row.max_users, row.max_patients, row.calls_per_minute)
        limits = overrides.over(PLANS[row.plan])
        return TenantStanding(
            active=row.state == ACTIVE,
            calls_per_minute=limits.calls_per_minute,
            max_patients=limits.max_patients,
        )

    return lookup
