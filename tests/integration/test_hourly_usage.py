"""Usage per tenant and hour on SQLite and PostgreSQL: several writers, exact totals.

Each `HourlyMeter` here has its own engine on the same database, as the processes of a
mesh do; they count the same buckets and flush at the same time, repeatedly. Counters
must add up exactly, each actor must count once per hour however many meters saw it,
gauges must hold the latest sample, and row-level security must keep tenants apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.common.db.engine import Database
from services.common.errors import QuotaExceeded
from services.common.hourly_usage import (
    ACTIVE_ACTORS,
    CALLS,
    EMBEDDING_TOKENS,
    ERRORS,
    LLM_INPUT_TOKENS,
    LLM_OUTPUT_TOKENS,
    RECORDS_STORED,
    HourlyMeter,
    UsageQuery,
    read_usage,
)
from services.common.runtime.admission import TenantStanding
from services.common.runtime.quotas import (
    EMBEDDING_TOKENS_PER_MONTH,
    LLM_TOKENS_PER_DAY,
    UsageQuotas,
    period_of,
)

NOON = datetime(2026, 12, 21, 12, 15, tzinfo=UTC)
ONE = datetime(2026, 12, 21, 13, 5, tzinfo=UTC)
GET = "/hacs.records.v1.RecordService/GetRecord"
WRITERS = 4
ROUNDS = 5
CALLS_PER_ROUND = 50


@pytest.fixture
async def writers(db: Database) -> AsyncIterator[list[HourlyMeter]]:
    """Meters with engines of their own (processes), on the `db` fixture's database."""
    engines = [Database(db.url) for _ in range(WRITERS)]
    yield [HourlyMeter(engine, clock=lambda: NOON) for engine in engines]
    for engine in engines:
        await engine.close()


def totals(rows: list) -> dict[tuple[str, str, str], int]:  # type: ignore[type-arg]
    return {(r.tenant_id, r.metric, r.dimension): r.value for r in rows}


async def test_concurrent_writers_add_up_exactly(db: Database, writers: list[HourlyMeter]) -> None:
    async def work(meter: HourlyMeter, index: int) -> None:
        for _ in range(ROUNDS):
            for call in range(CALLS_PER_ROUND):
                # Every writer sees the shared actors "nurse" and "scribe", and one of its own.
                actor = ("nurse", "scribe", f"agent-{index}")[call % 3]
                meter.record_call("north", actor, GET, ok=call % 10 != 0)
                meter.record_call("south", "doc", GET, ok=True)
            meter.add("north", EMBEDDING_TOKENS, "models/all-minilm-l6-v2", 1_000)
            meter.add("north", LLM_INPUT_TOKENS, "anthropic/claude-test", 250)
            meter.add("north", LLM_OUTPUT_TOKENS, "anthropic/claude-test", 9)
            await meter.flush()  # all writers flush the same rows at the same time

    await asyncio.gather(*(work(meter, i) for i, meter in enumerate(writers)))

    rows = await read_usage(db, UsageQuery(["north", "south"], NOON, NOON + timedelta(hours=1)))
    assert {r.hour for r in rows} == {datetime(2026, 12, 21, 12, tzinfo=UTC)}
    calls = WRITERS * ROUNDS * CALLS_PER_ROUND
    assert totals(rows) == {
        ("north", CALLS, GET): calls,
        ("north", ERRORS, GET): calls // 10,
        ("north", ACTIVE_ACTORS, ""): 2 + WRITERS,  # nurse, scribe, agent-0..3: once each
        ("north", EMBEDDING_TOKENS, "models/all-minilm-l6-v2"): WRITERS * ROUNDS * 1_000,
        ("north", LLM_INPUT_TOKENS, "anthropic/claude-test"): WRITERS * ROUNDS * 250,
        ("north", LLM_OUTPUT_TOKENS, "anthropic/claude-test"): WRITERS * ROUNDS * 9,
        ("south", CALLS, GET): calls,
        ("south", ACTIVE_ACTORS, ""): 1,
    }
    # Row-level security (PostgreSQL): a transaction sees only its tenant's rows, and
    # a page is read tenant by tenant.
    only_south = await read_usage(db, UsageQuery(["south"], NOON, NOON + timedelta(hours=1)))
    assert {r.tenant_id for r in only_south} == {"south"}


async def test_hours_pages_gauges_and_a_failed_flush(db: Database) -> None:
    now = NOON
    meter = HourlyMeter(db, clock=lambda: now)
    samples = iter([{"patients": 3, "observations": 5}, {"patients": 4, "observations": 0}])
    sampled: list[str] = []

    async def records(tenant_id: str) -> dict[str, int]:
        sampled.append(tenant_id)
        return next(samples) if tenant_id == "north" else {}

    meter.sample_with(RECORDS_STORED, records)
    meter.record_call("north", "nurse", GET, ok=True)
    meter.record_call("south", "doc", GET, ok=True)
    await meter.flush()
    meter.record_call("north", "nurse", GET, ok=True)
    meter.record_call("south", "doc", GET, ok=True)
    await meter.flush()  # the same hour: neither is sampled again, an empty store neither
    assert sampled == ["north", "south"]
    now = ONE
    meter.record_call("north", "nurse", GET, ok=False)
    await meter.flush()  # a new hour: sampled again, "nurse" is active again
    rows = await read_usage(db, UsageQuery(["north"], NOON, ONE + timedelta(hours=1)))
    noon, one = (h.replace(minute=0) for h in (NOON, ONE))
    assert [(r.hour, r.metric, r.dimension, r.value) for r in rows] == [
        (noon, ACTIVE_ACTORS, "", 1),
        (noon, CALLS, GET, 2),
        (noon, RECORDS_STORED, "observations", 5),
        (noon, RECORDS_STORED, "patients", 3),
        (one, ACTIVE_ACTORS, "", 1),
        (one, CALLS, GET, 1),
        (one, ERRORS, GET, 1),
        (one, RECORDS_STORED, "patients", 4),  # zero values are left out
    ]
    # Pages: keyset after the last row of the previous page, nothing lost or repeated.
    first = await read_usage(db, UsageQuery(["north"], NOON, ONE + timedelta(hours=1), limit=3))
    rest = await read_usage(
        db, UsageQuery(["north"], NOON, ONE + timedelta(hours=1), after=first[-1].key)
    )
    assert first + rest == rows
    # Only some metrics, only the second hour.
    only = await read_usage(db, UsageQuery(["north"], ONE, ONE + timedelta(hours=1), [ERRORS]))
    assert [(r.metric, r.value) for r in only] == [(ERRORS, 1)]

    # A tenant whose rows cannot be written keeps them for the next flush, and does not
    # hold back another tenant's.
    meter.add("north", EMBEDDING_TOKENS, "m", 7)
    meter.add("south", EMBEDDING_TOKENS, "m", 5)
    write = meter._write

    async def north_unreachable(tenant_id: str, *args: Any) -> None:
        if tenant_id == "north":
            raise ConnectionError("the database went away")
        await write(tenant_id, *args)

    meter._write = north_unreachable  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await meter.flush()
    assert meter.pending("north", [EMBEDDING_TOKENS], ONE) == 7
    assert meter.pending("south", [EMBEDDING_TOKENS], ONE) == 0
    assert await meter.stored_total("south", [EMBEDDING_TOKENS], ONE) == 5
    meter._write = write  # type: ignore[method-assign]
    await meter.flush()
    assert await meter.stored_total("north", [EMBEDDING_TOKENS], ONE) == 7
    assert meter.pending("north", [EMBEDDING_TOKENS], ONE) == 0


async def test_quotas_count_written_and_pending_usage_and_say_when_to_retry(
    db: Database,
) -> None:
    now = NOON
    meter = HourlyMeter(db, clock=lambda: now)
    limits = {"north": TenantStanding(True, 600, embedding_tokens_per_month=1_000,
                                      llm_tokens_per_day=300)}  # fmt: skip

    async def standing(tenant_id: str) -> TenantStanding | None:
        return limits.get(tenant_id)

    quotas = UsageQuotas(meter, standing, clock=lambda: now)
    await quotas.check("north", EMBEDDING_TOKENS_PER_MONTH)
    meter.add("north", EMBEDDING_TOKENS, "m", 600)
    await meter.flush()  # written, and the quota's total re-read
    await quotas.check("north", EMBEDDING_TOKENS_PER_MONTH)
    meter.add("north", EMBEDDING_TOKENS, "m", 400)  # pending: 600 + 400 = the quota
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.check("north", EMBEDDING_TOKENS_PER_MONTH)
    assert (
        refused.value.retry_after_seconds
        == (datetime(2027, 1, 1, tzinfo=UTC) - NOON).total_seconds()
    )
    assert "used 1,000 of its 1,000 embedding tokens per month" in refused.value.message
    assert refused.value.violations[0].subject == "tenants/north"
    await meter.flush()
    with pytest.raises(QuotaExceeded):  # the same after the flush: nothing counted twice
        await quotas.check("north", EMBEDDING_TOKENS_PER_MONTH)

    meter.add("north", LLM_INPUT_TOKENS, "p/m", 250)
    meter.add("north", LLM_OUTPUT_TOKENS, "p/m", 49)
    await quotas.check("north", LLM_TOKENS_PER_DAY)  # 299 of 300
    meter.add("north", LLM_OUTPUT_TOKENS, "p/m", 1)
    with pytest.raises(QuotaExceeded) as daily:
        await quotas.check("north", LLM_TOKENS_PER_DAY)
    assert (
        daily.value.retry_after_seconds
        == (datetime(2026, 12, 22, tzinfo=UTC) - NOON).total_seconds()
    )
    await meter.flush()
    now = datetime(2026, 12, 22, 0, 30, tzinfo=UTC)  # a new day: the daily quota starts over
    await quotas.check("north", LLM_TOKENS_PER_DAY)
    await quotas.check("south", LLM_TOKENS_PER_DAY)  # no standing: no quota
    await quotas.check("platform", EMBEDDING_TOKENS_PER_MONTH)  # the platform has none


def test_periods_are_utc_days_and_calendar_months() -> None:
    late = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_of("month", late) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_of("day", late) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
