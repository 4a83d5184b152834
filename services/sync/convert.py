"""hacs.sync.v1 requests -> the sync domain's values (the servicer's translation).

The streams' replies stay wire messages built in the domain: a change's
WatchResponse is built once and sent to every stream that wants it.
"""

from __future__ import annotations

from hacs.sync.v1 import sync_service_pb2 as pb

from services.sync.filters import WatchFilter
from services.sync.watch import WatchSpec


def watch_from_proto(request: pb.WatchRequest) -> WatchSpec:
    f = request.filter
    return WatchSpec(
        filter=WatchFilter(
            resource_types=tuple(f.resource_types),
            names=tuple(f.names),
            patients=tuple(f.patients),
            labels=tuple(f.labels.items()),
        ),
        resume_cursor=request.resume_cursor,
        start_at_earliest=request.start_at_earliest,
        heartbeat_seconds=request.heartbeat_interval.ToTimedelta().total_seconds()
        if request.HasField("heartbeat_interval")
        else 0.0,
        include_records=request.include_records,
    )
