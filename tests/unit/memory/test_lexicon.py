"""Memory's BM25, through the platform's one lexical engine, against a plain reading of it.

The reference below is the memory formula written out (k1 = 1.2, b = 0.5,
idf ln(1 + odds), document frequencies over live memories, ties by name).
Memories are written, rewritten and forgotten through the real record store
(SQLite), and the lexicon catches up from the change log as recall does:
rewrites must not leave old postings in the statistics.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hacs.records.v1 import memory_block_pb2, record_pb2

from services.common.caller import Caller
from services.common.db import migrate
from services.common.db.engine import Database
from services.kernel.records.store import RecordStore
from services.kernel.records.write_plans import NewRecord, Revision
from services.kernel.records.writes import RecordWriter
from services.memory.lexical import LexicalScope, MemoryLexicon, terms

TENANT = "ward"
AGENTS = [f"tenants/{TENANT}/actors/{a}" for a in ("triage", "scribe")]
WORDS = (
    "chest",
    "pain",
    "fever",
    "cough",
    "insulin",
    "metformin",
    "dizzy",
    "fall",
    "rash",
    "nausea",
    "asthma",
    "inhaler",
    "blood",
    "pressure",
    "sugar",
    "walk",
    "sleep",
    "night",
    "morning",
    "daughter",
    "visit",
    "pharmacy",
    "dose",
)


def reference(
    docs: dict[str, tuple[str, memory_block_pb2.MemoryBlock]], query: str, scope: LexicalScope
) -> list[tuple[str, float]]:
    counted = {name: Counter(terms(text)) for name, (text, _) in docs.items()}
    total = max(len(docs), 1)
    average = sum(sum(c.values()) for c in counted.values()) / total if docs else 1.0
    scores: dict[str, float] = {}
    for term in set(terms(query)):
        having = sum(1 for c in counted.values() if term in c)
        idf = math.log(1 + (total - having + 0.5) / (having + 0.5))
        for name, counts in counted.items():
            block = docs[name][1]
            if not counts[term] or (scope.agents and block.agent not in scope.agents):
                continue
            norm = 1.2 * (1 - 0.5 + 0.5 * sum(counts.values()) / max(average, 1e-9))
            scores[name] = scores.get(name, 0.0) + idf * counts[term] * 2.2 / (counts[term] + norm)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RecordStore]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}")
    await migrate.upgrade(db)
    yield RecordStore(db)
    await db.close()


async def no_limit(tenant_id: str) -> int:
    return 0


def text(rng: random.Random) -> str:
    # Repeats on purpose: memories that tie on a query must rank by name.
    return " ".join(rng.choice(WORDS[:8] if rng.random() < 0.3 else WORDS) for _ in range(6))


async def test_ranks_and_scores_as_the_memory_formula_through_rewrites(
    store: RecordStore,
) -> None:
    rng = random.Random(7)
    writer = RecordWriter(store, no_limit)
    admin = Caller(TENANT, "admin", "administrator", frozenset({"admin:*"}))
    docs: dict[str, tuple[str, memory_block_pb2.MemoryBlock]] = {}
    creates = []
    for i in range(120):
        block = memory_block_pb2.MemoryBlock(
            memory_type=memory_block_pb2.MEMORY_TYPE_EPISODIC,
            content=text(rng),
            agent=AGENTS[i % 2],
        )
        creates.append(NewRecord(f"m-{i:03d}", record_pb2.Record(memory_block=block)))
    written = await writer.write(admin, TENANT, creates=creates)
    for record in written.created:
        docs[record.name] = (record.memory_block.content, record.memory_block)
    lexicon = MemoryLexicon(store)
    scopes = [LexicalScope(), LexicalScope(agents=(AGENTS[0],))]

    async def check() -> None:
        await lexicon.refresh(TENANT)
        for query in ("chest pain at night", "insulin dose", "fever cough fever", "zebra", "walk"):
            for scope in scopes:
                expected = reference(docs, query, scope)
                for limit in (1, 5, 40, 500):
                    found = lexicon.search(TENANT, query, scope, limit)
                    assert [n for n, _ in found] == [n for n, _ in expected[:limit]]
                    assert [s for _, s in found] == pytest.approx([s for _, s in expected[:limit]])
            for name, (body, _) in list(docs.items())[:10]:
                want = dict(reference(docs, query, LexicalScope())).get(name, 0.0)
                assert lexicon.scorer(TENANT, query)(body) == pytest.approx(want)
        # A text the index never saw still scores with the tenant's statistics.
        assert lexicon.scorer(TENANT, "zebra fever")("zebra zebra") > 0

    await check()
    # Rewrite a third (new words), forget a sixth: the statistics follow exactly.
    names = sorted(docs)
    rewritten = names[::3]
    forgotten = names[1::6]

    def new_content(name: str) -> Revision:
        content = text(rng)

        def revise(record: record_pb2.Record) -> record_pb2.Record:
            record.memory_block.content = content
            return record

        return Revision(name, revise, ("memory_block.content",))

    revisions = [new_content(n) for n in rewritten]
    revised = await writer.write(admin, TENANT, revisions=revisions)
    for name, record in revised.revised.items():
        docs[name] = (record.memory_block.content, record.memory_block)

    def keep(record: record_pb2.Record) -> record_pb2.Record:
        return record

    await writer.write(
        admin, TENANT, revisions=[Revision(n, keep, (), delete=True) for n in forgotten]
    )
    for name in forgotten:
        del docs[name]
    await check()


async def test_a_recall_bookkeeping_write_keeps_the_memory_s_postings(store: RecordStore) -> None:
    """Every recall rewrites the memories it returns (access count, last access); those
    versions change nothing the index holds, so they must not leave dead slots behind
    (dead slots make every search scan more until the index compacts)."""
    writer = RecordWriter(store, no_limit)
    admin = Caller(TENANT, "admin", "administrator", frozenset({"admin:*"}))
    creates = [
        NewRecord(
            f"m-{i}",
            record_pb2.Record(
                memory_block=memory_block_pb2.MemoryBlock(
                    memory_type=memory_block_pb2.MEMORY_TYPE_EPISODIC,
                    content=f"insulin dose {WORDS[i]}",
                    agent=AGENTS[0],
                )
            ),
        )
        for i in range(5)
    ]
    written = await writer.write(admin, TENANT, creates=creates)
    names = [r.name for r in written.created]
    lexicon = MemoryLexicon(store)
    await lexicon.refresh(TENANT)
    before = lexicon.search(TENANT, "insulin chest", LexicalScope(), 5)

    def touched(record: record_pb2.Record) -> record_pb2.Record:
        record.memory_block.access_count += 1
        return record

    def reworded(record: record_pb2.Record) -> record_pb2.Record:
        record.memory_block.content = "chest pain at night"
        return record

    await writer.write(
        admin,
        TENANT,
        revisions=[Revision(n, touched, ("memory_block.access_count",)) for n in names],
    )
    await lexicon.refresh(TENANT)
    index = lexicon._tenants[TENANT].index
    assert (index.live, index.dead) == (5, 0)
    assert lexicon.search(TENANT, "insulin chest", LexicalScope(), 5) == before
    # A version that does change the text still replaces the postings.
    await writer.write(
        admin, TENANT, revisions=[Revision(names[1], reworded, ("memory_block.content",))]
    )
    await lexicon.refresh(TENANT)
    assert (index.live, index.dead) == (5, 1)
    assert lexicon.search(TENANT, "night", LexicalScope(), 5)[0][0] == names[1]
