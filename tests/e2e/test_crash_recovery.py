"""`hacs serve` killed with SIGKILL while 8 clients write loses no acknowledged write.

A real `hacs serve` (tenant, records, memory, search: the record indexer and the
memory index run) on SQLite and on PostgreSQL is killed 3 times at seeded random
moments while clients create patients and observations and remember memories,
each write retried with its idempotency key until acknowledged. After every
restart on the same data directory and database: every acknowledged write is
readable at its version, the change log has no gap and no duplicate, the
indexer reaches the head with every record in the index, and the newest writes
are found by Search and Recall (bench/support/crash_recovery.py; 20 kills per
database: bench/crash_recovery.py). HACS_CRASH_SEED replays a run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.support.crash_recovery import CrashSettings, run_crash_test
from tests.support.postgres import create_database

pytestmark = [pytest.mark.e2e]

KILLS = 3
CLIENTS = 8
SEED = int(os.environ.get("HACS_CRASH_SEED", "20"))


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_no_acknowledged_write_is_lost_when_the_server_is_killed(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    url = ""  # SQLite in the data directory, as `hacs serve` defaults
    if database == "postgres":
        url = await create_database(request.getfixturevalue("postgres_admin_url"))
    print(f"crash test seed: {SEED} (HACS_CRASH_SEED={SEED} replays it)")
    result = await run_crash_test(
        tmp_path,
        database=database,
        database_url=url,
        settings=CrashSettings(kills=KILLS, clients=CLIENTS, seed=SEED),
    )
    summary = result.summary()
    print(summary)

    assert len(result.restarts) == KILLS
    # Every kill landed on writes in flight, after writes were acknowledged since the last.
    for restart in (*result.restarts, result.final):
        assert restart.acknowledged_before_kill > 0, summary
    assert all(r.in_flight_at_kill > 0 for r in result.restarts), summary
    assert result.acknowledged_writes > 0
    assert result.lost_writes == [], summary
    assert result.gaps == [], summary
    assert result.duplicates == [], summary
    assert result.indexer_caught_up, summary
    assert result.not_found_by_search_or_recall == [], summary
    # A retry of a write whose first attempt committed gets that write back, not a refusal.
    assert result.tally.idempotency_failures == [], summary
    assert not result.tally.rejected, summary
    assert sum(r.orphans for r in result.restarts) == 0, summary
