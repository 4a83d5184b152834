"""`hacs index backfill`: rebuild the derived indexes from the database.

PostgreSQL (or the SQLite file) holds everything a caller wrote; Milvus and
the lexical index hold what is derived from it. Three indexes, each rebuilt by
the code that keeps it in step:

* `records`   the search index of records (services/search/indexer.py)
* `knowledge` knowledge chunks, re-embedded from their rows (services/rag/indexing.py)
* `memory`    agent memories, live and past revisions (services/memory/memory_index.py)

Run it after a restore into an empty Milvus (`--all-tenants`), after a change of
the default embedding model, or when an index was lost. Each rebuild first drops
the tenant's entries, then writes them again; it runs in this process, beside
serving processes, which go on indexing the records and memories written meanwhile
(a knowledge ingest under way meanwhile may lose vectors: rebuild without one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from services.common.settings import Settings
from services.common.usage_attribution import metered_as

if TYPE_CHECKING:
    from services.kernel.modules import Kernel

HELP = "rebuild derived indexes (records, knowledge chunks, memories) from the database"
INDEXES = ("records", "knowledge", "memory")


@dataclass(frozen=True)
class Rebuilt:
    tenant: str
    index: str
    items: int  # records, chunks or memories
    unit: str
    seconds: float

    @property
    def per_second(self) -> float:
        return self.items / max(self.seconds, 1e-6)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="tenant id, e.g. st-marys")
    who.add_argument(
        "--all-tenants", action="store_true", help="every tenant (after a restore, say)"
    )
    parser.add_argument(
        "--indexes",
        default=",".join(INDEXES),
        help=f"comma-separated indexes to rebuild (default: all of {', '.join(INDEXES)})",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="records read per round")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document of what was rebuilt"
    )


async def run(args: Any) -> int:
    """Rebuild the chosen indexes of the chosen tenants in this process."""
    from services.app.registry import kernel_modules
    from services.common.runtime.platform import open_platform
    from services.kernel.modules import Kernel
    from services.kernel.tenancy.standing import TenancyRegistry, tenant_ids

    indexes = [name.strip() for name in args.indexes.split(",") if name.strip()]
    unknown = sorted(set(indexes) - set(INDEXES))
    if unknown or not indexes:
        print(f"hacs index backfill: --indexes takes {', '.join(INDEXES)}", file=sys.stderr)
        return 2
    # The tenant role only supplies token verification, which this command does not use;
    # the live indexer stays off here (the serving processes run theirs).
    platform = await open_platform(
        Settings.from_env(services="tenant,search,rag,memory", indexer_enabled="false"),
        TenancyRegistry,
    )
    try:
        kernel = Kernel(platform, kernel_modules(("search", "rag", "memory")))
        tenants = await tenant_ids(platform.db) if args.all_tenants else [args.tenant]
        done: list[Rebuilt] = []
        for tenant_id in tenants:
            for name in INDEXES:
                if name in indexes:
                    with metered_as(tenant_id):  # its embedding tokens (docs/usage.md)
                        rebuilt = await _rebuild(
                            kernel, name, tenant_id, args.batch_size, args.json
                        )
                    done.append(rebuilt)
                    if not args.json:
                        print(
                            f"\rrebuilt {name} of {tenant_id}: {rebuilt.items:,} {rebuilt.unit} "
                            f"in {rebuilt.seconds:,.1f} s ({rebuilt.per_second:,.0f}/s)",
                            flush=True,
                        )
        if args.json:
            print(json.dumps([asdict(r) for r in done], indent=2))
    finally:
        await platform.close()
    return 0


async def _rebuild(
    kernel: Kernel, name: str, tenant_id: str, batch_size: int, quiet: bool
) -> Rebuilt:
    from services.memory.wiring import build_memory_index
    from services.rag.wiring import document_indexer
    from services.search.indexer import BackfillProgress
    from services.search.wiring import record_indexer

    started = time.monotonic()

    def show(line: str) -> None:
        if not quiet:
            print(f"\r{line}", end="", flush=True)

    if name == "records":

        async def records_progress(progress: BackfillProgress) -> None:
            width = 30
            filled = int(width * progress.processed / max(progress.total, 1))
            show(
                f"records of {tenant_id} [{'#' * filled}{'.' * (width - filled)}] "
                f"{progress.processed:,}/{progress.total:,}"
            )

        indexer = await record_indexer(kernel)
        count, _ = await indexer.backfill(
            tenant_id, batch_size=batch_size, progress=records_progress
        )
        return Rebuilt(tenant_id, name, count, "records", time.monotonic() - started)
    if name == "knowledge":

        async def knowledge_progress(documents: int, chunks: int) -> None:
            show(f"knowledge of {tenant_id}: {documents:,} documents, {chunks:,} chunks")

        knowledge = await document_indexer(kernel)
        _, chunks = await knowledge.rebuild(tenant_id, progress=knowledge_progress)
        return Rebuilt(tenant_id, name, chunks, "chunks", time.monotonic() - started)
    memories, _ = await build_memory_index(kernel).rebuild(tenant_id)
    return Rebuilt(tenant_id, name, memories, "memories", time.monotonic() - started)
