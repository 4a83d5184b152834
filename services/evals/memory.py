"""`hacs eval memory`: consolidation quality on a labelled set, through the real service.

A fresh platform (temporary data dir: SQLite, Milvus Lite, the shipped
model), a fresh tenant, the set's patients created through RecordService,
every block stored through MemoryService.Remember, then one Consolidate
through the service (not a dry run). From the merge groups it streams:

* duplicates_removed   duplicates merged away with a true duplicate, over all
                       that could be: sum over merge groups and labelled
                       groups of (|merge group ∩ labelled group| - 1), divided
                       by sum over labelled groups of (size - 1);
* merge_precision      pairs of blocks merged together that are labelled
                       duplicates, over all pairs merged together (1.0 when
                       nothing was merged);
* contradictory_merges pairs merged together that are labelled as
                       contradicting each other (should be 0);
* blocks               blocks in the set.

`--sweep` plans (dry runs) over a grid of thresholds instead, to tune them on
a training set. The data format is in docs/memory.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hacs.memory.v1 import consolidation_pb2 as cpb
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.memory.v1 import memory_service_pb2_grpc, recall_pb2
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb

from services.evals.platform import EvalPlatform as Platform
from services.evals.platform import running_platform
from services.kernel.records.names import ID_PATTERN
from services.memory.blocks import TYPES_BY_NAME
from services.tooling.beir import DatasetError
from services.tooling.progress import Progress

DEFAULT_DATASET = (
    Path(__file__).resolve().parents[2] / "tests" / "data" / "memory" / "consolidation_test.jsonl"
)
BATCH = 500
SWEEP_EMBEDDING = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
SWEEP_LEXICAL = (0.4, 0.45, 0.5, 0.55, 0.6)


TENANT = "memory-eval"


@dataclass(frozen=True)
class Block:
    id: str
    content: str
    memory_type: str
    patient: str
    agent: str
    tags: list[str]
    event_time: str
    duplicate_group: str | None
    contradicts: list[str]


def load(path: Path) -> list[Block]:
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    blocks: list[Block] = []
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                block = Block(
                    id=str(raw["id"]),
                    content=str(raw["content"]),
                    memory_type=str(raw.get("memory_type") or "episodic"),
                    patient=str(raw.get("patient") or ""),
                    agent=str(raw.get("agent") or "eval-agent"),
                    tags=[str(t) for t in raw.get("tags") or []],
                    event_time=str(raw.get("event_time") or ""),
                    duplicate_group=raw.get("duplicate_group") or None,
                    contradicts=[str(c) for c in raw.get("contradicts") or []],
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{number}: {exc}") from exc
            for field, value in (("id", block.id), ("patient", block.patient or "p")):
                if not ID_PATTERN.match(value):
                    raise DatasetError(f"{path}:{number}: {field} {value!r} is not a valid id")
            if block.memory_type not in TYPES_BY_NAME:
                raise DatasetError(f"{path}:{number}: memory_type {block.memory_type!r}")
            blocks.append(block)
    if len({b.id for b in blocks}) != len(blocks):
        raise DatasetError(f"{path}: ids repeat")
    return blocks


def score(blocks: list[Block], merged: list[list[str]]) -> dict[str, float | int]:
    gold = {b.id: b.duplicate_group for b in blocks}
    contradicting = {(b.id, other) for b in blocks for other in b.contradicts}
    sizes: dict[str, int] = {}
    for group in gold.values():
        if group:
            sizes[group] = sizes.get(group, 0) + 1
    removable = sum(size - 1 for size in sizes.values())
    removed = pairs = good = bad = 0
    for members in merged:
        parts: dict[str, int] = {}
        for member in members:
            if gold[member]:
                parts[str(gold[member])] = parts.get(str(gold[member]), 0) + 1
        removed += sum(count - 1 for count in parts.values())
        for a, b in itertools.combinations(members, 2):
            pairs += 1
            good += gold[a] is not None and gold[a] == gold[b]
            bad += (a, b) in contradicting
    return {
        "duplicates_removed": round(removed / removable, 4) if removable else 1.0,
        "merge_precision": round(good / pairs, 4) if pairs else 1.0,
        "contradictory_merges": bad,
        "blocks": len(blocks),
    }


def _record(block: Block, tenant: str) -> record_pb2.Record:
    record = record_pb2.Record(name=f"{tenant}/memoryBlocks/{block.id}")
    memory = record.memory_block
    memory.memory_type = TYPES_BY_NAME[block.memory_type]  # type: ignore[assignment]
    memory.content = block.content
    memory.agent = f"{tenant}/actors/{block.agent}"
    if block.patient:
        memory.patient = f"{tenant}/patients/{block.patient}"
    memory.tags.extend(block.tags)
    if block.event_time:
        memory.event_time.FromJsonString(block.event_time)
    return record


async def load_blocks(platform: Platform, blocks: list[Block], out: TextIO) -> None:
    records = record_service_pb2_grpc.RecordServiceStub(platform.channel)
    memory = memory_service_pb2_grpc.MemoryServiceStub(platform.channel)
    patients = sorted({b.patient for b in blocks if b.patient})
    for start in range(0, len(patients), BATCH):
        requests = []
        for patient in patients[start : start + BATCH]:
            record = record_pb2.Record()
            record.patient.full_name = f"Evaluation patient {patient}"
            requests.append(rpb.CreateRecordRequest(record_id=patient, record=record))
        await records.BatchCreateRecords(
            rpb.BatchCreateRecordsRequest(parent=platform.tenant, requests=requests),
            metadata=platform.token,
            timeout=300,
        )
    progress = Progress(out)
    for start in range(0, len(blocks), BATCH):
        batch = blocks[start : start + BATCH]
        await memory.Remember(
            mpb.RememberRequest(
                parent=platform.tenant, memories=[_record(b, platform.tenant) for b in batch]
            ),
            metadata=platform.token,
            timeout=1800,
        )
        done = start + len(batch)
        progress.show(f"remembering: {done:,}/{len(blocks):,}", final=done == len(blocks))


async def consolidate(
    platform: Platform,
    agents: list[str],
    thresholds: cpb.ConsolidationThresholds,
    *,
    dry_run: bool,
    out: TextIO,
) -> tuple[list[list[str]], int]:
    """The merge groups (as block ids) and the number of contradictions flagged."""
    memory = memory_service_pb2_grpc.MemoryServiceStub(platform.channel)
    groups: list[list[str]] = []
    contradictions = 0
    stream = memory.Consolidate(
        mpb.ConsolidateRequest(
            parent=platform.tenant,
            scope=recall_pb2.MemoryFilter(agents=agents),
            thresholds=thresholds,
            dry_run=dry_run,
        ),
        metadata=platform.token,
        timeout=3600,
    )
    progress = Progress(out)
    async for event in stream:
        kind = event.WhichOneof("event")
        if kind == "group":
            groups.append([name.rsplit("/", 1)[1] for name in event.group.source_memories])
        elif kind == "contradiction":
            contradictions += 1
        elif kind == "progress" and not dry_run:
            stage = cpb.ConsolidationStage.Name(event.progress.stage).rsplit("_", 1)[1].lower()
            progress.show(f"consolidating: {stage} {event.progress.processed:,}")
    if not dry_run:
        progress.show("consolidating: done", final=True)
    return groups, contradictions


async def evaluate(
    path: Path, thresholds: cpb.ConsolidationThresholds, *, sweep: bool, out: TextIO
) -> dict[str, Any]:
    blocks = load(path)
    out.write(f"{path.name}: {len(blocks):,} blocks\n")
    with tempfile.TemporaryDirectory(prefix="hacs-eval-") as data_dir:
        async with running_platform(
            Path(data_dir),
            tenant_id=TENANT,
            display_name="Memory evaluation",
            services="tenant,records,embedding,search,memory",
            indexer=False,
        ) as platform:
            agents = [platform.actor(agent) for agent in sorted({b.agent for b in blocks})]
            await load_blocks(platform, blocks, out)
            if sweep:
                table = {}
                for embedding, lexical in itertools.product(SWEEP_EMBEDDING, SWEEP_LEXICAL):
                    grid = cpb.ConsolidationThresholds(
                        embedding_similarity=embedding, lexical_overlap=lexical
                    )
                    groups, _ = await consolidate(platform, agents, grid, dry_run=True, out=out)
                    table[f"{embedding:.2f}/{lexical:.2f}"] = score(blocks, groups)
                return table
            groups, flagged = await consolidate(
                platform, agents, thresholds, dry_run=False, out=out
            )
    figures: dict[str, Any] = score(blocks, groups)
    figures["_groups"] = len(groups)
    figures["_contradictions_flagged"] = flagged
    return figures


HELP = "consolidation quality (duplicates removed, merge precision) on a labelled memory set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        type=Path,
        default=DEFAULT_DATASET,
        help=f"labelled JSONL (default: {DEFAULT_DATASET.relative_to(DEFAULT_DATASET.parents[3])})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )
    parser.add_argument("--embedding-similarity", type=float, default=None)
    parser.add_argument("--lexical-overlap", type=float, default=None)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="plan over a grid of thresholds (dry runs) and print each row: for tuning",
    )


def main(args: Any) -> int:
    thresholds = cpb.ConsolidationThresholds()
    if args.embedding_similarity is not None:
        thresholds.embedding_similarity = args.embedding_similarity
    if args.lexical_overlap is not None:
        thresholds.lexical_overlap = args.lexical_overlap
    try:
        figures = asyncio.run(evaluate(args.dataset, thresholds, sweep=args.sweep, out=sys.stderr))
    except DatasetError as exc:
        print(f"hacs eval memory: {exc}", file=sys.stderr)
        return 2
    if args.sweep:
        print(f"{'emb/lex':10} {'removed':>8} {'precision':>9} {'contra':>6}")
        for key, row in figures.items():
            print(
                f"{key:10} {row['duplicates_removed']:8.4f} {row['merge_precision']:9.4f} "
                f"{row['contradictory_merges']:6d}"
            )
        return 0
    print(f"duplicates_removed   {figures['duplicates_removed']:.4f}")
    print(f"merge_precision      {figures['merge_precision']:.4f}")
    print(f"contradictory_merges {figures['contradictory_merges']}")
    print(f"blocks               {figures['blocks']}")
    print(
        f"(merge groups {figures['_groups']}, contradictions flagged "
        f"{figures['_contradictions_flagged']})"
    )
    if args.json:
        print(json.dumps({k: v for k, v in figures.items() if not k.startswith("_")}))
    return 0
