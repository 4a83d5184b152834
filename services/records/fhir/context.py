"""State carried through one resource's import or export.

Import collects every FHIR element the contract cannot hold, keyed by its
path in the resource ("extension", "component[0].valueSampledData"); that map
becomes `Record.extensions`. Export hands the kept elements back to the
object they came from, so a FHIR -> HACS -> FHIR trip loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.records.fhir.errors import FhirMappingError

JsonObject = dict[str, Any]


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def split(path: str) -> tuple[str, str]:
    """("component[0]", "valueSampledData") for "component[0].valueSampledData"."""
    parent, _, key = path.rpartition(".")
    return parent, key


@dataclass
class ImportContext:
    fhir_type: str  # for locations: "Observation.status"
    tenant_id: str
    resolve_reference: Callable[[str], str | None]
    kept: JsonObject = field(default_factory=dict)

    def location(self, path: str) -> str:
        return join(self.fhir_type, path)

    def error(self, path: str, reason: str) -> FhirMappingError:
        return FhirMappingError(self.location(path), reason)

    def keep(self, path: str, value: Any) -> None:
        self.kept[path] = value


@dataclass
class ExportContext:
    fhir_type: str
    kept: dict[str, JsonObject]  # parent path -> {FHIR key: original value}
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_kept(cls, fhir_type: str, kept: JsonObject) -> ExportContext:
        by_parent: dict[str, JsonObject] = {}
        for path, value in kept.items():
            parent, key = split(path)
            by_parent.setdefault(parent, {})[key] = value
        return cls(fhir_type, by_parent)

    def location(self, path: str) -> str:
        return join(self.fhir_type, path)

    def take(self, path: str) -> JsonObject:
        """The kept elements of the object at `path` (each handed out once)."""
        return self.kept.pop(path, {})

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def report_leftovers(self) -> None:
        for parent, elements in sorted(self.kept.items()):
            for key in elements:
                self.warn(
                    f"{self.location(join(parent, key))} kept from the imported FHIR was "
                    "dropped: the element it belonged to no longer exists in the record"
                )
        self.kept.clear()
