"""gRPC glue for hacs.memory.v1.MemoryService: decode, call the domain, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from hacs.memory.v1 import memory_service_pb2 as pb
from hacs.memory.v1 import memory_service_pb2_grpc as pb_grpc

from services.common import names
from services.common.caller import current_caller
from services.common.db.base import utcnow
from services.common.pagination import page_size
from services.common.runtime.context import ServicerContext
from services.kernel.records.write_checks import fingerprint
from services.memory import (
    convert,
    scope,
    validation,  # noqa: F401  (registers the request validators)
)
from services.memory.clustering import Clusterer
from services.memory.consolidation import Consolidator
from services.memory.feedback import FeedbackDesk
from services.memory.forget import Forgetter
from services.memory.listing import Lister
from services.memory.memories import Memories
from services.memory.recall import Recaller, RecallQuery

DEFAULT_TOP_K = 10
MAX_PAGE = 1000


@dataclass(frozen=True)
class MemoryDomain:
    memories: Memories
    recaller: Recaller
    lister: Lister
    forgetter: Forgetter
    feedback: FeedbackDesk
    consolidator: Consolidator
    clusterer: Clusterer


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(self, domain: MemoryDomain) -> None:
        self._d = domain

    async def Remember(
        self, request: pb.RememberRequest, context: ServicerContext
    ) -> pb.RememberResponse:
        stored = await self._d.memories.remember(
            current_caller(),
            names.tenant_of(request.parent),
            list(request.memories),
            agent=request.agent,
            patient=request.patient,
            request_id=request.request_id,
            request_hash=fingerprint(request),
        )
        return pb.RememberResponse(memories=stored)

    async def Recall(
        self, request: pb.RecallRequest, context: ServicerContext
    ) -> pb.RecallResponse:
        caller = current_caller()
        tenant_id = names.tenant_of(request.parent)
        scope.require_read(caller, tenant_id)
        query = RecallQuery(
            scope=scope.from_filter(caller, tenant_id, request.filter),
            query=request.query,
            top_k=request.top_k or DEFAULT_TOP_K,
            as_of=convert.when(request, "as_of"),
            query_time=convert.when(request, "query_time"),
            weights=convert.weights(request.weights),
            half_lives=convert.half_lives(list(request.half_lives)),
            min_score=request.min_score,
            record_access=request.record_access if request.HasField("record_access") else True,
        )
        found = await self._d.recaller.recall(caller, query, utcnow())
        return pb.RecallResponse(
            results=[convert.recall_result(f) for f in found],
            weights=convert.weights_message(query.weights),
        )

    async def GetMemory(
        self, request: pb.GetMemoryRequest, context: ServicerContext
    ) -> pb.GetMemoryResponse:
        return pb.GetMemoryResponse(
            memory=await self._d.memories.get(current_caller(), request.name)
        )

    async def ListMemories(
        self, request: pb.ListMemoriesRequest, context: ServicerContext
    ) -> pb.ListMemoriesResponse:
        caller = current_caller()
        tenant_id = names.tenant_of(request.parent)
        scope.require_read(caller, tenant_id)
        memories, token = await self._d.lister.page(
            caller,
            scope.from_filter(caller, tenant_id, request.filter),
            request.order_by,
            page_size(request.page_size, maximum=MAX_PAGE),
            request.page_token,
            show_deleted=request.show_deleted,
        )
        return pb.ListMemoriesResponse(memories=memories, next_page_token=token)

    async def UpdateMemory(
        self, request: pb.UpdateMemoryRequest, context: ServicerContext
    ) -> pb.UpdateMemoryResponse:
        memory = await self._d.memories.update(
            current_caller(), request.memory, request.update_mask
        )
        return pb.UpdateMemoryResponse(memory=memory)

    async def Forget(
        self, request: pb.ForgetRequest, context: ServicerContext
    ) -> pb.ForgetResponse:
        memory = await self._d.forgetter.forget(
            current_caller(), request.name, request.reason, request.etag
        )
        return pb.ForgetResponse(memory=memory)

    async def ErasePatientMemories(
        self, request: pb.ErasePatientMemoriesRequest, context: ServicerContext
    ) -> pb.ErasePatientMemoriesResponse:
        erasure = await self._d.forgetter.erase_patient(
            current_caller(),
            names.tenant_of(request.parent),
            request.patient,
            request.reason,
            dry_run=request.dry_run,
        )
        return pb.ErasePatientMemoriesResponse(
            memories_erased=len(erasure.names),
            versions_erased=erasure.versions,
            vectors_erased=erasure.vectors,
            memories=erasure.names,
            dry_run=erasure.dry_run,
        )

    async def RecordMemoryFeedback(
        self, request: pb.RecordMemoryFeedbackRequest, context: ServicerContext
    ) -> pb.RecordMemoryFeedbackResponse:
        outcome = await self._d.feedback.record(
            current_caller(),
            request.name,
            request.feedback,
            request.importance_score if request.HasField("importance_score") else None,
            request.comment,
            pb.MemoryFeedback.Name(request.feedback),
        )
        return pb.RecordMemoryFeedbackResponse(
            memory=outcome.record,
            previous_importance=outcome.previous,
            importance=outcome.importance,
        )

    async def Consolidate(
        self, request: pb.ConsolidateRequest, context: ServicerContext
    ) -> AsyncIterator[pb.ConsolidateResponse]:
        caller = current_caller()
        tenant_id = names.tenant_of(request.parent)
        scope.require_read(caller, tenant_id)
        chosen = scope.from_filter(caller, tenant_id, request.scope, "scope")
        # Only live memories are merged, whatever the filter says.
        chosen = replace(chosen, include_superseded=False, include_expired=False)
        async for event in self._d.consolidator.run(
            caller, chosen, convert.thresholds(request.thresholds), dry_run=request.dry_run
        ):
            yield convert.consolidate_event(event)

    async def Cluster(
        self, request: pb.ClusterRequest, context: ServicerContext
    ) -> pb.ClusterResponse:
        caller = current_caller()
        tenant_id = names.tenant_of(request.parent)
        scope.require_read(caller, tenant_id)
        method = request.method or 1  # unspecified = agglomerative
        result = await self._d.clusterer.cluster(
            caller,
            replace(
                scope.from_filter(caller, tenant_id, request.scope, "scope"),
                include_superseded=False,
            ),
            method,
            convert.cluster_params(request.params),
        )
        return convert.cluster_response(result)
