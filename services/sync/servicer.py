"""gRPC glue for hacs.sync.v1.SyncService: decode, call the domain, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hacs.sync.v1 import sync_service_pb2 as pb
from hacs.sync.v1 import sync_service_pb2_grpc as pb_grpc

from services.common import names
from services.common.caller import current_caller
from services.common.runtime.context import ServicerContext
from services.sync import (
    convert,
    cursors,
    validation,  # noqa: F401  (registers the request validators)
)
from services.sync.collaborate import Collaboration
from services.sync.push import OfflinePush
from services.sync.watch import Watcher


class SyncServicer(pb_grpc.SyncServiceServicer):
    def __init__(self, watcher: Watcher, collaboration: Collaboration, push: OfflinePush) -> None:
        self._watcher = watcher
        self._collaboration = collaboration
        self._push = push

    # The streams write with context.write() from a coroutine rather than yield
    # from a generator: a generator left suspended at a yield when the client
    # cancels is finalized later by the event loop, after grpc has released the
    # call, and the interceptors' exit code would then touch a dead call. (It is
    # also one generator layer less per message on the hottest path.)

    async def Watch(self, request: pb.WatchRequest, context: ServicerContext) -> None:  # type: ignore[override]
        tenant_id = names.tenant_of(request.parent)
        spec = convert.watch_from_proto(request)
        await self._watcher.watch(current_caller(), tenant_id, spec, context.write)

    async def Collaborate(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.CollaborateRequest], context: ServicerContext
    ) -> None:
        await self._collaboration.run(current_caller(), request_iterator, context.write)

    async def PushChanges(
        self, request: pb.PushChangesRequest, context: ServicerContext
    ) -> pb.PushChangesResponse:
        return await self._push.push(current_caller(), names.tenant_of(request.parent), request)

    async def GetSyncCursor(
        self, request: pb.GetSyncCursorRequest, context: ServicerContext
    ) -> pb.GetSyncCursorResponse:
        tenant_id = names.tenant_of(request.parent)
        bounds = await self._watcher.head(current_caller(), tenant_id)
        response = pb.GetSyncCursorResponse(
            cursor=cursors.encode(tenant_id, bounds.head), sequence=bounds.head
        )
        if bounds.head_commit_time is not None:
            response.commit_time.FromDatetime(bounds.head_commit_time)
        return response
