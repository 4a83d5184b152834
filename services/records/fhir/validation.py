"""Validation of FHIR JSON with fhir.resources, as errors a person can act on.

fhir.resources 8 ships FHIR R5 as its default and R4B (4.3.0) as the R4 line;
it no longer ships R4 (4.0.1) models. R4B is R4 plus changes confined to the
medication-definition and evidence resources, so for every type HACS maps
(Patient, Observation, Encounter, Condition, Procedure, Medication*,
AllergyIntolerance, DiagnosticReport, CarePlan, Goal, Organization,
Practitioner, Basic, Bundle) the R4B models accept exactly the R4 JSON.
Required value-set bindings are not checked by the library; `value_sets` does.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from services.records.fhir.errors import FhirMappingError

FHIR_RELEASE = "R4B (4.3.0), the R4-compatible models of fhir.resources"

_MAX_REPORTED = 5

# The library's regex messages, in words that say what a valid value is.
_EXPECTED = {
    "Date value": "expected a FHIR date: YYYY, YYYY-MM or YYYY-MM-DD",
    "DateTime value": (
        "expected a FHIR dateTime: YYYY, YYYY-MM, YYYY-MM-DD or "
        "YYYY-MM-DDThh:mm:ss with a zone (Z or +hh:mm)"
    ),
    "Instant value": "expected a FHIR instant: YYYY-MM-DDThh:mm:ss with a zone",
    "Decimal value": "expected a number",
}


def validate(resource: dict[str, Any]) -> None:
    """Raise FhirMappingError unless `resource` is valid FHIR JSON of its type."""
    fhir_type = resource.get("resourceType")
    if not isinstance(fhir_type, str) or not fhir_type:
        raise FhirMappingError("resourceType", "the resource has no resourceType")
    try:
        model = get_fhir_model_class(fhir_type)
    except ValueError:
        raise FhirMappingError(
            f"{fhir_type}.resourceType", f"{fhir_type!r} is not a FHIR resource type"
        ) from None
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as invalid:
        problems = [_describe(fhir_type, error) for error in invalid.errors(include_url=False)]
        location, first = problems[0]
        more = [f"{where}: {reason}" for where, reason in problems[1:_MAX_REPORTED]]
        if more:
            first += f" (also: {'; '.join(more)})"
        raise FhirMappingError(location, first) from None


@cache
def element_names(fhir_type: str) -> frozenset[str]:
    """The JSON names of the top-level elements of a FHIR resource type."""
    model = get_fhir_model_class(fhir_type)
    return frozenset(field.alias or name for name, field in model.model_fields.items())


def location_of(fhir_type: str, loc: tuple[int | str, ...]) -> str:
    """("component", 0, "code") -> "Observation.component[0].code"."""
    path = fhir_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _describe(fhir_type: str, error: Any) -> tuple[str, str]:
    location = location_of(fhir_type, tuple(error.get("loc", ())))
    kind = error.get("type", "")
    if kind == "missing":
        return location, f"required element {location} is missing"
    if kind == "extra_forbidden":
        return location, f"{location} is not an element of FHIR {fhir_type}"
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    for prefix, expected in _EXPECTED.items():
        if message.startswith(prefix):
            message = expected
    given = error.get("input")
    if isinstance(given, str | int | float | bool) and kind != "missing":
        shown = repr(given) if len(repr(given)) <= 80 else repr(given)[:77] + "..."
        return location, f"{location} = {shown} is invalid: {message}"
    return location, f"{location} is invalid: {message}"
