"""`hacs audit`: checkpoint, verify and export the tamper-evident audit log.

    hacs audit checkpoint (--tenant T | --all-tenants) [--dir DIR]
    hacs audit verify     (--tenant T | --all-tenants) [--dir DIR] [--json]
    hacs audit export     --tenant T --out FILE [--since ISO] [--until ISO]

`checkpoint` signs each tenant's chain head with the platform's signing keys and appends
it to `DIR/<tenant>.jws` (default `$HACS_DATA_DIR/audit-checkpoints`; point it at storage
the database's administrators cannot rewrite) and to the log. `verify` recomputes every
chain and compares it with the checkpoints in DIR: exit 0 when intact, 1 when not, with
each problem named. `export` writes a tenant's events with their chain fields as JSON
lines, for a compliance review that can recompute the chain itself (docs/security.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from services.common.audit import AuditEventRow
from services.common.audit_verify import (
    append_checkpoint,
    head,
    public_keys,
    read_checkpoints,
    verify,
)
from services.common.db.engine import Database
from services.common.settings import Settings
from services.common.signing_keys import SigningKeys
from services.kernel.tenancy.standing import tenant_ids

HELP = "checkpoint, verify or export the hash-chained audit log"
log = logging.getLogger("hacs.audit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="audit_command", required=True)
    for name, text in (
        ("checkpoint", "sign each tenant's chain head and keep it outside the database"),
        ("verify", "recompute the chains and compare them with the checkpoints"),
    ):
        action = actions.add_parser(name, help=text)
        who = action.add_mutually_exclusive_group(required=True)
        who.add_argument("--tenant", help="tenant id")
        who.add_argument("--all-tenants", action="store_true", help="every tenant")
        action.add_argument(
            "--dir", default=None, help="checkpoint directory ($HACS_DATA_DIR/audit-checkpoints)"
        )
        if name == "verify":
            action.add_argument("--json", action="store_true", help="a JSON report")
    export = actions.add_parser("export", help="a tenant's events with their chain, JSON lines")
    export.add_argument("--tenant", required=True, help="tenant id")
    export.add_argument("--out", required=True, help="file to write ('-': standard output)")
    export.add_argument("--since", default=None, help="ISO 8601 time; events at or after it")
    export.add_argument("--until", default=None, help="ISO 8601 time; events before it")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    directory = Path(args.dir) if getattr(args, "dir", None) else None
    directory = directory or settings.data_path / "audit-checkpoints"
    db = Database(settings.resolved_database_url, pool_size=2)
    try:
        if args.audit_command == "export":
            return await _export(db, args)
        keys = SigningKeys.load(settings.keys_path, generate_if_empty=False)
        tenants = await tenant_ids(db) if args.all_tenants else [args.tenant]
        if args.audit_command == "checkpoint":
            for tenant_id in tenants:
                checkpoint = await head(db, tenant_id)
                token = checkpoint.sign(keys)
                path = append_checkpoint(directory, token, tenant_id)
                # The log stream is a second copy outside the database.
                log.info("audit checkpoint %s seq=%d %s", tenant_id, checkpoint.seq, token)
                print(f"{tenant_id}: event {checkpoint.seq} checkpointed in {path}")
            return 0
        reports = []
        for tenant_id in tenants:
            checkpoints, unreadable = read_checkpoints(directory, tenant_id, public_keys(keys))
            report = await verify(db, tenant_id, checkpoints)
            report.problems[:0] = unreadable
            reports.append(report)
        if args.json:
            print(json.dumps([{**vars(r), "intact": r.intact} for r in reports], indent=2))
        else:
            for r in reports:
                status = "intact" if r.intact else "BROKEN"
                print(
                    f"{r.tenant_id}: {status}: events {r.first_seq}..{r.last_seq} "
                    f"({r.events:,} chained, {r.unchained:,} from before the chain), "
                    f"{r.checkpoints} checkpoints"
                )
                for problem in r.problems:
                    print(f"  - {problem}")
        return 0 if all(r.intact for r in reports) else 1
    except FileNotFoundError as exc:
        print(f"hacs audit: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.close()


async def _export(db: Database, args: argparse.Namespace) -> int:
    try:
        since = datetime.fromisoformat(args.since) if args.since else None
        until = datetime.fromisoformat(args.until) if args.until else None
    except ValueError as exc:
        print(f"hacs audit export: {exc} (use ISO 8601, e.g. 2026-12-01T00:00:00+00:00)")
        return 2
    for moment in (since, until):
        if moment is not None and moment.tzinfo is None:
            print("hacs audit export: give times with a UTC offset (e.g. +00:00)")
            return 2
    target = None if args.out == "-" else Path(args.out)
    if target is not None:
        await asyncio.to_thread(target.write_text, "", encoding="utf-8")
    written, after = 0, 0
    while True:
        query = (
            select(AuditEventRow)
            .where(AuditEventRow.tenant_id == args.tenant, AuditEventRow.id > after)
            .order_by(AuditEventRow.id)
            .limit(5_000)
        )
        if since is not None:
            query = query.where(AuditEventRow.event_time >= since)
        if until is not None:
            query = query.where(AuditEventRow.event_time < until)
        async with db.transaction(args.tenant) as session:
            rows = list((await session.scalars(query)).all())
        if not rows:
            break
        text = "".join(
            json.dumps(_exported(row), sort_keys=True, ensure_ascii=False) + "\n" for row in rows
        )
        if target is None:
            sys.stdout.write(text)
        else:
            await asyncio.to_thread(_append, target, text)
        written += len(rows)
        after = rows[-1].id
    print(f"exported {written:,} events of {args.tenant}", file=sys.stderr)
    return 0


def _exported(row: AuditEventRow) -> dict[str, object]:
    return {
        "seq": row.seq,
        "tenant_id": row.tenant_id,
        "event_time": row.event_time.isoformat(),
        "actor": row.actor,
        "method": row.method,
        "permission": row.permission,
        "resource": row.resource,
        "outcome": row.outcome,
        "details": row.details,
        "prev_hash": row.prev_hash,
        "content_hash": row.content_hash,
        "chain_hash": row.chain_hash,
    }


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(text)
