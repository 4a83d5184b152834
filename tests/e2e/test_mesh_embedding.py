"""The mesh's one service-to-service call: search (its indexer and its queries) embedding
through the embedding pods, as the Helm chart wires it.

Three `hacs serve` processes on one PostgreSQL, as three pods would be: tenant + records,
embedding alone, search alone with HACS_EMBEDDING_URL at the embedding process and
HACS_TENANT_URL at the tenant process. The services' key comes from one Secret value:
the tenant process installs it (HACS_BOOTSTRAP_SERVICE_KEY), the search process presents it
(HACS_SERVICE_API_KEY_FILE). Before this test the path had never run: the SDK fetched the
services' token from the embedding process, which hosts no TenantService.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hacs.client import HacsClient
from hacs.embedding.v1 import embedding_service_pb2 as epb
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.search.v1 import search_service_pb2 as spb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from tests.support import clinical
from tests.support.edge import start_serve
from tests.support.postgres import create_database

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TENANT = "ward-embed"


def _new_service_key() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "admin", "new-service-key"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _tail(path: str) -> str:
    return Path(path).read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str
) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("mesh-embedding")
    database_url = asyncio.run(create_database(postgres_admin_url))
    service_key = _new_service_key()
    key_file = root / "service.key"  # as the chart mounts the Secret: a file
    key_file.write_text(service_key + "\n")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        tenant, tenant_grpc, tenant_http = start_serve(
            "tenant",
            root,
            {
                "HACS_SERVICES": "tenant,records",
                "HACS_DATABASE_URL": database_url,
                "HACS_DATA_DIR": str(root / "tenant-data"),
                "HACS_BOOTSTRAP_SERVICE_KEY_FILE": str(key_file),
            },
        )
        processes.append(tenant)
        jwks = f"http://{tenant_http}/.well-known/jwks.json"
        common = {
            "HACS_DATABASE_URL": database_url,
            "HACS_AUTO_MIGRATE": "false",
            "HACS_JWKS_URL": jwks,
        }
        embedding, embedding_grpc, _ = start_serve(
            "embedding",
            root,
            {**common, "HACS_SERVICES": "embedding", "HACS_DATA_DIR": str(root / "embedding-data")},
        )
        processes.append(embedding)
        search, search_grpc, _ = start_serve(
            "search",
            root,
            {
                **common,
                "HACS_SERVICES": "search",
                "HACS_DATA_DIR": str(root / "search-data"),
                "HACS_EMBEDDING_URL": embedding_grpc,
                "HACS_TENANT_URL": tenant_grpc,
                "HACS_SERVICE_API_KEY_FILE": str(key_file),
            },
        )
        processes.append(search)
        yield {
            "tenant": tenant_grpc,
            "embedding": embedding_grpc,
            "search": search_grpc,
            "service_key": service_key,
            "operator_key": (root / "tenant-data/operator.key").read_text().strip(),
            "search_log": str(root / "search.log"),
        }
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


async def test_search_embeds_through_the_embedding_pods_with_the_services_key(
    mesh: dict[str, str],
) -> None:
    async with HacsClient(mesh["tenant"], api_key=mesh["operator_key"]) as operator:
        created = await operator.tenant.CreateTenant(
            tpb.CreateTenantRequest(
                tenant_id=TENANT,
                tenant=tenant_pb2.Tenant(display_name="Embedding ward"),
                admin=tenant_pb2.Actor(display_name="Admin"),
            )
        )
    admin_key = created.admin_api_key.secret
    async with HacsClient(mesh["tenant"], api_key=admin_key) as records:
        for n, (family, given) in enumerate((("Okafor", "Adaeze"), ("Lindqvist", "Maja"))):
            await records.records.CreateRecord(
                rpb.CreateRecordRequest(
                    parent=f"tenants/{TENANT}",
                    record_id=f"p{n}",
                    record=clinical.patient(family, given, "female"),
                )
            )
    # The search process's indexer embeds the new patients through the embedding process;
    # its queries embed there too (hybrid search needs the query vector).
    async with HacsClient(mesh["search"], api_key=admin_key, token_target=mesh["tenant"]) as client:
        for _ in range(300):
            status = await client.search.GetIndexStatus(
                spb.GetIndexStatusRequest(parent=f"tenants/{TENANT}")
            )
            if status.indexed_sequence and status.indexed_sequence >= status.head_sequence:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the indexer never caught up:\n{_tail(mesh['search_log'])}")
        found = await client.search.Search(
            spb.SearchRequest(parent=f"tenants/{TENANT}", query="Lindqvist", top_k=5)
        )
    assert found.hits and found.hits[0].name == f"tenants/{TENANT}/patients/p1"


async def test_the_services_key_can_embed_and_nothing_else(mesh: dict[str, str]) -> None:
    async with HacsClient(
        mesh["embedding"], api_key=mesh["service_key"], token_target=mesh["tenant"]
    ) as services:
        reply = await services.embedding.Embed(epb.EmbedRequest(texts=["chest pain"]))
        assert len(reply.embeddings[0].values) == 384
    async with HacsClient(mesh["tenant"], api_key=mesh["service_key"]) as services:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await services.tenant.ListTenants(tpb.ListTenantsRequest())
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await services.records.GetRecord(
                rpb.GetRecordRequest(name=f"tenants/{TENANT}/patients/p0")
            )
        assert caught.value.code() in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.NOT_FOUND,
        )


def test_a_malformed_bootstrap_service_key_stops_the_tenant_service(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="HACS_BOOTSTRAP_SERVICE_KEY must look like"):
        start_serve(
            "bad-key",
            tmp_path,
            {
                "HACS_SERVICES": "tenant",
                "HACS_DATA_DIR": str(tmp_path / "data"),
                "HACS_BOOTSTRAP_SERVICE_KEY": "not-a-key",
            },
        )
