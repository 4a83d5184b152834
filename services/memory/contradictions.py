"""Do two memories state different values for the same fact?

Facts (see `facts.py`) are compared per attribute: the kind of fact, its
unit and its anchor ("metformin", mg). For one attribute the two memories
agree when they share at least one value (a memory that tells a dose's
history, "500 mg then 1000 mg", agrees with one that states either) and
contradict when they share none. A memory that does not state the attribute
neither agrees nor contradicts: it is less specific, and merging keeps the
union of facts.

Two memories are about different things — and so neither contradict nor
duplicate each other — when both name clinical concepts or body parts and
none in common ("left knee pain since May" vs "right wrist pain since
June"), or when they disagree on a date *and* on another value: a date
identifies an event, so "BP 150/95 on 19 June" and "BP 140/80 on 23 March"
are two measurements, not a contradiction. Disagreeing on the date alone
("colonoscopy on 12 April" vs "on 14 April") is a contradiction.

When a value's anchor is unknown on one side, it is compared with the other
side's only attribute of that kind and unit, if there is exactly one:
"BP 140/90 mmHg" vs "blood pressure 150/95 mmHg" meet even when one anchor
is missing. Two known, different anchors are different attributes
("metformin 500 mg" and "lisinopril 10 mg" do not disagree).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from services.memory.facts import Fact

TOLERANCE = 1e-3  # relative: unit conversion rounds


@dataclass(frozen=True)
class FactConflict:
    """One attribute on which two memories disagree, with each side's values."""

    attribute: str
    left: tuple[Fact, ...]
    right: tuple[Fact, ...]


def _key(fact: Fact) -> tuple[str, str]:
    return fact.kind, fact.unit


def _same(a: object, b: object) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            return False
        if len(a) == 3 and all(isinstance(p, int) for p in (*a, *b)):  # dates (y, m, d)
            return all(x == y or 0 in (x, y) for x, y in zip(a, b, strict=True))
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= TOLERANCE * max(abs(a), abs(b), 1e-9)
    return a == b


def _by_attribute(facts: list[Fact]) -> dict[tuple[str, str], dict[str, list[Fact]]]:
    grouped: dict[tuple[str, str], dict[str, list[Fact]]] = defaultdict(lambda: defaultdict(list))
    for fact in facts:
        grouped[_key(fact)][fact.anchor].append(fact)
    return grouped


def _resolve_unknown(
    mine: dict[str, list[Fact]], theirs: dict[str, list[Fact]]
) -> dict[str, list[Fact]]:
    """Give anchor-less values the other side's single anchor, when there is one."""
    if "" not in mine:
        return mine
    known = [anchor for anchor in theirs if anchor]
    if len(known) != 1 and not (len(theirs) == 1 and "" in theirs):
        return mine
    target = known[0] if known else ""
    resolved = {anchor: list(values) for anchor, values in mine.items() if anchor}
    resolved.setdefault(target, []).extend(mine[""])
    return resolved


def _attribute(kind: str, unit: str, anchor: str) -> str:
    what = anchor or "value"
    if kind == "quantity":
        return f"{what} ({unit})" if unit else what
    if kind == "polarity":
        return f"{what} (present or absent)"
    return f"{what} {kind}"


def _adopt_units(mine: list[Fact], theirs: list[Fact]) -> list[Fact]:
    """A bare number takes the unit the other memory gives the same anchor ("BP 140/90")."""
    units: dict[str, set[str]] = {}
    for fact in theirs:
        if fact.kind == "quantity" and fact.unit and fact.anchor:
            units.setdefault(fact.anchor, set()).add(fact.unit)
    adopted = []
    for fact in mine:
        if fact.kind == "quantity" and not fact.unit and len(units.get(fact.anchor, ())) == 1:
            fact = Fact(
                fact.kind, fact.anchor, fact.value, next(iter(units[fact.anchor])), fact.text
            )
        adopted.append(fact)
    return adopted


@dataclass(frozen=True)
class Verdict:
    """How two memories' facts relate."""

    conflicts: list[FactConflict]  # contradictions: same subject, different values
    distinct: bool = False  # about different things or events: nothing to merge or report

    @property
    def compatible(self) -> bool:
        return not self.conflicts and not self.distinct


def compare(
    left: list[Fact], right: list[Fact], left_about: frozenset[str], right_about: frozenset[str]
) -> Verdict:
    if left_about and right_about and not left_about & right_about:
        return Verdict([], distinct=True)
    found = conflicts(left, right)
    kinds = {c.left[0].kind for c in found}
    if "date" in kinds and len(kinds) > 1:
        return Verdict([], distinct=True)
    return Verdict(found)


def conflicts(left: list[Fact], right: list[Fact]) -> list[FactConflict]:
    """The attributes both memories state, on which they share no value."""
    found: list[FactConflict] = []
    left, right = _adopt_units(left, right), _adopt_units(right, left)
    a_groups, b_groups = _by_attribute(left), _by_attribute(right)
    for key in sorted(a_groups.keys() & b_groups.keys()):
        kind, unit = key
        a_side = _resolve_unknown(a_groups[key], b_groups[key])
        b_side = _resolve_unknown(b_groups[key], a_groups[key])
        for anchor in sorted(a_side.keys() & b_side.keys()):
            if kind == "polarity" and not anchor:
                continue
            a_values, b_values = a_side[anchor], b_side[anchor]
            if any(_same(x.value, y.value) for x in a_values for y in b_values):
                continue
            found.append(
                FactConflict(_attribute(kind, unit, anchor), tuple(a_values), tuple(b_values))
            )
    return found


def show(fact: Fact) -> str:
    """A fact's value in words, e.g. "500 mg", "2 per day", "left", "absent"."""
    value = fact.value
    if fact.kind == "polarity":
        return "present" if value else "absent"
    if fact.kind == "frequency":
        return f"{value:g} per day" if isinstance(value, float) else str(value)
    if fact.kind == "date" and isinstance(value, tuple):
        return "-".join(f"{p:02d}" for p in value if p)
    if isinstance(value, tuple):
        number = "/".join(f"{v:g}" for v in value)
    elif isinstance(value, float):
        number = f"{value:g}"
    else:
        number = str(value)
    return f"{number} {fact.unit}".strip()
