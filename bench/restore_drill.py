"""Restore drill: back up PostgreSQL, lose it and Milvus, restore, rebuild, same answers.

PostgreSQL holds everything callers wrote; Milvus (and, on a Milvus server without
BM25, the lexical index in the serving process's data directory) holds what is
derived from it. The drill (bench/support/restore_drill.py) proves a backup of the
database alone brings the platform back:

1. PostgreSQL (restarted durable: fsync and synchronous_commit on), a Milvus server
   (2.3.5 standalone, tests/support/milvus.py) and `hacs serve` with every service
   on loopback; `--patients` Patients with `--observations` Observations each, a
   knowledge base (the tests' guideline corpus + `--medquad-documents` MedQuAD answers)
   and `--memories` memories of an agent (some reworded, some forgotten), written
   through the gRPC API and indexed; fixed Search, Retrieve, Recall and Recall
   `as_of` questions asked and their answers kept.
2. `pg_dump -Fc` while another tenant writes patients one after another.
3. `hacs serve` stopped, the database dropped, the Milvus server stopped and its data
   directory removed, the serving data directory removed.
4. `pg_restore` into a new database, `hacs migrate`, `hacs serve` on it and a new,
   empty Milvus server, `hacs index backfill --all-tenants`.
5. Every table has the counts of the dump's snapshot, every write acknowledged before
   the snapshot is back and none begun after it, Milvus holds as many rows of the
   tenant, and every question gets the same names with scores within 0.002.

Prints the dump's size and time, the restore time, each index's rebuild time and rate,
the total recovery time and the recovery point; --json FILE writes them. The recovery
point measured here is the dump's: in production, PostgreSQL's point-in-time recovery
(WAL archiving, what managed services offer) sets it, as the provider states it.

    .venv/bin/python bench/restore_drill.py                       # a few minutes
    .venv/bin/python bench/restore_drill.py --patients 200 --medquad-documents 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "clients" / "python")]

import asyncpg  # noqa: E402

from bench.support.measure import machine_busy_percent  # noqa: E402
from bench.support.restore_data import MEDQUAD, DrillSize  # noqa: E402
from bench.support.restore_drill import run_drill  # noqa: E402
from bench.support.restore_platform import ReplacedServer  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

# What PostgreSQL runs with: durable, as in production (the tests' server has fsync off).
POSTGRES_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "maintenance_work_mem": "256MB",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = DrillSize()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=defaults.patients)
    parser.add_argument(
        "--observations", type=int, default=defaults.observations_per_patient, help="per patient"
    )
    parser.add_argument("--memories", type=int, default=defaults.memories)
    parser.add_argument("--medquad-documents", type=int, default=defaults.medquad_documents)
    parser.add_argument("--medquad", type=Path, default=MEDQUAD, help="the MedQuAD BEIR directory")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--json", type=Path, help="also write the figures and parameters here")
    return parser.parse_args(argv)


async def _durable(server: PostgresServer) -> str:
    conn = await asyncpg.connect(server.admin_url)
    try:
        for name, value in POSTGRES_SETTINGS.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    finally:
        await conn.close()
    server.restart()
    conn = await asyncpg.connect(server.admin_url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _report(figures: dict[str, Any]) -> str:
    data, backup, recovery = figures["data_set"], figures["backup"], figures["recovery"]
    point, answers = figures["recovery_point"], figures["answers"]
    lines = [
        f"data set: {data['records']:,} records, {data['knowledge_documents']:,} documents "
        f"({data['knowledge_chunks']:,} chunks), {data['memories']:,} memories "
        f"(written and indexed in {data['load_and_index_seconds']:,} s)",
        f"backup:   pg_dump -Fc {backup['dump_mib']} MiB in {backup['dump_seconds']} s",
        f"restore:  pg_restore --jobs {recovery['restore_jobs']} in "
        f"{recovery['restore_seconds']} s; hacs migrate {recovery['migrate_seconds']} s; "
        f"hacs serve ready in {recovery['serve_start_seconds']} s",
        f"rebuild:  hacs index backfill --all-tenants {recovery['rebuild_seconds']} s "
        "(process, model load included):",
    ]
    for r in recovery["rebuild"]:
        lines.append(
            f"            {r['index']:<9} {r['tenant']:<10} {r['items']:>7,} {r['unit']:<8} "
            f"{r['seconds']:>7.1f} s  {r['per_second']:>7,.1f}/s"
        )
    lines += [
        f"total recovery (restore + migrate + serve + rebuild): {recovery['total_seconds']} s "
        f"(emptying Milvus: {figures['milvus_emptied_seconds']} s, not counted)",
        f"recovery point: the dump's snapshot; {point['rows']:,} rows in {point['tables']} tables "
        f"as in it; writes acknowledged before it {point['of_which_restored']}/"
        f"{point['live_writes_acknowledged_before_snapshot']} restored, begun after it "
        f"{point['of_which_restored_wrongly']}/{point['live_writes_begun_after_snapshot']} "
        f"restored, in flight {point['in_flight_restored']}/"
        f"{point['live_writes_in_flight_at_snapshot']} restored",
        f"answers:  {answers['questions']} questions, {answers['same_names_same_order']} with "
        f"the same names in the same order (the rest: ties within "
        f"{answers['score_tolerance']}); Milvus rows {answers['milvus_rows_of_the_tenant']}",
    ]
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = DrillSize(
        patients=args.patients,
        observations_per_patient=args.observations,
        memories=args.memories,
        medquad_documents=args.medquad_documents,
        medquad=args.medquad,
        seed=args.seed,
    )
    busy = machine_busy_percent()
    run_dir = Path(tempfile.mkdtemp(prefix="hacs-restore-"))
    postgres = PostgresServer()
    milvus = ReplacedServer()
    failed = True
    try:
        postgres.start()
        pg_version = await _durable(postgres)
        milvus.start()
        result = await run_drill(run_dir, size, admin_url=postgres.admin_url, milvus=milvus)
        failed = bool(result.problems)
    finally:
        milvus.stop()
        postgres.stop()
        if not (args.keep or failed):
            shutil.rmtree(run_dir, ignore_errors=True)
    figures = result.figures
    figures["parameters"] = {
        "postgresql_version": pg_version,
        "postgresql_settings": POSTGRES_SETTINGS,
        "milvus": "2.3.5 standalone (lexical index: SQLite in the data directory)",
        "machine_cores": os.cpu_count(),
        "machine_busy_before_start_percent": busy,
        "python": platform.python_version(),
        "run_dir": str(run_dir),
    }
    print(_report(figures))
    print(json.dumps(figures["parameters"]))
    for problem in result.problems:
        print(f"DIFFERENCE: {problem}")
    if args.json:
        args.json.write_text(json.dumps({**figures, "problems": result.problems}, indent=2))
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
