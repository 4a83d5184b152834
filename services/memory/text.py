"""Reading a memory's words the same way however they were written.

Clinical notes say one thing many ways: "metformin 500mg BID", "Glucophage
500 milligrams twice a day", "HTN" and "high blood pressure". Comparing
memories (near-duplicates, contradictions, cluster labels) needs them read
alike, so `analyse` turns a text into a sequence of normalised tokens:

* dates in any common format become one `date` token ("2024-03-05"),
* numbers are parsed, with their unit normalised and converted to a
  canonical unit (1 g -> 1000 mg, 176 lb -> 79.8 kg, 98.6 F -> 37 C),
* dosing frequencies ("twice daily", "BID", "q12h") become a `freq` token
  holding doses per day,
* clinical concepts of the shipped vocabulary (the one search uses) become
  one `concept` token under the concept's name, so brands, abbreviations and
  lay terms meet ("Zestril" -> lisinopril, "HTN" -> hypertension),
* shorthand is expanded ("pt" -> patient, "lt" -> left), other words are
  lower-cased and lightly stemmed.

Tokens remember their clause (sentence or ';'-separated part), which bounds
the reach of negations and of the facts `facts.py` reads from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from services.kernel.retrieval.stopwords import STOPWORDS
from services.kernel.retrieval.vocabulary import Vocabulary, shipped
from services.memory.lexicon import (
    ABBREVIATIONS,
    COUNT_WORDS,
    DERIVATIONS,
    FREQUENCY_WORDS,
    MONTHS,
    NEGATION_CUES,
    NUMBER_WORDS,
    PERIOD_PER_DAY,
    UNIT_PHRASES,
    UNITS,
    Unit,
)

__all__ = ["STOPWORDS", "Analysis", "Token", "analyse", "canonical", "stem"]


_DATE_PATTERNS = (
    # 2024-03-05
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), ("y", "m", "d")),
    # 03/05/2024 (read as month/day/year)
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"), ("m", "d", "y")),
    # March 5, 2024 / Mar 5th 2024
    (
        re.compile(r"\b([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b"),
        ("M", "d", "y"),
    ),
    # 5 March 2024 / 5th of March, 2024
    (
        re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?([A-Za-z]{3,9})\.?,?\s+(\d{4})\b"),
        ("d", "M", "y"),
    ),
    # March 2024
    (re.compile(r"\b([A-Za-z]{3,9})\.?\s+(\d{4})\b"), ("M", "y")),
)
_TOKEN = re.compile(
    r"(?P<date>\x00\d+\x00)"
    r"|(?P<num>\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?)(?P<unit>%|[a-zA-Zµ°]+(?:/[a-zA-Z]+)?)?"
    r"|(?P<word>[A-Za-zµ°][A-Za-z0-9]*(?:[/'][A-Za-z]+)?\.?)"
    r"|(?P<pct>%)|(?P<slash>/)|(?P<dash>-)|(?P<stop>[.;:!?\n])|(?P<comma>,)"
)


@dataclass(frozen=True)
class Token:
    """One normalised token.

    kind: word | concept | num | date | freq. `norm` is what comparisons
    use; `value` the parsed value (num: float or (a, b); date: (y, m, d)
    with 0 for missing parts; freq: doses per day); `unit` a num's canonical
    unit ("" when none); `raw` the words as written; `clause` the clause.
    """

    kind: str
    norm: str
    raw: str
    clause: int
    position: int
    value: object = None
    unit: str = ""
    category: str = ""  # a concept's vocabulary category (medication, lab, ...)


@dataclass
class Analysis:
    text: str
    tokens: list[Token] = field(default_factory=list)

    def content(self) -> list[str]:
        """The tokens that carry meaning, as comparable strings (stopwords left out)."""
        return [
            "neg" if t.kind == "word" and t.raw.lower() in NEGATION_CUES else t.norm
            for t in self.tokens
            if not (t.kind == "word" and t.norm in STOPWORDS)
        ]

    def subject(self) -> list[str]:
        """The content tokens minus the values (numbers, dates, frequencies, sides, negations).

        Two memories with the same subject and different values state the
        same fact differently: that is a contradiction, not a new fact.
        """
        return [
            t.norm
            for t in self.tokens
            if t.kind in ("word", "concept")
            and t.norm not in STOPWORDS
            and t.norm not in ("left", "right", "bilateral")
            and t.raw.lower() not in NEGATION_CUES
        ]


def stem(word: str) -> str:
    """A light suffix stripper: enough to meet plurals and tenses, never a dictionary."""
    if len(word) <= 4 or not word.isalpha():
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _mark_dates(text: str) -> tuple[str, list[tuple[int, int, int]]]:
    """Replace dates by \\x00k\\x00 markers; returns the text and the dates (y, m, d)."""
    found: list[tuple[int, int, int]] = []

    def parse(parts: tuple[str, ...], order: tuple[str, ...]) -> tuple[int, int, int] | None:
        values = {"y": 0, "m": 0, "d": 0}
        for part, kind in zip(parts, order, strict=True):
            if kind == "M":
                month = MONTHS.get(part.lower())
                if month is None:
                    return None
                values["m"] = month
            else:
                values[kind] = int(part)
        y, m, d = values["y"], values["m"], values["d"]
        if not 1800 <= y <= 2200 or not 0 <= m <= 12 or not 0 <= d <= 31:
            return None
        return y, m, d

    for pattern, order in _DATE_PATTERNS:

        def replace(match: re.Match[str], order: tuple[str, ...] = order) -> str:
            date = parse(match.groups(), order)
            if date is None:
                return match.group(0)
            found.append(date)
            return f" \x00{len(found) - 1}\x00 "

        text = pattern.sub(replace, text)
    return text, found


def _number(text: str) -> object:
    text = text.replace(",", "")
    if "/" in text:
        a, b = text.split("/", 1)
        return (float(a), float(b))
    return float(text)


@dataclass
class _Raw:
    kind: str  # word | num | date | break
    text: str
    value: object = None
    unit: str = ""


def _raw_tokens(text: str) -> list[_Raw]:
    marked, dates = _mark_dates(text)
    out: list[_Raw] = []
    for match in _TOKEN.finditer(marked):
        if match["date"]:
            date = dates[int(match["date"].strip("\x00"))]
            out.append(_Raw("date", "-".join(f"{p:02d}" for p in date if p), date))
        elif match["num"]:
            out.append(_Raw("num", match["num"], _number(match["num"])))
            if match["unit"]:
                out.append(_Raw("word", match["unit"]))
        elif match["word"]:
            word = match["word"]
            lowered = word.lower()
            if lowered.rstrip(".") in ABBREVIATIONS or lowered in ABBREVIATIONS:
                expansion = ABBREVIATIONS.get(lowered, ABBREVIATIONS.get(lowered.rstrip("."), ""))
                out.extend(_Raw("word", w) for w in expansion.split())
                continue
            if word.endswith(".") and lowered.rstrip(".") not in UNITS:
                out.append(_Raw("word", word.rstrip(".")))
                out.append(_Raw("break", "."))
                continue
            out.append(_Raw("word", word.rstrip(".")))
        elif match["pct"]:
            out.append(_Raw("word", "%"))
        elif match["slash"]:
            out.append(_Raw("word", "/"))
        elif match["stop"]:
            out.append(_Raw("break", match["stop"]))
        elif match["comma"]:
            out.append(_Raw("comma", ","))
    # A year on its own ("diagnosed in 2015") is a date, not a quantity.
    for i, raw in enumerate(out):
        if raw.kind == "num" and isinstance(raw.value, float) and raw.text.isdigit():
            following = out[i + 1].text.lower() if i + 1 < len(out) else ""
            if 1900 <= raw.value <= 2100 and following not in UNITS and len(raw.text) == 4:
                out[i] = _Raw("date", raw.text, (int(raw.value), 0, 0))
    return out


@cache
def _unit_phrases_by_first_word() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """UNIT_PHRASES grouped by their first word, each group in UNIT_PHRASES order."""
    index: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for words, unit in UNIT_PHRASES:
        index.setdefault(words[0], []).append((tuple(words), unit))
    return index


def _join_units(raws: list[_Raw]) -> list[_Raw]:
    """Multi-word units ("mm Hg", "beats per minute") become one word.

    Only the phrases starting with the current word are tried (in
    UNIT_PHRASES order, so the first listed match still wins): analysis runs
    on every memory of a consolidation and every sentence of a merge.
    """
    by_first = _unit_phrases_by_first_word()
    out: list[_Raw] = []
    i = 0
    while i < len(raws):
        for words, unit in by_first.get(raws[i].text.lower(), ()):
            span = raws[i : i + len(words)]
            if len(span) == len(words) and all(
                r.text.lower() == w for r, w in zip(span, words, strict=True)
            ):
                out.append(_Raw("word", unit))
                i += len(words)
                break
        else:
            out.append(raws[i])
            i += 1
    return out


def _frequency(raws: list[_Raw], i: int) -> tuple[float, int] | None:
    """Doses per day of a frequency phrase starting at raws[i], and its length."""

    def word(k: int) -> str:
        return raws[k].text.lower() if k < len(raws) and raws[k].kind == "word" else ""

    first = word(i)
    if first in FREQUENCY_WORDS:
        return FREQUENCY_WORDS[first], 1
    # q12h / q8h / q4-6h
    match = re.fullmatch(r"q(\d+)h", first)
    if match and int(match[1]) > 0:
        return 24 / int(match[1]), 1
    count = COUNT_WORDS.get(first)
    if count is None and (first in NUMBER_WORDS or (i < len(raws) and raws[i].kind == "num")):
        times = word(i + 1)
        if times in ("times", "x"):
            raw_count = raws[i].value if raws[i].kind == "num" else NUMBER_WORDS[first]
            count = float(raw_count) if isinstance(raw_count, float) else None
            if count is not None:
                i += 1
    if count is not None:
        rest = [word(i + 1), word(i + 2)]
        if rest[0] in ("a", "per", "each", "every") and rest[1] in PERIOD_PER_DAY:
            length = 3 + (1 if word(i) in ("times", "x") and first not in COUNT_WORDS else 0)
            return count * PERIOD_PER_DAY[rest[1]], length
        if rest[0] in ("daily", "nightly", "weekly"):
            per = {"daily": 1.0, "nightly": 1.0, "weekly": 1 / 7}[rest[0]]
            length = 2 + (1 if word(i) in ("times", "x") and first not in COUNT_WORDS else 0)
            return count * per, length
    # every 12 hours / every other day / every morning
    if first == "every":
        second = word(i + 1)
        if second == "other" and word(i + 2) == "day":
            return 0.5, 3
        if second in ("day", "morning", "evening", "night"):
            return 1.0, 2
        if second == "week":
            return 1 / 7, 2
        if i + 1 < len(raws) and raws[i + 1].kind == "num" and word(i + 2) in ("hours", "hour"):
            value = raws[i + 1].value
            if isinstance(value, float) and value > 0:
                return 24 / value, 3
    if first == "at" and word(i + 1) in ("bedtime", "night"):
        return 1.0, 2
    if (
        first in ("in", "each", "every")
        and word(i + 1) == "the"
        and word(i + 2)
        in (
            "morning",
            "evening",
        )
    ):
        return 1.0, 3
    return None


@cache
def _vocabulary() -> Vocabulary:
    return shipped()


def analyse(text: str) -> Analysis:
    raws = _join_units(_raw_tokens(text))
    tokens: list[Token] = []
    clause = 0
    i = 0
    words: list[tuple[int, _Raw]] = []  # (index in raws) of word tokens, for concept lookup
    for index, raw in enumerate(raws):
        if raw.kind == "word":
            words.append((index, raw))
    concept_at: dict[int, tuple[int, str, str]] = {}  # raw index -> (end, concept, category)
    lowered = [re.sub(r"[^a-z0-9]", "", r.text.lower()) for _, r in words]
    original = [re.sub(r"[^A-Za-z0-9]", "", r.text) for _, r in words]
    for match in _vocabulary().find(lowered, original):
        # Only spans of adjacent raw tokens (no number or break inside).
        start_index = words[match.start][0]
        end_index = words[match.end - 1][0]
        if end_index - start_index == match.end - match.start - 1:
            concept_at[start_index] = (
                end_index + 1,
                match.concept.name.lower(),
                match.concept.category,
            )
    while i < len(raws):
        raw = raws[i]
        position = len(tokens)
        if raw.kind == "break":
            clause += 1
            i += 1
            continue
        if raw.kind == "comma":
            i += 1
            continue
        frequency = _frequency(raws, i)
        if frequency is not None:
            per_day, length = frequency
            words_used = " ".join(r.text for r in raws[i : i + length])
            tokens.append(Token("freq", f"freq:{per_day:g}", words_used, clause, position, per_day))
            i += length
            continue
        if i in concept_at:
            end, name, category = concept_at[i]
            words_used = " ".join(r.text for r in raws[i:end])
            tokens.append(Token("concept", name, words_used, clause, position, category=category))
            i = end
            continue
        if raw.kind == "date":
            tokens.append(Token("date", f"date:{raw.text}", raw.text, clause, position, raw.value))
            i += 1
            continue
        if raw.kind == "num":
            unit_raw = raws[i + 1].text.lower() if i + 1 < len(raws) else ""
            unit = (
                UNITS.get(unit_raw) if raws[i + 1 : i + 2] and raws[i + 1].kind == "word" else None
            )
            value = raw.value
            if unit is not None:
                value = _convert(value, unit)
            norm_unit = unit.canonical if unit else ""
            tokens.append(
                Token(
                    "num",
                    f"num:{_show(value)}",
                    raw.text + (f" {unit_raw}" if unit else ""),
                    clause,
                    position,
                    value,
                    norm_unit,
                )
            )
            i += 2 if unit is not None else 1
            continue
        word = raw.text.lower()
        if word in ("/", "-"):
            i += 1
            continue
        tokens.append(Token("word", stem(DERIVATIONS.get(word, word)), raw.text, clause, position))
        i += 1
    return Analysis(text, tokens)


def _convert(value: object, unit: Unit) -> object:
    if isinstance(value, tuple):
        return tuple(round(v * unit.factor + unit.offset, 6) for v in value)
    assert isinstance(value, float)
    return round(value * unit.factor + unit.offset, 6)


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "/".join(f"{v:g}" for v in value)
    return f"{value:g}"


_FREQUENCY_NAMES = {1.0: "once daily", 2.0: "twice daily", 3.0: "three times daily"}


def canonical(text: str) -> str:
    """The text rewritten in one wording: concept names, ISO dates, canonical units
    and frequencies, shorthand expanded. Embeddings of two wordings of the same
    fact are closer this way ("HTN since 2003" vs "high blood pressure since 2003")."""
    parts: list[str] = []
    clause = 0
    for token in analyse(text).tokens:
        if token.clause != clause and parts:
            parts[-1] += "."
        clause = token.clause
        if token.kind == "concept":
            parts.append(token.norm)
        elif token.kind == "date":
            parts.append(token.norm.removeprefix("date:"))
        elif token.kind == "freq":
            per_day = float(token.value) if isinstance(token.value, float) else 0.0
            parts.append(_FREQUENCY_NAMES.get(per_day, f"{per_day:g} times a day"))
        elif token.kind == "num":
            parts.append(f"{token.norm.removeprefix('num:')} {token.unit}".strip())
        else:
            parts.append(token.raw.lower())
    return " ".join(parts)
