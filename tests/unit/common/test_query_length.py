"""Search, RAG and Recall take a person's message as written, up to MAX_QUERY_CHARS.

A consumer-qa message of 6,727 characters (subject line, history, several
questions) was refused at the old 4,000 (docs/search.md); beyond the limit
the refusal names the field and the limit.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from hacs.memory.v1 import memory_service_pb2 as mpb
from hacs.rag.v1 import rag_service_pb2 as rpb
from hacs.search.v1 import search_service_pb2 as spb

from services.common.errors import Invalid
from services.common.validation import validate
from services.kernel.retrieval.terms import MAX_QUERY_CHARS
from services.memory import validation as _memory  # noqa: F401  (registers validators)
from services.rag import validation as _rag  # noqa: F401
from services.search import validation as _search  # noqa: F401

PARENT = "tenants/ward"


def requests(query: str) -> list[Message]:
    return [
        spb.SearchRequest(parent=PARENT, query=query),
        spb.ParseQueryRequest(parent=PARENT, query=query),
        rpb.RetrieveRequest(parent=PARENT, query=query),
        rpb.AnswerRequest(parent=PARENT, query=query),
        mpb.RecallRequest(parent=PARENT, query=query),
    ]


def test_a_message_up_to_the_limit_is_taken() -> None:
    assert MAX_QUERY_CHARS == 10_000
    message = ("I am 34 and my knee has been swelling since March. " * 200)[:MAX_QUERY_CHARS]
    for request in requests(message):
        validate(request)


@pytest.mark.parametrize("index", range(5))
def test_a_longer_one_is_refused_naming_the_field_and_the_limit(index: int) -> None:
    request = requests("x" * (MAX_QUERY_CHARS + 1))[index]
    with pytest.raises(Invalid) as caught:
        validate(request)
    [violation] = caught.value.violations
    assert violation.field == "query"
    assert "10001 characters long; the limit is 10000" in violation.description
