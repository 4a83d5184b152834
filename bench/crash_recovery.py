"""Crash recovery: `hacs serve` killed with SIGKILL while clients write, on SQLite and PostgreSQL.

`hacs serve` (tenant, records, memory, search: the record indexer and the memory
index run) is killed `--kills` times per database at seeded random moments while
`--clients` clients create patients and observations and remember memories, each
write retried with its idempotency key until acknowledged. After each restart on the
same data directory, database and ports, every acknowledged write must be readable
at its version, the change log must hold every sequence once, and the indexer must
reach the head with every record indexed (bench/support/crash_recovery.py says what
is checked and how). The figures: acknowledged and lost writes (must be 0), gaps
and duplicates (must be 0), restart time (kill to /readyz) and catch-up time
(readiness to the indexer at the head) per kill.

What differs from `make test` (tests/e2e/test_crash_recovery.py, 3 kills per
database): the number of kills, and the embedding model runs in its own process
(`HACS_EMBEDDING_WORKER=process`, what `hacs serve` ships with) unless told
otherwise. PostgreSQL is the tests' throwaway server (`fsync=off`): the service is
killed, not PostgreSQL, so its durability is not what is measured.

    .venv/bin/python bench/crash_recovery.py                       # 20 kills per database
    .venv/bin/python bench/crash_recovery.py --kills 3 --database sqlite --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "clients" / "python")]

import grpc  # noqa: E402

from bench.support.crash_recovery import CrashResult, CrashSettings, run_crash_test  # noqa: E402
from bench.support.measure import machine_busy_percent  # noqa: E402
from tests.support.postgres import PostgresServer, create_database  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per database")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None, help="default: drawn and printed")
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--write-seconds",
        default="0.5,2.5",
        help="the clients write for a random time in this range before each kill",
    )
    parser.add_argument("--embedding-worker", choices=("process", "thread"), default="process")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directories (kept anyway on a failure)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures and parameters here")
    return parser.parse_args(argv)


def _machine(busy_before: float) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "busy_before_start_percent": busy_before,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
    }


def _seconds(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "max": round(ordered[-1], 2),
    }


def _figures(result: CrashResult) -> dict[str, Any]:
    summary = result.summary()
    summary["restart_seconds"] = _seconds([r.restart_seconds for r in result.restarts])
    summary["catch_up_seconds"] = _seconds([r.check.catch_up_seconds for r in result.restarts])
    summary["acknowledged_between_kills_min"] = min(
        (r.acknowledged_before_kill for r in result.restarts), default=0
    )
    return summary


def _sound(figures: dict[str, Any]) -> bool:
    return bool(
        figures["lost_writes"] == 0
        and figures["change_log_gaps"] == 0
        and figures["change_log_duplicates"] == 0
        and figures["indexer_caught_up"]
        and not figures["not_found_by_search_or_recall"]
        and figures["idempotency_failures"] == 0
    )


def _print(figures: dict[str, Any]) -> None:
    print(
        f"{figures['database']}: {figures['kills']} kills, "
        f"{figures['acknowledged_writes']} acknowledged writes {figures['acknowledged_by_kind']} "
        f"(at least {figures['acknowledged_between_kills_min']} between two kills), "
        f"lost writes {figures['lost_writes']}, change-log gaps {figures['change_log_gaps']}, "
        f"duplicates {figures['change_log_duplicates']}, indexer caught up after every restart: "
        f"{'yes' if figures['indexer_caught_up'] else 'NO'}"
    )
    print(
        f"  restart (kill to ready) {figures['restart_seconds']} s; "
        f"catch-up (ready to indexer at the head) {figures['catch_up_seconds']} s; "
        f"retries answered with the first attempt's write {figures['replayed_after_crash']}, "
        f"idempotency failures {figures['idempotency_failures']}, orphans {figures['orphans']}"
    )
    print(
        f"  failed attempts {figures['failed_attempts']} "
        f"(of which with the server up: {figures['failed_while_server_up']}), "
        f"refused {figures['rejected']}; {figures['seconds']} s"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    low, high = (float(v) for v in args.write_seconds.split(","))
    settings = CrashSettings(
        kills=args.kills,
        clients=args.clients,
        seed=args.seed,
        write_seconds=(low, high),
        embedding_worker=args.embedding_worker,
    )
    busy = machine_busy_percent()
    machine = _machine(busy)
    print(f"machine: {json.dumps(machine)}")
    print(f"seed {settings.seed} (--seed {settings.seed} replays the kill moments and the writes)")
    if busy > 25:
        print(f"WARNING: the machine was {busy} % busy before the run; times will show it")
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    results: list[dict[str, Any]] = []
    for database in databases:
        run_dir = Path(tempfile.mkdtemp(prefix=f"hacs-crash-{database}-"))
        server = PostgresServer() if database == "postgres" else None
        try:
            url = ""
            if server is not None:
                server.start()
                url = await create_database(server.admin_url)
            result = await run_crash_test(
                run_dir, database=database, database_url=url, settings=settings
            )
        finally:
            if server is not None:
                server.stop()
        figures = _figures(result)
        _print(figures)
        results.append(figures)
        if args.keep or not _sound(figures):
            print(f"  logs and data kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "parameters": {
            "kills_per_database": args.kills,
            "clients": args.clients,
            "seed": settings.seed,
            "write_seconds": [low, high],
            "embedding_worker": args.embedding_worker,
            "services": "tenant,records,memory,search (SQLite or PostgreSQL, Milvus Lite)",
            "postgres": "tests/support/postgres.py throwaway server, fsync=off",
            "machine": machine,
        },
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    started = time.monotonic()
    figures = asyncio.run(run(args))
    figures["parameters"]["wall_seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    return 0 if all(_sound(r) for r in figures["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
