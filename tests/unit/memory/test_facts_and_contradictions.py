"""Reading facts from clinical wording, and telling contradictions from paraphrases."""

from __future__ import annotations

import pytest

from services.memory.contradictions import compare, show
from services.memory.facts import entities, extract
from services.memory.text import analyse


def verdict(a: str, b: str) -> tuple[list[tuple[str, list[str], list[str]]], bool]:
    left, right = analyse(a), analyse(b)
    found = compare(extract(left), extract(right), entities(left), entities(right))
    conflicts = [
        (c.attribute, [show(f) for f in c.left], [show(f) for f in c.right])
        for c in found.conflicts
    ]
    return conflicts, found.distinct


def test_wordings_are_read_alike() -> None:
    a = analyse("Pt on Glucophage 0.5 g BID; HTN since March 5, 2024")
    b = analyse("Patient takes metformin 500 milligrams twice a day, hypertension since 2024-03-05")
    shared = {"metformin", "num:500", "freq:2", "hypertension", "date:2024-03-05", "patient"}
    assert shared <= set(a.content()) & set(b.content())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Patient takes metformin 500 mg twice daily.",
            "Current medication: Glucophage 500mg BID.",
        ),
        ("Allergic to penicillin; reaction: hives.", "Penicillin allergy documented (hives)."),
        ("Left knee pain since 2024-03-05.", "Lt-sided knee pain, onset March 5, 2024."),
        ("Denies chest pain.", "No chest pain reported."),
        ("BP 140/90 on 2024-01-10.", "Blood pressure 140/90 mm Hg recorded January 10, 2024."),
        ("Weight 80 kg.", "Weight 176.4 lbs."),
    ],
)
def test_paraphrases_agree(a: str, b: str) -> None:
    assert verdict(a, b) == ([], False)


@pytest.mark.parametrize(
    ("a", "b", "attribute"),
    [
        (
            "Patient takes metformin 500 mg BID.",
            "Patient takes metformin 1000 mg BID.",
            "metformin (mg)",
        ),
        ("Metformin 500 mg twice daily.", "Metformin 500 mg once daily.", "metformin frequency"),
        (
            "Allergic to penicillin (hives).",
            "No known allergy to penicillin.",
            "allergy (present or absent)",
        ),
        ("Pain in the left knee.", "Pain in the right knee.", "knee laterality"),
        (
            "Colonoscopy performed on 2023-04-12.",
            "Had a colonoscopy on April 14, 2023.",
            "colonoscopy date",
        ),
        (
            "BP 140/90 mmHg on 2024-01-10.",
            "BP 150/95 at the visit on 2024-01-10.",
            "blood pressure panel (mmhg)",
        ),
        ("Diagnosed with asthma in 2010.", "No history of asthma.", "asthma (present or absent)"),
    ],
)
def test_different_values_for_the_same_fact_contradict(a: str, b: str, attribute: str) -> None:
    conflicts, distinct = verdict(a, b)
    assert not distinct
    assert attribute in [c[0] for c in conflicts]


def test_other_subjects_and_other_events_are_not_contradictions() -> None:
    # Another drug: a different fact, not a different value.
    assert verdict("Metformin 500 mg BID.", "Lisinopril 10 mg daily.")[0] == []
    # Other body parts: about different things.
    assert verdict("Left knee pain since May 2024.", "Right wrist pain since June 2024.") == (
        [],
        True,
    )
    # Other dates and other values: two measurements, not one disputed.
    assert verdict("BP 150/95 on 2024-06-19.", "BP 140/80 on 2024-03-23.") == ([], True)


def test_a_less_specific_memory_does_not_contradict() -> None:
    assert verdict("Patient takes metformin.", "Patient takes metformin 500 mg BID.") == ([], False)
    # A dose history agrees with either dose.
    history = "Metformin was 500 mg, increased to 1000 mg in 2023."
    assert verdict(history, "Metformin 1000 mg.")[0] == []


def test_negation_scope_stops_at_the_clause() -> None:
    facts = extract(analyse("No fever; cough with chest pain"))
    polarity = {f.anchor: f.value for f in facts if f.kind == "polarity"}
    assert polarity["fever"] is False
    assert polarity["cough"] is True and polarity["chest pain"] is True
