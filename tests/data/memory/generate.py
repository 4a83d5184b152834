"""Generates the labelled consolidation sets in this folder (no network, no model).

    python tests/data/memory/generate.py            # writes both files

* consolidation_train.jsonl  seed 7,  the "train" paraphrase templates: for
  tuning the consolidation thresholds.
* consolidation_dev.jsonl    seed 13, the "test" templates: for looking at
  errors (never for choosing thresholds).
* consolidation_test.jsonl   seed 11, the "test" templates (worded
  differently from the train ones) and other patients: the held-out set
  `hacs eval memory` reports on by default.

Each patient gets clinical facts of eight kinds (medication, allergy,
laterality of a complaint, lab result, blood pressure, procedure date,
diagnosis year, care preference). A fact is written 1-4 times, each time
with another template and surface choices (brand or generic drug names,
"BID" or "twice daily", "500mg" or "500 milligrams", ISO or spelled-out
dates, clause order, lead-ins): those copies form a duplicate group. About a
quarter of the clinical facts also get a contradicting variant (another
dose or frequency, allergy negated, the other side, another lab value,
blood pressure, date or year), itself written 1-2 times: every block of the
variant contradicts every block of the original. Patients share drugs and
tests, so look-alikes that are *not* duplicates (another drug, another
patient) are common. The format is documented in docs/memory.md.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

DRUGS = [  # generic, brands, doses (mg), indication
    ("metformin", ["Glucophage"], [500, 850, 1000], "type 2 diabetes"),
    ("lisinopril", ["Zestril", "Prinivil"], [5, 10, 20, 40], "hypertension"),
    ("atorvastatin", ["Lipitor"], [10, 20, 40, 80], "high cholesterol"),
    ("amlodipine", ["Norvasc"], [2.5, 5, 10], "high blood pressure"),
    ("metoprolol", ["Lopressor", "Toprol"], [25, 50, 100], "atrial fibrillation"),
    ("levothyroxine", ["Synthroid"], [0.05, 0.075, 0.1], "hypothyroidism"),
    ("sertraline", ["Zoloft"], [25, 50, 100], "depression"),
    ("gabapentin", ["Neurontin"], [100, 300, 600], "neuropathic pain"),
    ("furosemide", ["Lasix"], [20, 40, 80], "heart failure"),
    ("omeprazole", ["Prilosec"], [20, 40], "reflux"),
    ("warfarin", ["Coumadin"], [2, 5, 7.5], "atrial fibrillation"),
    ("losartan", ["Cozaar"], [25, 50, 100], "hypertension"),
]
FREQUENCIES = [  # per day, spellings
    (1, ["once daily", "once a day", "daily", "QD", "every morning"]),
    (2, ["twice daily", "twice a day", "BID", "two times a day", "every 12 hours"]),
    (3, ["three times daily", "three times a day", "TID", "every 8 hours"]),
]
ALLERGENS = [
    ("penicillin", ["hives", "rash", "anaphylaxis"]),
    ("sulfa drugs", ["rash", "hives"]),
    ("latex", ["contact dermatitis", "itching"]),
    ("peanuts", ["anaphylaxis", "throat swelling"]),
    ("shellfish", ["hives", "facial swelling"]),
    ("codeine", ["nausea", "vomiting"]),
    ("iodinated contrast", ["hives", "wheezing"]),
]
BODY_PARTS = ["knee", "hip", "shoulder", "ankle", "wrist", "elbow"]
LABS = [  # name, short name, unit, values
    ("hemoglobin A1c", "HbA1c", "%", [6.1, 6.8, 7.2, 7.9, 8.4, 9.1]),
    ("LDL cholesterol", "LDL", "mg/dL", [88, 102, 131, 145, 162]),
    ("serum creatinine", "creatinine", "mg/dL", [0.8, 1.1, 1.4, 1.9]),
    ("TSH", "thyrotropin", "mIU/L", [0.9, 2.4, 5.8, 7.1]),
    ("potassium", "K", "mmol/L", [3.4, 4.1, 4.8, 5.5]),
]
PROCEDURES = [
    ("colonoscopy", ["colonoscopy", "lower endoscopy"]),
    ("mammogram", ["mammogram", "mammography"]),
    ("cataract surgery", ["cataract surgery", "cataract extraction"]),
    ("knee replacement", ["knee replacement", "total knee arthroplasty"]),
    ("echocardiogram", ["echocardiogram", "cardiac echo"]),
]
CONDITIONS = [
    ("type 2 diabetes", ["type 2 diabetes", "T2DM", "diabetes type 2"]),
    ("hypertension", ["hypertension", "high blood pressure", "HTN"]),
    ("asthma", ["asthma", "bronchial asthma"]),
    ("hypothyroidism", ["hypothyroidism", "underactive thyroid"]),
    ("atrial fibrillation", ["atrial fibrillation", "AFib"]),
    ("osteoarthritis", ["osteoarthritis", "degenerative joint disease"]),
]
PREFERENCES = [
    "prefers morning appointments",
    "wants her daughter present for medication discussions",
    "prefers written instructions in large print",
    "asks that voicemails not mention test results",
    "prefers to be called by her first name",
    "would rather have telehealth visits when possible",
    "needs an interpreter for Spanish",
    "prefers pharmacy pickup on Fridays",
]
LEAD_INS = ["", "", "", "Per chart review, ", "Noted: ", "From today's visit: ", "Update: "]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
]  # fmt: skip


def spell_date(day: date, rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return day.isoformat()
    if style == 1:
        return f"{MONTHS[day.month - 1]} {day.day}, {day.year}"
    if style == 2:
        return f"{day.day} {MONTHS[day.month - 1]} {day.year}"
    return f"{MONTHS[day.month - 1][:3]} {day.day} {day.year}"


def dose_text(dose: float, rng: random.Random) -> str:
    number = f"{dose:g}"
    if dose < 1 and rng.random() < 0.5:
        return f"{dose * 1000:g} mcg"
    return rng.choice([f"{number} mg", f"{number}mg", f"{number} milligrams"])


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass
class Kind:
    """A kind of fact: its memory type and tags, and the wordings of each pool.

    Wordings are templates over the fact's fields; each placeholder is
    filled with a fresh surface choice every time ({drug}: generic or brand
    name, {dose}: "500 mg" / "500mg" / "500 milligrams", {freq}: "BID" /
    "twice daily"..., {date}: ISO or spelled out, {side}: "left" / "lt").
    """

    name: str
    memory_type: str
    tags: list[str]
    train: list[str]
    test: list[str]
    contradiction: list[str] = field(default_factory=list)


def fill(template: str, fact: dict[str, Any], rng: random.Random) -> str:
    def value(key: str) -> str:
        if key == "drug":
            return str(rng.choice([fact["drug"], fact["drug"], *fact["brands"]]))
        if key == "dose":
            return dose_text(float(fact["dose"]), rng)
        if key == "freq":
            return str(rng.choice(fact["freq_words"]))
        if key == "date":
            return spell_date(fact["date"], rng)
        if key == "side":
            side = str(fact["side"])
            return str(rng.choice([side, side, {"left": "lt", "right": "rt"}[side]]))
        if key in ("condition", "procedure"):
            return str(rng.choice(fact["names"]))
        if key == "value":
            return f"{fact['value']:g}"
        return str(fact[key])

    return re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)), template)


KINDS = [
    Kind(
        "medication",
        "semantic",
        ["medication"],
        train=[
            "Patient takes {drug} {dose} {freq}.",
            "Current medication: {drug} {dose} {freq}.",
            "On {drug} {dose} {freq} for {indication}.",
            "{drug} {dose}, taken {freq}, is on the medication list.",
        ],
        test=[
            "{drug} is prescribed at {dose} {freq}.",
            "Med list shows {drug} {dose} taken {freq}.",
            "The patient has been using {drug} ({dose}, {freq}) for {indication}.",
            "{dose} of {drug} {freq}.",
        ],
    ),
    Kind(
        "allergy",
        "semantic",
        ["allergy"],
        train=[
            "Patient is allergic to {allergen}; reaction: {reaction}.",
            "Known {allergen} allergy (causes {reaction}).",
            "Allergies: {allergen} ({reaction}).",
        ],
        test=[
            "{allergen} allergy documented, reaction {reaction}.",
            "Reacts to {allergen} with {reaction}.",
            "Allergic reaction to {allergen}: {reaction}.",
        ],
        contradiction=[
            "No known allergy to {allergen}.",
            "Patient denies any {allergen} allergy.",
            "Tolerates {allergen}, no allergy.",
        ],
    ),
    Kind(
        "laterality",
        "episodic",
        ["symptom"],
        train=[
            "Patient reports pain in the {side} {part} since {date}.",
            "{side}-sided {part} pain, onset {date}.",
            "Complains of {side} {part} pain starting {date}.",
        ],
        test=[
            "Since {date} the {side} {part} has been painful.",
            "Pain in {side} {part} that began {date}.",
            "{part} pain on the {side} side from {date}.",
        ],
    ),
    Kind(
        "lab",
        "episodic",
        ["lab"],
        train=[
            "{lab} was {value} {unit} on {date}.",
            "{short} {value} {unit} ({date}).",
            "Result on {date}: {lab} {value} {unit}.",
        ],
        test=[
            "{short} came back at {value} {unit}, drawn {date}.",
            "Lab {date} shows {lab} of {value} {unit}.",
            "Measured {lab}: {value} {unit} on {date}.",
        ],
    ),
    Kind(
        "blood_pressure",
        "episodic",
        ["vitals"],
        train=[
            "Blood pressure {bp} mmHg recorded on {date}.",
            "BP {bp} at the visit on {date}.",
            "On {date}, BP measured {bp} mm Hg.",
        ],
        test=[
            "Vitals {date}: blood pressure {bp} mmHg.",
            "Blood pressure was {bp} mm Hg when checked {date}.",
            "Recorded a BP of {bp} on {date}.",
        ],
    ),
    Kind(
        "procedure",
        "episodic",
        ["procedure"],
        train=[
            "{procedure} performed on {date}.",
            "Had a {procedure} on {date}.",
            "{procedure} done {date}.",
        ],
        test=[
            "Underwent {procedure} on {date}.",
            "Date of last {procedure}: {date}.",
            "The {procedure} took place {date}.",
        ],
    ),
    Kind(
        "diagnosis",
        "semantic",
        ["history"],
        train=[
            "Diagnosed with {condition} in {year}.",
            "History of {condition} since {year}.",
            "{condition}, diagnosed {year}.",
        ],
        test=[
            "Has had {condition} since {year}.",
            "{condition} first diagnosed in {year}.",
            "Known {condition} (diagnosis {year}).",
        ],
        contradiction=["No history of {condition}.", "Patient has never had {condition}."],
    ),
    Kind(
        "preference",
        "procedural",
        ["preference"],
        train=["Patient {preference}.", "Preference noted: the patient {preference}."],
        test=["Remember that the patient {preference}.", "Care note: patient {preference}."],
    ),
]
BY_NAME = {kind.name: kind for kind in KINDS}


def new_fact(kind: str, rng: random.Random, used: set[str]) -> dict[str, Any]:
    """A fact of `kind` whose subject this patient has no other fact about."""
    for _ in range(50):
        fact = _draw(kind, rng)
        if str(fact["subject"]) not in used:
            used.add(str(fact["subject"]))
            return fact
    raise RuntimeError(f"no unused {kind} subject")


def _draw(kind: str, rng: random.Random) -> dict[str, Any]:
    day = date(2023, 1, 1) + timedelta(days=rng.randrange(700))
    if kind == "medication":
        drug, brands, doses, indication = rng.choice(DRUGS)
        per_day, words = rng.choice(FREQUENCIES)
        return dict(
            subject=drug, drug=drug, brands=brands, dose=rng.choice(doses), doses=doses,
            per_day=per_day, freq_words=words, indication=indication,
        )  # fmt: skip
    if kind == "allergy":
        allergen, reactions = rng.choice(ALLERGENS)
        return dict(subject=allergen, allergen=allergen, reaction=rng.choice(reactions))
    if kind == "laterality":
        part = rng.choice(BODY_PARTS)
        return dict(subject=part, part=part, side=rng.choice(["left", "right"]), date=day)
    if kind == "lab":
        lab, short, unit, values = rng.choice(LABS)
        return dict(subject=lab, lab=lab, short=short, unit=unit, values=values,
                    value=rng.choice(values), date=day)  # fmt: skip
    if kind == "blood_pressure":
        return dict(subject=f"bp-{day}", bp=_bp(rng), date=day)
    if kind == "procedure":
        procedure, names = rng.choice(PROCEDURES)
        return dict(subject=procedure, names=names, date=day)
    if kind == "diagnosis":
        condition, names = rng.choice(CONDITIONS)
        return dict(subject=condition, names=names, year=rng.randrange(2000, 2023))
    return dict(subject=(p := rng.choice(PREFERENCES)), preference=p)


def _bp(rng: random.Random) -> str:
    return f"{rng.randrange(110, 175, 2)}/{rng.randrange(64, 100, 2)}"


def contradicting(kind: str, fact: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same fact with another value (or negated: flagged by 'negated')."""
    other = dict(fact)
    if kind == "medication":
        if rng.random() < 0.6:
            other["dose"] = rng.choice([d for d in fact["doses"] if d != fact["dose"]])
        else:
            per_day, words = rng.choice([f for f in FREQUENCIES if f[0] != fact["per_day"]])
            other.update(per_day=per_day, freq_words=words)
    elif kind in ("allergy", "diagnosis") and (kind == "allergy" or rng.random() < 0.5):
        other["negated"] = True
    elif kind == "diagnosis":
        other["year"] = int(fact["year"]) + rng.choice([-3, -2, 2, 4])
    elif kind == "laterality":
        other["side"] = "right" if fact["side"] == "left" else "left"
    elif kind == "lab":
        other["value"] = rng.choice([v for v in fact["values"] if v != fact["value"]])
    elif kind == "blood_pressure":
        while other["bp"] == fact["bp"]:
            other["bp"] = _bp(rng)
    elif kind == "procedure":
        other["date"] = fact["date"] + timedelta(days=rng.choice([-9, -2, 3, 14]))
    return other


def write_blocks(
    kind: Kind, fact: dict[str, Any], count: int, pool: str, rng: random.Random
) -> list[str]:
    if fact.get("negated"):
        templates = kind.contradiction
    else:
        templates = kind.train if pool == "train" else kind.test
    chosen = rng.sample(templates, k=min(count, len(templates)))
    while len(chosen) < count:
        chosen.append(rng.choice(templates))
    texts = []
    for template in chosen:
        for _ in range(10):  # paraphrases, not copies
            text = rng.choice(LEAD_INS) + fill(template, fact, rng)
            text = cap(text)
            if text not in texts:
                break
        texts.append(text)
    return texts


def generate(seed: int, pool: str, patients: int, first_patient: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    blocks: list[dict[str, Any]] = []
    groups = 0

    def add(texts: list[str], kind: Kind, patient: str, agent: str, when: str) -> list[str]:
        nonlocal groups
        group = None
        if len(texts) > 1:
            groups += 1
            group = f"g-{seed}-{groups:04d}"
        ids = []
        for text in texts:
            block_id = f"m-{seed}-{len(blocks) + 1:04d}"
            ids.append(block_id)
            blocks.append(
                dict(
                    id=block_id, content=text, memory_type=kind.memory_type, patient=patient,
                    agent=agent, tags=kind.tags, event_time=when, duplicate_group=group,
                    contradicts=[],
                )
            )  # fmt: skip
        return ids

    for n in range(patients):
        patient = f"p-{first_patient + n:03d}"
        agent = f"agent-{(first_patient + n) % 2 + 1}"
        used: set[str] = set()
        kinds = [*[k.name for k in KINDS], *rng.choices([k.name for k in KINDS[:7]], k=3)]
        for kind_name in kinds:
            kind = BY_NAME[kind_name]
            fact = new_fact(kind_name, rng, used)
            when = f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 28):02d}T10:00:00Z"
            copies = rng.choices([1, 2, 3, 4], weights=[3, 4, 3, 2])[0]
            original = add(write_blocks(kind, fact, copies, pool, rng), kind, patient, agent, when)
            if kind_name != "preference" and rng.random() < 0.25:
                variant = contradicting(kind_name, fact, rng)
                copies = rng.choices([1, 2], weights=[2, 1])[0]
                texts = write_blocks(kind, variant, copies, pool, rng)
                flipped = add(texts, kind, patient, agent, when)
                for block in blocks:
                    if block["id"] in original:
                        block["contradicts"] = sorted(flipped)
                    elif block["id"] in flipped:
                        block["contradicts"] = sorted(original)
    return blocks


def write(path: Path, blocks: list[dict[str, Any]]) -> None:
    with path.open("w") as f:
        for block in blocks:
            f.write(json.dumps(block) + "\n")


def main() -> None:
    train = generate(seed=7, pool="train", patients=36, first_patient=1)
    dev = generate(seed=13, pool="test", patients=36, first_patient=201)
    test = generate(seed=11, pool="test", patients=36, first_patient=101)
    write(HERE / "consolidation_train.jsonl", train)
    write(HERE / "consolidation_dev.jsonl", dev)
    write(HERE / "consolidation_test.jsonl", test)
    for name, blocks in (("train", train), ("dev", dev), ("test", test)):
        grouped = sum(1 for b in blocks if b["duplicate_group"])
        contradicting = sum(1 for b in blocks if b["contradicts"])
        print(f"{name}: {len(blocks)} blocks, {grouped} in duplicate groups, "
              f"{contradicting} in contradictions")  # fmt: skip


if __name__ == "__main__":
    main()
