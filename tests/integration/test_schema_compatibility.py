"""A database newer than the code: which code may run on it, and what rolling forward repairs.

In process, on SQLite (and PostgreSQL where the SQL differs): the database is
made "ahead" by writing a revision this build does not know into
alembic_version, as a later release's `hacs migrate` would have. The real
rollback, an older build in its own process, is tests/integration/test_schema_rollback.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from services.common.db import migrate
from services.common.db.base import utcnow
from services.common.db.compatibility import Fit
from services.common.db.engine import Database
from services.common.runtime.platform import open_platform
from services.common.settings import Settings
from services.kernel.records.store import OwnedOnly, RecordQuery, RecordStore
from services.kernel.records.tables import ChangeRow, RecordRow
from services.kernel.tenancy.standing import TenancyRegistry
from services.kernel.tenancy.tables import TenantRow

LATER = "0099"  # a revision of a later release, unknown to this build


async def _mark_ahead(db: Database, min_code_revision: str) -> None:
    """As a later release leaves it: at LATER, admitting code of `min_code_revision` or later."""
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": LATER})
        await conn.execute(
            text("UPDATE hacs_schema_compat SET min_code_revision = :m"), {"m": min_code_revision}
        )


def _settings(tmp_path: Path, url: str, auto_migrate: bool) -> Settings:
    return Settings.from_env(
        {},
        data_dir=str(tmp_path / "data"),
        database_url=url,
        services="tenant",
        auto_migrate=str(auto_migrate).lower(),
    )


async def test_migrate_records_the_oldest_code_revision_the_schema_admits(db: Database) -> None:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT min_code_revision FROM hacs_schema_compat"))).all()
    assert [r[0] for r in rows] == ["0001"]  # every migration so far is an expand
    state = await migrate.schema_state(db)
    assert state.fit is Fit.CURRENT and state.current == migrate.head_revision()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("auto_migrate", [False, True])
async def test_a_newer_schema_that_only_expanded_is_run_as_it_is(
    db: Database,
    database_url: str,
    tmp_path: Path,
    auto_migrate: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _mark_ahead(db, migrate.head_revision())
    with caplog.at_level(logging.WARNING):
        platform = await open_platform(
            _settings(tmp_path, database_url, auto_migrate), TenancyRegistry
        )
    await platform.close()
    assert f"database schema is at '{LATER}', newer than this build's" in caplog.text
    assert await migrate.current_revision(db) == LATER  # never downgraded, never "upgraded"
    await migrate.upgrade(db)  # what `hacs migrate` runs: it leaves the schema as well
    assert await migrate.current_revision(db) == LATER


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("auto_migrate", [False, True])
async def test_a_newer_schema_that_contracted_past_this_build_is_refused(
    db: Database, database_url: str, tmp_path: Path, auto_migrate: bool
) -> None:
    await _mark_ahead(db, LATER)
    with pytest.raises(RuntimeError) as refused:
        await open_platform(_settings(tmp_path, database_url, auto_migrate), TenancyRegistry)
    message = str(refused.value)
    assert f"needs code of revision '{LATER}' or later" in message
    assert "deploy the release whose migrations include that revision" in message
    with pytest.raises(migrate.SchemaTooNew):
        await migrate.upgrade(db)
    assert await migrate.current_revision(db) == LATER


async def test_memories_older_code_wrote_without_an_owner_get_it_when_rolling_forward(
    db: Database,
) -> None:
    """After a rollback, the release before 0005 writes memories and changes with no owner;
    the next `hacs migrate` (or start with auto-migrate) of this build fills them in, so
    the agent's own list and change stream find them again."""
    assert await migrate.current_revision(db) == migrate.head_revision()
    now = utcnow()
    agent = "tenants/north/actors/agent-a"
    async with db.transaction("north") as s:
        s.add(
            TenantRow(
                id="north", display_name="north", plan="free", max_users=0, max_patients=0,
                calls_per_minute=0, state="active", labels={}, create_time=now,
                update_time=now, version=1,
            )
        )  # fmt: skip
        await s.flush()
        for sequence, (record_id, body) in enumerate(
            (("m-1", {"memory_block": {"agent": agent, "content": "x"}}),
             ("m-2", {"memory_block": {"content": "no agent"}})),
            start=1,
        ):  # fmt: skip
            # As the older release writes them: no `owner` on the record or the change.
            await s.execute(
                insert(RecordRow).values(
                    tenant_id="north", collection="memoryBlocks", id=record_id, version=1,
                    patient_id=None, clinical_time=now, create_time=now, update_time=now,
                    created_by="x", updated_by="x", body=body,
                )
            )  # fmt: skip
            await s.execute(
                insert(ChangeRow).values(
                    tenant_id="north", sequence=sequence, collection="memoryBlocks",
                    record_id=record_id, operation="CREATE", version=1, commit_time=now,
                    actor="x", labels={}, changed_paths=[],
                )
            )  # fmt: skip
    store = RecordStore(db)
    own = OwnedOnly(frozenset({"memoryBlocks"}), agent)
    query = RecordQuery(collections=["memoryBlocks"], owned_only=own)
    async with store.transaction("north") as tx:
        assert await tx.query(query) == []  # hidden from its own agent until repaired

    await migrate.upgrade(db)  # rolling forward again: the schema is already at head

    async with store.transaction("north") as tx:
        assert [r.memory_block.agent for r in await tx.query(query)] == [agent]
        changes = await tx.changes(after=0, up_to=2, limit=10, collections=None, owned_only=own)
        assert [(c.record_id, c.owner) for c in changes] == [("m-1", agent)]
    async with db.transaction("north") as s:
        owners = dict((await s.execute(text("SELECT id, owner FROM records"))).all())
    assert owners == {"m-1": agent, "m-2": None}
