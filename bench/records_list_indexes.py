"""Which index each ListRecords filter uses on PostgreSQL, and what it costs without it.

Loads a tenant through the service (BatchCreateRecords via Envoy, as the load
benchmark does; 200,000 patients by default to keep the run short), stops the
service, runs VACUUM ANALYZE, then for every filter shape ListRecords accepts
builds the exact statement the service runs (RecordTx.query in
services/kernel/records/store.py, captured rather than re-written) and runs it under
EXPLAIN (ANALYZE, BUFFERS) as the unprivileged `hacs` role with the tenant
set for row-level security. It reports the indexes each plan uses and the
median execution time; then drops those indexes inside a transaction that is
rolled back and measures the plan PostgreSQL falls back to.

    .venv/bin/python bench/records_list_indexes.py
    .venv/bin/python bench/records_list_indexes.py --patients 20000 --json /tmp/ix.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `make bench` runs this file as a script; the packages it measures live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from bench.support import dataset
from bench.support.measure import Progress, load
from bench.support.platform import running_platform
from services.kernel.records.resource_types import RESOURCE_TYPES
from services.kernel.records.store import RecordQuery, RecordTx

LOINC = dataset.clinical.LOINC


# -- the service's own SQL -------------------------------------------------------


class _NoRows:
    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def all(self) -> list[Any]:
        return []

    def first(self) -> None:
        return None

    def scalars(self) -> _NoRows:
        return self


class _CapturingSession:
    """Stands in for the AsyncSession: keeps the statements RecordTx would run."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    async def scalars(self, statement: Any, *args: Any, **kwargs: Any) -> _NoRows:
        self.statements.append(statement)
        return _NoRows()

    async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> _NoRows:
        self.statements.append(statement)
        return _NoRows()


async def service_statement(tenant_id: str, query: RecordQuery) -> Any:
    session = _CapturingSession()
    await RecordTx(session, tenant_id, True).query(query)  # type: ignore[arg-type]
    (statement,) = session.statements
    return statement


class Explain(Executable, ClauseElement):
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) <statement>, with the statement's own binds."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    inner = compiler.process(element.statement, **kw)
    return f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {inner}"


# -- the shapes ------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    list_request: str  # the ListRecords request that produces this query
    query: RecordQuery


def shapes(patients: int) -> list[Shape]:
    every_type = [t.collection for t in RESOURCE_TYPES]
    some_patient = dataset.patient_id(patients // 2 + 7)
    return [
        Shape(
            "no filter (every type), default order",
            "ListRecords{}",
            RecordQuery(collections=every_type, limit=51),
        ),
        Shape(
            "type, default order",
            "ListRecords{resource_types:[OBSERVATION]}",
            RecordQuery(collections=["observations"], limit=51),
        ),
        Shape(
            "patient + type, order by clinical_time desc",
            f"ListRecords{{patient:'…/patients/{some_patient}', resource_types:[OBSERVATION], "
            "order_by:'clinical_time desc'}",
            RecordQuery(
                collections=["observations"],
                patient_id=some_patient,
                order_field="clinical_time",
                limit=51,
            ),
        ),
        Shape(
            "patient compartment (every type), default order",
            f"ListRecords{{patient:'…/patients/{some_patient}'}}",
            RecordQuery(collections=every_type, patient_id=some_patient, limit=51),
        ),
        Shape(
            f"code (common: {dataset.COMMON_CODE.code}, ~40 % of observations), default order",
            f"ListRecords{{codes:['{LOINC}|{dataset.COMMON_CODE.code}']}}",
            RecordQuery(
                collections=every_type, codes=[(LOINC, dataset.COMMON_CODE.code)], limit=51
            ),
        ),
        Shape(
            f"code (rare: {dataset.RARE_CODE.code}, ~1 % of observations), default order",
            f"ListRecords{{codes:['{LOINC}|{dataset.RARE_CODE.code}']}}",
            RecordQuery(collections=every_type, codes=[(LOINC, dataset.RARE_CODE.code)], limit=51),
        ),
        Shape(
            "code (any system) + type, default order",
            f"ListRecords{{codes:['{dataset.RARE_CODE.code}'], resource_types:[OBSERVATION]}}",
            RecordQuery(
                collections=["observations"], codes=[(None, dataset.RARE_CODE.code)], limit=51
            ),
        ),
        Shape(
            "label cohort=diabetes (10 % of records), default order",
            "ListRecords{labels:{cohort:'diabetes'}}",
            RecordQuery(collections=every_type, labels={"cohort": "diabetes"}, limit=51),
        ),
        Shape(
            "label trial=hba1c-2024 (0.1 % of records), default order",
            "ListRecords{labels:{trial:'hba1c-2024'}}",
            RecordQuery(collections=every_type, labels={"trial": "hba1c-2024"}, limit=51),
        ),
        Shape(
            "date range (one month) + type, order by clinical_time",
            "ListRecords{resource_types:[OBSERVATION], start_time:2020-03-01, "
            "end_time:2020-04-01, order_by:'clinical_time'}",
            RecordQuery(
                collections=["observations"],
                start_time=datetime(2020, 3, 1, tzinfo=UTC),
                end_time=datetime(2020, 4, 1, tzinfo=UTC),
                order_field="clinical_time",
                descending=False,
                limit=51,
            ),
        ),
        Shape(
            "date range (one month), every type, default order",
            "ListRecords{start_time:2020-03-01, end_time:2020-04-01}",
            RecordQuery(
                collections=every_type,
                start_time=datetime(2020, 3, 1, tzinfo=UTC),
                end_time=datetime(2020, 4, 1, tzinfo=UTC),
                limit=51,
            ),
        ),
    ]


# -- plans -----------------------------------------------------------------------


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def summarize(plan_json: Any) -> dict[str, Any]:
    top = plan_json[0]
    nodes = list(_walk(top["Plan"]))
    indexes = []
    for node in nodes:
        if "Index Name" in node and node["Index Name"] not in indexes:
            indexes.append(node["Index Name"])
    scans = [
        f"{n['Node Type']} on {n.get('Index Name') or n.get('Relation Name')}"
        for n in nodes
        if "Scan" in n["Node Type"]
    ]
    root = top["Plan"]
    return {
        "indexes": indexes,
        "scans": scans,
        "top_node": root["Node Type"],
        "rows_returned": root.get("Actual Rows"),
        "execution_ms": round(top["Execution Time"], 3),
        "planning_ms": round(top["Planning Time"], 3),
        "shared_hit_blocks": root.get("Shared Hit Blocks", 0),
        "shared_read_blocks": root.get("Shared Read Blocks", 0),
    }


async def explain(conn: AsyncConnection, statement: Any, runs: int) -> dict[str, Any]:
    """Run EXPLAIN ANALYZE `runs` times; the last plan, the median execution time."""
    summaries = []
    for _ in range(runs):
        plan = (await conn.execute(Explain(statement))).scalar_one()
        summaries.append(summarize(plan if isinstance(plan, list) else json.loads(plan)))
    last = summaries[-1]
    last["execution_ms_median"] = round(statistics.median(s["execution_ms"] for s in summaries), 3)
    last["execution_ms_first"] = summaries[0]["execution_ms"]
    return last


async def measure_indexes(
    database_url: str, tenant_id: str, patients: int, runs: int, without: bool
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    engine = create_async_engine(database_url)
    results = []
    try:
        async with engine.connect() as conn:
            # The session-level setting the policies read (the service sets it per transaction).
            await conn.execute(
                text("SELECT set_config('hacs.tenant_id', :tenant, false)"), {"tenant": tenant_id}
            )
            await conn.commit()
            sizes = {
                row[0]: round(row[1] / 2**20, 1)
                for row in (
                    await conn.execute(
                        text(
                            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
                            "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                            "WHERE c.relname IN ('records', 'record_codes', 'record_labels') "
                            "ORDER BY 1"
                        )
                    )
                ).all()
            }
            for shape in shapes(patients):
                statement = await service_statement(tenant_id, shape.query)
                with_index = await explain(conn, statement, runs)
                await conn.commit()
                entry: dict[str, Any] = {
                    "shape": shape.name,
                    "request": shape.list_request,
                    "with_indexes": with_index,
                }
                dropped = [i for i in with_index["indexes"] if not i.startswith("pk_")]
                if without and dropped:
                    # DROP INDEX is transactional: measured, then rolled back.
                    for index in dropped:
                        await conn.execute(text(f'DROP INDEX "{index}"'))
                    entry["without"] = dropped
                    entry["without_indexes"] = await explain(conn, statement, max(1, runs // 2))
                    await conn.rollback()
                results.append(entry)
                print(f"  explained: {shape.name}", file=sys.stderr, flush=True)
    finally:
        await engine.dispose()
    return results, sizes


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with running_platform(max_patients=max(10_000_000, args.patients)) as platform:
        pid = platform.service.pid
        print(f"platform up (logs in {platform.run_dir})", file=sys.stderr, flush=True)
        started = time.perf_counter()
        async with platform.client() as client:
            for what, batches, total in (
                (
                    "patients",
                    dataset.patient_batches(
                        platform.tenant_id, args.patients, args.batch_size, args.seed
                    ),
                    args.patients,
                ),
                (
                    "observations",
                    dataset.observation_batches(
                        platform.tenant_id,
                        args.patients,
                        args.observations_per_patient,
                        args.batch_size,
                        args.seed,
                    ),
                    args.patients * args.observations_per_patient,
                ),
            ):
                await load(
                    client,
                    batches,
                    loaders=args.loaders,
                    progress=Progress(what, total),
                    service_pid=pid,
                    platform_pids=platform.other_pids,
                )
        load_seconds = time.perf_counter() - started
        # Nothing else touches the database while plans are measured.
        platform.stop_edge_and_services()
        engine = create_async_engine(platform.database_url)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            print("VACUUM ANALYZE ...", file=sys.stderr, flush=True)
            await conn.execute(text("VACUUM (ANALYZE)"))
            counts = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT relname, reltuples::bigint FROM pg_class WHERE relname IN "
                            "('records', 'record_codes', 'record_labels', 'record_versions')"
                        )
                    )
                ).all()
            )
        await engine.dispose()
        plans, index_sizes = await measure_indexes(
            platform.database_url, platform.tenant_id, args.patients, args.runs, not args.keep
        )
        return {
            "figures": {"plans": plans, "index_sizes_mib": index_sizes},
            "parameters": {
                "patients": args.patients,
                "observations_per_patient": args.observations_per_patient,
                "rows_estimated_by_postgres": counts,
                "batch_size": args.batch_size,
                "loaders": args.loaders,
                "load_seconds": round(load_seconds, 1),
                "explain_runs_per_shape": args.runs,
                "explain_as": "role hacs (not superuser, no BYPASSRLS), "
                "set_config('hacs.tenant_id', tenant, false)",
                "vacuum_analyze_before_explain": True,
                "seed": args.seed,
                **platform.parameters(),
            },
        }


def render_text(result: dict[str, Any]) -> str:
    p = result["parameters"]
    lines = [
        "",
        "== RecordService: ListRecords filters on PostgreSQL (EXPLAIN ANALYZE, BUFFERS) ==",
        f"{p['patients']:,} patients, {p['observations_per_patient']} observation(s) each; "
        f"rows: {p['rows_estimated_by_postgres']}; median of {p['explain_runs_per_shape']} runs",
    ]
    for entry in result["figures"]["plans"]:
        w = entry["with_indexes"]
        lines.append(f"- {entry['shape']}\n    {entry['request']}")
        lines.append(
            f"    uses {', '.join(w['indexes']) or 'no index'}: {w['execution_ms_median']} ms "
            f"(first run {w['execution_ms_first']} ms), {w['rows_returned']} rows, "
            f"buffers hit {w['shared_hit_blocks']} read {w['shared_read_blocks']}"
        )
        lines.append(f"    scans: {'; '.join(w['scans'])}")
        if "without_indexes" in entry:
            wo = entry["without_indexes"]
            lines.append(
                f"    without {', '.join(entry['without'])}: {wo['execution_ms_median']} ms via "
                f"{'; '.join(wo['scans'])}"
            )
    lines.append(
        "index sizes (MiB): "
        + ", ".join(f"{k} {v}" for k, v in result["figures"]["index_sizes_mib"].items())
    )
    lines.append("parameters:")
    for key, value in p.items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--observations-per-patient", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--loaders", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5, help="EXPLAIN ANALYZE runs per shape")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--keep", action="store_true", help="do not measure the plans without their indexes"
    )
    parser.add_argument("--json", type=Path, help="also write figures + parameters here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    print(render_text(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"(figures and parameters written to {args.json})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
