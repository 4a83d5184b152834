"""gRPC glue for hacs.rag.v1.RagService: decode, call the domain, encode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hacs.rag.v1 import rag_service_pb2 as pb
from hacs.rag.v1 import rag_service_pb2_grpc as pb_grpc

from services.common import names
from services.common.caller import current_caller
from services.common.errors import HacsError
from services.common.pagination import page_size
from services.common.runtime.context import ServicerContext
from services.rag import (
    convert,
    validation,  # noqa: F401  (registers the request validators)
)
from services.rag.answer import Answerer, AnswerQuery, ContextReady
from services.rag.documents import Documents
from services.rag.ingest import Data, End, Header, Ingest, IngestConfig, Step
from services.rag.knowledge_bases import KnowledgeBases
from services.rag.names import parse_document, parse_knowledge_base
from services.rag.providers.fallback import Delta, Reset
from services.rag.retrieval import RetrievalQuery, Retriever


@dataclass(frozen=True)
class RagDomain:
    knowledge_bases: KnowledgeBases
    documents: Documents
    ingest: Ingest
    retriever: Retriever
    answerer: Answerer


def _retrieval_query(
    r: pb.RetrieveRequest | pb.AnswerRequest, default_top_k: int
) -> RetrievalQuery:
    return RetrievalQuery(
        tenant_id=names.tenant_of(r.parent),
        query=r.query,
        knowledge_bases=tuple(
            parse_knowledge_base(kb, f"knowledge_bases[{i}]")
            for i, kb in enumerate(r.knowledge_bases)
        ),
        context=r.patient_context,
        top_k=r.top_k or default_top_k,
        min_relevance=r.min_relevance,
        filter=convert.filter_from_proto(r.filter),
        rerank=convert.RERANK[r.rerank],
    )


async def _steps(requests: AsyncIterator[pb.IngestDocumentsRequest]) -> AsyncIterator[Step]:
    async for request in requests:
        kind = request.WhichOneof("payload")
        if kind == "config":
            c = request.config
            yield IngestConfig(c.knowledge_base, c.force, c.validate_only)
        elif kind == "header":
            h = request.header
            yield Header(convert.meta_from_proto(h), h.total_bytes, h.content)
        elif kind == "data":
            yield Data(request.data.content)
        elif kind == "end":
            yield End(request.end.sha256)


async def _drain(requests: AsyncIterator[Any], seconds: float = 2.0) -> None:
    """Read what the client is still sending (briefly) before the stream ends with an error.

    A status sent while the client is still writing can reach it as an HTTP/2 stream
    reset (INTERNAL) instead of the status; reading the rest first avoids that race.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            async for _ in requests:
                pass


class RagServicer(pb_grpc.RagServiceServicer):
    def __init__(self, domain: Callable[[], Awaitable[RagDomain]]) -> None:
        self._domain = domain

    async def CreateKnowledgeBase(
        self, request: pb.CreateKnowledgeBaseRequest, context: ServicerContext
    ) -> pb.CreateKnowledgeBaseResponse:
        name = parse_knowledge_base(f"{request.parent}/knowledgeBases/{request.knowledge_base_id}")
        view = await (await self._domain()).knowledge_bases.create(
            current_caller(), name, convert.spec_from_proto(request.knowledge_base)
        )
        return pb.CreateKnowledgeBaseResponse(knowledge_base=convert.knowledge_base_to_proto(view))

    async def GetKnowledgeBase(
        self, request: pb.GetKnowledgeBaseRequest, context: ServicerContext
    ) -> pb.GetKnowledgeBaseResponse:
        view = await (await self._domain()).knowledge_bases.get(
            current_caller(), parse_knowledge_base(request.name)
        )
        return pb.GetKnowledgeBaseResponse(knowledge_base=convert.knowledge_base_to_proto(view))

    async def ListKnowledgeBases(
        self, request: pb.ListKnowledgeBasesRequest, context: ServicerContext
    ) -> pb.ListKnowledgeBasesResponse:
        views, token = await (await self._domain()).knowledge_bases.list_page(
            current_caller(),
            names.tenant_of(request.parent),
            page_size(request.page_size),
            request.page_token,
        )
        return pb.ListKnowledgeBasesResponse(
            knowledge_bases=[convert.knowledge_base_to_proto(v) for v in views],
            next_page_token=token,
        )

    async def UpdateKnowledgeBase(
        self, request: pb.UpdateKnowledgeBaseRequest, context: ServicerContext
    ) -> pb.UpdateKnowledgeBaseResponse:
        kb = request.knowledge_base
        view = await (await self._domain()).knowledge_bases.update(
            current_caller(),
            parse_knowledge_base(kb.name, "knowledge_base.name"),
            kb.etag,
            convert.spec_from_proto(kb),
            list(request.update_mask.paths),
        )
        return pb.UpdateKnowledgeBaseResponse(knowledge_base=convert.knowledge_base_to_proto(view))

    async def DeleteKnowledgeBase(
        self, request: pb.DeleteKnowledgeBaseRequest, context: ServicerContext
    ) -> pb.DeleteKnowledgeBaseResponse:
        view = await (await self._domain()).knowledge_bases.delete(
            current_caller(), parse_knowledge_base(request.name), request.etag, request.force
        )
        return pb.DeleteKnowledgeBaseResponse(knowledge_base=convert.knowledge_base_to_proto(view))

    async def IngestDocuments(
        self, request_iterator: AsyncIterator[pb.IngestDocumentsRequest], context: ServicerContext
    ) -> AsyncIterator[pb.IngestDocumentsResponse]:
        ingest = (await self._domain()).ingest
        try:
            async for event in ingest.run(current_caller(), _steps(request_iterator)):
                yield convert.ingest_event_to_proto(event)
        except HacsError:
            await _drain(request_iterator)
            raise

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: ServicerContext
    ) -> pb.GetDocumentResponse:
        row = await (await self._domain()).documents.get(
            current_caller(), parse_document(request.name)
        )
        return pb.GetDocumentResponse(document=convert.document_to_proto(row))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: ServicerContext
    ) -> pb.ListDocumentsResponse:
        rows, token = await (await self._domain()).documents.list_page(
            current_caller(),
            parse_knowledge_base(request.parent, "parent"),
            [t.strip().lower() for t in request.tags],
            page_size(request.page_size, maximum=1000),
            request.page_token,
        )
        return pb.ListDocumentsResponse(
            documents=[convert.document_to_proto(r) for r in rows], next_page_token=token
        )

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: ServicerContext
    ) -> pb.DeleteDocumentResponse:
        row = await (await self._domain()).documents.delete(
            current_caller(), parse_document(request.name), request.etag
        )
        return pb.DeleteDocumentResponse(document=convert.document_to_proto(row))

    async def ListChunks(
        self, request: pb.ListChunksRequest, context: ServicerContext
    ) -> pb.ListChunksResponse:
        rows, token = await (await self._domain()).documents.chunks(
            current_caller(),
            parse_document(request.parent, "parent"),
            page_size(request.page_size, default=100, maximum=1000),
            request.page_token,
        )
        return pb.ListChunksResponse(
            chunks=[convert.chunk_to_proto(r) for r in rows], next_page_token=token
        )

    async def Retrieve(
        self, request: pb.RetrieveRequest, context: ServicerContext
    ) -> pb.RetrieveResponse:
        outcome = await (await self._domain()).retriever.retrieve(
            current_caller(), _retrieval_query(request, 10)
        )
        return pb.RetrieveResponse(
            results=[convert.result_to_proto(r, i) for i, r in enumerate(outcome.results, 1)],
            resolved_context=outcome.resolved_context,
            below_min_relevance_count=outcome.below_min_relevance,
            reranked=outcome.reranked,
        )

    async def Answer(
        self, request: pb.AnswerRequest, context: ServicerContext
    ) -> AsyncIterator[pb.AnswerResponse]:
        query = AnswerQuery(
            retrieval=_retrieval_query(request, 8),
            providers=tuple(request.providers),
            template=request.prompt_template,
            template_version=request.prompt_template_version,
            max_output_tokens=request.max_output_tokens,
            temperature=request.temperature if request.HasField("temperature") else None,
            allow_extractive=(
                request.allow_extractive_fallback
                if request.HasField("allow_extractive_fallback")
                else True
            ),
        )
        answerer = (await self._domain()).answerer
        async for event in answerer.answer(current_caller(), query):
            if isinstance(event, ContextReady):
                yield pb.AnswerResponse(
                    context=pb.AnswerContext(
                        results=[
                            convert.result_to_proto(r, i)
                            for i, r in enumerate(event.outcome.results, 1)
                        ],
                        resolved_context=event.outcome.resolved_context,
                    )
                )
            elif isinstance(event, Delta):
                yield pb.AnswerResponse(delta=pb.AnswerDelta(text=event.text))
            elif isinstance(event, Reset):
                yield pb.AnswerResponse(reset=pb.AnswerReset(reason=event.reason))
            else:
                yield pb.AnswerResponse(answer=convert.answer_to_proto(event))
