"""hacs.search.v1 messages <-> the kernel's search values (the servicer's only translation)."""

from __future__ import annotations

from hacs.common.v1 import datatypes_pb2
from hacs.search.v1 import query_pb2
from hacs.search.v1 import search_service_pb2 as pb

from services.common.timestamps import from_timestamp
from services.kernel.records.resource_types import BY_ENUM, BY_NAME
from services.kernel.retrieval.expressions import FilterSpec
from services.kernel.retrieval.fusion import DEFAULT_FUSION, Fusion
from services.kernel.retrieval.hybrid import SearchOutcome, SearchParams
from services.kernel.retrieval.query_parser import Parse
from services.kernel.retrieval.vector_index import KNOWLEDGE, RECORDS
from services.search.domain import IndexStatus

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
        as_written=parse.as_written,
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


def params_from_proto(request: pb.SearchRequest, tenant_id: str) -> SearchParams:
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
    return SearchParams(
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


def response_to_proto(outcome: SearchOutcome, tenant_id: str, model: str) -> pb.SearchResponse:
    response = pb.SearchResponse(
        applied_filter=filter_to_proto(outcome.applied, tenant_id),
        embedding_model=model,
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
                    pb.Highlight(start_offset=s, end_offset=e) for s, e in found.snippet.highlights
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
            record = found.record
            if record is not None:
                hit.record.CopyFrom(record)
        else:
            extra = c.fields.get("extra") or {}
            hit.document = str(extra.get("document", ""))
            hit.section = str(extra.get("section", ""))
    return response


def status_to_proto(status: IndexStatus, model: str) -> pb.GetIndexStatusResponse:
    response = pb.GetIndexStatusResponse(
        indexed_sequence=status.indexed_sequence,
        head_sequence=status.head_sequence,
        record_count=status.records,
        chunk_count=status.chunks,
        embedding_model=model,
    )
    if status.indexed_at is not None:
        response.last_indexed_time.FromDatetime(status.indexed_at)
    return response
