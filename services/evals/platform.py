"""A throwaway in-process platform for `hacs eval …`: real services, temporary data.

Every evaluation measures the real path — gRPC, interceptors, the domain,
SQLite, Milvus Lite, the shipped model — so each starts the platform in
this process on free loopback ports, with its data under a temporary
directory, creates one tenant through TenantService with the operator key
the platform wrote there, and drives it as that tenant's administrator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from hacs.embedding.v1 import embedding_service_pb2 as epb
from hacs.embedding.v1 import embedding_service_pb2_grpc
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from services.app.server import HacsServer
from services.common.settings import Settings

MAX_MESSAGE = 64 * 1024 * 1024
# The evaluation platform is a throwaway on loopback, and a full run on a busy 2-core
# machine outlives an hour (`hacs eval retrieval` on MedQuAD died at 60 min when its token
# expired mid-indexing): one day.
TOKEN_TTL_SECONDS = 86400


@dataclass
class EvalPlatform:
    server: HacsServer
    channel: grpc.aio.Channel
    token: tuple[tuple[str, str]]  # call metadata: the administrator's bearer token
    tenant: str  # "tenants/{id}"

    def actor(self, actor_id: str) -> str:
        return f"{self.tenant}/actors/{actor_id}"

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(grace=1)


async def start_platform(
    data_dir: Path,
    *,
    tenant_id: str,
    display_name: str,
    services: str,
    indexer: bool = True,
    token_ttl_seconds: int = TOKEN_TTL_SECONDS,
) -> EvalPlatform:
    """Start `services` over `data_dir` and create the evaluation's tenant.

    indexer: whether the search service's record indexer runs (an eval that
    does not search records leaves it off, so it does not compete for CPU).
    token_ttl_seconds: the administrator token's lifetime (default: a day, longer than
    any evaluation here has run).
    """
    overrides = _overrides(data_dir, services)
    overrides["token_max_ttl_seconds"] = str(max(token_ttl_seconds, TOKEN_TTL_SECONDS))
    if not indexer:
        overrides["indexer_enabled"] = "false"
    server = HacsServer(Settings.from_env({}, **overrides))
    await server.start()
    channel = _channel(server)
    tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
    operator = await _operator_token(tenants, data_dir)
    created = await tenants.CreateTenant(
        tpb.CreateTenantRequest(
            tenant_id=tenant_id,
            tenant=tenant_pb2.Tenant(display_name=display_name, plan=tenant_pb2.PLAN_ENTERPRISE),
            admin=tenant_pb2.Actor(display_name="Evaluator"),
        ),
        metadata=(("authorization", f"Bearer {operator}"),),
    )
    token = (
        await tenants.IssueToken(
            tpb.IssueTokenRequest(
                api_key=created.admin_api_key.secret, ttl_seconds=token_ttl_seconds
            )
        )
    ).access_token
    return EvalPlatform(
        server, channel, (("authorization", f"Bearer {token}"),), f"tenants/{tenant_id}"
    )


async def register_default_model(data_dir: Path, model_dir: Path) -> str:
    """Make `model_dir` (absolute) the default embedding model of the platform in `data_dir`.

    Done through EmbeddingService.RegisterModel on a short-lived platform
    before the evaluation's own starts, so that every service (the indexer,
    the vector index's dimension, search) starts with it, as after an
    operator registers a model and restarts. Returns the model's name.
    """
    server = HacsServer(Settings.from_env({}, **_overrides(data_dir, "tenant,embedding")))
    await server.start()
    channel = _channel(server)
    try:
        operator = await _operator_token(
            tenant_service_pb2_grpc.TenantServiceStub(channel), data_dir
        )
        registered = await embedding_service_pb2_grpc.EmbeddingServiceStub(channel).RegisterModel(
            epb.RegisterModelRequest(
                model_id="evaluated", local_path=str(model_dir), set_default=True
            ),
            metadata=(("authorization", f"Bearer {operator}"),),
            timeout=600,
        )
    finally:
        await channel.close()
        await server.stop(grace=1)
    return str(registered.model.name)


def _overrides(data_dir: Path, services: str) -> dict[str, str]:
    return {
        "data_dir": str(data_dir),
        "grpc_listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "services": services,
        "rate_limit_enabled": "false",
        "log_level": "WARNING",
        # No balancer to rebalance for, and an ingest of a large corpus is one long stream.
        "grpc_max_connection_age_seconds": "0",
    }


def _channel(server: HacsServer) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[("grpc.max_receive_message_length", MAX_MESSAGE)],
    )


async def _operator_token(tenants: Any, data_dir: Path) -> str:
    """A platform operator token from the key the platform wrote on first start."""
    operator_key = (data_dir / "operator.key").read_text().strip()
    issued = await tenants.IssueToken(tpb.IssueTokenRequest(api_key=operator_key))
    return str(issued.access_token)


@asynccontextmanager
async def running_platform(
    data_dir: Path,
    *,
    tenant_id: str,
    display_name: str,
    services: str,
    indexer: bool = True,
    token_ttl_seconds: int = TOKEN_TTL_SECONDS,
) -> AsyncIterator[EvalPlatform]:
    platform = await start_platform(
        data_dir,
        tenant_id=tenant_id,
        display_name=display_name,
        services=services,
        indexer=indexer,
        token_ttl_seconds=token_ttl_seconds,
    )
    try:
        yield platform
    finally:
        await platform.stop()
