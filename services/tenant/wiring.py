"""Builds the tenant servicer from the shared platform parts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import grpc
from hacs.tenant.v1 import tenant_service_pb2_grpc

from services.kernel.modules import Kernel
from services.kernel.tenancy.standing import tenant_ids
from services.tenant.actors import ActorDirectory
from services.tenant.api_keys import ApiKeys
from services.tenant.bootstrap import OPERATOR_KEY_FILE, ensure_platform, ensure_service_actor
from services.tenant.identity.admin import IdentityProviders
from services.tenant.identity.browser import BrowserSignIn
from services.tenant.identity.oidc import OidcVerifier
from services.tenant.identity.providers import ProviderStore
from services.tenant.identity.saml import SamlSignIn
from services.tenant.identity.service import Identity
from services.tenant.identity.sign_in import SignIns
from services.tenant.reports import TenantReports
from services.tenant.servicer import TenantServicer
from services.tenant.store import TenantStore
from services.tenant.tenants import TenantAdmin
from services.tenant.token_issuer import TokenIssuer

KERNEL_MODULES = ("tenancy",)


async def tenant_servicer(kernel: Kernel) -> TenantServicer:
    """The servicer, after making sure the platform tenant and its operator key exist."""
    platform = kernel.platform
    keys = platform.signing_keys
    if keys is None:
        raise RuntimeError("the tenant service needs the signing keys; they were not loaded")
    settings = platform.settings
    store = TenantStore(platform.db)
    await ensure_platform(
        store,
        operator_key=settings.bootstrap_operator_key,
        key_file=settings.data_path / OPERATOR_KEY_FILE,
    )
    await ensure_service_actor(store, service_key=settings.bootstrap_service_key)
    issuer = TokenIssuer(
        store,
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        default_ttl_seconds=settings.token_ttl_seconds,
        max_ttl_seconds=settings.token_max_ttl_seconds,
    )
    providers = ProviderStore(platform.db)
    oidc = OidcVerifier()
    sign_ins = SignIns(store, providers, issuer, platform.audit, platform.admission.announce)
    identity = Identity(sign_ins, providers, oidc)
    platform.http_routes.extend(BrowserSignIn(sign_ins, providers, oidc).routes())
    platform.http_routes.extend(SamlSignIn(sign_ins, providers).routes())
    sync = asyncio.create_task(
        identity.sync_forever(lambda: tenant_ids(platform.db)), name="ldap-deprovisioning"
    )
    platform.on_close(_cancel(sync))
    return TenantServicer(
        tenants=TenantAdmin(store, on_change=platform.admission.announce),
        actors=ActorDirectory(store, on_change=platform.admission.announce),
        api_keys=ApiKeys(store, on_change=platform.admission.announce),
        issuer=issuer,
        keys=keys,
        reports=TenantReports(
            platform.usage, platform.audit, platform.metering, lambda: tenant_ids(platform.db)
        ),
        providers=IdentityProviders(providers),
        identity=identity,
    )


def _cancel(task: asyncio.Task[None]) -> Callable[[], Awaitable[None]]:
    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return cancel


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    tenant_service_pb2_grpc.add_TenantServiceServicer_to_server(
        await tenant_servicer(kernel), server
    )
