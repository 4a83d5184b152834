"""FHIR R4 JSON in and out of the record store.

Import: parse the Bundle, give every entry its record name (so entries can
reference each other), map and validate each entry (fhir.resources, then the
record content rules), then write. A transaction bundle with any rejected
entry writes nothing and fails with one field violation per entry; batch and
collection bundles write the valid entries in one transaction and report the
rest. Export: one record as its FHIR resource, or a patient's compartment as
a collection Bundle of everything in it the caller may read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from hacs.records.v1 import record_pb2
from hacs.records.v1 import record_service_pb2 as pb

from services.common.caller import Caller, current_call
from services.common.errors import FieldViolation, HacsError, Invalid
from services.common.validation import Violations
from services.kernel.records.access import owned_only, readable_types, require_own_parent
from services.kernel.records.content import check_record
from services.kernel.records.names import (
    ID_PATTERN,
    ID_RULE,
    RecordName,
    new_record_id,
    parse_patient_name,
)
from services.kernel.records.reads import RecordReader
from services.kernel.records.resource_types import BY_ENUM, BY_FHIR_TYPE, ResourceTypeInfo
from services.kernel.records.store import RecordQuery, RecordStore
from services.kernel.records.write_plans import Upsert
from services.kernel.records.writes import RecordWriter
from services.records.fhir import (
    BundleEntry,
    BundleError,
    FhirMappingError,
    ParsedBundle,
    collection_bundle,
    entry_field,
    entry_problem,
    fhir_to_record,
    parse_bundle,
    record_to_fhir,
    reference_resolver,
    resource_type_of,
)

STATUS = {
    "CREATED": pb.FHIR_ENTRY_STATUS_CREATED,
    "UPDATED": pb.FHIR_ENTRY_STATUS_UPDATED,
    "DELETED": pb.FHIR_ENTRY_STATUS_DELETED,
}
MAX_COMPARTMENT = 10_000


@dataclass
class _Entry:
    """One bundle entry on its way in."""

    source: BundleEntry
    outcome: pb.FhirEntryOutcome
    info: ResourceTypeInfo | None = None
    record_id: str = ""
    record: record_pb2.Record | None = None
    delete: bool = False
    # The BadRequest field of a rejection, e.g. "entry[3].resource.status".
    field: str = ""

    def reject(self, reason: str, location: str = "", field: str = "") -> None:
        self.outcome.status = pb.FHIR_ENTRY_STATUS_REJECTED
        self.outcome.reason = reason
        self.outcome.location = location
        self.field = field or f"entry[{self.source.index}]"

    def reject_mapping(self, error: FhirMappingError) -> None:
        self.reject(error.reason, error.location, entry_field(self.source, error))

    @property
    def rejected(self) -> bool:
        return self.outcome.status == pb.FHIR_ENTRY_STATUS_REJECTED


class FhirExchange:
    def __init__(self, store: RecordStore, writer: RecordWriter, reader: RecordReader) -> None:
        self._store = store
        self._writer = writer
        self._reader = reader

    async def import_bundle(
        self,
        caller: Caller,
        tenant_id: str,
        bundle_json: str,
        *,
        validate_only: bool,
        labels: dict[str, str],
        request_id: str = "",
        request_hash: str = "",
    ) -> pb.ImportFhirBundleResponse:
        require_own_parent(caller, tenant_id, "write:*")
        try:
            bundle = parse_bundle(bundle_json)
        except BundleError as exc:
            raise Invalid(FieldViolation("bundle_json", str(exc))) from exc
        entries = [
            _Entry(
                e,
                pb.FhirEntryOutcome(
                    index=e.index,
                    full_url=e.full_url,
                    fhir_resource_type=e.fhir_type,
                    fhir_id=e.fhir_id,
                ),
            )
            for e in bundle.entries
        ]
        names = self._assign_names(bundle, tenant_id, entries)
        resolve = reference_resolver(bundle, names, tenant_id)
        for entry in entries:
            if not entry.rejected and not entry.delete:
                self._map(entry, tenant_id, resolve)
        for info in {e.info.name: e.info for e in entries if e.info and not e.rejected}.values():
            caller.require(f"write:{info.permission}", f"tenants/{tenant_id}")

        transaction = bundle.bundle_type == "transaction"
        if transaction and any(e.rejected for e in entries) and not validate_only:
            raise Invalid(
                [FieldViolation(e.field, e.outcome.reason) for e in entries if e.rejected]
            )
        valid = [e for e in entries if not e.rejected]
        if validate_only:
            for e in valid:
                e.outcome.status = pb.FHIR_ENTRY_STATUS_NOT_APPLIED
        elif valid:
            await self._write(caller, tenant_id, valid, labels, transaction)
        outcomes = [e.outcome for e in entries]
        state = current_call()
        if state is not None:
            state.details["bundle_type"] = bundle.bundle_type
            state.details["entries"] = str(len(entries))
        return pb.ImportFhirBundleResponse(
            bundle_type=bundle.bundle_type,
            entries=outcomes,
            created_count=sum(o.status == pb.FHIR_ENTRY_STATUS_CREATED for o in outcomes),
            updated_count=sum(o.status == pb.FHIR_ENTRY_STATUS_UPDATED for o in outcomes),
            rejected_count=sum(o.status == pb.FHIR_ENTRY_STATUS_REJECTED for o in outcomes),
        )

    def _assign_names(
        self, bundle: ParsedBundle, tenant_id: str, entries: list[_Entry]
    ) -> dict[int, str]:
        """Record names for entries, before mapping, so references between entries resolve."""
        names: dict[int, str] = {}
        for entry in entries:
            source = entry.source
            problem = entry_problem(bundle, source)
            if problem is not None:
                entry.reject_mapping(problem)
                continue
            if source.method == "DELETE":
                entry.delete = True
                kind, _, record_id = source.url.partition("/")
                entry.info = BY_FHIR_TYPE.get(kind)
                entry.record_id = record_id
                if entry.info is None:
                    entry.reject(f"{kind!r} records are not stored by HACS", "request.url")
                continue
            assert source.resource is not None
            info = resource_type_of(source.resource)
            if info is None:
                entry.reject(
                    f"resource type {source.fhir_type!r} is not stored by HACS; supported: "
                    + ", ".join(sorted(BY_FHIR_TYPE)),
                    f"{source.fhir_type}.resourceType",
                    f"entry[{source.index}].resource.resourceType",
                )
                continue
            record_id = source.url.split("/", 1)[1] if source.method == "PUT" else source.fhir_id
            if record_id and not ID_PATTERN.match(record_id):
                entry.reject(
                    f"id {record_id!r} is not a valid HACS id ({ID_RULE})",
                    f"{source.fhir_type}.id",
                    f"entry[{source.index}].resource.id",
                )
                continue
            entry.info = info
            entry.record_id = record_id or new_record_id(info)
            names[source.index] = str(RecordName(tenant_id, info, entry.record_id))
        return names

    @staticmethod
    def _map(entry: _Entry, tenant_id: str, resolve: Callable[[str], str | None]) -> None:
        assert entry.source.resource is not None and entry.info is not None
        try:
            record = fhir_to_record(
                entry.source.resource, tenant_id=tenant_id, resolve_reference=resolve
            )
        except FhirMappingError as exc:
            entry.reject_mapping(exc)
            return
        v = Violations()
        check_record(record, "resource", v, tenant_id=tenant_id)
        if v.items:
            entry.reject(
                "; ".join(f"{x.field.removeprefix('resource.')}: {x.description}" for x in v.items),
                v.items[0].field.removeprefix("resource."),
                f"entry[{entry.source.index}].{v.items[0].field}",
            )
            return
        entry.record = record
        entry.outcome.record = str(RecordName(tenant_id, entry.info, entry.record_id))

    async def _write(
        self,
        caller: Caller,
        tenant_id: str,
        entries: list[_Entry],
        labels: dict[str, str],
        transaction: bool,
    ) -> None:
        """A transaction bundle in one transaction; batch entries each in their own (FHIR rules)."""
        groups = [entries] if transaction else [[e] for e in entries]
        for group in groups:
            items = [
                Upsert(e.info, e.record_id, None if e.delete else e.record) for e in group if e.info
            ]
            try:
                results = await self._writer.upsert_many(caller, tenant_id, items, labels)
            except HacsError as exc:
                if transaction:
                    raise
                group[0].reject(exc.message)
                continue
            for entry, result in zip(group, results, strict=True):
                if result.status == "MISSING":
                    entry.reject(f"{result.name} does not exist", "request.url")
                    continue
                entry.outcome.status = STATUS[result.status]
                entry.outcome.record = result.name
                entry.outcome.version = result.version

    async def export(
        self, caller: Caller, *, name: str, patient: str, resource_types: list[int], pretty: bool
    ) -> pb.ExportFhirResponse:
        indent = 2 if pretty else None
        if name:
            record = await self._reader.get(caller, name, 0)
            resource, notes = record_to_fhir(record)
            return pb.ExportFhirResponse(
                fhir_json=json.dumps(resource, indent=indent),
                fhir_resource_type=resource["resourceType"],
                resource_count=1,
                warnings=notes,
            )
        tenant_id, patient_id = parse_patient_name(patient, "patient")
        patient_record = await self._reader.get(caller, patient, 0)
        if patient_record.HasField("delete_time"):
            raise Invalid(FieldViolation("patient", f"{patient} is deleted"))
        types = readable_types(caller, [BY_ENUM[t] for t in resource_types])
        query = RecordQuery(
            collections=[t.collection for t in types if t.field != "patient"],
            patient_id=patient_id,
            order_field="clinical_time",
            descending=False,
            limit=MAX_COMPARTMENT + 1,
            owned_only=owned_only(caller),
        )
        async with self._store.transaction(tenant_id) as tx:
            members = await tx.query(query) if query.collections else []
        warnings: list[str] = []
        if len(members) > MAX_COMPARTMENT:
            members = members[:MAX_COMPARTMENT]
            warnings.append(
                f"the compartment holds more than {MAX_COMPARTMENT} records; "
                "only the oldest are exported"
            )
        resources = []
        for record in [patient_record, *members]:
            resource, notes = record_to_fhir(record)
            resources.append(resource)
            warnings.extend(notes)
        bundle = collection_bundle(resources)
        return pb.ExportFhirResponse(
            fhir_json=json.dumps(bundle, indent=indent),
            fhir_resource_type="Bundle",
            resource_count=len(resources),
            warnings=warnings,
        )
