"""Record names: `tenants/{tenant}/{collection}/{id}` (AIP-122), and new ids."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from services.common.errors import FieldViolation, Invalid
from services.kernel.records.resource_types import BY_COLLECTION, ResourceTypeInfo

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-_.]{1,64}\Z")
ID_RULE = "1-64 characters: letters, digits, '-', '_', '.'"
_NAME = re.compile(
    r"^tenants/(?P<tenant>[a-z][a-z0-9-]{1,38}[a-z0-9])/(?P<collection>[A-Za-z]+)/(?P<id>[A-Za-z0-9\-_.]{1,64})\Z"
)
_PATIENT = re.compile(
    r"^tenants/(?P<tenant>[a-z][a-z0-9-]{1,38}[a-z0-9])/patients/(?P<id>[A-Za-z0-9\-_.]{1,64})\Z"
)


@dataclass(frozen=True)
class RecordName:
    tenant_id: str
    info: ResourceTypeInfo
    id: str

    def __str__(self) -> str:
        return record_name(self.tenant_id, self.info, self.id)


def record_name(tenant_id: str, info: ResourceTypeInfo, record_id: str) -> str:
    return f"tenants/{tenant_id}/{info.collection}/{record_id}"


def parse_record_name(name: str, field: str = "name") -> RecordName:
    match = _NAME.match(name)
    if match is None:
        raise Invalid(
            FieldViolation(field, f"{name!r} is not a record name like 'tenants/acme/patients/p-1'")
        )
    info = BY_COLLECTION.get(match["collection"])
    if info is None:
        raise Invalid(
            FieldViolation(
                field,
                f"{match['collection']!r} is not a record collection; use one of "
                + ", ".join(sorted(BY_COLLECTION)),
            )
        )
    return RecordName(match["tenant"], info, match["id"])


def is_record_name(name: str) -> bool:
    match = _NAME.match(name)
    return match is not None and match["collection"] in BY_COLLECTION


def parse_patient_name(name: str, field: str) -> tuple[str, str]:
    """(tenant, patient id) of 'tenants/{tenant}/patients/{id}'."""
    match = _PATIENT.match(name)
    if match is None:
        raise Invalid(
            FieldViolation(
                field, f"{name!r} is not a patient name like 'tenants/acme/patients/p-1'"
            )
        )
    return match["tenant"], match["id"]


def new_record_id(info: ResourceTypeInfo) -> str:
    """`{type}-{8 hex}` as the HACS library generates ids, e.g. 'patient-a1b2c3d4'."""
    return f"{info.name.lower()}-{secrets.token_hex(4)}"
