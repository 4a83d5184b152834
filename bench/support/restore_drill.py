"""The restore drill: back up, lose everything, restore, rebuild, and get the same answers.

1. PostgreSQL, a Milvus server and `hacs serve` (every service; HACS_DATABASE_URL,
   HACS_MILVUS_URI, signing keys and the operator key from outside, as in the mesh)
   on loopback. The data set of restore_data.py is written through the gRPC API and
   indexed; the drill's questions (Search, Retrieve, Recall, Recall `as_of`) are asked
   and the answers kept, with the Milvus row counts of the drill's tenant.
2. Backup: a client writes patients into a second tenant the whole time. The drill
   opens a snapshot (REPEATABLE READ, `pg_export_snapshot()`), counts every table in
   it, and runs `pg_dump -Fc --snapshot` on that snapshot, so the counts are exactly
   what the dump holds. (A plain `pg_dump -Fc` takes its own snapshot when it starts;
   the snapshot is the recovery point either way.)
3. Loss: `hacs serve` stops, the database is dropped, the Milvus data goes (a new
   server on an empty data directory, or every HACS collection dropped), and so does
   the serving process's data directory (the lexical index lives there on a Milvus
   server without BM25).
4. Recovery: `pg_restore` into a fresh database, `hacs migrate`, `hacs serve` against
   it and the empty Milvus, then `hacs index backfill --all-tenants`.
5. Checks: every table has the counts of the snapshot (and records and the change log
   the same names, versions and sequences); every write acknowledged before the
   snapshot is back and none begun after it; the Milvus counts are the same; every
   question gets the same names, scores within a tolerance (restore_data.compare).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from hacs.client import HacsClient

from bench.support.restore_calls import (
    ask,
    create_tenant,
    ingest,
    remember,
    until_indexed,
    write_records,
)
from bench.support.restore_data import (
    LIVE_TENANT,
    TENANT,
    DrillSize,
    compare,
    identical,
    overlap,
)
from bench.support.restore_platform import (
    EmptyMilvus,
    LiveWriter,
    Serve,
    admin_url_of,
    database_of,
    milvus_counts,
    run_program,
    table_counts,
)
from services.common.signing_keys import generate_key_file
from services.tenant.api_keys import new_secret
from tests.support.postgres import create_database, postgres_binary

REPO = Path(__file__).resolve().parents[2]
SCORE_TOLERANCE = 2e-3
TOP = 5  # the first names of every answer must be the same (restore_data.compare)
Say = Callable[[str], None]


@dataclass
class DrillResult:
    size: DrillSize
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def _step(say: Say, what: str, work: Awaitable[Any]) -> Any:
    say(f"{what} ...")
    return await work


async def run_drill(
    run_dir: Path,
    size: DrillSize,
    *,
    admin_url: str,
    milvus: EmptyMilvus,
    say: Say | None = None,
) -> DrillResult:
    """The whole drill (module docstring); the figures, and every difference found."""
    result = DrillResult(size)
    figures = result.figures
    say = say or _clock(time.monotonic())

    keys = run_dir / "keys"  # the signing keys: a Secret in the cluster, not in the database
    keys.mkdir(mode=0o700)
    generate_key_file(keys)
    operator_key = new_secret("platform")[1]  # HACS_BOOTSTRAP_OPERATOR_KEY: a Secret too
    source_url = await create_database(admin_url)
    common = {
        "HACS_MILVUS_URI": milvus.uri,
        "HACS_SIGNING_KEYS_DIR": str(keys),
        "HACS_BOOTSTRAP_OPERATOR_KEY": operator_key,
        "HACS_RATE_LIMIT_ENABLED": "false",
        "HACS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "clients" / "python")]),
    }
    before_dir = run_dir / "data-before"
    serve = Serve(
        run_dir,
        "hacs-serve-before",
        {**common, "HACS_DATABASE_URL": source_url, "HACS_DATA_DIR": str(before_dir)},
    )
    live: LiveWriter | None = None
    restored = Serve(run_dir, "hacs-serve-restored", {})
    try:
        # -- 1. the platform and its data ------------------------------------------------
        say("starting hacs serve (every service) on PostgreSQL and the Milvus server")
        serve.start()
        load_started = time.monotonic()
        async with HacsClient(serve.target, api_key=operator_key, default_timeout=600) as op:
            admin_key, agent_key = await create_tenant(serve.target, op, TENANT, with_agent=True)
            live_key, _ = await create_tenant(serve.target, op, LIVE_TENANT, with_agent=False)
        async with (
            HacsClient(serve.target, api_key=admin_key, default_timeout=600) as admin,
            HacsClient(serve.target, api_key=agent_key, default_timeout=600) as agent,
        ):
            records = await _step(say, "writing records", write_records(admin, size))
            await _step(say, "waiting for the record indexer", until_indexed(admin, TENANT))
            knowledge = await _step(say, "ingesting knowledge", ingest(admin, size))
            memories, as_of = await _step(say, "remembering", remember(agent, size))
            figures["data_set"] = {
                "records": records,
                "knowledge_documents": knowledge["documents"],
                "knowledge_chunks": knowledge["chunks"],
                "memories": memories,
                "load_and_index_seconds": round(time.monotonic() - load_started, 1),
            }
            before = await ask(admin, agent, as_of)
        milvus_before = milvus_counts(milvus.uri, TENANT)

        # -- 2. the backup, while another tenant writes ------------------------------------
        live_client = HacsClient(serve.target, api_key=live_key, default_timeout=600)
        live = LiveWriter(live_client)
        live.start()
        await asyncio.sleep(1.0)
        dump = run_dir / "hacs.dump"
        source_admin = admin_url_of(admin_url, database_of(source_url))
        conn = await asyncpg.connect(source_admin)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                asked_at = time.time()
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                taken_at = time.time()
                counts_before = await table_counts(conn)
                say("pg_dump -Fc (while another tenant writes)")
                dump_seconds, _ = await run_program(
                    [postgres_binary("pg_dump"), "-Fc", f"--snapshot={snapshot}", "-f", str(dump),
                     source_admin]
                )  # fmt: skip
        finally:
            await conn.close()
        await asyncio.sleep(1.0)
        await live.stop()
        await live_client.close()
        figures["backup"] = {
            "dump_bytes": dump.stat().st_size,
            "dump_mib": round(dump.stat().st_size / 2**20, 2),
            "dump_seconds": round(dump_seconds, 2),
            "format": "pg_dump -Fc (custom, compressed)",
        }

        # -- 3. everything is lost ------------------------------------------------------------
        say("losing everything: hacs serve, the database, the Milvus data, the data directory")
        serve.stop()
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE "{database_of(source_url)}" WITH (FORCE)')
        finally:
            await conn.close()
        wiped = time.monotonic()
        milvus.lose_everything()
        figures["milvus_emptied_seconds"] = round(time.monotonic() - wiped, 1)
        shutil.rmtree(before_dir, ignore_errors=True)
        if any(milvus_counts(milvus.uri, TENANT).values()):
            result.problems.append("the Milvus data was not lost")

        # -- 4. recovery ------------------------------------------------------------------
        target_url = await create_database(admin_url)  # owned by the application role
        target_admin = admin_url_of(admin_url, database_of(target_url))
        say("pg_restore into a new database")
        jobs = str(min(4, os.cpu_count() or 1))
        restore_seconds, _ = await run_program(
            [postgres_binary("pg_restore"), "--exit-on-error", f"--jobs={jobs}", "-d",
             target_admin, str(dump)]
        )  # fmt: skip
        conn = await asyncpg.connect(target_admin)
        try:
            counts_after = await table_counts(conn)
            restored_live = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM records WHERE tenant_id = $1 AND collection = 'patients'",
                    LIVE_TENANT,
                )
            }
        finally:
            await conn.close()
        env = {
            **common,
            "HACS_MILVUS_URI": milvus.uri,  # a new, empty server, maybe on another port
            "HACS_DATABASE_URL": target_url,
            "HACS_DATA_DIR": str(run_dir / "data-restored"),
        }
        python = [sys.executable, "-m", "services.cli"]
        say("hacs migrate")
        migrate_seconds, _ = await run_program([*python, "migrate"], env, run_dir / "migrate.log")
        say("starting hacs serve on the restored database and the empty Milvus")
        restored.env = env
        serve_seconds = restored.start()
        say("hacs index backfill --all-tenants")
        rebuild_seconds, out = await run_program(
            [*python, "index", "backfill", "--all-tenants", "--json"], env, run_dir / "index.log"
        )
        rebuilt = json.loads(out)
        figures["recovery"] = {
            "restore_seconds": round(restore_seconds, 2),
            "restore_jobs": int(jobs),
            "migrate_seconds": round(migrate_seconds, 2),
            "serve_start_seconds": round(serve_seconds, 2),
            "rebuild_seconds": round(rebuild_seconds, 2),
            "rebuild": [
                {**r, "seconds": round(r["seconds"], 2), "per_second": _rate(r)}
                for r in rebuilt
                if r["items"]
            ],
            "total_seconds": round(
                restore_seconds + migrate_seconds + serve_seconds + rebuild_seconds, 1
            ),
        }

        # -- 5. the same platform? ------------------------------------------------------------
        for name in sorted(set(counts_before) | set(counts_after)):
            if counts_before.get(name) != counts_after.get(name):
                result.problems.append(
                    f"table {name}: {counts_before.get(name)} in the snapshot, "
                    f"{counts_after.get(name)} restored"
                )
        before_snapshot = [w for w in live.writes if w.acknowledged and w.acknowledged < asked_at]
        after_snapshot = [w for w in live.writes if w.started > taken_at]
        around = [w for w in live.writes if w not in before_snapshot and w not in after_snapshot]
        lost = [w.record_id for w in before_snapshot if w.record_id not in restored_live]
        extra = [w.record_id for w in after_snapshot if w.record_id in restored_live]
        if lost:
            result.problems.append(f"acknowledged before the snapshot, not restored: {lost[:10]}")
        if extra:
            result.problems.append(f"begun after the snapshot, yet restored: {extra[:10]}")
        figures["recovery_point"] = {
            "definition": "every transaction committed before pg_dump's snapshot is restored",
            "tables": len([n for n in counts_before if "@" not in n]),
            "rows": sum(v for v in counts_before.values() if isinstance(v, int)),
            "live_writes_acknowledged_before_snapshot": len(before_snapshot),
            "of_which_restored": len(before_snapshot) - len(lost),
            "live_writes_begun_after_snapshot": len(after_snapshot),
            "of_which_restored_wrongly": len(extra),
            "live_writes_in_flight_at_snapshot": len(around),
            "in_flight_restored": len([w for w in around if w.record_id in restored_live]),
        }
        async with (
            HacsClient(restored.target, api_key=admin_key, default_timeout=600) as admin,
            HacsClient(restored.target, api_key=agent_key, default_timeout=600) as agent,
        ):
            after = await ask(admin, agent, as_of)
        milvus_after = milvus_counts(milvus.uri, TENANT)
        if milvus_after != milvus_before:
            result.problems.append(f"Milvus rows: {milvus_before} before, {milvus_after} after")
        result.problems += compare(before, after, SCORE_TOLERANCE, TOP)
        figures["answers"] = {
            "questions": len(before),
            "same_names_same_order": identical(before, after),
            "names_found_both_times": overlap(before, after),
            "score_tolerance": SCORE_TOLERANCE,
            "same_first_names": TOP,
            "milvus_rows_of_the_tenant": milvus_after,
        }
        figures["tables"] = {n: v for n, v in counts_after.items() if "@" not in n}
        figures["questions"] = [
            {"call": b.call, "query": b.query, "before": [asdict(h) for h in b.hits],
             "after": [asdict(h) for h in a.hits]}
            for b, a in zip(before, after, strict=True)
        ]  # fmt: skip
        figures["size"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(size).items()}
        say("done")
        return result
    finally:
        if live is not None:
            with contextlib.suppress(Exception):  # its own failure surfaced above
                await live.stop()
        serve.stop()
        restored.stop()


def _clock(began: float) -> Say:
    """Progress lines on standard error, each with the seconds since `began`."""

    def say(line: str) -> None:
        print(f"[{time.monotonic() - began:7.1f} s] {line}", file=sys.stderr, flush=True)

    return say


def _rate(rebuilt: dict[str, Any]) -> float:
    return round(rebuilt["items"] / max(rebuilt["seconds"], 1e-6), 1)
