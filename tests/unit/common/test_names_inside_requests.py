"""Names inside a request lie in its parent's tenant (issue 20, finding 8).

Search read `tenants/a/patients/p` as the caller's own patient p, Retrieve took
another tenant's document name, and Remember stored a link to another tenant's
memory. Each is refused with INVALID_ARGUMENT naming the field, as ListRecords
and Watch already did.
"""

from __future__ import annotations

import pytest
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.rag.v1 import rag_service_pb2 as rpb
from hacs.records.v1 import memory_block_pb2, record_pb2
from hacs.search.v1 import query_pb2
from hacs.search.v1 import search_service_pb2 as spb

from services.common.errors import Invalid
from services.common.validation import validate
from services.memory import validation as _memory  # noqa: F401  (registers validators)
from services.rag import validation as _rag  # noqa: F401
from services.search import validation as _search  # noqa: F401


def refused(request: object) -> list[str]:
    with pytest.raises(Invalid) as caught:
        validate(request)  # type: ignore[arg-type]
    return [v.field for v in caught.value.violations]


def test_search_filters_name_the_parents_patients_and_knowledge_bases() -> None:
    request = spb.SearchRequest(
        parent="tenants/b-side",
        query="hba1c",
        filter=query_pb2.SearchFilter(
            patients=["tenants/a-side/patients/p1", "tenants/b-side/patients/p2"],
            knowledge_bases=["tenants/a-side/knowledgeBases/guides"],
        ),
    )
    assert refused(request) == ["filter.patients[0]", "filter.knowledge_bases[0]"]


def test_retrieve_names_the_parents_documents_and_knowledge_bases() -> None:
    request = rpb.RetrieveRequest(
        parent="tenants/b-side",
        query="dose",
        knowledge_bases=["tenants/a-side/knowledgeBases/guides"],
        filter=rpb.RetrievalFilter(documents=["tenants/a-side/knowledgeBases/guides/documents/d"]),
    )
    assert refused(request) == ["knowledge_bases[0]", "filter.documents[0]"]


def test_remember_links_only_the_parents_memories_and_keeps_ttls_in_range() -> None:
    block = memory_block_pb2.MemoryBlock(
        memory_type=memory_block_pb2.MEMORY_TYPE_WORKING,
        content="x",
        related_memories=["tenants/a-side/memoryBlocks/m1"],
        ttl_seconds=2**63 - 1,
    )
    request = mpb.RememberRequest(
        parent="tenants/b-side", memories=[record_pb2.Record(memory_block=block)]
    )
    assert refused(request) == [
        "memories[0].memory_block.related_memories[0]",
        "memories[0].memory_block.ttl_seconds",
    ]
