"""An in-process HACS server plus helpers to act as operators, admins and actors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.app.server import HacsServer
from services.common.settings import Settings


def make_settings(data_dir: Path, database_url: str, **overrides: str) -> Settings:
    values = {"grpc_listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0", **overrides}
    return Settings.from_env({}, data_dir=str(data_dir), database_url=database_url, **values)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class NewTenant:
    tenant_id: str
    admin_key: str
    admin_token: str

    @property
    def name(self) -> str:
        return f"tenants/{self.tenant_id}"


@dataclass
class Harness:
    server: HacsServer
    channel: grpc.aio.Channel
    tenant: tenant_service_pb2_grpc.TenantServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def operator_key(self) -> str:
        return (self.server.settings.data_path / "operator.key").read_text().strip()

    async def token(self, api_key: str, **kwargs: object) -> str:
        reply = await self.tenant.IssueToken(pb.IssueTokenRequest(api_key=api_key, **kwargs))  # type: ignore[arg-type]
        return reply.access_token

    async def operator_token(self) -> str:
        return await self.token(self.operator_key)

    async def new_tenant(self, tenant_id: str | None = None, **tenant_fields: object) -> NewTenant:
        tenant_id = tenant_id or f"t-{uuid.uuid4().hex[:8]}"
        reply = await self.tenant.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id=tenant_id,
                tenant=tenant_pb2.Tenant(display_name=f"Hospital {tenant_id}", **tenant_fields),  # type: ignore[arg-type]
                admin=tenant_pb2.Actor(display_name="First Admin"),
            ),
            metadata=bearer(await self.operator_token()),
        )
        key = reply.admin_api_key.secret
        return NewTenant(tenant_id, key, await self.token(key))

    async def new_actor(
        self, tenant: NewTenant, actor_id: str, role: str, permissions: list[str] | None = None
    ) -> tuple[str, str]:
        """Creates an actor with an API key; returns (key, token)."""
        await self.tenant.CreateActor(
            pb.CreateActorRequest(
                parent=tenant.name,
                actor_id=actor_id,
                actor=tenant_pb2.Actor(
                    display_name=actor_id.title(), role=role, permissions=permissions or []
                ),
            ),
            metadata=bearer(tenant.admin_token),
        )
        reply = await self.tenant.CreateApiKey(
            pb.CreateApiKeyRequest(parent=f"{tenant.name}/actors/{actor_id}"),
            metadata=bearer(tenant.admin_token),
        )
        key = reply.api_key.secret
        return key, await self.token(key)


@asynccontextmanager
async def running_platform(settings: Settings) -> AsyncIterator[Harness]:
    server = HacsServer(settings)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield Harness(server, channel, tenant_service_pb2_grpc.TenantServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=1)
