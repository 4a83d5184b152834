"""The whole platform through the real Envoy edge, driven by the generated client.

Started exactly as `make up` starts it (`hacs up`: hacs serve + Envoy), on
free ports. Proves: the documented grpcurl sequence works; tenant -> API key
-> token -> authenticated call through the SDK; the edge refuses missing,
expired and forged tokens; a spoofed tenant header changes nothing; one
tenant cannot read another's; the per-tenant edge rate limit.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hacs.client import HacsClient
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.common.signing_keys import SigningKeys
from tests.support.edge import RunningPlatform

pytestmark = pytest.mark.e2e

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
REPO = Path(__file__).resolve().parents[2]


async def _new_tenant(platform: RunningPlatform) -> tuple[str, str]:
    """Creates a tenant through the edge; returns (tenant name, admin API key)."""
    tenant_id = f"e2e-{uuid.uuid4().hex[:8]}"
    async with HacsClient(platform.edge, api_key=platform.operator_key) as operator:
        reply = await operator.tenant.CreateTenant(
            pb.CreateTenantRequest(
                tenant_id=tenant_id,
                tenant=tenant_pb2.Tenant(display_name=f"Hospital {tenant_id}"),
                admin=tenant_pb2.Actor(display_name="Admin"),
            )
        )
    return reply.tenant.name, reply.admin_api_key.secret


def test_reflection_through_the_edge_lists_every_service(platform: RunningPlatform) -> None:
    listed = subprocess.run(
        [GRPCURL, "-plaintext", platform.edge, "list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for service in (
        "hacs.tenant.v1.TenantService",
        "hacs.records.v1.RecordService",
        "hacs.embedding.v1.EmbeddingService",
        "hacs.search.v1.SearchService",
        "hacs.rag.v1.RagService",
        "hacs.memory.v1.MemoryService",
        "hacs.sync.v1.SyncService",
        "grpc.health.v1.Health",
    ):
        assert service in listed


def test_the_documented_grpcurl_sequence_works(platform: RunningPlatform) -> None:
    run = subprocess.run(
        [str(REPO / "scripts/first-calls.sh"), platform.edge, str(platform.data_dir)],
        capture_output=True,
        text=True,
        env={"HACS_DEMO_TENANT": "docs-demo", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert '"name": "tenants/docs-demo/actors/triage-agent"' in run.stdout
    assert "Jwt is missing" in run.stderr  # step 5: no token, refused at the edge


async def test_tenant_key_token_and_authenticated_call_through_the_sdk(
    platform: RunningPlatform,
) -> None:
    tenant, admin_key = await _new_tenant(platform)
    async with HacsClient(platform.edge, api_key=admin_key) as admin:
        await admin.tenant.CreateActor(
            pb.CreateActorRequest(
                parent=tenant,
                actor_id="scribe",
                actor=tenant_pb2.Actor(display_name="Scribe", role="agent"),
            )
        )
        key = await admin.tenant.CreateApiKey(
            pb.CreateApiKeyRequest(parent=f"{tenant}/actors/scribe")
        )
    async with HacsClient(platform.edge, api_key=key.api_key.secret) as agent:
        me = await agent.tenant.GetActor(pb.GetActorRequest(name=f"{tenant}/actors/scribe"))
        assert me.actor.role == "agent" and me.actor.is_active
        # The agent is authenticated, but may not administer its tenant.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent.tenant.ListActors(pb.ListActorsRequest(parent=tenant))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _token(private_key: rsa.RSAPrivateKey, kid: str, *, tenant: str, expires_in: int) -> str:
    now = int(time.time())
    claims = {
        "iss": "hacs",
        "aud": "hacs",
        "sub": f"{tenant}/actors/admin",
        "tenant": tenant.split("/")[1],
        "actor": "admin",
        "role": "administrator",
        "permissions": ["admin:*"],
        "iat": now - 3600,
        "exp": now + expires_in,
    }
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})


async def test_edge_refuses_missing_expired_and_forged_tokens(platform: RunningPlatform) -> None:
    tenant, _ = await _new_tenant(platform)
    real = SigningKeys.load(platform.data_dir / "keys", generate_if_empty=False).active
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "Jwt is missing": None,
        "Jwt is expired": _token(real.private_key, real.kid, tenant=tenant, expires_in=-600),
        "Jwt verification fails": _token(foreign, real.kid, tenant=tenant, expires_in=600),
    }
    request = pb.GetTenantRequest(name=tenant)
    async with grpc.aio.insecure_channel(platform.edge) as channel:
        stub = tenant_service_pb2_grpc.TenantServiceStub(channel)
        for message, token in cases.items():
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetTenant(request, metadata=metadata, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in (caught.value.details() or "")
        # A real token of that tenant passes: the refusals above were the tokens'.
        good = _token(real.private_key, real.kid, tenant=tenant, expires_in=600)
        reply = await stub.GetTenant(
            request, metadata=(("authorization", f"Bearer {good}"),), timeout=10
        )
        assert reply.tenant.name == tenant


async def test_a_huge_bad_value_is_refused_without_failing_anyone_elses_call(
    platform: RunningPlatform,
) -> None:
    """Found by `hacs fuzz` (seed 2, #1658): a 200 KB name was echoed in the error, the
    trailers passed Envoy's limit, and Envoy reset the upstream connection, failing every
    call in flight on it (UNAVAILABLE, "protocol error")."""
    tenant, admin_key = await _new_tenant(platform)
    async with HacsClient(platform.edge, api_key=admin_key) as admin:
        huge = pb.CreateApiKeyRequest(parent=f"{tenant}/actors/" + "é" * 100_000)
        results = await asyncio.gather(
            admin.tenant.CreateApiKey(huge),
            *(admin.tenant.GetTenant(pb.GetTenantRequest(name=tenant)) for _ in range(8)),
            return_exceptions=True,
        )
    refused = results[0]
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
    assert "more characters" in (refused.details() or "")
    assert all(not isinstance(r, BaseException) for r in results[1:]), results[1:]


async def test_cross_tenant_read_is_refused_and_the_tenant_header_cannot_be_spoofed(
    platform: RunningPlatform,
) -> None:
    tenant_a, key_a = await _new_tenant(platform)
    tenant_b, _ = await _new_tenant(platform)
    async with HacsClient(platform.edge, api_key=key_a) as a:
        spoof = (("x-hacs-tenant", tenant_b.split("/")[1]),)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await a.tenant.GetActor(
                pb.GetActorRequest(name=f"{tenant_b}/actors/admin"), metadata=spoof
            )
        assert caught.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
        # With the spoofed header the caller is still tenant A.
        own = await a.tenant.GetTenant(pb.GetTenantRequest(name=tenant_a), metadata=spoof)
        assert own.tenant.name == tenant_a


async def test_edge_rate_limit_is_per_tenant(platform: RunningPlatform) -> None:
    busy, busy_key = await _new_tenant(platform)
    calm, calm_key = await _new_tenant(platform)
    async with HacsClient(platform.edge, api_key=busy_key) as client:
        codes = []
        for _ in range(45):  # the module's edge limit is 40 per minute per tenant
            try:
                await client.tenant.GetTenant(pb.GetTenantRequest(name=busy))
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 4
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    async with HacsClient(platform.edge, api_key=calm_key) as other:
        reply = await other.tenant.GetTenant(pb.GetTenantRequest(name=calm))
        assert reply.tenant.name == calm


def test_the_data_directory_is_its_owners_alone(platform: RunningPlatform) -> None:
    # Issue 20, finding 10: hacs.db and the lexical store hold PHI and were created 0644.
    assert platform.data_dir.stat().st_mode & 0o777 == 0o700
    written = [
        p
        for p in platform.data_dir.rglob("*")
        if p.is_file() and p.name != "hacs-up.log"  # the test's own log of the process
    ]
    assert {"hacs.db", "operator.key"} <= {p.name for p in written}
    exposed = [f"{p.relative_to(platform.data_dir)} {p.stat().st_mode & 0o777:o}" for p in written]
    assert [e for e in exposed if int(e.rsplit(" ", 1)[1], 8) & 0o077] == []


async def test_calls_without_a_token_are_limited_per_client_and_method(
    platform: RunningPlatform,
) -> None:
    # Issue 20, finding 3: one client at 45 req/s got every tenant's IssueToken refused.
    # The module's edge: 30 IssueToken and 60 of each other open method per client a minute.
    channel = grpc.aio.insecure_channel(platform.edge)
    stub = tenant_service_pb2_grpc.TenantServiceStub(channel)

    async def codes(call: Any, request: Any, client: str, times: int) -> list[grpc.StatusCode]:
        seen = []
        for _ in range(times):
            try:
                await call(request, metadata=(("x-forwarded-for", client),))
                seen.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                seen.append(error.code())
        return seen

    flood = await codes(stub.GetJwks, pb.GetJwksRequest(), "203.0.113.7", 70)
    assert flood.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 5
    # The same client still gets tokens, and another client still gets the JWKS.
    bad_key = pb.IssueTokenRequest(api_key="hk_nobody_x_y")
    assert set(await codes(stub.IssueToken, bad_key, "203.0.113.7", 3)) == {
        grpc.StatusCode.UNAUTHENTICATED  # refused as a key, not as a flood
    }
    assert (
        await codes(stub.GetJwks, pb.GetJwksRequest(), "198.51.100.9", 3)
        == [grpc.StatusCode.OK] * 3
    )
    # And a flood of IssueToken stops at its own limit, for that client only.
    tokens = await codes(stub.IssueToken, bad_key, "203.0.113.8", 40)
    assert tokens.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 5
    assert set(await codes(stub.IssueToken, bad_key, "198.51.100.10", 3)) == {
        grpc.StatusCode.UNAUTHENTICATED
    }
    await channel.close()


async def test_envoy_admin_is_the_operators_alone_and_stats_are_read_only(
    platform: RunningPlatform,
) -> None:
    # Issue 20, finding 10: Envoy's admin let anyone on the host change runtime flags or
    # stop it. Now: a Unix socket only its user opens; the stats listener serves stats.
    socket = platform.data_dir / "envoy-admin.sock"
    assert socket.is_socket() and socket.stat().st_mode & 0o777 == 0o600
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{platform.stats}/stats/prometheus") as stats:
            assert stats.status == 200
            assert "envoy_http_downstream_rq_total" in await stats.text()
        for method, path in (
            ("POST", "/quitquitquit"),
            ("POST", "/runtime_modify?x=1"),
            ("GET", "/config_dump"),
            ("POST", "/stats"),
            ("POST", "/ready"),
        ):
            async with http.request(method, f"http://{platform.stats}{path}") as refused:
                assert refused.status == 404, (method, path)
        connector = aiohttp.UnixConnector(path=str(socket))
        async with (
            aiohttp.ClientSession(connector=connector) as admin,  # the operator
            admin.get("http://envoy/ready") as ready,
        ):
            assert ready.status == 200
    assert platform.process.poll() is None  # still running
