"""Revocation in the mesh layout: tokens already issued end everywhere within the bound.

One tenant process, two records replicas on a shared PostgreSQL, Envoy in
front of replica A. Replica A hears the tenant service's announcements over
Redis; replica B has no Redis at all, so it stands for a replica that missed
every announcement and must still honour the bound (HACS_REVOCATION_SECONDS,
5 s). After each change, the old token is tried through the edge and
directly on both replicas until it is refused; each must be refused within
the bound, and the measured delays are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as records_pb
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as pb

from mesh.envoy.render import HACS_SERVICES, EdgeSettings, Upstream, render
from tests.support.edge import start_envoy, start_serve
from tests.support.harness import bearer
from tests.support.postgres import create_database, free_port
from tests.support.redis import redis_url  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

BOUND_SECONDS = 5.0  # the documented default of HACS_REVOCATION_SECONDS
RECORDS = "hacs.records.v1.RecordService"


@dataclass
class Mesh:
    edge: str
    tenant: str  # the tenant process, gRPC
    replicas: dict[str, str]  # "A (Redis)" / "B (no Redis)" -> gRPC address
    operator_token: str


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_admin_url: str,
    redis_url: str,  # noqa: F811
) -> AsyncIterator[Mesh]:
    root: Path = tmp_path_factory.mktemp("revocation-mesh")
    database_url = await create_database(postgres_admin_url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        tenant, tenant_grpc, tenant_http = start_serve(
            "tenant",
            root,
            {
                "HACS_DATABASE_URL": database_url,
                "HACS_REDIS_URL": redis_url,
                "HACS_SERVICES": "tenant",
                "HACS_DATA_DIR": str(root / "tenant"),
            },
        )
        processes.append(tenant)
        jwks = f"http://{tenant_http}/.well-known/jwks.json"
        replicas = {}
        for name, redis in (("A (Redis)", redis_url), ("B (no Redis)", "")):
            process, address, _ = start_serve(
                name[0],
                root,
                {
                    "HACS_DATABASE_URL": database_url,
                    "HACS_REDIS_URL": redis,
                    "HACS_SERVICES": "records",
                    "HACS_DATA_DIR": str(root / name[0]),
                    "HACS_AUTO_MIGRATE": "false",
                    "HACS_JWKS_URL": jwks,
                },
            )
            processes.append(process)
            replicas[name] = address
        upstreams = {service: Upstream.parse(tenant_grpc) for service in HACS_SERVICES}
        upstreams[RECORDS] = Upstream.parse(replicas["A (Redis)"])
        edge_port = free_port()
        settings = EdgeSettings(
            upstreams=upstreams,
            listen_host="127.0.0.1",
            listen_port=edge_port,
            stats_port=free_port(),
            jwks_uri=jwks,
            access_log_path=str(root / "access.log"),
        )
        processes.append(start_envoy(render(settings), root, edge_port))
        edge = f"127.0.0.1:{edge_port}"
        operator_key = (root / "tenant/operator.key").read_text().strip()
        async with grpc.aio.insecure_channel(tenant_grpc) as channel:
            stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
            operator = await stub.IssueToken(pb.IssueTokenRequest(api_key=operator_key))
        yield Mesh(edge, tenant_grpc, replicas, operator.access_token)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)


@dataclass
class Agent:
    tenant: str
    key_ids: list[str]
    tokens: list[str]  # one per key


async def _ward(mesh: Mesh, tenant_id: str) -> tuple[str, Agent]:
    """A tenant with an agent holding two keys and a token from each; the admin's token."""
    async with grpc.aio.insecure_channel(mesh.tenant) as channel:
        stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        created = await stub.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id=tenant_id,
                tenant=tenant_pb2.Tenant(display_name=tenant_id.title()),
                admin=tenant_pb2.Actor(display_name="Admin"),
            ),
            metadata=bearer(mesh.operator_token),
        )
        admin = (
            await stub.IssueToken(pb.IssueTokenRequest(api_key=created.admin_api_key.secret))
        ).access_token
        await stub.CreateActor(
            pb.CreateActorRequest(
                parent=f"tenants/{tenant_id}",
                actor_id="scribe",
                actor=tenant_pb2.Actor(display_name="Scribe", role="agent"),
            ),
            metadata=bearer(admin),
        )
        agent = Agent(tenant_id, [], [])
        for _ in range(2):
            key = await stub.CreateApiKey(
                pb.CreateApiKeyRequest(parent=f"tenants/{tenant_id}/actors/scribe"),
                metadata=bearer(admin),
            )
            agent.key_ids.append(key.api_key.name.rsplit("/", 1)[1])
            issued = await stub.IssueToken(pb.IssueTokenRequest(api_key=key.api_key.secret))
            agent.tokens.append(issued.access_token)
    return admin, agent


async def _list_patients(target: str, tenant_id: str, token: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = record_service_pb2_grpc.RecordServiceStub(channel)
        try:
            await stub.ListRecords(
                records_pb.ListRecordsRequest(
                    parent=f"tenants/{tenant_id}", resource_types=[record_pb2.RESOURCE_TYPE_PATIENT]
                ),
                metadata=bearer(token),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def _targets_accept(mesh: Mesh, tenant_id: str, token: str) -> None:
    """Every way in accepts the token (the edge may still be fetching the JWKS)."""
    targets = {"edge": mesh.edge, **mesh.replicas}
    deadline = time.monotonic() + 30
    for name, target in targets.items():
        while (code := await _list_patients(target, tenant_id, token)) != grpc.StatusCode.OK:
            assert name == "edge" and time.monotonic() < deadline, (name, code)
            await asyncio.sleep(0.2)


async def _refused_everywhere(
    mesh: Mesh, tenant_id: str, token: str, change: Callable[[], Awaitable[None]]
) -> dict[str, tuple[grpc.StatusCode, float]]:
    """Make `change`, then poll every way in until it refuses the token: code and delay."""
    targets = {"edge": mesh.edge, **mesh.replicas}
    await change()
    changed = time.monotonic()

    async def until_refused(target: str) -> tuple[grpc.StatusCode, float]:
        while True:
            code = await _list_patients(target, tenant_id, token)
            waited = time.monotonic() - changed
            if code != grpc.StatusCode.OK or waited > BOUND_SECONDS + 5:
                return code, waited
            await asyncio.sleep(0.05)

    results = await asyncio.gather(*(until_refused(t) for t in targets.values()))
    outcome = dict(zip(targets, results, strict=True))
    print({name: f"{code.name} after {seconds:.2f} s" for name, (code, seconds) in outcome.items()})
    return outcome


def _assert_within_bound(
    outcome: dict[str, tuple[grpc.StatusCode, float]], code: grpc.StatusCode
) -> None:
    for name, (got, seconds) in outcome.items():
        assert got == code, f"{name}: {got.name}"
        # Polling adds at most one call's latency past the bound.
        assert seconds <= BOUND_SECONDS + 1.0, f"{name}: still accepted after {seconds:.2f} s"


async def test_a_revoked_key_ends_its_tokens_on_every_replica(mesh: Mesh) -> None:
    admin, agent = await _ward(mesh, "revoke-key")
    for token in agent.tokens:
        await _targets_accept(mesh, agent.tenant, token)

    async def revoke() -> None:
        async with grpc.aio.insecure_channel(mesh.tenant) as channel:
            await tenant_service_pb2_grpc.TenantServiceStub(channel).RevokeApiKey(
                pb.RevokeApiKeyRequest(
                    name=f"tenants/{agent.tenant}/actors/scribe/apiKeys/{agent.key_ids[0]}"
                ),
                metadata=bearer(admin),
            )

    outcome = await _refused_everywhere(mesh, agent.tenant, agent.tokens[0], revoke)
    _assert_within_bound(outcome, grpc.StatusCode.UNAUTHENTICATED)
    await _targets_accept(mesh, agent.tenant, agent.tokens[1])  # the other key's token lives


async def test_a_deleted_actor_and_a_narrowed_one_lose_their_tokens(mesh: Mesh) -> None:
    admin, agent = await _ward(mesh, "narrow-then-delete")
    await _targets_accept(mesh, agent.tenant, agent.tokens[0])

    async def narrow() -> None:  # the agent loses read:patient
        async with grpc.aio.insecure_channel(mesh.tenant) as channel:
            stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
            name = f"tenants/{agent.tenant}/actors/scribe"
            current = await stub.GetActor(pb.GetActorRequest(name=name), metadata=bearer(admin))
            await stub.UpdateActor(
                pb.UpdateActorRequest(
                    actor=tenant_pb2.Actor(
                        name=name, permissions=["read:memory"], etag=current.actor.etag
                    ),
                    update_mask=FieldMask(paths=["permissions"]),
                ),
                metadata=bearer(admin),
            )

    outcome = await _refused_everywhere(mesh, agent.tenant, agent.tokens[0], narrow)
    _assert_within_bound(outcome, grpc.StatusCode.PERMISSION_DENIED)

    async def delete() -> None:
        async with grpc.aio.insecure_channel(mesh.tenant) as channel:
            await tenant_service_pb2_grpc.TenantServiceStub(channel).DeleteActor(
                pb.DeleteActorRequest(name=f"tenants/{agent.tenant}/actors/scribe"),
                metadata=bearer(admin),
            )

    # Still refused, now for another reason: what is measured is the switch to UNAUTHENTICATED.
    targets = {"edge": mesh.edge, **mesh.replicas}
    await delete()
    changed = time.monotonic()
    for name, target in targets.items():
        while (code := await _list_patients(target, agent.tenant, agent.tokens[1])) != (
            grpc.StatusCode.UNAUTHENTICATED
        ):
            assert time.monotonic() - changed <= BOUND_SECONDS + 1.0, (name, code)
            await asyncio.sleep(0.05)


async def test_a_suspended_tenant_is_refused_on_every_replica(mesh: Mesh) -> None:
    _, agent = await _ward(mesh, "suspend")
    await _targets_accept(mesh, agent.tenant, agent.tokens[0])

    async def suspend() -> None:
        async with grpc.aio.insecure_channel(mesh.tenant) as channel:
            await tenant_service_pb2_grpc.TenantServiceStub(channel).DeleteTenant(
                pb.DeleteTenantRequest(name=f"tenants/{agent.tenant}"),
                metadata=bearer(mesh.operator_token),
            )

    outcome = await _refused_everywhere(mesh, agent.tenant, agent.tokens[0], suspend)
    _assert_within_bound(outcome, grpc.StatusCode.PERMISSION_DENIED)
