"""Members of a tenant: people and AI agents, with roles and permissions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    QuotaViolation,
)
from services.common.etags import check_etag, concurrent_update
from services.common.pagination import decode_page_token, take_page
from services.common.permissions import default_permissions
from services.tenant.api_keys import no_announcement
from services.tenant.models import Actor
from services.tenant.store import TenantStore

UPDATABLE_FIELDS = (
    "display_name",
    "role",
    "permissions",
    "organization",
    "department",
    "security_level",
    "labels",
)


def require_same_tenant(caller: Caller, tenant_id: str, permission: str) -> None:
    """A name in another tenant is refused the same way whether it exists or not."""
    if caller.tenant_id != tenant_id:
        raise Forbidden(f"tenants/{tenant_id} is not the caller's tenant", permission=permission)


class ActorDirectory:
    def __init__(
        self, store: TenantStore, on_change: Callable[[str], Awaitable[None]] = no_announcement
    ) -> None:
        self._store = store
        # Told the tenant id once an edit or a deletion is committed: the actor's tokens
        # narrow to its new permissions, or end, in every replica.
        self._on_change = on_change

    async def create(self, caller: Caller, actor: Actor) -> Actor:
        require_same_tenant(caller, actor.tenant_id, "admin:tenant")
        caller.require("admin:tenant", actor.name)
        now = utcnow()
        actor = actor.with_changes(
            permissions=tuple(actor.permissions) or tuple(default_permissions(actor.role)),
            is_active=True,
            create_time=now,
            update_time=now,
            version=1,
        )
        async with self._store.transaction(actor.tenant_id) as tx:
            tenant = await tx.get_tenant(actor.tenant_id, for_update=True)
            if tenant is None:
                raise NotFound("Tenant", f"tenants/{actor.tenant_id}")
            if await tx.get_actor(actor.tenant_id, actor.id) is not None:
                raise AlreadyExists("Actor", actor.name)
            limit = tenant.limits.max_users
            if await tx.count_active_actors(actor.tenant_id) >= limit:
                raise QuotaExceeded(
                    f"tenant {tenant.name!r} has reached its plan's limit of "
                    f"{limit} active actors; "
                    "deactivate one or move to a larger plan",
                    [QuotaViolation(tenant.name, f"max_users={limit}")],
                )
            await tx.add_actor(actor)
        return actor

    async def get(self, caller: Caller, tenant_id: str, actor_id: str) -> Actor:
        require_same_tenant(caller, tenant_id, "read:actor")
        name = f"tenants/{tenant_id}/actors/{actor_id}"
        if caller.actor_id != actor_id:
            caller.require("read:actor", name)
        async with self._store.transaction(tenant_id) as tx:
            actor = await tx.get_actor(tenant_id, actor_id)
        if actor is None:
            raise NotFound("Actor", name)
        return actor

    async def list(
        self, caller: Caller, tenant_id: str, page_size: int, page_token: str, show_deleted: bool
    ) -> tuple[list[Actor], str]:
        require_same_tenant(caller, tenant_id, "read:actor")
        caller.require("read:actor", f"tenants/{tenant_id}")
        after = decode_page_token("actors", page_token) if page_token else ""
        async with self._store.transaction(tenant_id) as tx:
            actors = await tx.list_actors(
                tenant_id, after_id=after, limit=page_size + 1, show_deleted=show_deleted
            )
        return take_page(actors, page_size, "actors", lambda a: a.id)

    async def update(
        self, caller: Caller, changes: Actor, paths: Sequence[str], etag: str
    ) -> Actor:
        require_same_tenant(caller, changes.tenant_id, "admin:tenant")
        caller.require("admin:tenant", changes.name)
        async with self._store.transaction(changes.tenant_id) as tx:
            current = await tx.get_actor(changes.tenant_id, changes.id)
            if current is None:
                raise NotFound("Actor", changes.name)
            check_etag(current.name, current.version, etag)
            updates: dict[str, object] = {p: getattr(changes, p) for p in paths}
            if "permissions" in updates and not updates["permissions"]:
                # An empty list means "the role's defaults", as on create.
                role = str(updates.get("role", current.role))
                updates["permissions"] = tuple(default_permissions(role))
            updated = current.with_changes(
                **updates, update_time=utcnow(), version=current.version + 1
            )
            if not await tx.save_actor(updated, expected_version=current.version):
                raise concurrent_update(current.name)
        await self._on_change(updated.tenant_id)
        return updated

    async def delete(self, caller: Caller, tenant_id: str, actor_id: str, etag: str) -> Actor:
        """Deactivate the actor and revoke its API keys; its history stays."""
        name = f"tenants/{tenant_id}/actors/{actor_id}"
        require_same_tenant(caller, tenant_id, "admin:tenant")
        caller.require("admin:tenant", name)
        if caller.actor_id == actor_id:
            raise Conflict("an actor cannot delete itself; ask another administrator", subject=name)
        async with self._store.transaction(tenant_id) as tx:
            current = await tx.get_actor(tenant_id, actor_id)
            if current is None:
                raise NotFound("Actor", name)
            check_etag(name, current.version, etag)
            now = utcnow()
            updated = current.with_changes(
                is_active=False, update_time=now, version=current.version + 1
            )
            if not await tx.save_actor(updated, expected_version=current.version):
                raise concurrent_update(name)
            await tx.revoke_api_keys(tenant_id, now, actor_id=actor_id)
        await self._on_change(tenant_id)
        return updated
