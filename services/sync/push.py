"""PushChanges: an offline client's batch, applied change by change or all at once."""

from __future__ import annotations

from hacs.sync.v1 import sync_service_pb2 as pb

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.kernel.records.access import require_own_parent
from services.sync import cursors
from services.sync.atomic import AtomicPush
from services.sync.change_log import ChangeLogReader
from services.sync.offline import SequentialPush, parse_items


class OfflinePush:
    def __init__(
        self, sequential: SequentialPush, atomic: AtomicPush, reader: ChangeLogReader
    ) -> None:
        self._sequential = sequential
        self._atomic = atomic
        self._reader = reader

    async def push(
        self, caller: Caller, tenant_id: str, request: pb.PushChangesRequest
    ) -> pb.PushChangesResponse:
        require_own_parent(caller, tenant_id, "write:*")
        # Everything this push writes comes after `head`. The cursor returned is
        # that of its own last change (or `head` when it wrote nothing).
        head = await self._reader.head(tenant_id)
        items = parse_items(caller, tenant_id, request, utcnow())
        strategy = self._atomic if request.atomic else self._sequential
        results, written = await strategy.apply(caller, tenant_id, items)
        last = await self._reader.last_sequence_of(tenant_id, head, written) if written else None
        return pb.PushChangesResponse(
            results=results, cursor=cursors.encode(tenant_id, last or head)
        )
