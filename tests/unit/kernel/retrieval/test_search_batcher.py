"""Concurrent searches sharing Milvus calls: each caller gets its own answer, failures
reach exactly the callers of the failed call, and a caller that gives up harms no one."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import pytest

from services.kernel.retrieval.search_batcher import SearchBatcher
from services.kernel.retrieval.vector_index import IndexDoc, VectorIndex


class SlowSquare:
    """Stands in for Milvus (only the batching is under test here): squares each query."""

    def __init__(self) -> None:
        self.batches: list[tuple[Hashable, list[int]]] = []
        self.fail_next = False

    async def __call__(self, key: Hashable, queries: list[int]) -> list[str]:
        self.batches.append((key, list(queries)))
        await asyncio.sleep(0.01)
        if self.fail_next:
            self.fail_next = False
            raise ValueError("server said no")
        return [f"{key}:{q * q}" for q in queries]


async def test_each_caller_gets_its_own_answer_and_calls_are_shared() -> None:
    run = SlowSquare()
    batcher: SearchBatcher[int, str] = SearchBatcher(run, max_batch=8, max_in_flight=2)
    answers = await asyncio.gather(*(batcher.search("a" if q % 2 else "b", q) for q in range(40)))
    assert answers == [f"{'a' if q % 2 else 'b'}:{q * q}" for q in range(40)]
    assert all(len(queries) <= 8 for _, queries in run.batches)
    assert all(all(q % 2 == (key == "a") for q in queries) for key, queries in run.batches)
    assert len(run.batches) < 40  # some calls carried several queries


async def test_a_failed_call_fails_its_callers_only() -> None:
    run = SlowSquare()
    batcher: SearchBatcher[int, str] = SearchBatcher(run, max_batch=4, max_in_flight=1)
    run.fail_next = True
    results = await asyncio.gather(
        *(batcher.search("k", q) for q in range(6)), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, ValueError)]
    assert len(failed) == len(run.batches[0][1]) >= 1
    assert [r for r in results if isinstance(r, str)] == [
        f"k:{q * q}" for q in range(6) if not isinstance(results[q], ValueError)
    ]
    assert await batcher.search("k", 7) == "k:49"


async def test_a_caller_that_gives_up_harms_no_one() -> None:
    run = SlowSquare()
    batcher: SearchBatcher[int, str] = SearchBatcher(run, max_batch=8, max_in_flight=1)
    first = asyncio.create_task(batcher.search("k", 1))
    quitter = asyncio.create_task(batcher.search("k", 2))
    stayer = asyncio.create_task(batcher.search("k", 3))
    await asyncio.sleep(0)
    quitter.cancel()
    assert await first == "k:1" and await stayer == "k:9"
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_concurrent_dense_searches_on_milvus_lite_match_one_at_a_time(tmp_path: Path) -> None:
    index = VectorIndex(str(tmp_path / "milvus.db"), 8)
    await index.connect()
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    await index.upsert(
        "records",
        [
            IndexDoc(pk=f"t/{i}", tenant_id="t", name=f"n{i}", kind="Condition", text="x", vector=v)
            for i, v in enumerate(vectors)
        ],
    )
    queries = vectors[:12] + 0.05
    alone = [
        [h.pk for h in await index.dense_search("records", "t", q, "", 5, ["pk"])] for q in queries
    ]
    together = await asyncio.gather(
        *(index.dense_search("records", "t", q, "", 5, ["pk"]) for q in queries)
    )
    assert [[h.pk for h in hits] for hits in together] == alone
    assert index._dense.calls < 2 * len(queries)  # the 12 together took fewer than 12 calls
    assert [hits[0] for hits in alone] == [f"t/{i}" for i in range(12)]
    await index.close()
