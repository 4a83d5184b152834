"""The audit log's group commit, on both backends: every event lands, in its tenant.

Concurrent calls share one commit (the events that arrive while a write runs
go in the next); a call still returns only once its own event is committed,
a failed write fails every call whose event it held, and a caller that is
cancelled does not take its event with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from services.common.audit import AuditLog, AuditQuery
from services.common.db.engine import Database


def _event(tenant: str, n: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "actor": f"tenants/{tenant}/actors/a{n}",
        "method": "/hacs.search.v1.SearchService/Search",
        "permission": "read:observation",
        "resource": f"tenants/{tenant}",
        "outcome": "OK",
        "details": {"n": n},
    }


async def _all(log: AuditLog, tenant: str) -> list[int]:
    events, _ = await log.list(AuditQuery(tenant_id=tenant, page_size=1000))
    return sorted(e.details["n"] for e in events)


async def test_concurrent_events_share_commits_and_stay_in_their_tenant(db: Database) -> None:
    transactions = 0
    real = db.transaction

    @asynccontextmanager
    async def counted(tenant_id: str | None) -> AsyncIterator[Any]:
        nonlocal transactions
        transactions += 1
        async with real(tenant_id) as session:
            yield session

    db.transaction = counted  # type: ignore[method-assign]
    log = AuditLog(db)
    await asyncio.gather(
        *(log.append(**_event("north" if n % 2 else "south", n)) for n in range(60))
    )
    db.transaction = real  # type: ignore[method-assign]
    assert await _all(log, "north") == list(range(1, 60, 2))
    assert await _all(log, "south") == list(range(0, 60, 2))
    # The first event is written alone; the 59 that queued meanwhile share a commit per tenant.
    assert transactions <= 4


async def test_a_failed_write_fails_every_call_it_held(tmp_path: Path) -> None:
    unmigrated = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no audit table
    try:
        log = AuditLog(unmigrated)
        results = await asyncio.gather(
            *(log.append(**_event("north", n)) for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Exception) and "audit_events" in str(r) for r in results)
    finally:
        await unmigrated.close()


async def test_a_cancelled_caller_still_leaves_its_event(db: Database) -> None:
    log = AuditLog(db)
    first = asyncio.create_task(log.append(**_event("north", 1)))
    await asyncio.sleep(0)  # queued, the write started
    first.cancel()
    await log.append(**_event("north", 2))
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await _all(log, "north") == [1, 2]
