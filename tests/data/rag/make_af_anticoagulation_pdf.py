"""Writes af-anticoagulation.pdf: a two-page guideline with an outline (bookmarks).

Run from the repository root: `.venv/bin/python tests/data/rag/make_af_anticoagulation_pdf.py`.
The PDF is committed; this script is how it was made (pypdf only, Helvetica text,
one outline entry per section), so it can be regenerated or changed.
"""

from __future__ import annotations

from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject

OUT = Path(__file__).with_name("af-anticoagulation.pdf")

PAGES = [
    [
        ("Anticoagulation in atrial fibrillation", 1),
        ("Stroke risk assessment", 2),
        "Assess stroke risk with the CHA2DS2-VASc score in every patient with atrial",
        "fibrillation. Offer anticoagulation to men with a score of 2 or more and to women",
        "with a score of 3 or more. Consider it for men with a score of 1.",
        ("Choice of anticoagulant", 2),
        "Prefer a direct oral anticoagulant (DOAC) such as apixaban, rivaroxaban, edoxaban",
        "or dabigatran over warfarin. Warfarin remains the choice for patients with a",
        "mechanical heart valve or moderate to severe mitral stenosis.",
    ],
    [
        ("Dose adjustment in renal impairment", 2),
        "Reduce apixaban to 2.5 mg twice daily when two of these apply: age 80 years or",
        "older, body weight 60 kg or less, serum creatinine 1.5 mg/dL or more.",
        "Dabigatran is contraindicated when creatinine clearance is below 30 mL/min.",
        "Check renal function before starting a DOAC and at least once a year.",
        ("Bleeding risk", 2),
        "Assess bleeding risk with the HAS-BLED score and correct modifiable risk factors",
        "such as uncontrolled hypertension, alcohol excess and concomitant NSAIDs.",
    ],
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def main() -> None:
    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    outline: list[tuple[str, int, int]] = []
    for number, lines in enumerate(PAGES):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        commands = ["BT", "/F1 11 Tf", "16 TL", "60 740 Td"]
        for line in lines:
            if isinstance(line, tuple):
                title, level = line
                outline.append((title, level, number))
                commands += ["T*", f"({_escape(title)}) Tj", "T*"]
            else:
                commands += [f"({_escape(line)}) Tj", "T*"]
        commands.append("ET")
        stream = StreamObject()
        stream.set_data("\n".join(commands).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
    parent = None
    for title, level, number in outline:
        item = writer.add_outline_item(
            title=title, page_number=number, parent=parent if level > 1 else None
        )
        if level == 1:
            parent = item
    writer.add_metadata({"/Title": "Anticoagulation in atrial fibrillation"})
    with OUT.open("wb") as f:
        writer.write(f)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
