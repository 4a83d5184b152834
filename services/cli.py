"""`hacs`: one binary, many roles.

hacs serve [--only search,rag]   host services (all by default) on one gRPC port
                                 (`--only ratelimit`: the edge's global rate-limit service)
hacs targets                     each service and the kernel modules a process hosting it builds
hacs up                          the whole platform on this machine: serve + Envoy
hacs migrate                     bring the database schema to this build's version
hacs config [--markdown]         print the settings (or the README's table of them)
hacs eval retrieval|rag|...      quality figures on a labelled data set
hacs finetune --dataset DIR ...  adapt an embedding model to a labelled data set
hacs index backfill ...          rebuild Milvus and the lexical index from the database
hacs fuzz [--requests N]         attack every RPC with generated and corrupted requests
hacs certs [--rotate]            a development CA and TLS certificates (HACS_TLS=on)
hacs audit checkpoint|verify|export  the hash-chained audit log: sign, check, hand over
hacs usage export (--tenant T | --all-tenants) --from ISO --to ISO [--format csv|json]
                                 usage per tenant and hour, for billing (docs/usage.md)
hacs admin new-operator-key      print a fresh platform operator key for a Secret
hacs admin new-service-key       print a fresh key for the services' calls to one another
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import fields
from typing import Any

from services.common.settings import ALL_SERVICES, Settings, is_secret, settings_markdown

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
        help=f"comma-separated services to host (default: all of {', '.join(ALL_SERVICES)}; "
        "`ratelimit`, the edge's global rate-limit service, only when named)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes serving the port together (HACS_WORKERS; 0: one per core)",
    )
    commands.add_parser(
        "targets", help="list the services and the kernel modules each one makes a process build"
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
    for name, module in _eval_modules().items():
        module.add_arguments(evals.add_parser(name, help=module.HELP))
    from services.tooling import finetune_command

    finetune_command.add_arguments(commands.add_parser("finetune", help=finetune_command.HELP))
    from services.tooling.fuzz import command as fuzz_command

    fuzz_command.add_arguments(commands.add_parser("fuzz", help=fuzz_command.HELP))
    from services.tooling import index_command

    index = commands.add_parser("index", help="search index maintenance")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    index_command.add_arguments(index_commands.add_parser("backfill", help=index_command.HELP))
    from services.tooling import audit_command
    from services.tooling import certs as certs_command

    audit_command.add_arguments(commands.add_parser("audit", help=audit_command.HELP))
    from services.tooling import usage_command

    usage_command.add_arguments(commands.add_parser("usage", help=usage_command.HELP))

    certs_command.add_arguments(commands.add_parser("certs", help=certs_command.HELP))
    admin = commands.add_parser("admin", help="operator utilities")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    admin_commands.add_parser("new-operator-key", help="print a new platform operator API key")
    admin_commands.add_parser(
        "new-service-key",
        help="print a new API key for the services' calls to one another "
        "(HACS_BOOTSTRAP_SERVICE_KEY on the tenant pods, HACS_SERVICE_API_KEY on the callers)",
    )

    args = parser.parse_args(argv)
    if args.command == "config" and args.markdown:
        print(settings_markdown())
        return 0
    if args.command == "eval":
        return int(_eval_modules()[args.eval_command].main(args))
    if args.command == "finetune":
        return finetune_command.main(args)
    if args.command == "fuzz":
        return fuzz_command.main(args)
    if args.command == "targets":
        return _targets()
    if args.command == "admin":
        from services.tenant.api_keys import new_secret

        print(new_secret("platform")[1])
        return 0

    # Whatever the server writes (databases, keys, logs) is its user's alone: files 0600,
    # directories 0700 (the data holds PHI; see README, "Files and permissions").
    os.umask(0o077)
    overrides = {"services": args.only} if getattr(args, "only", None) else {}
    if getattr(args, "workers", None) is not None:
        overrides["workers"] = str(args.workers)
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        print(f"hacs: {exc}", file=sys.stderr)
        return 2

    from services.common.runtime.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if args.command == "config":
        for f in fields(settings):
            value = getattr(settings, f.name)
            shown = ("(set)" if value else "") if is_secret(f) else value
            print(f"{f.metadata['env']}={shown}")
        return 0
    if args.command == "audit":
        return asyncio.run(audit_command.run(args, settings))
    if args.command == "usage":
        return asyncio.run(usage_command.run(args, settings))
    if args.command == "certs":
        return certs_command.run(args, settings.data_path)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "index":
        return asyncio.run(index_command.run(args))
    if args.command == "up":
        from services.up import run_up

        return run_up(settings)
    return asyncio.run(_serve(settings))


def _targets() -> int:
    """Loki's -list-targets: what `hacs serve --only X` builds, from the declarations."""
    from services.app.registry import SERVICES, kernel_modules

    for spec in SERVICES:
        modules = ", ".join(kernel_modules((spec.key,))) or "(none)"
        print(f"{spec.key:<10} {spec.full_name:<44} kernel modules: {modules}")
    every = ", ".join(kernel_modules(ALL_SERVICES))
    print(f"{'all':<10} {'(hacs serve)':<44} kernel modules: {every}")
    return 0


def _eval_modules() -> dict[str, Any]:
    """`hacs eval <name>` is `services/evals/<name>.py` (HELP, add_arguments(), main())."""
    import importlib
    import pkgutil

    import services.evals

    found = {}
    for info in pkgutil.iter_modules(services.evals.__path__):
        module = importlib.import_module(f"services.evals.{info.name}")
        if hasattr(module, "add_arguments") and hasattr(module, "main"):
            found[info.name] = module
    return found


async def _serve(settings: Settings) -> int:
    if settings.workers != 1 and not settings.relay_socket:
        from services.app.supervisor import supervise

        return await supervise(settings)
    from services.app.server import HacsServer

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
    if server.platform is not None and server.platform.relay is not None:
        server.platform.relay.on_lost(stopping.set)  # a worker whose supervisor is gone
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
    except migrate.SchemaTooNew as exc:
        log.error("cannot migrate: %s", exc)
        return 1
    finally:
        await db.close()
    log.info("schema %s -> %s", before or "(empty)", after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
