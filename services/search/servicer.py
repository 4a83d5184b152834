"""gRPC glue for hacs.search.v1.SearchService."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.duration_pb2 import Duration
from hacs.common.v1 import datatypes_pb2
from hacs.search.v1 import query_pb2
from hacs.search.v1 import search_service_pb2 as pb
from hacs.search.v1 import search_service_pb2_grpc as pb_grpc

from services.common import names
from services.common.caller import current_caller
from services.common.errors import Forbidden
from services.kernel.records.resource_types import BY_ENUM, BY_NAME
from services.kernel.retrieval.expressions import FilterSpec
from services.kernel.retrieval.fusion import DEFAULT_FUSION, Fusion
from services.kernel.retrieval.hybrid import (
    KNOWLEDGE,
    RECORDS,
    Searcher,
    SearchOutcome,
    SearchParams,
)
from services.kernel.retrieval.query_parser import Parse
from services.kernel.retrieval.vector_index import VectorIndex
from services.search import validation  # noqa: F401  (registers the request validators)
from services.search.indexer import RECORDS_INDEX, Progress, RecordIndexer, indexed_sequence
from services.tenant.convert import from_timestamp

Context = Any
SCOPES = {
    pb.SEARCH_SCOPE_UNSPECIFIED: RECORDS,
    pb.SEARCH_SCOPE_RECORDS: RECORDS,
    pb.SEARCH_SCOPE_KNOWLEDGE: KNOWLEDGE,
    pb.SEARCH_SCOPE_ALL: "all",
}
MODES = {
    pb.RETRIEVAL_MODE_UNSPECIFIED: "hybrid",
    pb.RETRIEVAL_MODE_HYBRID: "hybrid",
    pb.RETRIEVAL_MODE_DENSE: "dense",
    pb.RETRIEVAL_MODE_LEXICAL: "lexical",
}
FUSIONS = {pb.FUSION_METHOD_RRF: "rrf", pb.FUSION_METHOD_WEIGHTED: "weighted"}
FUSION_ENUMS = {"rrf": pb.FUSION_METHOD_RRF, "weighted": pb.FUSION_METHOD_WEIGHTED}


def _tenant(parent: str) -> str:
    return names.parse(names.TENANT, parent, "parent")["tenant"]


def filter_from_proto(f: query_pb2.SearchFilter) -> FilterSpec:
    return FilterSpec(
        kinds=[BY_ENUM[t].name for t in f.resource_types],
        patient_ids=[p.rsplit("/", 1)[1] for p in f.patients],
        min_age=f.min_age if f.HasField("min_age") else None,
        max_age=f.max_age if f.HasField("max_age") else None,
        genders=list(f.genders),
        codes=list(f.codes),
        start_time=from_timestamp(f, "start_time"),
        end_time=from_timestamp(f, "end_time"),
        labels=dict(f.labels),
        groups=[k.rsplit("/", 1)[1] for k in f.knowledge_bases],
        document_tags=list(f.document_tags),
    )


def filter_to_proto(spec: FilterSpec, tenant_id: str) -> query_pb2.SearchFilter:
    f = query_pb2.SearchFilter(
        resource_types=[BY_NAME[k].enum for k in spec.kinds if k in BY_NAME],  # type: ignore[misc]
        patients=[f"tenants/{tenant_id}/patients/{p}" for p in spec.patient_ids],
        genders=spec.genders,
        codes=spec.codes,
        labels=spec.labels,
        knowledge_bases=[f"tenants/{tenant_id}/knowledgeBases/{g}" for g in spec.groups],
        document_tags=spec.document_tags,
    )
    if spec.min_age is not None:
        f.min_age = spec.min_age
    if spec.max_age is not None:
        f.max_age = spec.max_age
    if spec.start_time is not None:
        f.start_time.FromDatetime(spec.start_time)
    if spec.end_time is not None:
        f.end_time.FromDatetime(spec.end_time)
    return f


def parse_to_proto(parse: Parse, tenant_id: str) -> query_pb2.ParsedQuery:
    spec = FilterSpec(
        kinds=parse.resource_types,
        min_age=parse.min_age,
        max_age=parse.max_age,
        genders=parse.genders,
        start_time=parse.start_time,
        end_time=parse.end_time,
    )
    return query_pb2.ParsedQuery(
        query=parse.query,
        text=parse.text,
        expanded_text=parse.expanded_text,
        filter=filter_to_proto(spec, tenant_id),
        extracted_filters=[
            query_pb2.ExtractedFilter(
                field=e.field,
                value=e.value,
                source_text=e.source_text,
                start_offset=e.start,
                end_offset=e.end,
            )
            for e in parse.extracted
        ],
        terms=[
            query_pb2.ClinicalTerm(
                text=t.text,
                start_offset=t.start,
                end_offset=t.end,
                concept=t.match.concept.name,
                codings=[
                    datatypes_pb2.Coding(system=c.system, code=c.code, display=c.display)
                    for c in t.match.concept.codings
                ],
                synonyms=list(t.match.concept.synonyms),
                source_vocabulary=", ".join(
                    dict.fromkeys(c.vocabulary for c in t.match.concept.codings)
                ),
                category=t.match.concept.category,
            )
            for t in parse.terms
        ],
    )


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(
        self, searcher: Searcher, index: VectorIndex, indexer: RecordIndexer, db: Any, model: str
    ) -> None:
        self._searcher = searcher
        self._index = index
        self._indexer = indexer
        self._db = db
        self._model = model

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        tenant_id = _tenant(request.parent)
        hybrid = request.hybrid
        fusion = Fusion(
            method=FUSIONS.get(hybrid.fusion, DEFAULT_FUSION.method),
            semantic_weight=hybrid.semantic_weight
            if hybrid.HasField("semantic_weight")
            else DEFAULT_FUSION.semantic_weight,
            lexical_weight=hybrid.lexical_weight
            if hybrid.HasField("lexical_weight")
            else DEFAULT_FUSION.lexical_weight,
            rrf_k=hybrid.rrf_k or DEFAULT_FUSION.rrf_k,
            depth=hybrid.candidate_depth or DEFAULT_FUSION.depth,
            normalization=DEFAULT_FUSION.normalization,
        )
        params = SearchParams(
            tenant_id=tenant_id,
            query=request.query,
            scope=SCOPES[request.scope],
            filter=filter_from_proto(request.filter),
            top_k=request.top_k or 10,
            mode=MODES[hybrid.mode],
            fusion=fusion,
            parse_query=request.parse_query,
            snippet_length=request.snippet_length or 200,
        )
        outcome = await self._searcher.search(current_caller(), params)
        return await self._response(outcome, tenant_id, request.include_records)

    async def _response(
        self, outcome: SearchOutcome, tenant_id: str, include_records: bool
    ) -> pb.SearchResponse:
        response = pb.SearchResponse(
            applied_filter=filter_to_proto(outcome.applied, tenant_id),
            embedding_model=self._model,
            fusion=FUSION_ENUMS[outcome.fusion.method],
        )
        if outcome.parse is not None:
            response.parsed_query.CopyFrom(parse_to_proto(outcome.parse, tenant_id))
        for found in outcome.hits:
            c = found.candidate
            hit = response.hits.add(
                name=str(c.fields.get("name", "")),
                kind=pb.HIT_KIND_RECORD if found.collection == RECORDS else pb.HIT_KIND_CHUNK,
                title=str(c.fields.get("title", "")),
                score=c.fused,
                snippet=pb.Snippet(
                    text=found.snippet.text,
                    highlights=[
                        pb.Highlight(start_offset=s, end_offset=e)
                        for s, e in found.snippet.highlights
                    ],
                ),
            )
            hit.scores.fused = c.fused
            hit.scores.dense_rank = c.dense_rank
            hit.scores.lexical_rank = c.lexical_rank
            if c.dense is not None:
                hit.scores.dense = c.dense
            if c.lexical is not None:
                hit.scores.lexical = c.lexical
            if found.collection == RECORDS:
                kind = str(c.fields.get("kind", ""))
                if kind in BY_NAME:
                    hit.resource_type = BY_NAME[kind].enum  # type: ignore[assignment]
                patient = str(c.fields.get("patient_id", ""))
                if patient:
                    hit.patient = f"tenants/{tenant_id}/patients/{patient}"
            else:
                extra = c.fields.get("extra") or {}
                hit.document = str(extra.get("document", ""))
                hit.section = str(extra.get("section", ""))
        if include_records:
            await self._attach_records(response, tenant_id)
        return response

    async def _attach_records(self, response: pb.SearchResponse, tenant_id: str) -> None:
        from services.kernel.records.names import parse_record_name
        from services.kernel.records.store import RecordStore

        store = RecordStore(self._db)
        async with store.transaction(tenant_id) as tx:
            for hit in response.hits:
                if hit.kind == pb.HIT_KIND_RECORD:
                    name = parse_record_name(hit.name)
                    record = await tx.get(name.info.collection, name.id)
                    if record is not None:
                        hit.record.CopyFrom(record)

    async def ParseQuery(
        self, request: pb.ParseQueryRequest, context: Context
    ) -> pb.ParseQueryResponse:
        tenant_id = _tenant(request.parent)
        caller = current_caller()
        if caller.tenant_id != tenant_id:
            raise Forbidden(f"{request.parent} is not the caller's tenant", permission="read:*")
        return pb.ParseQueryResponse(
            parsed_query=parse_to_proto(self._searcher.parse(request.query), tenant_id)
        )

    async def GetIndexStatus(
        self, request: pb.GetIndexStatusRequest, context: Context
    ) -> pb.GetIndexStatusResponse:
        tenant_id = _tenant(request.parent)
        caller = current_caller()
        if caller.tenant_id != tenant_id:
            raise Forbidden(f"{request.parent} is not the caller's tenant", permission="read:*")
        caller.require("read:changes", request.parent)
        from services.kernel.records.store import RecordStore

        sequence, when = await indexed_sequence(self._db, tenant_id)
        async with RecordStore(self._db).transaction(tenant_id) as tx:
            head = await tx.head_sequence()
        response = pb.GetIndexStatusResponse(
            indexed_sequence=sequence,
            head_sequence=head,
            record_count=await self._index.count(RECORDS_INDEX, tenant_id),
            chunk_count=await self._index.count(KNOWLEDGE, tenant_id),
            embedding_model=self._model,
        )
        if when is not None:
            response.last_indexed_time.FromDatetime(when)
        return response

    async def BackfillIndex(
        self, request: pb.BackfillIndexRequest, context: Context
    ) -> AsyncIterator[pb.BackfillIndexResponse]:
        tenant_id = _tenant(request.parent)
        caller = current_caller()
        if caller.tenant_id != tenant_id:
            raise Forbidden(
                f"{request.parent} is not the caller's tenant", permission="admin:search"
            )
        caller.require("admin:search", request.parent)
        started = time.monotonic()
        queue: asyncio.Queue[Progress | None] = asyncio.Queue(maxsize=100)

        async def report(progress: Progress) -> None:
            await queue.put(progress)

        collections = [BY_ENUM[t].collection for t in request.resource_types] or None
        work = asyncio.create_task(
            self._indexer.backfill(
                tenant_id,
                collections=collections,
                batch_size=request.batch_size or 256,
                progress=report,
            )
        )
        work.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (progress := await queue.get()) is not None:
                yield pb.BackfillIndexResponse(
                    progress=pb.BackfillProgress(
                        phase="records",
                        processed=progress.processed,
                        total=progress.total,
                        documents_per_second=progress.processed / max(progress.seconds, 1e-6),
                    )
                )
            indexed, sequence = await work
        finally:
            work.cancel()
        elapsed = time.monotonic() - started
        yield pb.BackfillIndexResponse(
            result=pb.BackfillResult(
                records_indexed=indexed,
                indexed_sequence=sequence,
                duration=Duration(seconds=int(elapsed), nanos=int((elapsed % 1) * 1e9)),
            )
        )
