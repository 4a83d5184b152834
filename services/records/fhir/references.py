"""FHIR references <-> HACS resource names.

FHIR points at resources with "Patient/123", "urn:uuid:..." (an entry of the
same bundle) or absolute URLs; HACS with resource names
"tenants/{tenant}/patients/123". HACS-only types are FHIR `Basic`, so a
reference to one carries the HACS type in an extension to stay unambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.kernel.records import resource_types
from services.kernel.records.resource_types import ResourceTypeInfo

FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
RELATIVE = re.compile(rf"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>{FHIR_ID})(/_history/{FHIR_ID})?\Z")
NAME = re.compile(r"^tenants/(?P<tenant>[^/]+)/(?P<collection>[^/]+)/(?P<id>[^/]+)\Z")


def record_name(tenant_id: str, info: ResourceTypeInfo, record_id: str) -> str:
    return f"tenants/{tenant_id}/{info.collection}/{record_id}"


def parse_name(name: str) -> tuple[ResourceTypeInfo, str] | None:
    """The type and id of a record's resource name; None for anything else."""
    match = NAME.match(name)
    if match is None:
        return None
    info = resource_types.BY_COLLECTION.get(match["collection"])
    return (info, match["id"]) if info else None


def type_of_name(name: str) -> str:
    """The HACS type name of the record `name` points at, or ""."""
    parsed = parse_name(name)
    return parsed[0].name if parsed else ""


def direct_name(reference: str, tenant_id: str, hacs_type: str = "") -> str | None:
    """The name behind "Patient/123": "tenants/{tenant}/patients/123" for a HACS type.

    `hacs_type` names the HACS type behind a "Basic/{id}" reference (taken
    from the reference's HACS extension).
    """
    match = RELATIVE.match(reference)
    if match is None:
        return None
    fhir_type = match["type"]
    info = resource_types.BY_FHIR_TYPE.get(fhir_type)
    if fhir_type == "Basic" and hacs_type:
        candidate = resource_types.BY_NAME.get(hacs_type)
        info = candidate if candidate and not candidate.fhir_native else None
    return record_name(tenant_id, info, match["id"]) if info else None


def fhir_reference(name: str) -> tuple[str, ResourceTypeInfo | None]:
    """A resource name as a FHIR relative reference ("Patient/123").

    Anything that is not a record name (a "#contained" id, a reference kept
    verbatim) comes back unchanged with no type.
    """
    parsed = parse_name(name)
    if parsed is None:
        return name, None
    info, record_id = parsed
    return f"{info.fhir_type}/{record_id}", info


def rewrite_reference_strings(value: Any, rewrite: Callable[[str], str | None]) -> Any:
    """A copy of FHIR JSON with every Reference.reference string passed through `rewrite`.

    Used on elements the contract does not model (extensions, contained
    resources), so their references follow the records too. `rewrite`
    returning None leaves the reference as it was.
    """
    if isinstance(value, list):
        return [rewrite_reference_strings(item, rewrite) for item in value]
    if not isinstance(value, dict):
        return value
    copy: dict[str, Any] = {}
    for key, item in value.items():
        if key == "reference" and isinstance(item, str):
            copy[key] = rewrite(item) or item
        else:
            copy[key] = rewrite_reference_strings(item, rewrite)
    return copy
