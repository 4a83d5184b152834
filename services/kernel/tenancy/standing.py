"""What the tenant registry says now: a tenant's standing (active? calls per minute? how
many patients?), whether a token's actor and API key still stand, and the tenant list.

Every service consults it, whichever process it runs in: in mesh mode all
services share the PostgreSQL database, so they read the registry directly
instead of calling the tenant service on every request. The runtime's
admission remembers each answer for at most HACS_REVOCATION_SECONDS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import and_, select

from services.common.db.engine import Database
from services.common.runtime.admission import Credentials, TenantStanding
from services.kernel.tenancy.plans import ACTIVE, PLANS, Limits
from services.kernel.tenancy.tables import ActorRow, ApiKeyRow, TenantRow


class TenancyRegistry:
    """The runtime's `Registry`, read from the tables the tenant service writes."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def tenant(self, tenant_id: str) -> TenantStanding | None:
        async with self._db.read(tenant_id) as session:
            row = await session.scalar(select(TenantRow).where(TenantRow.id == tenant_id))
        if row is None:
            return None
        limits = limit_overrides(row).over(PLANS[row.plan])
        return TenantStanding(
            active=row.state == ACTIVE,
            calls_per_minute=limits.calls_per_minute,
            max_patients=limits.max_patients,
            embedding_tokens_per_month=limits.embedding_tokens_per_month,
            llm_tokens_per_day=limits.llm_tokens_per_day,
        )

    async def credentials(self, tenant_id: str, actor_id: str, key_id: str) -> Credentials | None:
        key = ApiKeyRow
        stmt = (
            select(ActorRow.is_active, ActorRow.role, ActorRow.permissions, key.id, key.revoke_time)
            .outerjoin(
                key,
                and_(
                    key.tenant_id == ActorRow.tenant_id,
                    key.actor_id == ActorRow.id,
                    key.id == key_id,
                ),
            )
            .where(ActorRow.tenant_id == tenant_id, ActorRow.id == actor_id)
        )
        async with self._db.read(tenant_id) as session:
            row = (await session.execute(stmt)).first()
        if row is None:
            return None
        active, role, permissions, found_key, revoke_time = row
        return Credentials(
            actor_active=bool(active),
            role=role,
            permissions=frozenset(permissions or ()),
            key_revoked=bool(key_id) and (found_key is None or revoke_time is not None),
        )


def limit_overrides(row: TenantRow) -> Limits:
    """The limits a tenant's row sets (0 where the plan's apply)."""
    return Limits(
        max_users=row.max_users,
        max_patients=row.max_patients,
        calls_per_minute=row.calls_per_minute,
        embedding_tokens_per_month=row.embedding_tokens_per_month,
        llm_tokens_per_day=row.llm_tokens_per_day,
    )


PatientLimit = Callable[[str], Awaitable[int]]


def patient_limit(db: Database) -> PatientLimit:
    """How many live patients a tenant may hold (0: no such tenant)."""
    registry = TenancyRegistry(db)

    async def limit(tenant_id: str) -> int:
        standing = await registry.tenant(tenant_id)
        return standing.max_patients if standing else 0

    return limit


async def tenant_ids(db: Database) -> list[str]:
    """Every tenant's id, in order (the registry is not row-level secured)."""
    async with db.read(None) as session:
        return list(await session.scalars(select(TenantRow.id).order_by(TenantRow.id)))
