"""Schema and isolation guarantees of the database layer, on both backends.

The second isolation layer is proven here: on PostgreSQL, a query that
forgets its tenant filter still sees only the transaction's tenant, and a
transaction with no tenant sees nothing.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, select, text

from services.app.schema import TENANT_OWNED_TABLES, metadata
from services.common.db import migrate
from services.common.db.base import utcnow
from services.common.db.engine import Database
from services.kernel.records.tables import ChangeRow, RecordRow
from services.kernel.tenancy.tables import ActorRow, TenantRow


async def test_migrations_build_exactly_the_declared_schema(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), metadata
            )
        )
    assert diff == []
    assert await migrate.current_revision(db) == migrate.head_revision()


async def test_every_table_with_tenant_id_is_declared_tenant_owned() -> None:
    with_tenant = {t.name for t in metadata.sorted_tables if "tenant_id" in t.c}
    assert with_tenant == set(TENANT_OWNED_TABLES)


async def _two_tenants_with_actors(db: Database) -> None:
    now = utcnow()
    for tenant in ("north", "south"):
        async with db.transaction(tenant) as s:
            s.add(
                TenantRow(
                    id=tenant,
                    display_name=tenant,
                    plan="free",
                    max_users=0,
                    max_patients=0,
                    calls_per_minute=0,
                    state="active",
                    labels={},
                    create_time=now,
                    update_time=now,
                    version=1,
                )
            )
            await s.flush()
            s.add(
                ActorRow(
                    tenant_id=tenant,
                    id="doc",
                    display_name="Doc",
                    role="physician",
                    permissions=[],
                    organization="",
                    department="",
                    is_active=True,
                    security_level="medium",
                    labels={},
                    create_time=now,
                    update_time=now,
                    version=1,
                )
            )


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_row_level_security_hides_other_tenants_from_unscoped_queries(db: Database) -> None:
    await _two_tenants_with_actors(db)
    async with db.transaction("north") as s:
        # No tenant filter on purpose: the policy must add it.
        rows = (await s.execute(select(ActorRow.tenant_id))).scalars().all()
        assert rows == ["north"]
        raw = (await s.execute(text("SELECT count(*) FROM actors"))).scalar()
        assert raw == 1
    async with db.transaction(None) as s:
        assert (await s.scalar(select(func.count()).select_from(ActorRow))) == 0
    # Writing a row for another tenant is refused by the policy's WITH CHECK.
    with pytest.raises(Exception, match="row-level security"):
        async with db.transaction("north") as s:
            await s.execute(text("UPDATE actors SET tenant_id = 'south' WHERE tenant_id = 'north'"))


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_policies_exist_and_the_app_role_cannot_bypass_them(
    db: Database, database_url: str
) -> None:
    dsn = database_url.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(dsn)
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert role["rolsuper"] is False and role["rolbypassrls"] is False
        secured = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relforcerowsecurity"
        )
        assert {r["relname"] for r in secured} >= set(TENANT_OWNED_TABLES)
        policies = await conn.fetch(
            "SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation'"
        )
        assert {r["tablename"] for r in policies} == set(TENANT_OWNED_TABLES)
    finally:
        await conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_row_level_security_covers_records_and_the_change_log(db: Database) -> None:
    from hacs.records.v1 import record_pb2

    from services.kernel.records.store import ChangeEntry, RecordStore, Stored
    from services.kernel.records.tables import ChangeRow, RecordRow

    await _two_tenants_with_actors(db)
    store = RecordStore(db)
    now = utcnow()
    for tenant in ("north", "south"):
        record = record_pb2.Record(name=f"tenants/{tenant}/patients/p-1", version=1)
        record.patient.gender = "female"
        record.create_time.FromDatetime(now)
        record.update_time.FromDatetime(now)
        async with store.transaction(tenant) as tx:
            await tx.insert_many([Stored(record, "patients", "p-1", "p-1", now, frozenset())])
            await tx.append_changes(
                [ChangeEntry("patients", "p-1", "CREATE", 1, now, "a", "p-1", None, {}, [])]
            )
    async with db.transaction("south") as s:
        # Unscoped on purpose: no WHERE tenant_id anywhere.
        assert (await s.execute(select(RecordRow.tenant_id))).scalars().all() == ["south"]
        assert (await s.execute(select(ChangeRow.tenant_id))).scalars().all() == ["south"]
        assert (await s.execute(text("SELECT count(*) FROM record_versions"))).scalar() == 1


async def test_existing_memories_get_their_owner_when_the_schema_moves_to_0005(
    database_url: str,
) -> None:
    """Migration 0005 backfills the owner of records and changes written before it, on
    PostgreSQL through row-level security (one tenant at a time)."""
    db = Database(database_url)
    try:
        await migrate.upgrade(db, "0004")
        now = utcnow()
        body = {"memory_block": {"agent": "tenants/north/actors/agent-b", "content": "x"}}
        async with db.transaction("north") as s:
            # Core inserts of the columns 0004 has (the models know later ones).
            await s.execute(
                insert(TenantRow).values(
                    id="north", display_name="north", plan="free", max_users=0,
                    max_patients=0, calls_per_minute=0, state="active", labels={},
                    create_time=now, update_time=now, version=1,
                )
            )  # fmt: skip
            for sequence, (collection, record_id, document) in enumerate(
                (("memoryBlocks", "m-1", body), ("patients", "p-1", {"patient": {}})), start=1
            ):
                # The records too (the models already know `owner`).
                await s.execute(
                    insert(RecordRow).values(
                        tenant_id="north", collection=collection, id=record_id, version=1,
                        patient_id=None, clinical_time=now, create_time=now, update_time=now,
                        created_by="x", updated_by="x", body=document,
                    )
                )  # fmt: skip
                await s.execute(
                    insert(ChangeRow).values(
                        tenant_id="north", sequence=sequence, collection=collection,
                        record_id=record_id, operation="CREATE", version=1, commit_time=now,
                        actor="x", labels={}, changed_paths=[],
                    )
                )  # fmt: skip
        await migrate.upgrade(db)
        async with db.transaction("north") as s:
            owners = dict((await s.execute(text("SELECT id, owner FROM records"))).all())
            changed = dict((await s.execute(text("SELECT record_id, owner FROM change_log"))).all())
        assert owners == {"m-1": "tenants/north/actors/agent-b", "p-1": None}
        assert changed == owners
    finally:
        await db.close()


async def test_a_read_runs_while_a_write_transaction_is_open(db: Database) -> None:
    """Reads take no turn behind writers: one completes while a write transaction (on
    SQLite, the file's write lock and this process's writer queue) is still open, and sees
    the last committed state, not the open transaction's rows."""
    await _two_tenants_with_actors(db)
    async with db.transaction("north") as writing:
        await writing.execute(text("UPDATE actors SET display_name = 'Changing' WHERE id = 'doc'"))
        await writing.flush()

        async def read_name() -> str:
            async with db.read("north") as s:
                return str(await s.scalar(select(ActorRow.display_name)))

        # Before: every transaction waited for the writer queue, so this timed out.
        assert await asyncio.wait_for(read_name(), timeout=10) == "Doc"
    assert await read_name() == "Changing"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_read_transaction_refuses_writes_on_postgres(db: Database) -> None:
    await _two_tenants_with_actors(db)
    with pytest.raises(Exception, match="read-only transaction"):
        async with db.read("north") as s:
            await s.execute(text("UPDATE actors SET display_name = 'x' WHERE id = 'doc'"))
    async with db.read("north") as s:  # still tenant-scoped: RLS sees one tenant
        assert (await s.execute(select(ActorRow.tenant_id))).scalars().all() == ["north"]
    async with db.read(None) as s:
        assert (await s.scalar(select(func.count()).select_from(ActorRow))) == 0
