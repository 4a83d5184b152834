"""Builds the memory servicer. Milvus and the model are reached on first use.

The parts that cost something to start (the vector index, the embedding
model) are the kernel's, shared with search and RAG in one process, and are
resolved the first time a memory call needs them, so a process that hosts
the memory service but never recalls pays nothing for them.
"""

from __future__ import annotations

import grpc
from hacs.memory.v1 import memory_service_pb2_grpc

from services.kernel.modules import Kernel
from services.memory.clustering import Clusterer
from services.memory.consolidation import Consolidator
from services.memory.feedback import FeedbackDesk
from services.memory.forget import Forgetter
from services.memory.lexical import MemoryLexicon
from services.memory.listing import Lister
from services.memory.memories import Memories
from services.memory.memory_index import MemoryIndex
from services.memory.recall import Recaller
from services.memory.servicer import MemoryDomain, MemoryServicer

KERNEL_MODULES = ("records", "embedder", "vector_index")


def build_memory_index(kernel: Kernel) -> MemoryIndex:
    """The memory index alone (`hacs index backfill` rebuilds memories with it)."""
    return MemoryIndex(kernel.platform.db, kernel.vector_index, kernel.embedder)


def memory_domain(kernel: Kernel) -> MemoryDomain:
    store = kernel.record_store()
    memory_index = build_memory_index(kernel)
    writer = kernel.record_writer(store)
    memories = Memories(store, writer, memory_index)
    return MemoryDomain(
        memories=memories,
        recaller=Recaller(store, memory_index, MemoryLexicon(store), writer),
        lister=Lister(store),
        forgetter=Forgetter(store, writer, memory_index, memories),
        feedback=FeedbackDesk(writer),
        consolidator=Consolidator(store, memory_index, writer, memories),
        clusterer=Clusterer(store, memory_index),
    )


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    memory_service_pb2_grpc.add_MemoryServiceServicer_to_server(
        MemoryServicer(memory_domain(kernel)), server
    )
