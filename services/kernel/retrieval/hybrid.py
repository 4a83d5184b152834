"""Hybrid search: dense + BM25 over the same documents, fused, filtered, scoped.

The query is embedded once; dense and lexical candidates (pks and scores)
are fetched in parallel (each search carrying the tenant and the filters in
its own expression), fused with the chosen method, cut to `top_k`, and only
then are the hits' fields and text read and each given a highlighted snippet.
The caller only ever sees records of types it may read (the type restriction
is part of both retrievers' filters, so hits it may not read are never
candidates) and knowledge chunks only with read:knowledge.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import numpy as np
from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.errors import FieldViolation, Forbidden, Invalid
from services.kernel.embedding.embedder import Embedder
from services.kernel.records.resource_types import RESOURCE_TYPES
from services.kernel.retrieval.expressions import FilterSpec
from services.kernel.retrieval.fusion import DEFAULT_FUSION, Candidate, Fusion, fuse
from services.kernel.retrieval.lexical import LexicalIndex, expression
from services.kernel.retrieval.query_parser import Parse, QueryParser
from services.kernel.retrieval.snippets import Snippet, snippet
from services.kernel.retrieval.vector_index import KNOWLEDGE, RECORDS, Hit, VectorIndex

FIELDS = ["pk", "name", "kind", "title", "text", "patient_id", "grp", "extra"]


@dataclass(frozen=True)
class SearchParams:
    tenant_id: str
    query: str
    scope: str = RECORDS  # records | knowledge | all
    filter: FilterSpec = field(default_factory=FilterSpec)
    top_k: int = 10
    mode: str = "hybrid"  # hybrid | dense | lexical
    fusion: Fusion = DEFAULT_FUSION
    parse_query: bool = False
    snippet_length: int = 200


@dataclass
class Found:
    candidate: Candidate
    collection: str  # records | knowledge
    snippet: Snippet
    record: record_pb2.Record | None = None  # the record itself, when the caller asks for it


@dataclass
class SearchOutcome:
    hits: list[Found]
    parse: Parse | None
    applied: FilterSpec
    fusion: Fusion
    mode: str
    lexical_engine: str


class Searcher:
    def __init__(
        self,
        index: VectorIndex,
        lexical: LexicalIndex,
        embedder: Embedder,
        parser: QueryParser | None = None,
    ) -> None:
        self._index = index
        self._lexical = lexical
        self._embedder = embedder
        self._parser = parser or QueryParser()

    def parse(self, query: str) -> Parse:
        return self._parser.parse(query)

    async def search(self, caller: Caller, params: SearchParams) -> SearchOutcome:
        if params.tenant_id != caller.tenant_id:
            raise Forbidden(
                f"tenants/{params.tenant_id} is not the caller's tenant", permission="read:*"
            )
        parse = self._parser.parse(params.query) if params.parse_query else None
        spec = _merge(params.filter, parse)
        dense_text = parse.text if parse else params.query
        lexical_text = parse.expanded_text if parse else params.query
        mode = params.mode

        searches = []
        if params.scope in (RECORDS, "all"):
            kinds = _readable_kinds(caller, spec.kinds)
            if kinds:
                # Every type readable and none asked for: nothing to restrict, and no
                # per-row type test for the engines to evaluate.
                unrestricted = not spec.kinds and len(kinds) == len(RESOURCE_TYPES)
                searches.append((RECORDS, replace(spec, kinds=[] if unrestricted else kinds)))
            elif params.scope == RECORDS:
                caller.require("read:*", f"tenants/{params.tenant_id}")  # no readable type at all
        # "all" quietly leaves out knowledge the caller may not read; "knowledge" refuses.
        wants_knowledge = params.scope == KNOWLEDGE or (
            params.scope == "all" and caller.can("read:knowledge")
        )
        if wants_knowledge:
            caller.require("read:knowledge", f"tenants/{params.tenant_id}")
            searches.append((KNOWLEDGE, spec))
        vector = None
        if mode != "lexical":
            vector = (await self._embedder.embed([dense_text], query=True))[0]
        results = await asyncio.gather(
            *(
                self._one(kind, scoped, params, mode, vector, lexical_text)
                for kind, scoped in searches
            )
        )
        # Equal fused scores (with "max", every cosine below 0 counts 0) rank by their
        # own scores, so a dense-only search still ranks by cosine.
        merged = sorted(
            (found for group in results for found in group),
            key=lambda f: (
                -f.candidate.fused,
                -_or_floor(f.candidate.dense),
                -_or_floor(f.candidate.lexical),
                f.candidate.pk,
            ),
        )[: params.top_k]
        for found in merged:
            found.snippet = snippet(
                str(found.candidate.fields.get("text", "")), lexical_text, params.snippet_length
            )
        return SearchOutcome(merged, parse, spec, params.fusion, mode, self._lexical.name)

    async def _one(
        self,
        kind: str,
        spec: FilterSpec,
        params: SearchParams,
        mode: str,
        vector: np.ndarray | None,
        lexical_text: str,
    ) -> list[Found]:
        depth = max(params.fusion.depth, params.top_k)
        dense: list[Hit] = []
        lexical: list[Hit] = []
        tasks = []
        if mode in ("hybrid", "dense"):
            assert vector is not None
            tasks.append(
                self._index.dense_search(
                    kind, params.tenant_id, vector, expression(kind, spec), depth, ["pk"]
                )
            )
        if mode in ("hybrid", "lexical"):
            tasks.append(
                self._lexical.search(
                    kind, params.tenant_id, lexical_text, spec, depth, with_fields=False
                )
            )
        found = await asyncio.gather(*tasks)
        if mode == "hybrid":
            dense, lexical = found
        elif mode == "dense":
            dense = found[0]
        else:
            lexical = found[0]
        fusion = params.fusion
        if mode != "hybrid":  # one retriever: its normalised score is the ranking
            fusion = replace(
                fusion,
                semantic_weight=1.0 if mode == "dense" else 0.0,
                lexical_weight=1.0 if mode == "lexical" else 0.0,
            )
        candidates = fuse(
            [(h.pk, h.score, h.fields) for h in dense],
            [(h.pk, h.score, h.fields) for h in lexical],
            fusion,
            limit=params.top_k,
        )
        kept = candidates
        await self._fill_fields(kind, params.tenant_id, kept)
        return [Found(c, kind, Snippet("", [])) for c in kept]

    async def _fill_fields(self, kind: str, tenant_id: str, found: list[Candidate]) -> None:
        """The stored fields of the hits kept (the retrievers return only pks and scores:
        reading text and fields for every candidate cost more than the searches)."""
        pks = [c.pk for c in found]
        stored = await self._lexical.documents(kind, tenant_id, pks)
        missing = [pk for pk in pks if pk not in stored]  # e.g. in Milvus, not yet in SQLite
        if missing and self._lexical.name != "milvus":  # (the Milvus engine read Milvus)
            stored.update(await self._index.fetch(kind, tenant_id, missing, FIELDS))
        for c in found:
            c.fields.update(stored.get(c.pk, {}))
        found[:] = [c for c in found if c.pk in stored]  # deleted since it was a candidate


def _or_floor(score: float | None) -> float:
    return float("-inf") if score is None else score


def _readable_kinds(caller: Caller, wanted: list[str]) -> list[str]:
    readable = [t.name for t in RESOURCE_TYPES if caller.can(f"read:{t.permission}")]
    if not wanted:
        return readable
    refused = [k for k in wanted if k not in readable]
    if refused:
        info = next(t for t in RESOURCE_TYPES if t.name == refused[0])
        caller.require(f"read:{info.permission}")
    return wanted


def _merge(explicit: FilterSpec, parse: Parse | None) -> FilterSpec:
    """Filters read from the query, under the explicit ones (explicit fields win)."""
    if parse is None:
        return explicit
    merged = replace(explicit)
    if not merged.kinds and parse.resource_types:
        merged.kinds = list(parse.resource_types)
        if "MedicationStatement" in merged.kinds:
            merged.kinds.append("MedicationRequest")
    if merged.min_age is None:
        merged.min_age = parse.min_age
    if merged.max_age is None:
        merged.max_age = parse.max_age
    if not merged.genders:
        merged.genders = list(parse.genders)
    if merged.start_time is None:
        merged.start_time = parse.start_time
    if merged.end_time is None:
        merged.end_time = parse.end_time
    if (
        merged.min_age is not None
        and merged.max_age is not None
        and merged.min_age > merged.max_age
    ):
        raise Invalid(
            FieldViolation(
                "query",
                f"the ages asked for contradict each other ({merged.min_age} > {merged.max_age})",
            )
        )
    return merged
