"""The database: one async engine per process, tenant-scoped transactions.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) the real one.
`Database.transaction(tenant_id)` is the only way domain code gets a session.
On PostgreSQL it also sets `hacs.tenant_id` for the transaction, which the
row-level security policies compare every tenant-owned row against: a query
that forgets its tenant filter returns nothing, not another tenant's rows.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.common.errors import Unavailable

TENANT_SETTING = "hacs.tenant_id"
# A read (Database.read) waits at most this long for SQLite's lock: in WAL mode only a
# recovery or a truncating checkpoint makes a reader wait, and it waits on the event loop.
READ_BUSY_MS = 2_000
# The execution option that marks a read-only transaction's connection (Database.read).
READ_ONLY = "hacs_read_only"
log = logging.getLogger(__name__)


class _Lease:
    """This process's hold on the SQLite writer lock: the task that took it, and when."""

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.since = time.monotonic()


# The lease of the transaction this code runs inside, if any. Work it awaits (nested
# transactions, tasks it gathers or waits for) uses the lock the lease holds. A task
# it started that runs on after it ended inherits a spent lease and queues like any
# other: skipping the queue, it would race the next holder for the file lock and,
# under load, wait out busy_timeout and fail with "database is locked".
_lease: contextvars.ContextVar[_Lease | None] = contextvars.ContextVar(
    "hacs_sqlite_lease", default=None
)
# The leases held now, by every Database of this process: a lease is live while it is
# here, and the report of a writer that waited out busy_timeout lists the others.
_held: set[_Lease] = set()


def _report_locked(waiting: _Lease) -> None:
    """Log who else in this process holds a SQLite transaction, and where each waits now."""
    now = time.monotonic()
    holders = []
    for lease in _held - {waiting}:
        task = lease.task
        where = ""
        if task is not None:
            frames = task.get_stack()  # outermost first: the last is where it waits
            if frames:
                code = frames[-1].f_code
                where = f" at {code.co_filename}:{frames[-1].f_lineno} ({code.co_name})"
        name = task.get_name() if task is not None else "?"
        holders.append(f"task {name!r} for {now - lease.since:.1f} s{where}")
    log.error(
        "SQLite writer gave up at busy_timeout; this process's other open transactions: %s",
        "; ".join(holders)
        if holders
        else "none (the lock is held by another process, or a connection left in a transaction)",
    )


class _TurnTimeout(Exception):
    """Another process held the writer's turn past the busy timeout."""

    def __str__(self) -> str:
        return "database is locked (another process held the writer's turn)"


class _FileTurn:
    """The writer's turn among the processes that share one SQLite file (the workers of
    `hacs serve --workers N`, `hacs index`, a migration): an exclusive flock on a lock file
    beside it, held from BEGIN IMMEDIATE to COMMIT.

    SQLite alone makes a writer that finds the file locked poll, sleeping 1, 2, 5, ... up to
    100 ms between tries, so one worker's write waited up to 100 ms after the other's
    commit. Here a waiter tries again every 0.5-2 ms on the event loop (no thread), and like
    SQLite gives up after the busy timeout.
    """

    def __init__(self, path: str, timeout_ms: int) -> None:
        self._path = path
        self._timeout = timeout_ms / 1000
        self._fd: int | None = None

    async def take(self) -> bool:
        """True once this process holds the turn; False after the busy timeout."""
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self._timeout
        pause = 0.0005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.002)

    def give_back(self) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _RunNow:
    """aiosqlite's queue to its worker thread, with every item run in place instead."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting caller, as the thread would
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class _InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the event loop's own thread.

    For read-only transactions on a SQLite file in WAL mode (Database.read), which take no
    lock a writer holds: reading a record by its key takes tens of microseconds in SQLite,
    less than the two thread switches aiosqlite makes for each statement, and fifty
    concurrent readers are not fifty threads contending for the interpreter lock (measured:
    bench/records_read_throughput.py). A large read holds the loop while SQLite reads; the
    rows' decoding held it anyway.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunNow()  # type: ignore[assignment]

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no worker thread to start


def _inline_creator(path: str) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    async def connect() -> aiosqlite.Connection:
        return await _InlineConnection(
            lambda: sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        )

    return connect


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        sqlite_busy_timeout_ms: int = 30_000,
    ) -> None:
        self.url = url
        self.is_postgres = url.startswith("postgresql")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_postgres:
            # A server can drop idle connections; a local SQLite file cannot.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._writer_lock: asyncio.Lock | None = None
        if url.startswith("sqlite"):
            _configure_sqlite(self.engine, sqlite_busy_timeout_ms)
            # SQLite has one writer at a time. Queueing our transactions here, in
            # order, beats letting a dozen pooled connections race for the file
            # lock, where a busy moment ends in "database is locked".
            self._writer_lock = asyncio.Lock()
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Read-only transactions (`read`): the `begin` hook below opens them deferred. On a
        # SQLite file they have an engine of their own whose connections run in place, on
        # the event loop's thread (_InlineConnection).
        self._read_engine: AsyncEngine | None = None
        # The writers' turn among processes (a SQLite file; none for PostgreSQL or memory).
        self._file_turn: _FileTurn | None = None
        readers = self.engine
        path = make_url(url).database if url.startswith("sqlite") else None
        if path and path != ":memory:":
            self._read_engine = create_async_engine(url, async_creator=_inline_creator(path))
            self._file_turn = _FileTurn(f"{path}.writer", sqlite_busy_timeout_ms)
            _configure_sqlite(self._read_engine, min(sqlite_busy_timeout_ms, READ_BUSY_MS))
            readers = self._read_engine
        self._readers = async_sessionmaker(
            readers.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    @asynccontextmanager
    async def transaction(self, tenant_id: str | None) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success, rolled back on error.

        `tenant_id=None` is for the few cross-tenant reads (the tenant registry);
        on PostgreSQL it leaves every tenant-owned table looking empty.
        """
        outer = _lease.get()
        if self._writer_lock is not None and outer not in _held:
            async with self._writer_lock:
                lease = _Lease()
                token = _lease.set(lease)
                _held.add(lease)
                turn = self._file_turn
                try:
                    if turn is not None and not await turn.take():
                        turn = None  # not ours to give back
                        raise OperationalError("BEGIN IMMEDIATE", None, _TurnTimeout())
                    async with self._sessions() as session, session.begin():
                        yield session
                except OperationalError as exc:
                    if "database is locked" not in str(exc):
                        raise
                    _report_locked(lease)
                    raise Unavailable(
                        "the database is busy: another writer held its lock past the "
                        "busy timeout; retry shortly (the operators have the holder's details)"
                    ) from exc
                finally:
                    if turn is not None:
                        turn.give_back()
                    _held.discard(lease)
                    _lease.reset(token)
            return
        async with self._sessions() as session, session.begin():
            if self.is_postgres:
                await session.execute(
                    text("SELECT set_config(:setting, :tenant, true)"),
                    {"setting": TENANT_SETTING, "tenant": tenant_id or ""},
                )
            yield session

    @asynccontextmanager
    async def read(self, tenant_id: str | None) -> AsyncIterator[AsyncSession]:
        """A read-only transaction: one consistent snapshot, which never queues behind writers.

        On SQLite (WAL) a deferred transaction: readers neither wait for the writer nor
        take a turn in this process's writer queue, so a read is not held up by a write
        committing (an audit record's fsync). It runs in place on the event loop's thread
        (_InlineConnection): a WAL reader takes no lock to wait for, and a row read costs
        less than handing it to a worker thread and back. On PostgreSQL the
        transaction is READ ONLY: a write inside it fails at once, naming the statement.
        Use `transaction` for anything that may write.
        """
        async with self._readers() as session, session.begin():
            if self.is_postgres:
                await session.execute(
                    text(
                        "SELECT set_config(:setting, :tenant, true), "
                        "set_config('transaction_read_only', 'on', true)"
                    ),
                    {"setting": TENANT_SETTING, "tenant": tenant_id or ""},
                )
            yield session

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # the driver's own errors vary by backend
            raise Unavailable(f"database not reachable: {exc.__class__.__name__}") from exc

    async def close(self) -> None:
        if self._file_turn is not None:
            self._file_turn.close()
        if self._read_engine is not None:
            await self._read_engine.dispose()
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so writers queue instead of failing
    (read-only transactions excepted).

    A deferred transaction that later writes can hit SQLITE_BUSY without
    waiting; taking the write lock at BEGIN makes concurrent writers wait up
    to busy_timeout and then see each other's committed rows (etag checks).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # Other processes (hacs index, hacs migrate) hold the file lock now and then.
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read-only transaction (Database.read) is deferred: in WAL mode it reads a
        # snapshot without the write lock.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
