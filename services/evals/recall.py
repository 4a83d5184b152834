"""`hacs eval recall`: long-term memory recall on a BEIR-format set, through the real service.

A fresh platform (temporary data dir: SQLite, Milvus Lite, the shipped
model) and tenant; every memory of the set is stored with
MemoryService.Remember into its own scope — one agent per `metadata.scope`,
its event time from `metadata.time`, its participants from
`metadata.speaker` — then every query is sent to MemoryService.Recall
within its scope (and at its own `metadata.time`, when it has one), with
the service's default weights. Prints nDCG@10 and Recall@10, overall and
per scope; with --json the last line is
{"ndcg@10": x, "recall@10": y, "queries": n}.

Conversation order: memories are listed in the order they were made. A
memory that follows another of the same scope with the same time (the
previous turn of one conversation session) cites it (`related_memories`),
as an agent storing a conversation would link a reply to what it answers;
recall reads a memory in the light of what it cites (ranking.py).
`--no-context-links` leaves the links out, to measure what they add.

Queries are independent: Recall is called with record_access=false, so one
question's results do not raise the importance of memories for the next.
The format is documented in docs/memory.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.timestamp_pb2 import Timestamp
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.memory.v1 import memory_service_pb2_grpc, recall_pb2
from hacs.records.v1 import memory_block_pb2, record_pb2

from services.common import names
from services.evals.platform import EvalPlatform, running_platform
from services.evals.retrieval import record_id
from services.tooling.beir import Dataset, DatasetError, load, ndcg_at, recall_at
from services.tooling.progress import Progress

TENANT = "recall-eval"
BATCH = 500
TOP_K = 10
CONCURRENT_QUERIES = 4


@dataclass(frozen=True)
class Memory:
    id: str  # the data set's id
    record_id: str
    text: str
    scope: str
    time: datetime | None
    speaker: str


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    scope: str
    time: datetime | None


def _when(value: object, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise DatasetError(f"{where}: metadata.time {value!r} is not ISO 8601") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _metadata(path: Path) -> dict[str, dict[str, Any]]:
    """Each line's metadata by _id (beir.load keeps only the text)."""
    found: dict[str, dict[str, Any]] = {}
    with path.open() as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                found.setdefault(str(row["_id"]), dict(row.get("metadata") or {}))
    return found


def read(directory: Path, split: str) -> tuple[Dataset, list[Memory], list[Question]]:
    dataset = load(directory, split)
    memory_meta = _metadata(directory / "corpus.jsonl")
    query_meta = _metadata(directory / "queries.jsonl")
    memories: list[Memory] = []
    for doc in dataset.corpus:
        meta = memory_meta[doc.id]
        if not meta.get("scope"):
            raise DatasetError(f"corpus {doc.id}: metadata.scope is missing")
        memories.append(
            Memory(
                doc.id,
                record_id(doc.id),
                f"{doc.title}\n{doc.text}" if doc.title else doc.text,
                str(meta["scope"]),
                _when(meta.get("time"), f"corpus {doc.id}"),
                str(meta.get("speaker") or ""),
            )
        )
    questions: list[Question] = []
    for query_id, text in dataset.queries.items():
        meta = query_meta[query_id]
        if not meta.get("scope"):
            raise DatasetError(f"query {query_id}: metadata.scope is missing")
        questions.append(
            Question(
                query_id, text, str(meta["scope"]), _when(meta.get("time"), f"query {query_id}")
            )
        )
    return dataset, memories, questions


def agent_id(scope: str) -> str:
    """An actor id for a scope: the scope itself when it makes a valid actor name."""
    if names.ACTOR.match(f"tenants/{TENANT}/actors/{scope}"):
        return scope
    return "s-" + hashlib.sha1(scope.encode()).hexdigest()[:20]


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def records(
    memories: list[Memory], platform: EvalPlatform, *, context_links: bool
) -> list[record_pb2.Record]:
    """The memories as MemoryBlock records, each citing the turn before it (see above)."""
    built: list[record_pb2.Record] = []
    for i, memory in enumerate(memories):
        record = record_pb2.Record(name=f"{platform.tenant}/memoryBlocks/{memory.record_id}")
        block = record.memory_block
        block.memory_type = memory_block_pb2.MEMORY_TYPE_EPISODIC
        block.content = memory.text
        block.agent = platform.actor(agent_id(memory.scope))
        if memory.time is not None:
            block.event_time.CopyFrom(_stamp(memory.time))
        if memory.speaker:
            block.participants.append(memory.speaker)
        before = memories[i - 1] if i else None
        if context_links and before and (before.scope, before.time) == (memory.scope, memory.time):
            block.related_memories.append(f"{platform.tenant}/memoryBlocks/{before.record_id}")
        built.append(record)
    return built


def batches(memories: list[Memory], limit: int = BATCH) -> list[list[int]]:
    """Indexes in order, cut where scope or time changes once a batch is large enough to
    hold the next run, so a session's turns are stored together."""
    runs: list[list[int]] = []
    for i, memory in enumerate(memories):
        previous = memories[i - 1] if i else None
        if previous and (previous.scope, previous.time) == (memory.scope, memory.time):
            runs[-1].append(i)
        else:
            runs.append([i])
    packed: list[list[int]] = []
    for run in runs:
        for start in range(0, len(run), limit):
            piece = run[start : start + limit]
            if packed and len(packed[-1]) + len(piece) <= limit:
                packed[-1].extend(piece)
            else:
                packed.append(list(piece))
    return packed


async def remember_all(
    platform: EvalPlatform, memories: list[Memory], *, context_links: bool, out: TextIO
) -> None:
    service = memory_service_pb2_grpc.MemoryServiceStub(platform.channel)
    built = records(memories, platform, context_links=context_links)
    done = 0
    progress = Progress(out)
    for batch in batches(memories):
        await service.Remember(
            mpb.RememberRequest(parent=platform.tenant, memories=[built[i] for i in batch]),
            metadata=platform.token,
            timeout=1800,
        )
        done += len(batch)
        progress.show(f"remembering: {done:,}/{len(memories):,}", final=done == len(memories))


async def recall_all(
    platform: EvalPlatform, memories: list[Memory], questions: list[Question], out: TextIO
) -> dict[str, list[str]]:
    """The top 10 memory ids recalled for each question."""
    service = memory_service_pb2_grpc.MemoryServiceStub(platform.channel)
    by_record = {m.record_id: m.id for m in memories}
    ranked: dict[str, list[str]] = {}
    limit = asyncio.Semaphore(CONCURRENT_QUERIES)
    progress = Progress(out)

    async def one(question: Question) -> None:
        request = mpb.RecallRequest(
            parent=platform.tenant,
            query=question.text,
            filter=recall_pb2.MemoryFilter(agents=[platform.actor(agent_id(question.scope))]),
            top_k=TOP_K,
            record_access=False,
        )
        if question.time is not None:
            request.query_time.CopyFrom(_stamp(question.time))
        async with limit:
            reply = await service.Recall(request, metadata=platform.token, timeout=120)
        ranked[question.id] = [by_record[r.memory.name.rsplit("/", 1)[1]] for r in reply.results]
        progress.show(
            f"recalling: {len(ranked):,}/{len(questions):,}",
            final=len(ranked) == len(questions),
        )

    await asyncio.gather(*(one(q) for q in questions))
    return ranked


def score(
    dataset: Dataset, questions: list[Question], ranked: dict[str, list[str]]
) -> dict[str, dict[str, float]]:
    """nDCG@10 and Recall@10 overall ("all") and per scope."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for question in questions:
        grades = dataset.qrels[question.id]
        got = ranked.get(question.id, [])
        pair = (ndcg_at(got, grades, TOP_K), recall_at(got, grades, TOP_K))
        rows.setdefault("all", []).append(pair)
        rows.setdefault(question.scope, []).append(pair)
    return {
        name: {
            "ndcg@10": round(sum(p[0] for p in pairs) / len(pairs), 4),
            "recall@10": round(sum(p[1] for p in pairs) / len(pairs), 4),
            "queries": len(pairs),
        }
        for name, pairs in rows.items()
    }


async def evaluate(
    directory: Path, *, split: str, scopes: set[str], context_links: bool, out: TextIO
) -> dict[str, dict[str, float]]:
    dataset, memories, questions = read(directory, split)
    if scopes:
        memories = [m for m in memories if m.scope in scopes]
        questions = [q for q in questions if q.scope in scopes]
    if not questions:
        raise DatasetError("no queries to evaluate (check --scopes)")
    out.write(
        f"{dataset.name}/{split}: {len(memories):,} memories, {len(questions):,} queries, "
        f"{len({m.scope for m in memories})} scopes\n"
    )
    with tempfile.TemporaryDirectory(prefix="hacs-eval-") as data_dir:
        async with running_platform(
            Path(data_dir),
            tenant_id=TENANT,
            display_name="Recall evaluation",
            services="tenant,records,embedding,search,memory",
            indexer=False,
        ) as platform:
            await remember_all(platform, memories, context_links=context_links, out=out)
            ranked = await recall_all(platform, memories, questions, out)
    return score(dataset, questions, ranked)


HELP = "nDCG@10 / Recall@10 of MemoryService.Recall on a scoped BEIR-format memory set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, help="directory with corpus.jsonl, queries.jsonl, qrels/"
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument(
        "--scopes", default="", help="only these scopes, comma-separated (e.g. a held-out part)"
    )
    parser.add_argument(
        "--no-context-links",
        action="store_true",
        help="do not link a memory to the one before it in the same scope and time",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )


def main(args: Any) -> int:
    scopes = {s.strip() for s in str(args.scopes).split(",") if s.strip()}
    try:
        table = asyncio.run(
            evaluate(
                Path(args.dataset),
                split=args.split,
                scopes=scopes,
                context_links=not args.no_context_links,
                out=sys.stderr,
            )
        )
    except DatasetError as exc:
        print(f"hacs eval recall: {exc}", file=sys.stderr)
        return 2
    print(f"\n{'scope':12} {'queries':>7} {'nDCG@10':>8} {'Recall@10':>10}")
    for name in sorted(table, key=lambda n: (n == "all", n)):
        row = table[name]
        print(f"{name:12} {row['queries']:7d} {row['ndcg@10']:8.4f} {row['recall@10']:10.4f}")
    if args.json:
        overall = table["all"]
        print(
            json.dumps(
                {
                    "ndcg@10": overall["ndcg@10"],
                    "recall@10": overall["recall@10"],
                    "queries": int(overall["queries"]),
                }
            )
        )
    return 0
