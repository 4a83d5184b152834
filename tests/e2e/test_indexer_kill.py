"""The record indexer killed (SIGKILL) in the middle of a round resumes without gaps or
duplicates: a real `hacs serve` process (tenant, records, embedding, search with its
live indexer) on SQLite and the shipped model, with Milvus Lite (its file in the
data directory) and with a real Milvus server.

The kill lands at a chosen moment: after the first round's cursor was committed and
once documents of the next round were already written to Milvus and the lexical
store, so the restarted indexer must replay them (upserts by record key) and go on.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest
from hacs.client import HacsClient
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.search.v1 import search_service_pb2 as spb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tpb
from pymilvus import MilvusClient

from services.search.indexer import CHANGES_PER_ROUND
from tests.support import clinical
from tests.support.edge import start_serve

pytestmark = [pytest.mark.e2e]

TENANT = "kill-test"
PATIENTS = 2 * CHANGES_PER_ROUND + 400  # three rounds of changes
FAMILIES = ("Garcia", "Okafor", "Nguyen", "Kowalski", "Haddad", "Tanaka")


def _patients() -> list[rpb.BatchCreateRecordsRequest]:
    requests = [
        rpb.CreateRecordRequest(
            record_id=f"p{n:05d}",
            record=clinical.patient(
                FAMILIES[n % len(FAMILIES)], f"Given{n}", ("female", "male")[n % 2]
            ),
        )
        for n in range(PATIENTS)
    ]
    parent = f"tenants/{TENANT}"
    return [
        rpb.BatchCreateRecordsRequest(parent=parent, requests=requests[i : i + 500])
        for i in range(0, len(requests), 500)
    ]


def _lexical_docs(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'lexical.db'}?mode=ro", uri=True) as conn:
        return int(
            conn.execute("SELECT count(*) FROM docs WHERE tenant_id = ?", (TENANT,)).fetchone()[0]
        )


async def _status(client: HacsClient) -> spb.GetIndexStatusResponse:
    return await client.search.GetIndexStatus(  # type: ignore[no-any-return]
        spb.GetIndexStatusRequest(parent=f"tenants/{TENANT}")
    )


@pytest.mark.parametrize("milvus", ["milvus-lite", "milvus-server"])
async def test_an_indexer_killed_mid_round_resumes_without_gaps_or_duplicates(
    tmp_path: Path, milvus: str, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    lite = milvus == "milvus-lite"
    milvus_uri = "" if lite else request.getfixturevalue("milvus_uri")
    env = {
        "HACS_SERVICES": "tenant,records,embedding,search",
        "HACS_DATA_DIR": str(data_dir),
        "HACS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}",
        "HACS_MILVUS_URI": milvus_uri,
    }
    # The records first, with no indexer running: the kill must land mid-indexing, not
    # race the writes (on a server the indexer keeps up with them).
    process, address, _ = start_serve("writer", tmp_path, {**env, "HACS_INDEXER_ENABLED": "false"})
    try:
        operator_key = (data_dir / "operator.key").read_text().strip()
        async with HacsClient(address, api_key=operator_key) as operator:
            created = await operator.tenant.CreateTenant(
                tpb.CreateTenantRequest(
                    tenant_id=TENANT,
                    tenant=tenant_pb2.Tenant(
                        display_name="Kill test",
                        plan=tenant_pb2.PLAN_ENTERPRISE,
                        limits=tenant_pb2.TenantLimits(
                            max_patients=100_000, calls_per_minute=1_000_000
                        ),
                    ),
                    admin=tenant_pb2.Actor(display_name="Admin"),
                )
            )
        key = created.admin_api_key.secret
        async with HacsClient(address, api_key=key, default_timeout=120) as client:
            for batch in _patients():
                await client.records.BatchCreateRecords(batch)
            head = (await _status(client)).head_sequence
        process.terminate()
        process.wait(timeout=60)

        process, address, _ = start_serve("first", tmp_path, env)
        async with HacsClient(address, api_key=key, default_timeout=120) as client:
            # Wait for the first committed round, then for documents past the cursor.
            for _ in range(1200):
                status = await _status(client)
                assert status.indexed_sequence < head, "indexed everything before the kill"
                if status.indexed_sequence and _lexical_docs(data_dir) > PATIENTS - (
                    head - status.indexed_sequence
                ):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the indexer never got past its first round")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        cursor_at_kill = status.indexed_sequence
        assert 0 < cursor_at_kill < head

        process, address, _ = start_serve("again", tmp_path, env)
        async with HacsClient(address, api_key=key, default_timeout=120) as client:
            for _ in range(600):
                status = await _status(client)
                if status.indexed_sequence >= head:
                    break
                await asyncio.sleep(0.1)
            assert status.indexed_sequence == head
            found = await client.search.Search(
                spb.SearchRequest(parent=f"tenants/{TENANT}", query=f"Given{PATIENTS - 1}")
            )
            last = f"tenants/{TENANT}/patients/p{PATIENTS - 1:05d}"  # written in the last round
            assert last in {hit.name for hit in found.hits}
    finally:
        process.terminate()
        process.wait(timeout=60)

    # Every patient once, in Milvus and in the lexical store: no gap, no duplicate.
    index = MilvusClient(uri=str(data_dir / "milvus.db") if lite else milvus_uri)
    try:
        name = next(n for n in index.list_collections() if n.startswith("hacs_records"))
        index.load_collection(name)  # loaded already on a server; Milvus Lite reopens released
        rows = index.query(
            name,
            filter=f'tenant_id == "{TENANT}"',
            output_fields=["pk"],
            limit=16_384,
            consistency_level="Strong",
        )
    finally:
        index.close()
    pks = [row["pk"] for row in rows]
    assert len(pks) == len(set(pks)) == PATIENTS
    assert set(pks) == {f"{TENANT}/patients/p{n:05d}" for n in range(PATIENTS)}
    assert _lexical_docs(data_dir) == PATIENTS
