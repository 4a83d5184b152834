"""Tenant lifecycle: create (with a first administrator), read, list, update, suspend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from services.common.caller import PLATFORM_TENANT, Caller
from services.common.db.base import utcnow
from services.common.errors import AlreadyExists, FieldViolation, Forbidden, Invalid, NotFound
from services.common.etags import check_etag, concurrent_update
from services.common.pagination import decode_page_token, take_page
from services.common.permissions import default_permissions
from services.kernel.tenancy.plans import ACTIVE, SUSPENDED
from services.tenant.api_keys import issue_key, no_announcement
from services.tenant.models import Actor, ApiKey, Tenant
from services.tenant.store import TenantStore

FIRST_ADMIN_ID = "admin"
FIRST_ADMIN_ROLE = "administrator"

UPDATABLE_FIELDS = (
    "display_name",
    "plan",
    "limits",
    "limits.max_users",
    "limits.max_patients",
    "limits.calls_per_minute",
    "limits.embedding_tokens_per_month",
    "limits.llm_tokens_per_day",
    "labels",
)


class TenantAdmin:
    def __init__(
        self, store: TenantStore, on_change: Callable[[str], Awaitable[None]] = no_announcement
    ) -> None:
        self._store = store
        # Told the tenant id after a plan, limit or state change, once committed
        # (admission forgets the tenant's standing in every replica).
        self._on_change = on_change

    async def create(
        self, caller: Caller, tenant: Tenant, admin: Actor
    ) -> tuple[Tenant, Actor, ApiKey]:
        """Create the tenant, its first administrator and the administrator's key, atomically."""
        caller.require_platform_operator()
        if tenant.id == PLATFORM_TENANT:
            raise Invalid(FieldViolation("tenant_id", f"{PLATFORM_TENANT!r} is reserved"))
        now = utcnow()
        tenant = replace(tenant, state=ACTIVE, create_time=now, update_time=now, version=1)
        admin = admin.with_changes(
            tenant_id=tenant.id,
            role=admin.role or FIRST_ADMIN_ROLE,
            permissions=tuple(admin.permissions)
            or tuple(default_permissions(admin.role or FIRST_ADMIN_ROLE)),
            is_active=True,
            create_time=now,
            update_time=now,
            version=1,
        )
        async with self._store.transaction(tenant.id) as tx:
            if await tx.get_tenant(tenant.id) is not None:
                raise AlreadyExists("Tenant", tenant.name)
            await tx.add_tenant(tenant)
            await tx.add_actor(admin)
            key = await issue_key(tx, tenant.id, admin.id, "bootstrap administrator key", None)
        return tenant, admin, key

    async def get(self, caller: Caller, tenant_id: str) -> Tenant:
        name = f"tenants/{tenant_id}"
        if not caller.is_platform_operator:
            if caller.tenant_id != tenant_id:
                raise Forbidden(f"{name} is not the caller's tenant", permission="read:tenant")
            caller.require("read:tenant", name)
        async with self._store.transaction(tenant_id) as tx:
            tenant = await tx.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound("Tenant", name)
        return tenant

    async def list(
        self, caller: Caller, page_size: int, page_token: str, show_deleted: bool
    ) -> tuple[list[Tenant], str]:
        caller.require_platform_operator()
        after = decode_page_token("tenants", page_token) if page_token else ""
        async with self._store.transaction(None) as tx:
            tenants = await tx.list_tenants(
                after_id=after, limit=page_size + 1, show_deleted=show_deleted
            )
        return take_page(tenants, page_size, "tenants", lambda t: t.id)

    async def update(
        self, caller: Caller, changes: Tenant, paths: Sequence[str], etag: str
    ) -> Tenant:
        caller.require_platform_operator()
        async with self._store.transaction(changes.id) as tx:
            current = await tx.get_tenant(changes.id, for_update=True)
            if current is None:
                raise NotFound("Tenant", changes.name)
            check_etag(current.name, current.version, etag)
            updated = _apply(current, changes, paths)
            updated = replace(updated, update_time=utcnow(), version=current.version + 1)
            if not await tx.save_tenant(updated, expected_version=current.version):
                raise concurrent_update(current.name)
        await self._on_change(updated.id)
        return updated

    async def delete(self, caller: Caller, tenant_id: str, etag: str) -> Tenant:
        """Suspend: no new tokens, calls refused; all data kept for reactivation or export."""
        caller.require_platform_operator()
        name = f"tenants/{tenant_id}"
        if tenant_id == PLATFORM_TENANT:
            raise Forbidden("the platform tenant cannot be suspended", permission="admin:platform")
        async with self._store.transaction(tenant_id) as tx:
            current = await tx.get_tenant(tenant_id, for_update=True)
            if current is None:
                raise NotFound("Tenant", name)
            check_etag(name, current.version, etag)
            updated = replace(
                current, state=SUSPENDED, update_time=utcnow(), version=current.version + 1
            )
            if not await tx.save_tenant(updated, expected_version=current.version):
                raise concurrent_update(name)
        await self._on_change(updated.id)
        return updated


def _apply(current: Tenant, changes: Tenant, paths: Sequence[str]) -> Tenant:
    limits = current.limit_overrides
    updated = current
    for path in paths:
        if path == "display_name":
            updated = replace(updated, display_name=changes.display_name)
        elif path == "plan":
            updated = replace(updated, plan=changes.plan)
        elif path == "labels":
            updated = replace(updated, labels=dict(changes.labels))
        elif path == "limits":
            limits = changes.limit_overrides
        elif path.startswith("limits."):
            field = path.removeprefix("limits.")
            limits = replace(limits, **{field: getattr(changes.limit_overrides, field)})
    return replace(updated, limit_overrides=limits)
