"""Concurrent vector searches that can share one Milvus call do.

A Milvus search request costs the server a fixed amount (parse the filter,
plan, fan out to the query nodes, reduce) plus a little per query vector;
pymilvus adds its own per-call cost. Searches with the same collection,
filter, limit and output fields can therefore go as one request with several
query vectors (`nq`), each getting its own result list back.

Batching is natural, with no timer: a search is sent at once when fewer than
`max_in_flight` calls for its key are running; otherwise it queues, and the
next call to start takes everything queued (up to `max_batch`). One client
never waits for a batch to fill, and under load the batches grow by
themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")
R = TypeVar("R")


@dataclass
class _Lane(Generic[V, R]):
    queued: list[tuple[V, asyncio.Future[R]]] = field(default_factory=list)
    in_flight: int = 0


class SearchBatcher(Generic[V, R]):
    def __init__(
        self,
        run: Callable[[Hashable, list[V]], Awaitable[list[R]]],
        *,
        max_batch: int = 32,
        max_in_flight: int = 2,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._lanes: dict[Hashable, _Lane[V, R]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # Milvus calls made (for benchmarks and tests)

    async def search(self, key: Hashable, query: V) -> R:
        lane = self._lanes.setdefault(key, _Lane())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        lane.queued.append((query, future))
        if lane.in_flight < self._max_in_flight:
            lane.in_flight += 1
            task = asyncio.create_task(self._drain(key, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, key: Hashable, lane: _Lane[V, R]) -> None:
        try:
            while lane.queued:
                batch = lane.queued[: self._max_batch]
                del lane.queued[: self._max_batch]
                batch = [(q, f) for q, f in batch if not f.done()]  # callers gone: skip
                if not batch:
                    continue
                self.calls += 1
                try:
                    results = await self._run(key, [q for q, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(
                            f"the index answered {len(results)} result lists for "
                            f"{len(batch)} queries"
                        )
                except Exception as exc:  # every caller of the batch gets the failure
                    _fail(batch, exc)
                    continue
                except BaseException:
                    _fail(batch, RuntimeError("the search was cancelled (shutting down)"))
                    raise
                for (_, f), result in zip(batch, results, strict=True):
                    if not f.done():
                        f.set_result(result)
        finally:
            lane.in_flight -= 1
            if lane.in_flight == 0:
                _fail(lane.queued, RuntimeError("the search was cancelled (shutting down)"))
                lane.queued.clear()
                if self._lanes.get(key) is lane:
                    del self._lanes[key]


def _fail(batch: list[tuple[V, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, f in batch:
        if not f.done():
            f.set_exception(exc)
