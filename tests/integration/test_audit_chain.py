"""The audit log's hash chain, on both backends: one chain per tenant even when several
processes write at once, and every kind of tampering named by `verify` — a changed event,
a removed one, and a removed tail, which only a checkpoint kept elsewhere can show.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, update

from services.cli import main
from services.common.audit import AuditEventRow, AuditLog
from services.common.audit_verify import Checkpoint, head, public_keys, verify
from services.common.db import migrate
from services.common.db.base import utcnow
from services.common.db.engine import Database
from services.common.signing_keys import SigningKeys
from services.kernel.tenancy.tables import TenantRow


def event(tenant: str, n: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "actor": f"tenants/{tenant}/actors/a{n % 3}",
        "method": "/hacs.records.v1.RecordService/GetRecord",
        "permission": "read:patient",
        "resource": f"tenants/{tenant}/patients/p{n}",
        "outcome": "OK" if n % 4 else "PERMISSION_DENIED",
        "details": {"n": n, "peer": "ipv4:10.0.0.7", "reason": "ünïcode ✓"},
    }


async def write(log: AuditLog, tenant: str, numbers: range) -> None:
    await asyncio.gather(*(log.append(**event(tenant, n)) for n in numbers))


async def test_two_processes_extend_one_chain_per_tenant(db: Database, database_url: str) -> None:
    other = Database(database_url)  # a second process: its own pool, its own writer
    try:
        first, second = AuditLog(db, max_batch=7), AuditLog(other, max_batch=5)
        await asyncio.gather(
            write(first, "ward-a", range(0, 60)),
            write(second, "ward-a", range(60, 120)),
            write(second, "ward-b", range(0, 30)),
        )
    finally:
        await other.close()
    a, b = await verify(db, "ward-a", []), await verify(db, "ward-b", [])
    assert a.intact and b.intact, a.problems + b.problems
    assert (a.events, a.first_seq, a.last_seq) == (120, 1, 120)
    assert (b.events, b.last_seq) == (30, 30)  # another tenant's chain is its own


async def tamper(db: Database, tenant: str, statement: Any) -> None:
    async with db.transaction(tenant) as session:
        await session.execute(statement)


async def test_a_changed_or_removed_event_breaks_the_chain(db: Database) -> None:
    log = AuditLog(db)
    for tenant in ("changed", "removed"):
        for n in range(10):  # one at a time: ten batches, ten links
            await log.append(**event(tenant, n))
    rows = AuditEventRow.__table__
    await tamper(
        db,
        "changed",
        update(rows)
        .where(rows.c.tenant_id == "changed", rows.c.seq == 4)
        .values(outcome="OK", actor="tenants/changed/actors/someone-else"),
    )
    await tamper(db, "removed", delete(rows).where(rows.c.tenant_id == "removed", rows.c.seq == 6))
    changed, removed = await verify(db, "changed", []), await verify(db, "removed", [])
    assert changed.problems == ["event 4 was changed after it was written"]
    assert removed.problems == ["events 6..6 are missing"]


async def test_a_removed_tail_shows_only_against_a_checkpoint(db: Database, tmp_path: Path) -> None:
    log = AuditLog(db)
    for n in range(12):
        await log.append(**event("tail", n))
    keys = SigningKeys.load(tmp_path / "keys", generate_if_empty=True)
    token = (await head(db, "tail")).sign(keys)
    checkpoint = Checkpoint.read(token, public_keys(keys))
    assert checkpoint.seq == 12
    rows = AuditEventRow.__table__
    await tamper(db, "tail", delete(rows).where(rows.c.tenant_id == "tail", rows.c.seq > 9))

    alone = await verify(db, "tail", [])
    assert alone.intact and alone.last_seq == 9  # the chain alone cannot see it
    checked = await verify(db, "tail", [checkpoint])
    assert not checked.intact
    assert "saw event 12, but the log ends at 9" in checked.problems[0]

    # Events written again over the removed numbers differ from what was checkpointed.
    for n in range(100, 104):
        await log.append(**event("tail", n))
    rewritten = await verify(db, "tail", [checkpoint])
    assert any("differs from the checkpoint" in p for p in rewritten.problems)


def test_a_checkpoint_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    ours = SigningKeys.load(tmp_path / "ours", generate_if_empty=True)
    theirs = SigningKeys.load(tmp_path / "theirs", generate_if_empty=True)
    forged = Checkpoint("ward", 1, "0" * 64, "2026-12-07T00:00:00+00:00").sign(theirs)
    with pytest.raises(ValueError, match="does not know"):
        Checkpoint.read(forged, public_keys(ours))


async def test_the_migration_links_the_events_already_written(database_url: str) -> None:
    db = Database(database_url)
    try:
        await migrate.upgrade(db, "0006")
        async with db.transaction(None) as session:
            await session.execute(insert(TenantRow.__table__), [_tenant_row("older")])
        async with db.transaction("older") as session:
            await session.execute(
                insert(_pre_chain_table()),
                [{**event("older", n), "event_time": utcnow()} for n in range(25)],
            )
        await migrate.upgrade(db)
        report = await verify(db, "older", [])
        assert report.intact and (report.events, report.unchained) == (25, 0)
        await AuditLog(db).append(**event("older", 99))  # the chain goes on from there
        assert (await verify(db, "older", [])).last_seq == 26
    finally:
        await db.close()


def _pre_chain_table() -> Any:
    """`audit_events` as revision 0006 had it (no chain columns)."""
    from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table

    return Table(
        "audit_events",
        MetaData(),
        Column("tenant_id", String),
        Column("event_time", DateTime(timezone=True)),
        Column("actor", String),
        Column("method", String),
        Column("permission", String),
        Column("resource", String),
        Column("outcome", String),
        Column("details", JSON),
    )


def test_the_audit_commands_checkpoint_verify_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}"
    monkeypatch.setenv("HACS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HACS_DATABASE_URL", url)
    SigningKeys.load(tmp_path / "data" / "keys", generate_if_empty=True)

    async def setup() -> None:
        db = Database(url)
        await migrate.upgrade(db)
        async with db.transaction(None) as session:
            await session.execute(insert(TenantRow.__table__), [_tenant_row("ward")])
        log = AuditLog(db)
        for n in range(8):
            await log.append(**event("ward", n))
        await db.close()

    asyncio.run(setup())
    checkpoints = tmp_path / "worm"
    assert main(["audit", "checkpoint", "--all-tenants", "--dir", str(checkpoints)]) == 0
    assert (checkpoints / "ward.jws").read_text().count("\n") == 1
    assert main(["audit", "verify", "--tenant", "ward", "--dir", str(checkpoints)]) == 0
    assert "ward: intact: events 1..8" in capsys.readouterr().out

    out = tmp_path / "ward.jsonl"
    assert main(["audit", "export", "--tenant", "ward", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 9))
    assert lines[1]["prev_hash"] == lines[0]["chain_hash"]

    async def cut_tail() -> None:
        db = Database(url)
        rows = AuditEventRow.__table__
        await tamper(db, "ward", delete(rows).where(rows.c.seq == 8))
        await db.close()

    asyncio.run(cut_tail())
    assert main(["audit", "verify", "--tenant", "ward", "--dir", str(checkpoints), "--json"]) == 1
    [report] = json.loads(capsys.readouterr().out)
    assert report["intact"] is False and report["last_seq"] == 7


def _tenant_row(tenant_id: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": tenant_id,
        "display_name": "Ward",
        "plan": "standard",
        "state": "active",
        "labels": {},
        "create_time": now,
        "update_time": now,
    }
