"""The patient a question is about: resolving their facts, and what those facts favour.

Resolution: a named Patient record is read with the caller's own permissions
(`read:patient`, then `read:condition`, `read:medication`, `read:allergy` for
its compartment; a missing one is PERMISSION_DENIED, another tenant's patient
NOT_FOUND), and its active conditions, medications and allergies, age and sex
are added to the facts given inline.

Re-ranking: each fact becomes phrases (its text and codings, the clinical
vocabulary's name and synonyms for it, and the passage words listed in
`context_terms.yaml`, e.g. CKD -> "egfr", "renal impairment"). A chunk
that mentions a fact's phrases gets that fact's weight added to its logit
(conditions 0.8, medications and allergies 0.6, notes 0.6, the patient's age
group 0.4); a chunk about children for an adult, or about pregnancy for a
male patient, gets -0.5. The sum is clipped to [-1.0, 1.6]. The weights are
priors chosen by hand, documented in docs/rag.md, not fitted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hacs.common.v1 import datatypes_pb2
from hacs.rag.v1 import patient_context_pb2
from hacs.records.v1 import patient_pb2, record_pb2

from services.common.caller import Caller
from services.kernel.records.reads import ListFilter, RecordReader
from services.kernel.retrieval import vocabulary

TERMS_FILE = Path(__file__).parent / "context_terms.yaml"
WEIGHTS = {"condition": 0.8, "medication": 0.6, "allergy": 0.6, "note": 0.6, "age": 0.4}
MISMATCH = -0.5
BOOST_RANGE = (-1.0, 1.6)
RT = record_pb2.ResourceType
COMPARTMENT = (
    RT.RESOURCE_TYPE_CONDITION,
    RT.RESOURCE_TYPE_MEDICATION_STATEMENT,
    RT.RESOURCE_TYPE_MEDICATION_REQUEST,
    RT.RESOURCE_TYPE_ALLERGY_INTOLERANCE,
)
INACTIVE = {"inactive", "resolved", "remission", "completed", "stopped", "cancelled",
            "entered-in-error", "not-taken", "revoked"}  # fmt: skip

PatientContext = patient_context_pb2.PatientContext
Phrase = tuple[str, ...]


@dataclass(frozen=True)
class PatientFact:
    label: str  # shown in RetrievalResult.matched_context, e.g. "condition: CKD stage 4"
    phrases: frozenset[Phrase]
    weight: float


@cache
def _terms() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TERMS_FILE.read_text())
    return loaded


# -- resolution ----------------------------------------------------------------


async def resolve(
    reader: RecordReader, caller: Caller, tenant_id: str, inline: PatientContext
) -> PatientContext:
    """Inline facts plus those read from the named patient record (if any)."""
    resolved = PatientContext()
    resolved.CopyFrom(inline)
    if not inline.patient:
        return resolved
    patient = await reader.get(caller, inline.patient, 0)
    if not resolved.HasField("age"):
        age = _age(patient.patient)
        if age is not None:
            resolved.age = age
    if not resolved.sex and patient.patient.gender:
        resolved.sex = patient.patient.gender
    token = ""
    filters = ListFilter(tenant_id, resource_types=COMPARTMENT, patient=inline.patient)
    for _ in range(20):  # at most 10,000 compartment records
        records, token = await reader.list_records(caller, filters, 500, token)
        for record in records:
            _add(resolved, record)
        if not token:
            break
    return resolved


def _age(patient: patient_pb2.Patient) -> int | None:
    if patient.HasField("age"):
        return int(patient.age)
    parts = patient.birth_date.split("-")
    if not parts[0].isdigit():
        return None
    born = date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 7, 1)
    today = date.today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _add(context: PatientContext, record: record_pb2.Record) -> None:
    kind = record.WhichOneof("resource")
    concept: datatypes_pb2.CodeableConcept | None = None
    if kind == "condition" and record.condition.clinical_status not in INACTIVE:
        concept, target = record.condition.code, context.conditions
    elif kind in ("medication_statement", "medication_request"):
        med = getattr(record, kind)
        if med.status not in INACTIVE and med.HasField("medication_codeable_concept"):
            concept, target = med.medication_codeable_concept, context.medications
    elif kind == "allergy_intolerance" and record.allergy_intolerance.clinical_status not in (
        INACTIVE
    ):
        concept, target = record.allergy_intolerance.code, context.allergies
    if concept is None or not (concept.text or concept.coding):
        return
    if _concept_label(concept) not in {_concept_label(c) for c in target}:
        target.append(concept)


def _concept_label(concept: datatypes_pb2.CodeableConcept) -> str:
    return concept.text or next((c.display or c.code for c in concept.coding), "")


# -- facts and boosts -------------------------------------------------------------


def facts(context: PatientContext) -> list[PatientFact]:
    """The phrases each fact of the context makes relevant, with its weight."""
    found: list[PatientFact] = []
    for kind, concepts in (
        ("condition", context.conditions),
        ("medication", context.medications),
        ("allergy", context.allergies),
    ):
        for concept in concepts:
            phrases = _concept_phrases(concept)
            if phrases:
                found.append(
                    PatientFact(f"{kind}: {_concept_label(concept)}", phrases, WEIGHTS[kind])
                )
    if context.notes.strip():
        for name, phrases in _recognised(context.notes):
            found.append(PatientFact(f"note: {name}", phrases, WEIGHTS["note"]))
    groups = _terms()["age_groups"]
    if context.HasField("age") and (context.age >= 65 or context.age < 18):
        group = "older" if context.age >= 65 else "child"
        found.append(
            PatientFact(f"age: {context.age}", _phrases(groups[group]), WEIGHTS["age"]),
        )
    if context.HasField("age") and context.age >= 18:
        label = f"age: {context.age} (passage is about children)"
        found.append(PatientFact(label, _phrases(groups["child"]), MISMATCH))
    if context.sex == "male":
        pregnancy = _terms()["extra_concepts"]["Pregnancy"]
        found.append(
            PatientFact("sex: male (passage is about pregnancy)", _phrases(pregnancy), MISMATCH)
        )
    return found


def boost(found: list[PatientFact], text: str) -> tuple[float, list[str]]:
    """The logit adjustment for a chunk's text, and the labels of the facts it matched."""
    contains = _phrase_finder(text)
    total = 0.0
    matched: list[str] = []
    for fact in found:
        if any(contains(phrase) for phrase in fact.phrases):
            total += fact.weight
            matched.append(fact.label)
    low, high = BOOST_RANGE
    return max(low, min(high, total)), matched


def _phrase_finder(text: str) -> Callable[[Phrase], bool]:
    """Whether a phrase occurs in `text` as consecutive words.

    Looks phrases up from the positions of their first word rather than
    building every n-gram of the text: Retrieve asks this of every candidate
    chunk for a few dozen phrases, and most phrases' first word is absent.
    """
    words = vocabulary.tokens(text)
    starts: dict[str, list[int]] = {}
    for position, word in enumerate(words):
        starts.setdefault(word, []).append(position)

    def contains(phrase: Phrase) -> bool:
        size = len(phrase)  # never 0: phrases are made from non-empty token lists
        return any(tuple(words[i : i + size]) == phrase for i in starts.get(phrase[0], ()))

    return contains


def _concept_phrases(concept: datatypes_pb2.CodeableConcept) -> frozenset[Phrase]:
    """The concept's own words, plus those of every vocabulary concept it names or codes."""
    texts = [t for t in (concept.text, *(c.display for c in concept.coding)) if t]
    phrases = set(_phrases(texts))
    codes = {(c.system, c.code) for c in concept.coding}
    for entry in vocabulary.shipped().concepts:
        if any((c.system, c.code) in codes for c in entry.codings):
            phrases |= _vocabulary_phrases(entry)
    for text in texts:
        for _, found in _recognised(text):
            phrases |= found
    return frozenset(p for p in phrases if _usable(p))


def _vocabulary_phrases(entry: vocabulary.Concept) -> frozenset[Phrase]:
    extra = _terms()["concepts"].get(entry.name, [])
    return _phrases([entry.name, *entry.synonyms, *extra])


def _recognised(notes: str) -> list[tuple[str, frozenset[Phrase]]]:
    """Concepts named in free text ('CKD stage 4', 'eGFR 28, pregnant'), with their phrases."""
    words = vocabulary.tokens(notes)
    originals = re.findall(r"[A-Za-z0-9]+", notes.replace("'", "").replace("\u2019", ""))
    found: dict[str, frozenset[Phrase]] = {}
    for match in vocabulary.shipped().find(words, originals):
        found[match.concept.name] = _vocabulary_phrases(match.concept)
    grams = _ngrams(notes)
    for name, phrases in _terms()["extra_concepts"].items():
        as_phrases = _phrases(phrases)
        if any(p in grams for p in as_phrases):
            found[name] = as_phrases
    return [(name, frozenset(p for p in phrases if _usable(p))) for name, phrases in found.items()]


def _phrases(texts: list[str]) -> frozenset[Phrase]:
    return frozenset(tuple(vocabulary.tokens(t)) for t in texts if vocabulary.tokens(t))


def _usable(phrase: Phrase) -> bool:
    """Very short single words ('af', 'mi') match too much by accident; keep 3+ letters."""
    return len(phrase) > 1 or len(phrase[0]) >= 3


def _ngrams(text: str, longest: int = 5) -> set[Phrase]:
    words = vocabulary.tokens(text)
    return {
        tuple(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)
    }
