"""The one error FHIR mapping raises: where in the resource, and why."""

from __future__ import annotations


class FhirMappingError(Exception):
    """A FHIR resource (or bundle entry) that cannot become a HACS record.

    `location` is FHIRPath-like ("Observation.status",
    "Observation.component[1].code", "Bundle.entry[3].request.method") and
    `reason` is a sentence a person can act on; the import RPC reports both
    per entry.
    """

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason
