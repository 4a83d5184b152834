"""`hacs`: one binary, many roles.

hacs serve [--only search,rag]   host services (all by default) on one gRPC port
hacs up                          the whole platform on this machine: serve + Envoy
hacs migrate                     bring the database schema to this build's version
hacs config [--markdown]         print the settings (or the README's table of them)
hacs admin new-operator-key      print a fresh platform operator key for a Secret
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import fields
from pathlib import Path

from services.common.settings import ALL_SERVICES, Settings, settings_markdown

log = logging.getLogger("hacs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hacs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="host HACS services on one gRPC port")
    serve.add_argument(
        "--only",
        default=None,
        help=f"comma-separated services to host (default: all of {', '.join(ALL_SERVICES)})",
    )
    commands.add_parser(
        "up", help="start every service and Envoy on localhost:8080 (embedded defaults)"
    )
    commands.add_parser("migrate", help="run database migrations to head")
    config = commands.add_parser("config", help="print the effective settings")
    config.add_argument(
        "--markdown", action="store_true", help="print the README table of variables"
    )
    evaluation = commands.add_parser("eval", help="quality figures on a labelled data set")
    evals = evaluation.add_subparsers(dest="eval_command", required=True)
    retrieval = evals.add_parser(
        "retrieval", help="nDCG@10 / Recall@100 of bm25, dense and hybrid search on a BEIR data set"
    )
    retrieval.add_argument(
        "--dataset", required=True, help="directory with corpus.jsonl, queries.jsonl, qrels/"
    )
    retrieval.add_argument(
        "--split", default="test", help="qrels split to evaluate (default: test)"
    )
    retrieval.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )
    retrieval.add_argument(
        "--max-queries", type=int, default=0, help="evaluate only the first N queries"
    )
    retrieval.add_argument(
        "--dump-candidates",
        type=Path,
        default=None,
        help="write every mode's ranked lists (depth 200) to FILE",
    )
    admin = commands.add_parser("admin", help="operator utilities")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    admin_commands.add_parser("new-operator-key", help="print a new platform operator API key")

    args = parser.parse_args(argv)
    if args.command == "config" and args.markdown:
        print(settings_markdown())
        return 0
    if args.command == "eval":
        from services.evals import retrieval as retrieval_eval

        return retrieval_eval.main(args)
    if args.command == "admin":
        from services.tenant.api_keys import new_secret

        print(new_secret("platform")[1])
        return 0

    overrides = {"services": args.only} if getattr(args, "only", None) else {}
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        print(f"hacs: {exc}", file=sys.stderr)
        return 2

    from services.common.runtime.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if args.command == "config":
        for f in fields(settings):
            print(f"{f.metadata['env']}={getattr(settings, f.name)}")
        return 0
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "up":
        from services.up import run_up

        return run_up(settings)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from services.common.runtime.server import HacsServer

    server = HacsServer(settings)
    try:
        await server.start()
    except Exception as exc:
        log.error("cannot start: %s", exc, exc_info=settings.log_level.upper() == "DEBUG")
        await server.stop(0)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down")
    await server.stop()
    return 0


async def _migrate(settings: Settings) -> int:
    from services.common.db import migrate
    from services.common.db.engine import Database

    db = Database(settings.resolved_database_url)
    try:
        before = await migrate.current_revision(db)
        await migrate.upgrade(db)
        after = await migrate.current_revision(db)
    finally:
        await db.close()
    log.info("schema %s -> %s", before or "(empty)", after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
