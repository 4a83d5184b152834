"""Builds the memory servicer. Milvus and the model are reached on first use.

The parts that cost something to start (the vector index, the embedding
model) are shared with search and RAG in one process and are resolved the
first time a memory call needs them, so a process that hosts the memory
service but never recalls pays nothing for them.
"""

from __future__ import annotations

import grpc
from hacs.memory.v1 import memory_service_pb2_grpc

from services.common.runtime.platform import Platform
from services.kernel.embedding.embedder import Embedder
from services.kernel.records.store import RecordStore
from services.kernel.records.writes import RecordWriter
from services.kernel.retrieval.vector_index import VectorIndex
from services.memory.clustering import Clusterer
from services.memory.consolidation import Consolidator
from services.memory.feedback import FeedbackDesk
from services.memory.forget import Forgetter
from services.memory.lexical import LexicalIndex
from services.memory.listing import Lister
from services.memory.memories import Memories
from services.memory.memory_index import MemoryIndex
from services.memory.recall import Recaller
from services.memory.record_writes import MemoryWriter
from services.memory.servicer import MemoryDomain, MemoryServicer
from services.search.wiring import vector_index


def memory_domain(platform: Platform) -> MemoryDomain:
    store = RecordStore(platform.db)

    async def index() -> VectorIndex:
        return await vector_index(platform)

    async def embedder() -> Embedder:
        return await platform.embedder()

    async def no_patient_limit(tenant_id: str) -> int:
        return 0  # the memory service never creates patients

    memory_index = MemoryIndex(platform.db, index, embedder)
    writer = MemoryWriter(store, platform.change_bus)
    memories = Memories(store, writer, memory_index)
    records = RecordWriter(store, no_patient_limit, platform.change_bus)
    return MemoryDomain(
        memories=memories,
        recaller=Recaller(store, memory_index, LexicalIndex(store), writer),
        lister=Lister(store),
        forgetter=Forgetter(store, writer, records, memory_index, memories),
        feedback=FeedbackDesk(writer),
        consolidator=Consolidator(store, memory_index, writer, memories),
        clusterer=Clusterer(store, memory_index),
    )


async def register(platform: Platform, server: grpc.aio.Server) -> None:
    memory_service_pb2_grpc.add_MemoryServiceServicer_to_server(
        MemoryServicer(memory_domain(platform)), server
    )
