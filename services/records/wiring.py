"""Builds the record servicer from the shared platform parts."""

from __future__ import annotations

import grpc
from hacs.records.v1 import record_service_pb2_grpc

from services.common.runtime.platform import Platform
from services.kernel.records.reads import RecordReader
from services.kernel.records.store import RecordStore
from services.kernel.records.writes import RecordWriter
from services.kernel.tenancy.standing import standing_lookup
from services.records.changes import ChangeFeed
from services.records.fhir_exchange import FhirExchange
from services.records.servicer import RecordServicer


def record_servicer(platform: Platform) -> RecordServicer:
    store = RecordStore(platform.db)
    lookup = standing_lookup(platform.db)

    async def patient_limit(tenant_id: str) -> int:
        standing = await lookup(tenant_id)
        return standing.max_patients if standing else 0

    writer = RecordWriter(store, patient_limit, platform.change_bus)
    reader = RecordReader(store)
    return RecordServicer(writer, reader, ChangeFeed(store), FhirExchange(store, writer, reader))


async def register(platform: Platform, server: grpc.aio.Server) -> None:
    record_service_pb2_grpc.add_RecordServiceServicer_to_server(record_servicer(platform), server)
