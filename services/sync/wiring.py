"""Builds the sync servicer: the live change hub, sessions, and the record writer for edits."""

from __future__ import annotations

import grpc
from hacs.sync.v1 import sync_service_pb2_grpc

from services.kernel.modules import Kernel
from services.kernel.records.writes import RecordWriter
from services.sync.atomic import AtomicPush
from services.sync.change_log import ChangeLogReader
from services.sync.collaborate import Collaboration
from services.sync.edits import RecordEdits
from services.sync.offline import SequentialPush
from services.sync.planned_versions import PlannedVersionsStore
from services.sync.push import OfflinePush
from services.sync.servicer import SyncServicer
from services.sync.session_hub import SessionHub
from services.sync.session_relay import HubSessionRelay, RedisSessionRelay, SessionRelay
from services.sync.stamps import HubWriteStamps, LocalWriteStamps, RedisWriteStamps, WriteStamps
from services.sync.tail import ChangeHub
from services.sync.watch import Watcher

KERNEL_MODULES = ("records",)


async def sync_parts(kernel: Kernel) -> tuple[Watcher, SessionHub, OfflinePush]:
    """The process's sync domain, built once (tests reach it to tune limits)."""
    platform = kernel.platform

    async def build() -> tuple[Watcher, SessionHub, OfflinePush]:
        store = kernel.record_store()

        def writer_for(planned: dict[tuple[str, str], int]) -> RecordWriter:
            return kernel.record_writer(PlannedVersionsStore(platform.db, planned))

        reader = ChangeLogReader(store)
        changes = ChangeHub(reader, platform.change_bus)
        changes.start()
        platform.on_close(changes.close)
        redis_url = platform.settings.redis_url
        stamps: WriteStamps = LocalWriteStamps()
        relay: SessionRelay | None = None
        if redis_url:  # mesh: stamps and session news are shared by every replica
            redis_stamps = RedisWriteStamps(redis_url)
            platform.on_close(redis_stamps.close)
            stamps, relay = redis_stamps, RedisSessionRelay(redis_url)
        elif platform.relay is not None:  # the workers of one `hacs serve --workers N`
            stamps, relay = HubWriteStamps(platform.relay), HubSessionRelay(platform.relay)
        edits = RecordEdits(store, kernel.record_writer(store), stamps)
        sessions = SessionHub(changes, reader, edits, relay)
        sessions.start()
        platform.on_close(sessions.close)
        push = OfflinePush(SequentialPush(edits), AtomicPush(edits, store, writer_for), reader)
        return Watcher(reader, changes), sessions, push

    return await platform.shared("sync", build)


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    watcher, sessions, push = await sync_parts(kernel)
    sync_service_pb2_grpc.add_SyncServiceServicer_to_server(
        SyncServicer(watcher, Collaboration(sessions), push), server
    )
