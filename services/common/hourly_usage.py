"""Usage per tenant and UTC hour: what billing exports and plan quotas read (docs/usage.md).

One value per (tenant, hour, metric, dimension) in `usage_hourly`:

| metric | dimension | kind |
|---|---|---|
| `calls`, `errors` | full gRPC method | counter (`errors`: status other than OK) |
| `embedding_tokens` | embedding model name | counter |
| `llm_input_tokens`, `llm_output_tokens` | `provider/model` | counter |
| `active_actors` | "" | distinct actors that called in the hour |
| `records_stored` | record collection | gauge |
| `vectors_stored` | vector index kind | gauge |

Counters are counted in memory on the request path and flushed every few
seconds (and at shutdown) as upserts that *add*, so any number of processes
writing the same bucket sum correctly. Each tenant's rows go in one
transaction, in key order: two flushes on PostgreSQL lock shared rows in the
same order and never deadlock. A tenant's rows that cannot be written are kept
for the next flush, and do not hold back the other tenants'.

Active actors are counted exactly however many processes see them: each
(tenant, hour, actor) goes to `usage_active_actors` with ON CONFLICT DO
NOTHING, and only the rows an insert really added (RETURNING) increment
`active_actors`, in the same transaction. The table also answers distinct
actors over longer periods.

Gauges are sampled, not counted: a process registers a source per gauge
(`sample_with`; the kernel registers records and vectors when it builds them),
and samples a tenant at most once per hour, at the first flush of the hour
that carries anything of that tenant. A sample *sets* its row (replicas
sampling the same hour write near-equal values; the latest wins), and lists
the dimensions with a non-zero value. An hour without a sample means no
process saw the tenant that hour: its value is that of the latest earlier hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, String, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import ColumnElement

from services.common.db.base import Base, UtcDateTime, utcnow
from services.common.db.engine import Database

log = logging.getLogger(__name__)

CALLS = "calls"
ERRORS = "errors"
EMBEDDING_TOKENS = "embedding_tokens"
LLM_INPUT_TOKENS = "llm_input_tokens"
LLM_OUTPUT_TOKENS = "llm_output_tokens"
ACTIVE_ACTORS = "active_actors"
RECORDS_STORED = "records_stored"
VECTORS_STORED = "vectors_stored"
COUNTERS = (CALLS, ERRORS, EMBEDDING_TOKENS, LLM_INPUT_TOKENS, LLM_OUTPUT_TOKENS)
GAUGES = (RECORDS_STORED, VECTORS_STORED)
METRICS = (*COUNTERS, ACTIVE_ACTORS, *GAUGES)

DIMENSION_CHARS = 200
ROWS_PER_STATEMENT = 500  # 5 bound values a row: far below SQLite's and asyncpg's limits


class UsageHourRow(Base):
    __tablename__ = "usage_hourly"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(DIMENSION_CHARS), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ActiveActorRow(Base):
    __tablename__ = "usage_active_actors"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(40), primary_key=True)


@dataclass(frozen=True, order=True)
class UsageHour:
    """One exported value."""

    tenant_id: str
    hour: datetime
    metric: str
    dimension: str
    value: int

    @property
    def key(self) -> tuple[str, datetime, str, str]:
        return (self.tenant_id, self.hour, self.metric, self.dimension)


def hour_of(moment: datetime) -> datetime:
    """The UTC hour `moment` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# (tenant, hour, metric, dimension)
Key = tuple[str, datetime, str, str]
# tenant -> {dimension: value}
GaugeSource = Callable[[str], Awaitable[dict[str, int]]]
# Reads what it needs after a flush, and returns how to apply it (see `after_flush`).
AfterFlush = Callable[[], Awaitable[Callable[[], None]]]


class HourlyMeter:
    def __init__(
        self,
        db: Database,
        flush_interval_seconds: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._interval = flush_interval_seconds
        self.clock = clock  # what hour it is (a test may fix it)
        self._counters: Counter[Key] = Counter()
        self._actors: set[tuple[str, datetime, str]] = set()
        # Actors this process already wrote for the current hour: no second insert.
        self._actors_written: set[tuple[str, datetime, str]] = set()
        # Per tenant, the amounts of `add` by (metric, hour): what quotas ask about, kept
        # apart so `pending` reads a few entries, not every counter of the process.
        self._totals: dict[str, Counter[tuple[str, datetime]]] = {}
        self._totals_in_flight: dict[str, Counter[tuple[str, datetime]]] = {}
        self._gauges: dict[str, GaugeSource] = {}
        self._sampled: set[tuple[str, datetime]] = set()
        self._after_flush: list[AfterFlush] = []
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- counting (request path: memory only) ------------------------------------

    def add(self, tenant_id: str, metric: str, dimension: str, amount: int) -> None:
        if amount > 0:
            hour = hour_of(self.clock())
            dimension = dimension[:DIMENSION_CHARS]  # the column's width, on every backend
            self._counters[(tenant_id, hour, metric, dimension)] += amount
            self._totals.setdefault(tenant_id, Counter())[(metric, hour)] += amount

    def record_call(self, tenant_id: str, actor_id: str, method: str, ok: bool) -> None:
        hour = hour_of(self.clock())
        self._counters[(tenant_id, hour, CALLS, method)] += 1
        if not ok:
            self._counters[(tenant_id, hour, ERRORS, method)] += 1
        seen = (tenant_id, hour, actor_id)
        if seen not in self._actors_written:
            self._actors.add(seen)

    def pending(self, tenant_id: str, metrics: Iterable[str], since: datetime) -> int:
        """What this process counted for the tenant since `since` and has not written yet."""
        wanted = set(metrics)
        return sum(
            n
            for totals in (self._totals, self._totals_in_flight)
            for (metric, hour), n in totals.get(tenant_id, Counter()).items()
            if metric in wanted and hour >= hour_of(since)
        )

    def sample_with(self, metric: str, source: GaugeSource) -> None:
        """Sample gauge `metric` of a tenant with `source` (at most hourly, see above)."""
        if metric not in GAUGES:
            raise ValueError(f"{metric!r} is not a gauge ({', '.join(GAUGES)})")
        self._gauges[metric] = source

    def after_flush(self, hook: AfterFlush) -> None:
        """After every successful flush, `hook` reads (quotas re-read their totals) and
        returns a function applying what it read; those run in one step with the flushed
        counts leaving `pending`, so no count is seen twice or missed."""
        self._after_flush.append(hook)

    # -- flushing ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hourly-usage-flush")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # a flush failure must not stop metering; counts are kept
                log.exception("hourly usage flush failed; will retry")

    async def flush(self) -> None:
        async with self._flush_lock:
            counters, actors, totals = self._counters, self._actors, self._totals
            self._counters, self._actors, self._totals = Counter(), set(), {}
            self._totals_in_flight = totals
            try:
                await self._flush(counters, actors, totals)
                applies = [await hook() for hook in self._after_flush]
            finally:
                self._totals_in_flight = {}
            for apply in applies:
                apply()

    async def _flush(
        self,
        counters: Counter[Key],
        actors: set[tuple[str, datetime, str]],
        totals: dict[str, Counter[tuple[str, datetime]]],
    ) -> None:
        now = hour_of(self.clock())
        self._forget_before(now)
        by_tenant: dict[str, dict[Key, int]] = {}
        for key, n in counters.items():
            by_tenant.setdefault(key[0], {})[key] = n
        seen_by_tenant: dict[str, list[tuple[str, datetime, str]]] = {}
        for seen_actor in actors:
            seen_by_tenant.setdefault(seen_actor[0], []).append(seen_actor)
        failure: Exception | None = None
        for tenant_id in sorted(by_tenant.keys() | seen_by_tenant.keys()):
            mine = by_tenant.get(tenant_id, {})
            seen = sorted(seen_by_tenant.get(tenant_id, []))
            try:
                gauges = await self._sample(tenant_id, now)
                await self._write(tenant_id, mine, seen, gauges or {})
            except Exception as exc:
                # Put back what was not written, so the next flush carries it; the other
                # tenants' rows are still written (one tenant's failure must not hold them).
                log.exception("hourly usage of %s not written; kept for the next flush", tenant_id)
                self._counters.update(mine)
                self._actors.update(seen)
                if tenant_id in totals:
                    self._totals.setdefault(tenant_id, Counter()).update(totals.pop(tenant_id))
                failure = failure or exc
                continue
            self._actors_written.update(seen)
            if gauges is not None:
                self._sampled.add((tenant_id, now))
        if failure is not None:
            raise failure

    def _forget_before(self, hour: datetime) -> None:
        self._actors_written = {a for a in self._actors_written if a[1] >= hour}
        self._sampled = {s for s in self._sampled if s[1] >= hour}

    async def _sample(self, tenant_id: str, hour: datetime) -> dict[Key, int] | None:
        """This hour's gauges of the tenant (None: this process sampled them already, or
        samples none). Read before the write's transaction opens: on SQLite a second one
        would wait for the first."""
        if not self._gauges or (tenant_id, hour) in self._sampled:
            return None
        sampled: dict[Key, int] = {}
        for metric, source in self._gauges.items():
            try:
                values = await source(tenant_id)
            except Exception:  # a gauge that cannot be read now is sampled next hour
                log.exception("sampling %s of %s failed", metric, tenant_id)
                continue
            sampled.update({(tenant_id, hour, metric, d): n for d, n in values.items() if n})
        return sampled

    async def _write(
        self,
        tenant_id: str,
        counters: dict[Key, int],
        actors: list[tuple[str, datetime, str]],
        gauges: dict[Key, int],
    ) -> None:
        insert: Any = postgresql.insert if self._db.is_postgres else sqlite.insert
        counters = dict(counters)
        async with self._db.transaction(tenant_id) as session:
            for batch in _batches(actors):
                stmt = (
                    insert(ActiveActorRow)
                    .values([{"tenant_id": t, "hour": h, "actor_id": a} for t, h, a in batch])
                    .on_conflict_do_nothing(index_elements=["tenant_id", "hour", "actor_id"])
                    .returning(ActiveActorRow.hour)
                )
                for hour in (await session.scalars(stmt)).all():
                    key = (tenant_id, hour_of(hour), ACTIVE_ACTORS, "")
                    counters[key] = counters.get(key, 0) + 1
            for rows, adds in ((counters, True), (gauges, False)):
                for batch in _batches(sorted(rows.items())):
                    stmt = insert(UsageHourRow).values(
                        [
                            {"tenant_id": t, "hour": h, "metric": m, "dimension": d, "value": n}
                            for (t, h, m, d), n in batch
                        ]
                    )
                    value = (
                        UsageHourRow.value + stmt.excluded.value if adds else stmt.excluded.value
                    )
                    await session.execute(
                        stmt.on_conflict_do_update(
                            index_elements=["tenant_id", "hour", "metric", "dimension"],
                            set_={"value": value},
                        )
                    )

    # -- reading -----------------------------------------------------------------

    async def read(self, query: UsageQuery) -> list[UsageHour]:
        """`read_usage`, after writing what this process counted so far (a tenant whose
        rows cannot be written now does not stop the others' from being read)."""
        try:
            await self.flush()
        except Exception:  # logged by the flush; its counts are kept for the next
            log.warning("reading hourly usage without this process's last counts")
        return await read_usage(self._db, query)

    async def stored_total(self, tenant_id: str, metrics: Sequence[str], since: datetime) -> int:
        """The sum of the tenant's written `metrics` from the hour of `since` on."""
        stmt = select(func.coalesce(func.sum(UsageHourRow.value), 0)).where(
            UsageHourRow.tenant_id == tenant_id,
            UsageHourRow.metric.in_(metrics),
            UsageHourRow.hour >= hour_of(since),
        )
        async with self._db.transaction(tenant_id) as session:
            return int(await session.scalar(stmt) or 0)


@dataclass(frozen=True)
class UsageQuery:
    """Rows of `tenant_ids` with start <= hour < end, in (tenant, hour, metric, dimension)
    order, after `after` (a page's last key), at most `limit`."""

    tenant_ids: Sequence[str]
    start: datetime
    end: datetime
    metrics: Sequence[str] = ()
    after: Key | None = None
    limit: int = 1000


async def read_usage(db: Database, query: UsageQuery) -> list[UsageHour]:
    """One page of hourly rows, each tenant read in its own transaction (row-level security
    shows a transaction only its tenant's rows)."""
    found: list[UsageHour] = []
    for tenant_id in sorted(query.tenant_ids):
        if query.after is not None and tenant_id < query.after[0]:
            continue
        if len(found) >= query.limit:
            break
        conditions: list[ColumnElement[bool]] = [
            UsageHourRow.tenant_id == tenant_id,
            UsageHourRow.hour >= hour_of(query.start),
            UsageHourRow.hour < query.end,
        ]
        if query.metrics:
            conditions.append(UsageHourRow.metric.in_(query.metrics))
        if query.after is not None and tenant_id == query.after[0]:
            _, hour, metric, dimension = query.after
            conditions.append(
                tuple_(UsageHourRow.hour, UsageHourRow.metric, UsageHourRow.dimension)
                > tuple_(hour, metric, dimension)
            )
        stmt = (
            select(UsageHourRow)
            .where(*conditions)
            .order_by(UsageHourRow.hour, UsageHourRow.metric, UsageHourRow.dimension)
            .limit(query.limit - len(found))
        )
        async with db.transaction(tenant_id) as session:
            rows = (await session.scalars(stmt)).all()
        found.extend(UsageHour(r.tenant_id, r.hour, r.metric, r.dimension, r.value) for r in rows)
    return found


def encode_key(key: Key) -> str:
    """A row key as text (a page token's content)."""
    tenant_id, hour, metric, dimension = key
    return json.dumps([tenant_id, hour.isoformat(), metric, dimension])


def decode_key(text: str) -> Key | None:
    """The key `encode_key` wrote, or None when `text` is not one."""
    try:
        tenant_id, hour, metric, dimension = json.loads(text)
        moment = datetime.fromisoformat(hour)
        if moment.tzinfo is None:
            return None
        moment = moment.astimezone(UTC)
    except (ValueError, TypeError, OverflowError):
        return None
    # Printable text only: a NUL or a lone surrogate would reach the database's driver.
    if not all(isinstance(s, str) and s.isprintable() for s in (tenant_id, metric, dimension)):
        return None
    return (tenant_id, moment, metric, dimension)


def _batches(rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start : start + ROWS_PER_STATEMENT]
