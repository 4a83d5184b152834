"""Sign-in through a registered provider: verify what the provider says, then SignIns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from services.common.errors import HacsError, Unauthenticated
from services.tenant.identity.ldap import Directory, LdapConfig
from services.tenant.identity.oidc import OidcConfig, OidcVerifier
from services.tenant.identity.providers import (
    ACTIVE,
    Person,
    Provider,
    ProviderStore,
    resolve_secret,
)
from services.tenant.identity.sign_in import DEPROVISIONED, SignedIn, SignIns, allowed

log = logging.getLogger(__name__)

EXCHANGE = "/hacs.tenant.v1.TenantService/ExchangeToken"
PASSWORD = "/hacs.tenant.v1.TenantService/SignInWithPassword"


class Identity:
    def __init__(self, sign_ins: SignIns, store: ProviderStore, oidc: OidcVerifier) -> None:
        self.sign_ins = sign_ins
        self._store = store
        self._oidc = oidc

    async def exchange(
        self,
        tenant_id: str,
        provider_id: str,
        token: str,
        token_type: str,
        ttl_seconds: int,
        scopes: list[str],
    ) -> SignedIn:
        """RFC 8693: the OIDC provider's ID token or JWT access token for a HACS token."""
        provider = await self.sign_ins.provider(tenant_id, provider_id, "oidc")
        try:
            person = await self._oidc.verify(OidcConfig.of(provider.config), token, token_type)
        except Unauthenticated as exc:
            await self.sign_ins.refuse(provider, Person("", "(token refused)"), EXCHANGE, exc)
            raise
        return await self.sign_ins.complete(provider, person, EXCHANGE, ttl_seconds, scopes)

    async def password(
        self,
        tenant_id: str,
        provider_id: str,
        username: str,
        password: str,
        ttl_seconds: int,
        scopes: list[str],
    ) -> SignedIn:
        """A person's directory password for a HACS token."""
        provider = await self.sign_ins.provider(tenant_id, provider_id, "ldap")
        try:
            person = await self.directory(provider).authenticate(username, password)
        except Unauthenticated as exc:
            await self.sign_ins.refuse(provider, Person("", username), PASSWORD, exc)
            raise
        return await self.sign_ins.complete(provider, person, PASSWORD, ttl_seconds, scopes)

    def directory(self, provider: Provider) -> Directory:
        config = LdapConfig.of(provider.config)
        return Directory(config, resolve_secret(config.bind_password_ref))

    async def sync_directory(self, provider: Provider) -> int:
        """Deprovision every linked person the directory no longer has, or no longer allows;
        returns how many. Group changes of the others apply at their next sign-in."""
        directory = self.directory(provider)
        async with self._store.transaction(provider.tenant_id) as tx:
            links = await tx.links(provider.tenant_id, provider.id)
        ended = 0
        for link in links:
            if link.state == DEPROVISIONED:
                continue
            person = await directory.lookup(link.subject)
            if person is None or not allowed(provider, person.groups):
                ended += await self.sign_ins.deprovision(provider, link.subject)
        return ended

    async def sync_forever(
        self, tenants: Callable[[], Awaitable[list[str]]], every_seconds: float = 60.0
    ) -> None:
        """The LDAP deprovisioning loop of a tenant-service process: each provider at its
        own interval (`sync_interval_seconds`)."""
        last: dict[tuple[str, str], float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every_seconds)
            try:
                ids = await tenants()
            except Exception:  # the database is away: try again next round
                log.exception("LDAP sync could not list the tenants")
                continue
            for tenant_id in ids:
                with contextlib.suppress(HacsError):
                    await self._sync_tenant(tenant_id, last, loop.time())

    async def _sync_tenant(
        self, tenant_id: str, last: dict[tuple[str, str], float], now: float
    ) -> None:
        async with self._store.transaction(tenant_id) as tx:
            providers = await tx.list_providers(tenant_id, after_id="", limit=1000)
        for provider in providers:
            if provider.kind != "ldap" or provider.state != ACTIVE:
                continue
            interval = LdapConfig.of(provider.config).sync_interval_seconds
            key = (tenant_id, provider.id)
            if now - last.get(key, float("-inf")) < interval:
                continue
            last[key] = now
            try:
                ended = await self.sync_directory(provider)
            except HacsError as exc:
                log.warning("LDAP sync of %s failed: %s", provider.name, exc)
                continue
            if ended:
                log.info("LDAP sync of %s deprovisioned %d people", provider.name, ended)
