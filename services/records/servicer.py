"""gRPC glue for hacs.records.v1.RecordService: decode, call the domain, encode."""

from __future__ import annotations

from hacs.records.v1 import record_service_pb2 as pb
from hacs.records.v1 import record_service_pb2_grpc as pb_grpc

from services.common import names
from services.common.caller import current_caller
from services.common.pagination import page_size
from services.common.runtime.context import ServicerContext
from services.common.timestamps import from_timestamp
from services.kernel.records.convert import change_to_proto
from services.kernel.records.reads import ListFilter, RecordReader
from services.kernel.records.write_checks import fingerprint
from services.kernel.records.write_plans import NewRecord
from services.kernel.records.writes import RecordWriter
from services.records import validation  # noqa: F401  (registers the request validators)
from services.records.changes import ChangeFeed
from services.records.fhir_exchange import FhirExchange

MAX_PAGE = 1000
MAX_CHANGES_PAGE = 5000


class RecordServicer(pb_grpc.RecordServiceServicer):
    def __init__(
        self, writer: RecordWriter, reader: RecordReader, feed: ChangeFeed, fhir: FhirExchange
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._feed = feed
        self._fhir = fhir

    async def CreateRecord(
        self, request: pb.CreateRecordRequest, context: ServicerContext
    ) -> pb.CreateRecordResponse:
        record = await self._writer.create(
            current_caller(),
            names.tenant_of(request.parent),
            NewRecord(request.record_id, request.record),
            request_id=request.request_id,
            request_hash=fingerprint(request),
        )
        return pb.CreateRecordResponse(record=record)

    async def GetRecord(
        self, request: pb.GetRecordRequest, context: ServicerContext
    ) -> pb.GetRecordResponse:
        record = await self._reader.get(current_caller(), request.name, request.version)
        return pb.GetRecordResponse(record=record)

    async def UpdateRecord(
        self, request: pb.UpdateRecordRequest, context: ServicerContext
    ) -> pb.UpdateRecordResponse:
        record = await self._writer.update(
            current_caller(),
            request.record,
            request.update_mask,
            request_id=request.request_id,
            request_hash=fingerprint(request),
        )
        return pb.UpdateRecordResponse(record=record)

    async def DeleteRecord(
        self, request: pb.DeleteRecordRequest, context: ServicerContext
    ) -> pb.DeleteRecordResponse:
        record = await self._writer.delete(
            current_caller(), request.name, request.etag, request.reason
        )
        return pb.DeleteRecordResponse(record=record)

    async def ListRecords(
        self, request: pb.ListRecordsRequest, context: ServicerContext
    ) -> pb.ListRecordsResponse:
        filters = ListFilter(
            tenant_id=names.tenant_of(request.parent),
            resource_types=tuple(request.resource_types),
            patient=request.patient,
            codes=tuple(request.codes),
            start_time=from_timestamp(request, "start_time"),
            end_time=from_timestamp(request, "end_time"),
            labels=dict(request.labels),
            order_by=request.order_by,
            show_deleted=request.show_deleted,
        )
        records, token = await self._reader.list_records(
            current_caller(),
            filters,
            page_size(request.page_size, maximum=MAX_PAGE),
            request.page_token,
        )
        return pb.ListRecordsResponse(records=records, next_page_token=token)

    async def ListRecordHistory(
        self, request: pb.ListRecordHistoryRequest, context: ServicerContext
    ) -> pb.ListRecordHistoryResponse:
        records, token = await self._reader.history(
            current_caller(),
            request.name,
            page_size(request.page_size, maximum=MAX_PAGE),
            request.page_token,
        )
        return pb.ListRecordHistoryResponse(records=records, next_page_token=token)

    async def BatchCreateRecords(
        self, request: pb.BatchCreateRecordsRequest, context: ServicerContext
    ) -> pb.BatchCreateRecordsResponse:
        records = await self._writer.batch_create(
            current_caller(),
            names.tenant_of(request.parent),
            [NewRecord(item.record_id, item.record) for item in request.requests],
            request_id=request.request_id,
            request_hash=fingerprint(request),
        )
        return pb.BatchCreateRecordsResponse(records=records)

    async def ImportFhirBundle(
        self, request: pb.ImportFhirBundleRequest, context: ServicerContext
    ) -> pb.ImportFhirBundleResponse:
        return await self._fhir.import_bundle(
            current_caller(),
            names.tenant_of(request.parent),
            request.bundle_json,
            validate_only=request.validate_only,
            labels=dict(request.labels),
            request_id=request.request_id,
            request_hash=fingerprint(request),
        )

    async def ExportFhir(
        self, request: pb.ExportFhirRequest, context: ServicerContext
    ) -> pb.ExportFhirResponse:
        return await self._fhir.export(
            current_caller(),
            name=request.name,
            patient=request.patient,
            resource_types=list(request.resource_types),
            pretty=request.pretty,
        )

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: ServicerContext
    ) -> pb.ListChangesResponse:
        tenant_id = names.tenant_of(request.parent)
        page = await self._feed.read(
            current_caller(),
            tenant_id,
            request.after_sequence,
            page_size(request.page_size, default=500, maximum=MAX_CHANGES_PAGE),
            list(request.resource_types),
        )
        return pb.ListChangesResponse(
            changes=[change_to_proto(tenant_id, c) for c in page.changes],
            head_sequence=page.head_sequence,
            earliest_sequence=page.earliest_sequence,
            next_after_sequence=page.next_after_sequence,
        )
