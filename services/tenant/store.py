"""Storage of tenants, actors and API keys (SQLAlchemy: SQLite or PostgreSQL).

Domain code opens `store.transaction(tenant_id)` and calls the few methods
it needs on the returned `TenantTx`; everything inside commits or rolls back
together. Every query of a tenant-owned table filters on `tenant_id` here,
and PostgreSQL's row-level security enforces it a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.engine import Database
from services.kernel.tenancy.standing import limit_overrides
from services.kernel.tenancy.tables import ActorRow, ApiKeyRow, TenantRow
from services.tenant.models import Actor, ApiKey, Tenant


class TenantStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(self, tenant_id: str | None) -> AsyncIterator[TenantTx]:
        async with self.db.transaction(tenant_id) as session:
            yield TenantTx(session)


class TenantTx:
    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    @property
    def session(self) -> AsyncSession:
        """The transaction's session, for another store's reads and writes in it."""
        return self._s

    # -- tenants -----------------------------------------------------------

    async def get_tenant(self, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
        stmt = select(TenantRow).where(TenantRow.id == tenant_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = await self._s.scalar(stmt)
        return _tenant(row) if row else None

    async def add_tenant(self, tenant: Tenant) -> None:
        self._s.add(
            TenantRow(id=tenant.id, create_time=tenant.create_time, **_tenant_columns(tenant))
        )
        await self._s.flush()

    async def list_tenants(self, *, after_id: str, limit: int, show_deleted: bool) -> list[Tenant]:
        stmt = select(TenantRow).where(TenantRow.id > after_id)
        if not show_deleted:
            stmt = stmt.where(TenantRow.state == "active")
        rows = await self._s.scalars(stmt.order_by(TenantRow.id).limit(limit))
        return [_tenant(r) for r in rows]

    async def save_tenant(self, tenant: Tenant, *, expected_version: int) -> bool:
        """Write `tenant` if the stored version is still `expected_version`."""
        result = await self._s.execute(
            update(TenantRow)
            .where(TenantRow.id == tenant.id, TenantRow.version == expected_version)
            .values(**_tenant_columns(tenant))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- actors ------------------------------------------------------------

    async def get_actor(self, tenant_id: str, actor_id: str) -> Actor | None:
        row = await self._s.scalar(
            select(ActorRow).where(ActorRow.tenant_id == tenant_id, ActorRow.id == actor_id)
        )
        return _actor(row) if row else None

    async def add_actor(self, actor: Actor) -> None:
        assert actor.create_time is not None
        self._s.add(
            ActorRow(
                tenant_id=actor.tenant_id,
                id=actor.id,
                create_time=actor.create_time,
                **_actor_columns(actor),
            )
        )
        await self._s.flush()

    async def count_active_actors(self, tenant_id: str) -> int:
        count = await self._s.scalar(
            select(func.count())
            .select_from(ActorRow)
            .where(ActorRow.tenant_id == tenant_id, ActorRow.is_active.is_(True))
        )
        return int(count or 0)

    async def list_actors(
        self, tenant_id: str, *, after_id: str, limit: int, show_deleted: bool
    ) -> list[Actor]:
        stmt = select(ActorRow).where(ActorRow.tenant_id == tenant_id, ActorRow.id > after_id)
        if not show_deleted:
            stmt = stmt.where(ActorRow.is_active.is_(True))
        rows = await self._s.scalars(stmt.order_by(ActorRow.id).limit(limit))
        return [_actor(r) for r in rows]

    async def save_actor(self, actor: Actor, *, expected_version: int) -> bool:
        result = await self._s.execute(
            update(ActorRow)
            .where(
                ActorRow.tenant_id == actor.tenant_id,
                ActorRow.id == actor.id,
                ActorRow.version == expected_version,
            )
            .values(**_actor_columns(actor))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- API keys ------------------------------------------------------------

    async def add_api_key(self, key: ApiKey, secret_hash: str) -> None:
        self._s.add(
            ApiKeyRow(
                tenant_id=key.tenant_id,
                id=key.id,
                actor_id=key.actor_id,
                display_name=key.display_name,
                secret_hash=secret_hash,
                secret_prefix=key.secret_prefix,
                expire_time=key.expire_time,
                create_time=key.create_time,
            )
        )
        await self._s.flush()

    async def get_api_key(self, tenant_id: str, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its stored hash."""
        row = await self._s.scalar(
            select(ApiKeyRow).where(ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.id == key_id)
        )
        return (_api_key(row), row.secret_hash) if row else None

    async def list_api_keys(
        self, tenant_id: str, actor_id: str, *, after_id: str, limit: int
    ) -> list[ApiKey]:
        rows = await self._s.scalars(
            select(ApiKeyRow)
            .where(
                ApiKeyRow.tenant_id == tenant_id,
                ApiKeyRow.actor_id == actor_id,
                ApiKeyRow.id > after_id,
            )
            .order_by(ApiKeyRow.id)
            .limit(limit)
        )
        return [_api_key(r) for r in rows]

    async def count_live_api_keys(self, tenant_id: str, actor_id: str) -> int:
        count = await self._s.scalar(
            select(func.count())
            .select_from(ApiKeyRow)
            .where(
                ApiKeyRow.tenant_id == tenant_id,
                ApiKeyRow.actor_id == actor_id,
                ApiKeyRow.revoke_time.is_(None),
            )
        )
        return int(count or 0)

    async def revoke_api_keys(
        self, tenant_id: str, when: datetime, *, actor_id: str, key_id: str | None = None
    ) -> int:
        stmt = update(ApiKeyRow).where(
            ApiKeyRow.tenant_id == tenant_id,
            ApiKeyRow.actor_id == actor_id,
            ApiKeyRow.revoke_time.is_(None),
        )
        if key_id is not None:
            stmt = stmt.where(ApiKeyRow.id == key_id)
        result = await self._s.execute(stmt.values(revoke_time=when))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def touch_api_key(self, tenant_id: str, key_id: str, when: datetime) -> None:
        await self._s.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.id == key_id)
            .values(last_use_time=when)
        )


def _tenant_columns(tenant: Tenant) -> dict[str, Any]:
    """The columns a tenant write sets (all but the key and the creation time)."""
    return {
        "display_name": tenant.display_name,
        "plan": tenant.plan,
        "max_users": tenant.limit_overrides.max_users,
        "max_patients": tenant.limit_overrides.max_patients,
        "calls_per_minute": tenant.limit_overrides.calls_per_minute,
        "embedding_tokens_per_month": tenant.limit_overrides.embedding_tokens_per_month,
        "llm_tokens_per_day": tenant.limit_overrides.llm_tokens_per_day,
        "state": tenant.state,
        "labels": dict(tenant.labels),
        "update_time": tenant.update_time,
        "version": tenant.version,
    }


def _actor_columns(actor: Actor) -> dict[str, Any]:
    return {
        "display_name": actor.display_name,
        "role": actor.role,
        "permissions": list(actor.permissions),
        "organization": actor.organization,
        "department": actor.department,
        "is_active": actor.is_active,
        "security_level": actor.security_level,
        "labels": dict(actor.labels),
        "update_time": actor.update_time,
        "version": actor.version,
    }


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(
        id=row.id,
        display_name=row.display_name,
        plan=row.plan,
        limit_overrides=limit_overrides(row),
        state=row.state,
        labels=dict(row.labels or {}),
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


def _actor(row: ActorRow) -> Actor:
    return Actor(
        tenant_id=row.tenant_id,
        id=row.id,
        display_name=row.display_name,
        role=row.role,
        permissions=tuple(row.permissions or ()),
        organization=row.organization,
        department=row.department,
        is_active=row.is_active,
        security_level=row.security_level,
        labels=dict(row.labels or {}),
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        tenant_id=row.tenant_id,
        id=row.id,
        actor_id=row.actor_id,
        display_name=row.display_name,
        secret_prefix=row.secret_prefix,
        create_time=row.create_time,
        expire_time=row.expire_time,
        revoke_time=row.revoke_time,
        last_use_time=row.last_use_time,
    )
