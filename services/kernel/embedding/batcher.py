"""Dynamic micro-batching: requests that arrive within a few milliseconds share one forward pass.

Many small concurrent requests (one query each, from search and RAG) would
otherwise each pay a full model call. A worker takes the first waiting
request, waits up to `max_wait` for more (up to `max_batch` texts), runs them
as one batch in a thread, and hands each caller its rows. The queue is
bounded: when it is full callers are told to back off instead of piling up
memory.

Every text the model encodes passes here, so embedding tokens are metered
here: per request, the tokens its texts used (prefix and special tokens
included, after truncation to the model's maximum: what the forward pass
computed, whether or not the caller still waits), counted for the tenant
`usage_attribution` named when it queued, under the model's name. The tenant's
monthly embedding quota is checked before its texts queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import Unavailable
from services.common.hourly_usage import EMBEDDING_TOKENS, HourlyMeter
from services.common.runtime.quotas import EMBEDDING_TOKENS_PER_MONTH, UsageQuotas
from services.common.usage_attribution import attribution
from services.kernel.embedding.encoder import Encoded, TextEncoder


@dataclass
class _Pending:
    texts: list[str]
    max_length: int
    normalize: bool
    future: asyncio.Future[Encoded]
    payer: str  # the tenant its tokens are counted for
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    def __init__(
        self,
        encoder: TextEncoder,
        *,
        max_batch: int = 64,
        max_wait_seconds: float = 0.004,
        max_queued_texts: int = 20_000,
        meter: HourlyMeter | None = None,
        quotas: UsageQuotas | None = None,
    ) -> None:
        self.encoder = encoder
        self._meter = meter
        self._quotas = quotas
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._max_queued = max_queued_texts
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_texts = 0
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0

    async def embed(self, texts: list[str], *, max_length: int, normalize: bool) -> Encoded:
        payer = attribution()
        if self._quotas is not None and payer.own_call:
            await self._quotas.check(payer.tenant_id, EMBEDDING_TOKENS_PER_MONTH)
        if self._queued_texts + len(texts) > self._max_queued:
            raise Unavailable(
                f"the embedding queue is full ({self._queued_texts} texts waiting); retry shortly"
            )
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(
                self._run(), name=f"embed-{self.encoder.config.name}"
            )
        future: asyncio.Future[Encoded] = asyncio.get_running_loop().create_future()
        self._queued_texts += len(texts)
        await self._queue.put(_Pending(texts, max_length, normalize, future, payer.tenant_id))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await asyncio.to_thread(self.encoder.close)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            group = [first]
            size = len(first.texts)
            deadline = time.monotonic() + self._max_wait
            held: list[_Pending] = []
            while size < self._max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                # Only requests with the same options can share a forward pass.
                if (nxt.max_length, nxt.normalize) == (first.max_length, first.normalize):
                    group.append(nxt)
                    size += len(nxt.texts)
                else:
                    held.append(nxt)
            for pending in held:
                self._queue.put_nowait(pending)
            await self._run_group(group)

    async def _run_group(self, group: list[_Pending]) -> None:
        texts = [t for p in group for t in p.texts]
        self._queued_texts -= len(texts)
        try:
            result = await asyncio.to_thread(
                self.encoder.encode,
                texts,
                max_length=group[0].max_length,
                normalize=group[0].normalize,
            )
        except Exception as exc:  # every caller of the batch gets the failure
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.batches_run += 1
        start = 0
        for pending in group:
            end = start + len(pending.texts)
            if self._meter is not None:  # computed, so counted, even for a caller gone since
                tokens = sum(result.token_counts[start:end])
                self._meter.add(pending.payer, EMBEDDING_TOKENS, self.encoder.config.name, tokens)
            if not pending.future.done():
                pending.future.set_result(
                    Encoded(
                        vectors=np.ascontiguousarray(result.vectors[start:end]),
                        token_counts=result.token_counts[start:end],
                        original_counts=result.original_counts[start:end],
                        truncated=result.truncated[start:end],
                    )
                )
            start = end
