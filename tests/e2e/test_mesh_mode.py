"""Mesh mode on one machine: one `hacs serve --only X` process per service,
a shared PostgreSQL, and Envoy rendered with one cluster per service.

Proves the switch from all-in-one to mesh is configuration only: the records
process verifies tokens itself against the tenant process's JWKS over HTTP
(zero trust), Envoy routes each service to its own process, and a forged
token sent straight to a service, bypassing Envoy, is refused there too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hacs.records.v1 import record_service_pb2, record_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2, tenant_service_pb2_grpc

from mesh.envoy.render import HACS_SERVICES, EdgeSettings, Upstream, render
from tests.support.edge import start_envoy, start_serve
from tests.support.postgres import create_database, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str
) -> AsyncIterator[dict[str, str]]:
    root: Path = tmp_path_factory.mktemp("mesh")
    database_url = await create_database(postgres_admin_url)
    common = {"HACS_DATABASE_URL": database_url, "HACS_DATA_DIR": str(root / "tenant-data")}
    tenant, tenant_grpc, tenant_http = start_serve(
        "tenant", root, {**common, "HACS_SERVICES": "tenant"}
    )
    records, records_grpc, _ = start_serve(
        "records",
        root,
        {
            **common,
            "HACS_SERVICES": "records",
            "HACS_DATA_DIR": str(root / "records-data"),
            "HACS_AUTO_MIGRATE": "false",
            "HACS_JWKS_URL": f"http://{tenant_http}/.well-known/jwks.json",
        },
    )
    upstreams = {name: Upstream.parse(tenant_grpc) for name in HACS_SERVICES}
    upstreams["hacs.records.v1.RecordService"] = Upstream.parse(records_grpc)
    edge_port = free_port()
    settings = EdgeSettings(
        upstreams=upstreams,
        listen_host="127.0.0.1",
        listen_port=edge_port,
        stats_port=free_port(),
        jwks_uri=f"http://{tenant_http}/.well-known/jwks.json",
        access_log_path=str(root / "access.log"),
    )
    envoy = start_envoy(render(settings), root, edge_port)
    edge = f"127.0.0.1:{edge_port}"
    try:
        with grpc.insecure_channel(edge) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield {
            "edge": edge,
            "records": records_grpc,
            "operator_key": (root / "tenant-data/operator.key").read_text().strip(),
        }
    finally:
        for process in (envoy, records, tenant):
            process.terminate()
            process.wait(timeout=30)


async def _operator_token(edge: str, key: str) -> str:
    async with grpc.aio.insecure_channel(edge) as channel:
        stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        reply = await stub.IssueToken(tenant_service_pb2.IssueTokenRequest(api_key=key), timeout=10)
    return reply.access_token


async def test_each_service_is_reached_in_its_own_process(mesh: dict[str, str]) -> None:
    token = await _operator_token(mesh["edge"], mesh["operator_key"])
    auth = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(mesh["edge"]) as channel:
        records = record_service_pb2_grpc.RecordServiceStub(channel)
        deadline = time.monotonic() + 20
        while True:
            try:
                await records.GetRecord(
                    record_service_pb2.GetRecordRequest(name="tenants/platform/patients/p-1"),
                    metadata=auth,
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNAUTHENTICATED and time.monotonic() < deadline:
                    continue  # the edge's JWKS fetch is still in flight
                # The records process verified the token against the tenant
                # process's JWKS, then refused: operators hold no read:patient.
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
                assert "read:patient" in (error.details() or "")
                break
        tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
        listed = await tenants.ListTenants(
            tenant_service_pb2.ListTenantsRequest(), metadata=auth, timeout=10
        )
        assert [t.name for t in listed.tenants] == ["tenants/platform"]


async def test_a_forged_token_sent_straight_to_a_service_is_refused(mesh: dict[str, str]) -> None:
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    forged = jwt.encode(
        {
            "iss": "hacs",
            "aud": "hacs",
            "sub": "tenants/platform/actors/operator",
            "tenant": "platform",
            "actor": "operator",
            "permissions": ["admin:*"],
            "iat": now,
            "exp": now + 300,
        },
        forged_key,
        algorithm="RS256",
        headers={"kid": "made-up"},
    )
    async with grpc.aio.insecure_channel(mesh["records"]) as channel:  # no Envoy in the way
        records = record_service_pb2_grpc.RecordServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await records.GetRecord(
                record_service_pb2.GetRecordRequest(name="tenants/platform/patients/p-1"),
                metadata=(("authorization", f"Bearer {forged}"),),
                timeout=10,
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
