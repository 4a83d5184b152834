"""gRPC glue for hacs.search.v1.SearchService: decode, call the domain, encode."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from google.protobuf.duration_pb2 import Duration
from hacs.search.v1 import search_service_pb2 as pb
from hacs.search.v1 import search_service_pb2_grpc as pb_grpc

from services.common import names
from services.common.caller import current_caller
from services.common.runtime.context import ServicerContext
from services.kernel.records.resource_types import BY_ENUM
from services.search import (
    convert,
    validation,  # noqa: F401  (registers the request validators)
)
from services.search.domain import BackfillDone, SearchDomain


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, domain: SearchDomain, model: str) -> None:
        self._domain = domain
        self._model = model  # the default embedding model, reported with every answer

    async def Search(
        self, request: pb.SearchRequest, context: ServicerContext
    ) -> pb.SearchResponse:
        tenant_id = names.tenant_of(request.parent)
        outcome = await self._domain.search(
            current_caller(),
            convert.params_from_proto(request, tenant_id),
            with_records=request.include_records,
        )
        return convert.response_to_proto(outcome, tenant_id, self._model)

    async def ParseQuery(
        self, request: pb.ParseQueryRequest, context: ServicerContext
    ) -> pb.ParseQueryResponse:
        tenant_id = names.tenant_of(request.parent)
        parse = self._domain.parse(current_caller(), tenant_id, request.query)
        return pb.ParseQueryResponse(parsed_query=convert.parse_to_proto(parse, tenant_id))

    async def GetIndexStatus(
        self, request: pb.GetIndexStatusRequest, context: ServicerContext
    ) -> pb.GetIndexStatusResponse:
        status = await self._domain.status(current_caller(), names.tenant_of(request.parent))
        return convert.status_to_proto(status, self._model)

    async def BackfillIndex(
        self, request: pb.BackfillIndexRequest, context: ServicerContext
    ) -> AsyncIterator[pb.BackfillIndexResponse]:
        started = time.monotonic()
        events = self._domain.backfill(
            current_caller(),
            names.tenant_of(request.parent),
            [BY_ENUM[t].collection for t in request.resource_types] or None,
            request.batch_size or 256,
        )
        async for event in events:
            if isinstance(event, BackfillDone):
                elapsed = time.monotonic() - started
                yield pb.BackfillIndexResponse(
                    result=pb.BackfillResult(
                        records_indexed=event.indexed,
                        indexed_sequence=event.sequence,
                        duration=Duration(seconds=int(elapsed), nanos=int((elapsed % 1) * 1e9)),
                    )
                )
            else:
                yield pb.BackfillIndexResponse(
                    progress=pb.BackfillProgress(
                        phase="records",
                        processed=event.processed,
                        total=event.total,
                        documents_per_second=event.processed / max(event.seconds, 1e-6),
                    )
                )
