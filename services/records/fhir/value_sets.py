"""FHIR R4 required bindings of the code fields the contract keeps as strings.

fhir.resources checks that a `code` is a well-formed token, not that it is in
its value set, so "done" would pass as an Observation.status. These are the
R4 value sets with a *required* binding (the resource is invalid otherwise),
keyed by the proto message and field that hold the code, so nested data types
(ContactPoint.system, Quantity.comparator...) are checked wherever they occur.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValueSet:
    name: str  # the FHIR value set id, e.g. "observation-status"
    codes: frozenset[str]


def _vs(name: str, codes: str) -> ValueSet:
    return ValueSet(name, frozenset(codes.split()))


_GENDER = _vs("administrative-gender", "male female other unknown")
_UNITS_OF_TIME = _vs("units-of-time", "s min h d wk mo a")
_REQUEST_INTENT = _vs("care-plan-intent", "proposal plan order option")

REQUIRED: dict[tuple[str, str], ValueSet] = {
    ("hacs.common.v1.Identifier", "use"): _vs(
        "identifier-use", "usual official temp secondary old"
    ),
    ("hacs.common.v1.Quantity", "comparator"): _vs("quantity-comparator", "< <= >= >"),
    ("hacs.common.v1.HumanName", "use"): _vs(
        "name-use", "usual official temp nickname anonymous old maiden"
    ),
    ("hacs.common.v1.ContactPoint", "system"): _vs(
        "contact-point-system", "phone fax email pager url sms other"
    ),
    ("hacs.common.v1.ContactPoint", "use"): _vs("contact-point-use", "home work temp old mobile"),
    ("hacs.common.v1.Address", "use"): _vs("address-use", "home work temp old billing"),
    ("hacs.common.v1.Address", "type"): _vs("address-type", "postal physical both"),
    ("hacs.records.v1.Patient", "gender"): _GENDER,
    ("hacs.records.v1.PatientContact", "gender"): _GENDER,
    ("hacs.records.v1.Practitioner", "gender"): _GENDER,
    ("hacs.records.v1.Observation", "status"): _vs(
        "observation-status",
        "registered preliminary final amended corrected cancelled entered-in-error unknown",
    ),
    ("hacs.records.v1.DiagnosticReport", "status"): _vs(
        "diagnostic-report-status",
        "registered partial preliminary final amended corrected appended cancelled "
        "entered-in-error unknown",
    ),
    ("hacs.records.v1.Encounter", "status"): _vs(
        "encounter-status",
        "planned arrived triaged in-progress onleave finished cancelled entered-in-error unknown",
    ),
    ("hacs.records.v1.Condition", "clinical_status"): _vs(
        "condition-clinical", "active recurrence relapse inactive remission resolved"
    ),
    ("hacs.records.v1.Condition", "verification_status"): _vs(
        "condition-ver-status",
        "unconfirmed provisional differential confirmed refuted entered-in-error",
    ),
    ("hacs.records.v1.Procedure", "status"): _vs(
        "event-status",
        "preparation in-progress not-done on-hold stopped completed entered-in-error unknown",
    ),
    ("hacs.records.v1.AllergyIntolerance", "clinical_status"): _vs(
        "allergyintolerance-clinical", "active inactive resolved"
    ),
    ("hacs.records.v1.AllergyIntolerance", "verification_status"): _vs(
        "allergyintolerance-verification", "unconfirmed confirmed refuted entered-in-error"
    ),
    ("hacs.records.v1.AllergyIntolerance", "type"): _vs(
        "allergy-intolerance-type", "allergy intolerance"
    ),
    ("hacs.records.v1.AllergyIntolerance", "category"): _vs(
        "allergy-intolerance-category", "food medication environment biologic"
    ),
    ("hacs.records.v1.AllergyIntolerance", "criticality"): _vs(
        "allergy-intolerance-criticality", "low high unable-to-assess"
    ),
    ("hacs.records.v1.AllergyReaction", "severity"): _vs(
        "reaction-event-severity", "mild moderate severe"
    ),
    ("hacs.records.v1.MedicationStatement", "status"): _vs(
        "medication-statement-status",
        "active completed entered-in-error intended stopped on-hold unknown not-taken",
    ),
    ("hacs.records.v1.MedicationRequest", "status"): _vs(
        "medicationrequest-status",
        "active on-hold cancelled completed entered-in-error stopped draft unknown",
    ),
    ("hacs.records.v1.MedicationRequest", "intent"): _vs(
        "medicationrequest-intent",
        "proposal plan order original-order reflex-order filler-order instance-order option",
    ),
    ("hacs.records.v1.MedicationRequest", "priority"): _vs(
        "request-priority", "routine urgent asap stat"
    ),
    ("hacs.records.v1.CarePlan", "status"): _vs(
        "request-status", "draft active on-hold revoked completed entered-in-error unknown"
    ),
    ("hacs.records.v1.CarePlan", "intent"): _REQUEST_INTENT,
    ("hacs.records.v1.CarePlanActivityDetail", "status"): _vs(
        "care-plan-activity-status",
        "not-started scheduled in-progress on-hold completed cancelled stopped unknown "
        "entered-in-error",
    ),
    ("hacs.records.v1.CarePlanActivityDetail", "kind"): _vs(
        "care-plan-activity-kind",
        "Appointment CommunicationRequest DeviceRequest MedicationRequest NutritionOrder "
        "Task ServiceRequest VisionPrescription",
    ),
    ("hacs.records.v1.Goal", "lifecycle_status"): _vs(
        "goal-status",
        "proposed planned accepted active on-hold completed cancelled entered-in-error rejected",
    ),
    ("hacs.records.v1.TimingRepeat", "duration_unit"): _UNITS_OF_TIME,
    ("hacs.records.v1.TimingRepeat", "period_unit"): _UNITS_OF_TIME,
    ("hacs.records.v1.TimingRepeat", "day_of_week"): _vs(
        "days-of-week", "mon tue wed thu fri sat sun"
    ),
}


def violation(message_name: str, field: str, code: str) -> str | None:
    """Why `code` is not allowed in this field, or None when it is (or unbound)."""
    value_set = REQUIRED.get((message_name, field))
    if value_set is None or code in value_set.codes:
        return None
    allowed = ", ".join(sorted(value_set.codes))
    return f"{code!r} is not in the FHIR R4 value set {value_set.name} ({allowed})"
