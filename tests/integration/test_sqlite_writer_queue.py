"""SQLite's one writer: every task of the process queues for it, in order.

A task started inside a transaction (a background writer, a batch flusher) must
queue like any other: it is not the task holding the lock. If it skipped the
queue it would race the holder for the file lock, and under load wait out
busy_timeout and fail with "database is locked" — which a short busy_timeout
shows at once here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from services.common.db.engine import Database
from services.common.errors import Unavailable


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}", sqlite_busy_timeout_ms=100)
    async with database.transaction(None) as session:
        await session.execute(text("CREATE TABLE notes (n INTEGER)"))
    try:
        yield database
    finally:
        await database.close()


async def _insert(db: Database, n: int) -> None:
    async with db.transaction(None) as session:
        await session.execute(text("INSERT INTO notes VALUES (:n)"), {"n": n})


async def _notes(db: Database) -> list[int]:
    async with db.transaction(None) as session:
        return list((await session.scalars(text("SELECT n FROM notes ORDER BY rowid"))).all())


async def test_a_task_started_inside_a_transaction_queues_for_the_writer(db: Database) -> None:
    go = asyncio.Event()

    async def background_writer() -> None:  # as the audit writer, started by a first call
        await go.wait()
        await _insert(db, 3)

    async with db.transaction(None) as session:
        await session.execute(text("INSERT INTO notes VALUES (1)"))
        # Started here, it inherits this transaction's context; it writes later, while
        # another writer holds the lock for longer than busy_timeout.
        background = asyncio.create_task(background_writer())
    holding = asyncio.Event()

    async def slow_writer() -> None:
        async with db.transaction(None) as session:
            holding.set()
            await session.execute(text("INSERT INTO notes VALUES (2)"))
            await asyncio.sleep(0.5)  # five busy_timeouts

    slow = asyncio.create_task(slow_writer())
    await holding.wait()
    go.set()
    # "database is locked" if the background writer skipped the queue.
    await asyncio.gather(slow, background)
    assert await _notes(db) == [1, 2, 3]


async def test_work_a_transaction_awaits_in_another_task_uses_its_lock(db: Database) -> None:
    async with db.transaction(None):
        # wait_for runs the insert in a task of its own; the lock is the outer one's, and
        # nothing is written by the outer one yet, so the inner one takes the file lock.
        await asyncio.wait_for(_insert(db, 7), 5)
    assert await _notes(db) == [7]


async def test_a_writer_that_waits_out_the_busy_timeout_is_told_to_retry_and_holders_are_named(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another process's connection (a plain sqlite3 one here) holds the write lock.
    other = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    second = Database(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}", sqlite_busy_timeout_ms=100)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:  # a transaction of this process, on its own queue
        async with second.transaction(None) as session:
            await session.execute(text("SELECT 1"))
            held.set()
            await release.wait()

    try:
        with pytest.raises(Unavailable, match=r"database is busy.*retry"):
            await _insert(db, 1)
        assert "none (the lock is held by another process" in caplog.text
        other.rollback()
        caplog.clear()
        holding = asyncio.create_task(holder(), name="slow-holder")
        await held.wait()
        with pytest.raises(Unavailable):
            await _insert(db, 2)
        # The report names the task and the line it waits at.
        assert "task 'slow-holder' for" in caplog.text and "(holder)" in caplog.text
        release.set()
        await holding
        await _insert(db, 3)  # nothing was left holding the lock
        assert await _notes(db) == [3]
    finally:
        release.set()
        other.close()
        await second.close()
