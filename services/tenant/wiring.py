"""Builds the tenant servicer from the shared platform parts."""

from __future__ import annotations

import grpc
from hacs.tenant.v1 import tenant_service_pb2_grpc

from services.kernel.modules import Kernel
from services.kernel.tenancy.standing import tenant_ids
from services.tenant.actors import ActorDirectory
from services.tenant.api_keys import ApiKeys
from services.tenant.bootstrap import OPERATOR_KEY_FILE, ensure_platform, ensure_service_actor
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
    return TenantServicer(
        tenants=TenantAdmin(store, on_change=platform.admission.announce),
        actors=ActorDirectory(store, on_change=platform.admission.announce),
        api_keys=ApiKeys(store, on_change=platform.admission.announce),
        issuer=TokenIssuer(
            store,
            keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            default_ttl_seconds=settings.token_ttl_seconds,
            max_ttl_seconds=settings.token_max_ttl_seconds,
        ),
        keys=keys,
        reports=TenantReports(
            platform.usage, platform.audit, platform.metering, lambda: tenant_ids(platform.db)
        ),
    )


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    tenant_service_pb2_grpc.add_TenantServiceServicer_to_server(
        await tenant_servicer(kernel), server
    )
