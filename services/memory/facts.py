"""The checkable facts a memory states, read from its analysed words.

Two memories can only contradict each other on something both state with a
value. This module reads those statements from `text.analyse` tokens:

* quantity   a number with its canonical unit ("500 mg", "140/90 mmHg",
             "7.2 %"), attached to what it measures (its anchor),
* frequency  doses per day ("twice daily" = 2), attached likewise,
* date       a calendar date or year, attached to the event it dates,
* laterality left / right / bilateral, attached to a body part,
* polarity   whether a finding (a condition or symptom of the vocabulary, an
             allergy, pain...) is asserted or negated, found with
             NegEx-style cues ("no", "denies", "without", "... absent") and
             their scope (the rest of the clause, a few words at most).

An anchor is the clinical concept nearest the value in the same clause (a
drug, a lab, a vital sign, a procedure), else the nearest content word: so
"metformin 500 mg" and "500 mg of Glucophage" both say "metformin: 500 mg".
"""

from __future__ import annotations

from dataclasses import dataclass

from services.memory.text import STOPWORDS, Analysis, Token

SIDES = {"left": "left", "right": "right", "bilateral": "bilateral", "both": "bilateral"}
# Body parts that take a side; the anchor of a laterality when one is near.
ANATOMY = frozenset(
    [
        "knee",
        "hip",
        "shoulder",
        "elbow",
        "wrist",
        "ankle",
        "foot",
        "feet",
        "leg",
        "arm",
        "hand",
        "finger",
        "toe",
        "thumb",
        "eye",
        "ear",
        "lung",
        "kidney",
        "breast",
        "ovary",
        "testicle",
        "flank",
        "chest",
        "thigh",
        "calf",
        "shin",
        "heel",
        "forearm",
        "groin",
        "buttock",
        "jaw",
        "temple",
        "cheek",
        "nostril",
        "lobe",
        "ventricle",
        "atrium",
        "carotid",
        "femoral",
        "radial",
        "humerus",
        "femur",
        "tibia",
        "fibula",
        "clavicle",
        "rib",
    ]
)
# Findings that are asserted or denied ("no allergy", "denies pain"), besides
# the vocabulary's conditions and findings. Polarity is read for these only:
# in "no known allergy to latex" the allergy is denied, not the latex.
FINDINGS = frozenset(
    [
        "allergy",
        "pain",
        "ache",
        "swelling",
        "rash",
        "bleeding",
        "infection",
        "symptom",
        "complication",
        "tenderness",
        "numbness",
        "weakness",
        "injury",
        "fracture",
        "reaction",
    ]
)
FINDING_CATEGORIES = frozenset({"condition", "finding"})
# Words that open a negation's scope (lower-cased, as written).
PRE_NEGATIONS = frozenset(
    [
        "no",
        "not",
        "never",
        "denies",
        "denied",
        "deny",
        "denying",
        "without",
        "neither",
        "nor",
        "cannot",
    ]
)
# Phrases that open one when followed by the second word.
PRE_NEGATION_PAIRS = frozenset({("negative", "for"), ("free", "of"), ("absence", "of")})
# Words that negate what came just before them ("fever absent").
POST_NEGATIONS = frozenset(["absent", "denied", "negative", "none", "excluded"])
# Cues that do not negate what follows ("no change in dose", "not only").
PSEUDO_NEGATIONS = frozenset(
    {("no", "change"), ("no", "further"), ("not", "only"), ("no", "increase"), ("no", "new")}
)
# Words that end a negation's scope inside a clause.
SCOPE_ENDS = frozenset(
    ["but", "however", "although", "though", "except", "yet", "whereas", "while"]
)
PRE_SCOPE = 5  # content tokens a pre-negation reaches
POST_SCOPE = 3  # tokens a post-negation reaches back


@dataclass(frozen=True)
class Fact:
    """One statement: `kind` of `anchor` has `value` (unit-normalised).

    kind: quantity | frequency | date | laterality | polarity. `unit` is the
    canonical unit of a quantity ("" for others). `text` is the words.
    """

    kind: str
    anchor: str
    value: object
    unit: str
    text: str


def _is_content(token: Token) -> bool:
    if token.kind == "concept":
        return True
    return (
        token.kind == "word"
        and token.norm not in STOPWORDS
        and token.raw.lower() not in PRE_NEGATIONS
        and token.raw.lower() not in POST_NEGATIONS
        and token.norm not in SIDES
        and len(token.norm) > 2
    )


def _anchor(tokens: list[Token], at: int, *, prefer_anatomy: bool = False) -> str:
    """The concept (else content word, else body part) nearest tokens[at] in its clause."""
    clause = tokens[at].clause
    best: tuple[float, str] | None = None
    for offset in range(1, len(tokens)):
        for index, penalty in ((at - offset, 0.0), (at + offset, 0.5)):
            if not 0 <= index < len(tokens) or tokens[index].clause != clause:
                continue
            token = tokens[index]
            if prefer_anatomy:
                wanted = token.kind == "word" and token.norm in ANATOMY
            else:
                wanted = token.kind == "concept"
            if wanted and (best is None or offset + penalty < best[0]):
                best = (offset + penalty, token.norm)
        if best is not None:
            return best[1]
    for offset in range(1, 4):  # no concept in the clause: the nearest content word
        for index in (at - offset, at + offset):
            if 0 <= index < len(tokens) and tokens[index].clause == clause:
                token = tokens[index]
                if _is_content(token):
                    return token.norm
    return ""


def _number_unit(tokens: list[Token], at: int) -> str:
    """A quantity's unit; for a bare number the counted word ("2 tablets" -> "tablet")."""
    token = tokens[at]
    if token.unit:
        return token.unit
    following = tokens[at + 1] if at + 1 < len(tokens) else None
    if following is not None and following.clause == token.clause and _is_content(following):
        return following.norm
    return ""


def _negated_positions(tokens: list[Token]) -> set[int]:
    """Positions of tokens inside a negation's scope."""
    negated: set[int] = set()
    for i, token in enumerate(tokens):
        word = token.raw.lower()
        following = tokens[i + 1].raw.lower() if i + 1 < len(tokens) else ""
        if (word, following.split(" ")[0]) in PSEUDO_NEGATIONS:
            continue
        opens = token.kind == "word" and (
            word in PRE_NEGATIONS or (word, following) in PRE_NEGATION_PAIRS
        )
        if opens:
            reached = 0
            for j in range(i + 1, len(tokens)):
                other = tokens[j]
                if other.clause != token.clause or other.raw.lower() in SCOPE_ENDS:
                    break
                negated.add(j)
                if _is_content(other):
                    reached += 1
                    if reached >= PRE_SCOPE:
                        break
        if token.kind == "word" and word in POST_NEGATIONS:
            for j in range(max(0, i - POST_SCOPE), i):
                if tokens[j].clause == token.clause:
                    negated.add(j)
    return negated


def extract(analysis: Analysis) -> list[Fact]:
    tokens = analysis.tokens
    facts: list[Fact] = []
    for i, token in enumerate(tokens):
        if token.kind == "num":
            unit = _number_unit(tokens, i)
            anchor = _anchor(tokens, i)
            if anchor == unit:  # "2 tablets": the counted thing is not what it measures
                anchor = _anchor(tokens, i + 1)
            facts.append(Fact("quantity", anchor, token.value, unit, token.raw))
        elif token.kind == "freq":
            facts.append(Fact("frequency", _anchor(tokens, i), token.value, "", token.raw))
        elif token.kind == "date":
            facts.append(Fact("date", _anchor(tokens, i), token.value, "", token.raw))
        elif token.kind == "word" and token.norm in SIDES:
            anchor = _anchor(tokens, i, prefer_anatomy=True)
            facts.append(Fact("laterality", anchor, SIDES[token.norm], "", token.raw))
    negated = _negated_positions(tokens)
    polarity: dict[str, set[bool]] = {}
    words: dict[str, str] = {}
    for i, token in enumerate(tokens):
        finding = token.category in FINDING_CATEGORIES or (
            token.kind == "word" and token.norm in FINDINGS
        )
        if finding:
            polarity.setdefault(token.norm, set()).add(i not in negated)
            words.setdefault(token.norm, token.raw)
    for term, values in polarity.items():
        if len(values) == 1:  # stated both ways in one memory: no single polarity
            facts.append(Fact("polarity", term, next(iter(values)), "", words[term]))
    return facts


def entities(analysis: Analysis) -> frozenset[str]:
    """What a memory is about: its clinical concepts and the body parts it names."""
    return frozenset(
        t.norm
        for t in analysis.tokens
        if t.kind == "concept" or (t.kind == "word" and t.norm in ANATOMY)
    )
