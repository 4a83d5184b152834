"""Tenant administrators register, change and disable their identity providers."""

from __future__ import annotations

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import AlreadyExists, NotFound
from services.common.etags import check_etag, concurrent_update
from services.common.pagination import decode_page_token, take_page
from services.tenant.actors import require_same_tenant
from services.tenant.identity.providers import DISABLED, Provider, ProviderStore

PERMISSION = "admin:tenant"
UPDATABLE_FIELDS = (
    "display_name",
    "oidc",
    "ldap",
    "saml",
    "role_mappings",
    "allowed_groups",
    "jit_provisioning",
)


class IdentityProviders:
    def __init__(self, store: ProviderStore) -> None:
        self._store = store

    async def create(self, caller: Caller, provider: Provider) -> Provider:
        self._check(caller, provider.tenant_id, provider.name)
        now = utcnow()
        provider = provider.with_changes(create_time=now, update_time=now, version=1)
        async with self._store.transaction(provider.tenant_id) as tx:
            if await tx.get(provider.tenant_id, provider.id) is not None:
                raise AlreadyExists("IdentityProvider", provider.name)
            await tx.add(provider)
        return provider

    async def get(self, caller: Caller, tenant_id: str, provider_id: str) -> Provider:
        name = f"tenants/{tenant_id}/identityProviders/{provider_id}"
        self._check(caller, tenant_id, name)
        async with self._store.transaction(tenant_id) as tx:
            provider = await tx.get(tenant_id, provider_id)
        if provider is None:
            raise NotFound("IdentityProvider", name)
        return provider

    async def list_page(
        self, caller: Caller, tenant_id: str, page_size: int, page_token: str
    ) -> tuple[list[Provider], str]:
        self._check(caller, tenant_id, f"tenants/{tenant_id}")
        after = decode_page_token("identityProviders", page_token) if page_token else ""
        async with self._store.transaction(tenant_id) as tx:
            found = await tx.list_providers(tenant_id, after_id=after, limit=page_size + 1)
        return take_page(found, page_size, "identityProviders", lambda p: p.id)

    async def update(
        self, caller: Caller, changes: Provider, fields: list[str], etag: str
    ) -> Provider:
        self._check(caller, changes.tenant_id, changes.name)
        async with self._store.transaction(changes.tenant_id) as tx:
            current = await tx.get(changes.tenant_id, changes.id)
            if current is None:
                raise NotFound("IdentityProvider", changes.name)
            check_etag(current.name, current.version, etag)
            updates: dict[str, object] = {}
            for field in fields:
                if field in ("oidc", "ldap", "saml"):
                    updates.update(kind=changes.kind, config=changes.config)
                else:
                    updates[field] = getattr(changes, field)
            updated = current.with_changes(
                **updates, update_time=utcnow(), version=current.version + 1
            )
            if not await tx.save(updated, expected_version=current.version):
                raise concurrent_update(current.name)
        return updated

    async def disable(
        self, caller: Caller, tenant_id: str, provider_id: str, etag: str
    ) -> Provider:
        name = f"tenants/{tenant_id}/identityProviders/{provider_id}"
        self._check(caller, tenant_id, name)
        async with self._store.transaction(tenant_id) as tx:
            current = await tx.get(tenant_id, provider_id)
            if current is None:
                raise NotFound("IdentityProvider", name)
            check_etag(current.name, current.version, etag)
            if current.state == DISABLED:
                return current
            disabled = current.with_changes(
                state=DISABLED, update_time=utcnow(), version=current.version + 1
            )
            if not await tx.save(disabled, expected_version=current.version):
                raise concurrent_update(current.name)
        return disabled

    @staticmethod
    def _check(caller: Caller, tenant_id: str, resource: str) -> None:
        require_same_tenant(caller, tenant_id, PERMISSION)
        caller.require(PERMISSION, resource)
