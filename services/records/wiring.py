"""Builds the record servicer from the kernel's record model."""

from __future__ import annotations

import grpc
from hacs.records.v1 import record_service_pb2_grpc

from services.kernel.modules import Kernel
from services.kernel.records.reads import RecordReader
from services.records.changes import ChangeFeed
from services.records.fhir_exchange import FhirExchange
from services.records.servicer import RecordServicer

KERNEL_MODULES = ("records",)


def record_servicer(kernel: Kernel) -> RecordServicer:
    store = kernel.record_store()
    writer = kernel.record_writer(store)
    reader = RecordReader(store)
    return RecordServicer(writer, reader, ChangeFeed(store), FhirExchange(store, writer, reader))


async def register(kernel: Kernel, server: grpc.aio.Server) -> None:
    record_service_pb2_grpc.add_RecordServiceServicer_to_server(record_servicer(kernel), server)
