"""A tenant's standing (active? calls per minute? how many patients?), and the tenant list.

Every service consults it, whichever process it runs in: in mesh mode all
services share the PostgreSQL database, so they read the tenant registry
directly instead of calling the tenant service on every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import select

from services.common.db.engine import Database
from services.common.runtime.rate_limit import StandingLookup, TenantStanding
from services.kernel.tenancy.plans import ACTIVE, PLANS, Limits
from services.kernel.tenancy.tables import TenantRow


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


PatientLimit = Callable[[str], Awaitable[int]]


def patient_limit(db: Database) -> PatientLimit:
    """How many live patients a tenant may hold (0: no such tenant)."""
    lookup = standing_lookup(db)

    async def limit(tenant_id: str) -> int:
        standing = await lookup(tenant_id)
        return standing.max_patients if standing else 0

    return limit


async def tenant_ids(db: Database) -> list[str]:
    """Every tenant's id, in order (the registry is not row-level secured)."""
    async with db.transaction(None) as session:
        return list(await session.scalars(select(TenantRow.id).order_by(TenantRow.id)))
