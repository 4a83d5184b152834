"""The kernel's parts a process can build, what each needs, and the one place they are built.

A process hosts some services (`hacs serve --only search,rag`). Each service
declares the kernel modules it uses (`KERNEL_MODULES` in its `wiring.py`);
the process resolves them with everything they depend on, in dependency
order, as Loki's and Mimir's module manager resolves a target. A module is
built at most once per process and only when first asked for: the embedding
model, Milvus and the lexical store take seconds to start, and a process
whose services never touch them never pays.

Asking for a module no hosted service declared is a programming error and
fails loudly, so `DEPENDENCIES` below and the services' declarations are the
whole truth about what a process builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from services.common.runtime.platform import Platform

if TYPE_CHECKING:
    from services.kernel.embedding.embedder import Embedder
    from services.kernel.embedding.registry import ModelRegistry
    from services.kernel.embedding.rerankers import Rerankers
    from services.kernel.records.store import RecordStore
    from services.kernel.records.writes import RecordWriter
    from services.kernel.retrieval.lexical import LexicalIndex
    from services.kernel.retrieval.vector_index import VectorIndex
    from services.kernel.tenancy.standing import PatientLimit

T = TypeVar("T")

# module -> the modules it is built from
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "tenancy": (),
    "records": ("tenancy",),
    "models": (),
    "embedder": ("models",),
    "rerankers": ("models",),
    "vector_index": ("models",),
    "lexical_index": ("vector_index",),
}


def resolve(wanted: Iterable[str]) -> tuple[str, ...]:
    """The modules `wanted` need, each after what it is built from."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name not in DEPENDENCIES:
            raise ValueError(f"unknown kernel module {name!r}; known: {', '.join(DEPENDENCIES)}")
        if name in path:
            raise ValueError("kernel modules depend on each other: " + " -> ".join((*path, name)))
        if name in order:
            return
        for dependency in DEPENDENCIES[name]:
            visit(dependency, (*path, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return tuple(order)


class Kernel:
    """The kernel modules of one process, over the runtime's platform."""

    def __init__(self, platform: Platform, modules: Iterable[str]) -> None:
        self.platform = platform
        self.modules = resolve(modules)
        self._locks: dict[str, asyncio.Lock] = {}
        if "records" in self.modules:
            self._sample_records()

    def _sample_records(self) -> None:
        """The `records_stored` usage gauge: live records per collection (hourly_usage.py)."""
        from services.common.hourly_usage import RECORDS_STORED
        from services.kernel.records.store import RecordStore

        store = RecordStore(self.platform.db)

        async def sample(tenant_id: str) -> dict[str, int]:
            async with store.transaction(tenant_id) as tx:
                return await tx.live_records_by_collection()

        self.platform.metering.sample_with(RECORDS_STORED, sample)

    def _require(self, name: str) -> None:
        if name not in self.modules:
            raise RuntimeError(
                f"kernel module {name!r} is not declared by any service this process hosts "
                f"(declared: {', '.join(self.modules) or 'none'}); add it to the KERNEL_MODULES "
                "of the service that uses it"
            )

    # -- tenancy and records -------------------------------------------------------

    def patient_limit(self) -> PatientLimit:
        """The tenant's patient quota, as the record writer checks it."""
        from services.kernel.tenancy.standing import patient_limit

        self._require("tenancy")
        return patient_limit(self.platform.db)

    def record_store(self) -> RecordStore:
        from services.kernel.records.store import RecordStore

        self._require("records")
        return RecordStore(self.platform.db)

    def record_writer(self, store: RecordStore | None = None) -> RecordWriter:
        """The one writer of records (any store: sync writes through a planned-versions one)."""
        from services.kernel.records.writes import RecordWriter

        self._require("records")
        return RecordWriter(
            store or self.record_store(), self.patient_limit(), self.platform.change_bus
        )

    # -- embedding -----------------------------------------------------------------

    async def models(self) -> ModelRegistry:
        """The embedding and re-ranking models this process serves or embeds with."""
        self._require("models")

        async def build() -> ModelRegistry:
            from services.kernel.embedding.registry import ModelRegistry

            settings = self.platform.settings
            registry = ModelRegistry(
                self.platform.db,
                device=settings.embedding_device,
                precision=settings.embedding_precision,
                worker=settings.embedding_worker,
                max_batch=settings.embedding_max_batch,
                max_wait_ms=settings.embedding_max_wait_ms,
                meter=self.platform.metering,
                quotas=self.platform.quotas,
            )
            await registry.start()
            self.platform.on_close(registry.close)
            return registry

        return await self._once("models", build)

    async def embedder(self) -> Embedder:
        """In-process embedding, or the embedding pods when HACS_EMBEDDING_URL says so."""
        self._require("embedder")

        async def build() -> Embedder:
            from services.kernel.embedding.embedder import LocalEmbedder, RemoteEmbedder

            settings = self.platform.settings
            if settings.embedding_url:
                if not settings.service_api_key:
                    raise RuntimeError(
                        "HACS_EMBEDDING_URL needs HACS_SERVICE_API_KEY to authenticate"
                    )
                credentials = None
                if settings.tls == "on":
                    from services.common.runtime.tls import channel_credentials, tls_files

                    credentials = channel_credentials(tls_files(settings))
                remote = RemoteEmbedder(
                    settings.embedding_url,
                    settings.service_api_key,
                    token_target=settings.tenant_url or None,
                    credentials=credentials,
                    quotas=self.platform.quotas,
                )
                self.platform.on_close(remote.close)
                return remote
            return LocalEmbedder(await self.models())

        return await self._once("embedder", build)

    async def rerankers(self) -> Rerankers:
        """Cross-encoders of the model registry, loaded on first use."""
        self._require("rerankers")

        async def build() -> Rerankers:
            from services.kernel.embedding.rerankers import Rerankers

            return Rerankers(await self.models())

        return await self._once("rerankers", build)

    # -- retrieval -----------------------------------------------------------------

    async def vector_index(self) -> VectorIndex:
        """One Milvus connection per process, sized for the default embedding model."""
        self._require("vector_index")

        async def build() -> VectorIndex:
            from services.common.hourly_usage import VECTORS_STORED
            from services.kernel.retrieval.vector_index import KNOWLEDGE, RECORDS, VectorIndex

            registry = await self.models()
            settings = self.platform.settings
            index = VectorIndex(
                settings.resolved_milvus_uri,
                registry.get("").config.dimension,
                read_consistency=settings.milvus_read_consistency,
                client_threads=settings.milvus_client_threads,
                token=settings.milvus_token,
            )
            await index.connect()
            self.platform.on_close(index.close)

            async def sample(tenant_id: str) -> dict[str, int]:
                """The `vectors_stored` usage gauge: the tenant's vectors per index kind."""
                return {kind: await index.count(kind, tenant_id) for kind in (RECORDS, KNOWLEDGE)}

            self.platform.metering.sample_with(VECTORS_STORED, sample)
            return index

        return await self._once("vector_index", build)

    async def lexical_index(self) -> LexicalIndex:
        """Milvus's BM25 on a server that indexes it; in-process BM25 over SQLite otherwise."""
        self._require("lexical_index")

        async def build() -> LexicalIndex:
            from services.kernel.retrieval.hybrid import FIELDS
            from services.kernel.retrieval.lexical import MilvusLexical
            from services.kernel.retrieval.lexical_store import SqliteLexical

            index = await self.vector_index()
            settings = self.platform.settings
            engine = settings.lexical_engine
            if engine == "auto":
                engine = "milvus" if index.lexical_supported else "sqlite"
            if engine == "milvus":
                if not index.lexical_supported:
                    raise RuntimeError(
                        "HACS_LEXICAL_ENGINE=milvus needs a Milvus server 2.5 or later "
                        "(BM25 with a sparse index)"
                    )
                return MilvusLexical(index, FIELDS)
            store = SqliteLexical(settings.data_path / "lexical.db")
            # Built in the background so the first searches do not wait for them.
            preload = asyncio.create_task(store.preload(), name="lexical-preload")

            async def close() -> None:
                store.stop_preloading()
                await asyncio.gather(preload, return_exceptions=True)  # ends after its index
                store.close()

            self.platform.on_close(close)
            return store

        return await self._once("lexical_index", build)

    async def _once(self, name: str, build: Callable[[], Awaitable[T]]) -> T:
        """Build a module once, even when two first calls arrive together."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            return await self.platform.shared(f"kernel.{name}", build)
