"""FHIR R4 JSON in and out of HACS records (validated with fhir.resources' R4B models)."""

from services.records.fhir.bundle import (
    BundleEntry,
    BundleError,
    ParsedBundle,
    collection_bundle,
    entry_field,
    entry_problem,
    parse_bundle,
    reference_resolver,
)
from services.records.fhir.errors import FhirMappingError
from services.records.fhir.mapping import (
    fhir_id,
    fhir_to_record,
    record_to_fhir,
    resource_type_of,
)

__all__ = [
    "BundleEntry",
    "BundleError",
    "FhirMappingError",
    "ParsedBundle",
    "collection_bundle",
    "entry_field",
    "entry_problem",
    "fhir_id",
    "fhir_to_record",
    "parse_bundle",
    "record_to_fhir",
    "reference_resolver",
    "resource_type_of",
]
