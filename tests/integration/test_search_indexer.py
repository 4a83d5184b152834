"""The record indexer against real Milvus Lite, SQLite and the shipped model:
restart-safe (no gaps, no duplicates), deletes honoured, derived documents
(a patient's conditions) refreshed, and a rebuild from scratch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.caller import Caller
from services.common.db import migrate
from services.common.db.engine import Database
from services.kernel.embedding.embedder import LocalEmbedder
from services.kernel.embedding.registry import ModelRegistry
from services.kernel.records.store import RecordStore
from services.kernel.records.write_plans import NewRecord
from services.kernel.records.writes import RecordWriter
from services.kernel.retrieval.cursors import IndexCursors
from services.kernel.retrieval.lexical_store import SqliteLexical
from services.kernel.retrieval.vector_index import RECORDS, VectorIndex
from services.kernel.tenancy.plans import ACTIVE, Limits
from services.search.indexer import BackfillProgress, RecordIndexer
from services.tenant.bootstrap import ensure_platform
from services.tenant.models import Tenant
from services.tenant.store import TenantStore
from tests.support import clinical

TENANT = "index-test"
ADMIN = Caller(
    tenant_id=TENANT, actor_id="admin", role="administrator", permissions=frozenset({"admin:*"})
)


@dataclass
class World:
    db: Database
    index: VectorIndex
    lexical: SqliteLexical
    embedder: LocalEmbedder
    writer: RecordWriter


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root: Path = tmp_path_factory.mktemp("indexer")
    db = Database(f"sqlite+aiosqlite:///{root / 'hacs.db'}")
    await migrate.upgrade(db)
    store = TenantStore(db)
    await ensure_platform(store, operator_key="", key_file=root / "operator.key")
    from services.common.db.base import utcnow

    async with store.transaction(TENANT) as tx:
        now = utcnow()
        await tx.add_tenant(
            Tenant(TENANT, "Index test", "enterprise", Limits(), ACTIVE, {}, now, now, 1)
        )
    registry = ModelRegistry(db)
    await registry.start()
    index = VectorIndex(str(root / "milvus.db"), 384)
    await index.connect()

    async def no_limit(_: str) -> int:
        return 0

    lexical = SqliteLexical(root / "lexical.db")
    writer = RecordWriter(RecordStore(db), no_limit)
    yield World(db, index, lexical, LocalEmbedder(registry), writer)
    lexical.close()
    await registry.close()
    await index.close()
    await db.close()


async def _index_pks(world: World) -> list[str]:
    name = await world.index.ensure(RECORDS)
    rows = world.index.client.query(
        name, filter=f'tenant_id == "{TENANT}"', output_fields=["pk"], limit=10_000
    )
    return sorted(r["pk"] for r in rows)


async def test_a_crash_between_index_write_and_cursor_replays_without_duplicates(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = await world.writer.create(ADMIN, TENANT, NewRecord("crash-p", clinical.patient()))
    for i in range(12):
        await world.writer.create(
            ADMIN, TENANT, NewRecord(f"crash-o{i}", clinical.hba1c(patient.name, 6 + i / 10))
        )

    cursors = IndexCursors(world.db, RECORDS)
    real_save = IndexCursors.save

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the cursor was committed")

    monkeypatch.setattr(IndexCursors, "save", crash)
    with pytest.raises(RuntimeError):
        await RecordIndexer(world.db, world.index, world.lexical, world.embedder).catch_up(TENANT)
    assert (await cursors.read(TENANT))[0] == 0  # nothing committed
    assert len(await _index_pks(world)) == 13  # but the documents were written

    monkeypatch.setattr(IndexCursors, "save", real_save)
    restarted = RecordIndexer(world.db, world.index, world.lexical, world.embedder)
    await restarted.catch_up(TENANT)
    pks = await _index_pks(world)
    assert len(pks) == len(set(pks)) == 13  # replayed, not duplicated
    assert await world.lexical.count(RECORDS, TENANT) == 13
    async with RecordStore(world.db).transaction(TENANT) as tx:
        assert (await cursors.read(TENANT))[0] == await tx.head_sequence()

    # More writes after the restart land too: no gap at the resume point.
    await world.writer.create(
        ADMIN, TENANT, NewRecord("crash-late", clinical.hba1c(patient.name, 9.1))
    )
    await restarted.catch_up(TENANT)
    assert f"{TENANT}/observations/crash-late" in await _index_pks(world)


async def test_deletes_and_patient_documents_follow_the_records(world: World) -> None:
    indexer = RecordIndexer(world.db, world.index, world.lexical, world.embedder)
    patient = await world.writer.create(
        ADMIN, TENANT, NewRecord("follow-p", clinical.patient("Lee", "Ann"))
    )
    await world.writer.create(
        ADMIN, TENANT, NewRecord("follow-c", clinical.condition(patient.name))
    )
    obs = await world.writer.create(
        ADMIN, TENANT, NewRecord("follow-o", clinical.hba1c(patient.name, 7.7))
    )
    await indexer.catch_up(TENANT)
    docs = await world.index.fetch(
        RECORDS, TENANT, [f"{TENANT}/patients/follow-p"], ["text", "codes"]
    )
    patient_doc = docs[f"{TENANT}/patients/follow-p"]
    assert (
        "Diabetes mellitus type 2" in patient_doc["text"]
    )  # the condition is on the patient's document
    assert "http://snomed.info/sct|44054006" in patient_doc["codes"]

    await world.writer.delete(ADMIN, obs.name, "", "entered in error")
    await world.writer.delete(ADMIN, f"tenants/{TENANT}/conditions/follow-c", "", "")
    await indexer.catch_up(TENANT)
    pks = await _index_pks(world)
    assert f"{TENANT}/observations/follow-o" not in pks
    refreshed = await world.index.fetch(RECORDS, TENANT, [f"{TENANT}/patients/follow-p"], ["text"])
    assert "Diabetes" not in refreshed[f"{TENANT}/patients/follow-p"]["text"]


async def test_backfill_rebuilds_from_the_records(world: World) -> None:
    indexer = RecordIndexer(world.db, world.index, world.lexical, world.embedder)
    await indexer.catch_up(TENANT)
    before = await _index_pks(world)
    await world.index.delete_where(RECORDS, TENANT, "")  # the index is lost
    assert await _index_pks(world) == []
    seen: list[int] = []

    async def progress(p: BackfillProgress) -> None:
        seen.append(p.processed)

    indexed, _ = await indexer.backfill(TENANT, batch_size=5, progress=progress)
    assert await _index_pks(world) == before
    assert indexed == len(before) and seen == sorted(seen) and seen[-1] == indexed
