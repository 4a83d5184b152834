"""FHIR Bundles: structural parsing for import, and collection bundles for export.

Parsing checks only what makes the text a usable Bundle (a whole-request
error) and what makes an entry usable (per-entry problems); validating each
resource is `fhir_to_record`'s job, so one bad entry never hides the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.kernel.records import resource_types
from services.records.fhir import references
from services.records.fhir.errors import FhirMappingError
from services.records.fhir.mapping import fhir_id

BUNDLE_TYPES = ("transaction", "batch", "collection")
MAX_DEPTH = 64  # a Bundle, its entries, their resources: FHIR's deepest run to about 15
MAX_ENTRIES = 10_000
METHODS = ("POST", "PUT", "DELETE")


class BundleError(Exception):
    """The text is not a Bundle HACS can import at all (INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class BundleEntry:
    index: int
    full_url: str
    method: str  # "POST" | "PUT" | "DELETE" as given; "" for collection entries
    url: str  # request.url, e.g. "Patient" or "Patient/123"
    resource: dict[str, Any] | None
    fhir_type: str  # resource.resourceType, else the type in `url`
    fhir_id: str  # resource.id, else the id in `url`


@dataclass(frozen=True)
class ParsedBundle:
    bundle_type: str
    entries: list[BundleEntry]
    # fullUrl -> index of the first entry using it (duplicates are entry problems).
    full_url_owners: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


def parse_bundle(text: str) -> ParsedBundle:
    """The bundle's type and entries, or BundleError saying why it is no usable Bundle."""
    try:
        data = json.loads(
            text, parse_int=_bounded, parse_float=_finite, parse_constant=_no_constant
        )
    except RecursionError:
        raise BundleError(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # not JSON, a number past Python's 4,300 digits, NaN, 1e999
        raise BundleError(f"the text is not JSON HACS can read: {error}") from None
    if _depth(data) > MAX_DEPTH:
        raise BundleError(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise BundleError("the text is not a JSON object, so not a FHIR Bundle")
    if data.get("resourceType") != "Bundle":
        raise BundleError(f"resourceType is {data.get('resourceType')!r}, not 'Bundle'")
    bundle_type = data.get("type")
    if bundle_type not in BUNDLE_TYPES:
        raise BundleError(
            f"Bundle.type {bundle_type!r} cannot be imported; use one of {', '.join(BUNDLE_TYPES)}"
        )
    raw_entries = data.get("entry")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise BundleError("the Bundle has no entries")
    if len(raw_entries) > MAX_ENTRIES:
        raise BundleError(
            f"the Bundle has {len(raw_entries)} entries; at most {MAX_ENTRIES:,} are accepted"
        )
    entries = [_entry(index, raw, bundle_type) for index, raw in enumerate(raw_entries)]
    owners: dict[str, int] = {}
    for entry in entries:
        if entry.full_url:
            owners.setdefault(entry.full_url, entry.index)
    return ParsedBundle(bundle_type, entries, owners)


def _entry(index: int, raw: Any, bundle_type: str) -> BundleEntry:
    raw = raw if isinstance(raw, dict) else {}
    request = raw.get("request")
    request = request if isinstance(request, dict) and bundle_type != "collection" else {}
    resource = raw.get("resource") if isinstance(raw.get("resource"), dict) else None
    url = _text(request.get("url"))
    url_type, _, url_id = url.partition("?")[0].partition("/")
    fhir_type = _text(resource.get("resourceType")) if resource else url_type
    return BundleEntry(
        index=index,
        full_url=_text(raw.get("fullUrl")),
        method=_text(request.get("method")),
        url=url,
        resource=resource,
        fhir_type=fhir_type,
        fhir_id=(fhir_id(resource) if resource else "") or url_id.partition("/")[0],
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def entry_problem(bundle: ParsedBundle, entry: BundleEntry) -> FhirMappingError | None:
    """What makes the entry unusable before its resource is even read, if anything.

    Locations are "Bundle.entry[i]...."; see `entry_field` for the BadRequest form.
    """
    where = f"Bundle.entry[{entry.index}]"
    if entry.full_url:
        first = bundle.full_url_owners.get(entry.full_url, entry.index)
        if first != entry.index:
            return FhirMappingError(
                f"{where}.fullUrl", f"fullUrl {entry.full_url!r} is also used by entry[{first}]"
            )
    if bundle.bundle_type != "collection":
        if not entry.method:
            return FhirMappingError(
                f"{where}.request",
                f"a {bundle.bundle_type} entry needs request.method and request.url",
            )
        if entry.method not in METHODS:
            return FhirMappingError(
                f"{where}.request.method",
                f"{entry.method!r} is not supported; use {', '.join(METHODS)}",
            )
        if entry.method != "POST" and not references.RELATIVE.match(entry.url):
            return FhirMappingError(
                f"{where}.request.url",
                f"{entry.method} needs a url of the form Type/id, not {entry.url!r} "
                "(conditional requests are not supported)",
            )
    if entry.method == "DELETE":
        return None
    if entry.resource is None:
        return FhirMappingError(f"{where}.resource", "the entry has no resource")
    url_type, _, url_id = entry.url.partition("/")
    resource_id = fhir_id(entry.resource)
    if entry.url and url_type != entry.fhir_type:
        return FhirMappingError(
            f"{where}.request.url",
            f"{entry.url!r} does not match the resource type {entry.fhir_type!r}",
        )
    if entry.method == "PUT" and resource_id and resource_id != url_id:
        return FhirMappingError(
            f"{where}.request.url",
            f"{entry.url!r} does not match the resource id {resource_id!r}",
        )
    return None


def entry_field(entry: BundleEntry, error: FhirMappingError) -> str:
    """The BadRequest field of an entry's error: "entry[3].resource.status"."""
    if error.location.startswith("Bundle."):
        return error.location.removeprefix("Bundle.")
    _, _, inside = error.location.partition(".")
    return f"entry[{entry.index}].resource" + (f".{inside}" if inside else "")


def reference_resolver(
    bundle: ParsedBundle, names: dict[int, str], tenant_id: str
) -> Callable[[str], str | None]:
    """resolve_reference for `fhir_to_record` within one bundle.

    An entry's fullUrl (urn:uuid or absolute URL) and its "Type/id" map to the
    name the caller gave that entry (`names`, by entry index); "Type/id" of
    any supported type not in the bundle maps to the tenant's record of that
    id. Entries without a name (rejected ones) resolve to nothing.
    """
    by_reference: dict[str, str] = {}
    for entry in bundle.entries:
        name = names.get(entry.index)
        if name is None:
            continue
        if entry.full_url:
            by_reference[entry.full_url] = name
        if entry.fhir_type and entry.fhir_id:
            by_reference.setdefault(f"{entry.fhir_type}/{entry.fhir_id}", name)

    def resolve(reference: str) -> str | None:
        match = references.RELATIVE.match(reference)
        plain = f"{match['type']}/{match['id']}" if match else reference
        found = by_reference.get(plain)
        if found is not None:
            return found
        info = resource_types.BY_FHIR_TYPE.get(match["type"]) if match else None
        return references.record_name(tenant_id, info, match["id"]) if match and info else None

    return resolve


def collection_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A FHIR "collection" Bundle of exported resources.

    Entries carry no fullUrl: HACS has no FHIR base URL, and the resources
    refer to each other as "Type/id", which reads within the bundle.
    """
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in resources],
    }


def _bounded(text: str) -> int:
    if len(text.lstrip("-")) > 30:  # FHIR integers are 32-bit; nothing needs more
        raise ValueError(f"a {len(text)}-digit number is too large")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]}{'…' if len(text) > 20 else ''} is too large a number")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: object) -> int:
    """How deeply arrays and objects nest (iteratively: a hostile document cannot recurse)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
    return deepest
