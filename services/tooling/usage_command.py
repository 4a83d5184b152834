"""`hacs usage export`: usage per tenant and hour, for billing, as CSV or JSON.

    hacs usage export (--tenant T | --all-tenants) --from ISO --to ISO
                      [--format csv|json] [--metrics calls,errors,...] [--out FILE]

Reads the database directly, as `hacs audit export` does (run it where the
services' database is reachable; no server needs to be up). The rows are those
of ExportUsage (docs/usage.md): tenant, hour (UTC, ISO 8601), metric,
dimension, value, in that order; CSV with a header line, or one JSON array of
objects. What the serving processes counted in their last few seconds is not
in the database yet (they flush every 5 s). Progress goes to standard error; exit
status 2 for a bad argument or an unknown tenant, 1 for a database it cannot read.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from services.common.db.engine import Database
from services.common.hourly_usage import METRICS, UsageHour, UsageQuery, read_usage
from services.common.settings import Settings
from services.kernel.tenancy.standing import tenant_ids

HELP = "export usage per tenant and hour (calls, errors, tokens, storage, actors)"
FORMATS = ("csv", "json")
COLUMNS = ("tenant", "hour", "metric", "dimension", "value")
PAGE_ROWS = 5_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="usage_command", required=True)
    export = actions.add_parser("export", help="hourly usage as CSV or JSON")
    who = export.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="tenant id")
    who.add_argument("--all-tenants", action="store_true", help="every tenant")
    export.add_argument(
        "--from",
        dest="start",
        required=True,
        help="first hour: ISO 8601 time with a UTC offset, or a date (UTC midnight)",
    )
    export.add_argument("--to", dest="end", required=True, help="end (exclusive), as --from")
    export.add_argument("--format", choices=FORMATS, default="csv", help="csv (default) or json")
    export.add_argument(
        "--metrics", default="", help=f"comma-separated metrics (default all: {', '.join(METRICS)})"
    )
    export.add_argument("--out", default="-", help="file to write (default '-': standard output)")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with an offset, or a date (its UTC midnight)."""
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (e.g. 2026-12-01T00:00:00+00:00)")
    return moment.astimezone(UTC)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        start, end = parse_time(args.start), parse_time(args.end)
    except ValueError as exc:
        print(f"hacs usage export: {exc}", file=sys.stderr)
        return 2
    if end <= start:
        print("hacs usage export: --to must be after --from", file=sys.stderr)
        return 2
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        print(
            f"hacs usage export: unknown metrics {', '.join(unknown)}; known: {', '.join(METRICS)}",
            file=sys.stderr,
        )
        return 2
    db = Database(settings.resolved_database_url, pool_size=2)
    try:
        return await _run(db, args, start, end, metrics)
    except SQLAlchemyError as exc:  # unreachable, or not migrated: say so, no traceback
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"hacs usage export: cannot read the database: {reason}", file=sys.stderr)
        return 1
    finally:
        await db.close()


async def _run(
    db: Database, args: argparse.Namespace, start: datetime, end: datetime, metrics: list[str]
) -> int:
    registered = await tenant_ids(db)
    if args.all_tenants:
        tenants = registered
    elif args.tenant in registered:
        tenants = [args.tenant]
    else:
        print(f"hacs usage export: no tenant {args.tenant!r}", file=sys.stderr)
        return 2
    if args.out == "-":
        written = await _export(db, tenants, start, end, metrics, args.format, sys.stdout)
    else:
        out = await asyncio.to_thread(Path(args.out).open, "w", encoding="utf-8", newline="")
        try:
            written = await _export(db, tenants, start, end, metrics, args.format, out)
        finally:
            await asyncio.to_thread(out.close)
    print(
        f"exported {written:,} rows of {len(tenants):,} tenant(s), "
        f"{start.isoformat()} to {end.isoformat()}",
        file=sys.stderr,
    )
    return 0


async def _export(
    db: Database,
    tenants: list[str],
    start: datetime,
    end: datetime,
    metrics: list[str],
    form: str,
    out: TextIO,
) -> int:
    written = 0
    await asyncio.to_thread(out.write, _csv_line(COLUMNS) if form == "csv" else "[")
    for tenant_id in tenants:
        after = None
        while True:
            rows = await read_usage(
                db, UsageQuery([tenant_id], start, end, metrics, after, PAGE_ROWS)
            )
            if not rows:
                break
            if form == "csv":
                text = "".join(_csv_line(_fields(r)) for r in rows)
            else:
                text = "".join(
                    ("," if written + i else "") + "\n" + json.dumps(_json(r), ensure_ascii=False)
                    for i, r in enumerate(rows)
                )
            await asyncio.to_thread(out.write, text)
            written += len(rows)
            after = rows[-1].key
            print(f"\r{written:,} rows (at {tenant_id})", end="", file=sys.stderr, flush=True)
    if form == "json":
        await asyncio.to_thread(out.write, "\n]\n")
    print(file=sys.stderr)
    return written


def _fields(row: UsageHour) -> tuple[str, str, str, str, int]:
    return (row.tenant_id, row.hour.isoformat(), row.metric, row.dimension, row.value)


def _json(row: UsageHour) -> dict[str, object]:
    return dict(zip(COLUMNS, _fields(row), strict=True))


def _csv_line(values: tuple[object, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()
