"""The word lists and unit tables the memory text analyser reads.

Plain data: clinical shorthand, word forms of the same finding, negation
cues, month names, units with their canonical unit and conversion, and the
ways dosing frequencies are written. `text.py` holds the code that uses
them; the stopwords are the platform's (kernel/retrieval/stopwords.py).
"""

from __future__ import annotations

from dataclasses import dataclass

# Clinical shorthand -> the words it stands for (case-insensitive, whole tokens).
ABBREVIATIONS: dict[str, str] = {
    "pt": "patient",
    "pts": "patients",
    "hx": "history",
    "dx": "diagnosis",
    "rx": "prescription",
    "tx": "treatment",
    "sx": "symptoms",
    "yo": "year old",
    "y/o": "year old",
    "lt": "left",
    "rt": "right",
    "bilat": "bilateral",
    "b/l": "bilateral",
    "w/": "with",
    "w/o": "without",
    "c/o": "complains of",
    "s/p": "status post",
    "nkda": "no known drug allergies",
    "nka": "no known allergies",
    "hrs": "hours",
    "hr.": "hour",
    "wks": "weeks",
    "wk": "week",
    "mos": "months",
    "yrs": "years",
    "approx": "approximately",
    "f/u": "follow up",
    "appt": "appointment",
    "meds": "medications",
    "med": "medication",
}

# Word forms that mean the same finding ("allergic to" = "allergy to").
DERIVATIONS: dict[str, str] = {
    "allergic": "allergy",
    "allergies": "allergy",
    "painful": "pain",
    "aching": "ache",
    "swollen": "swelling",
}
# Negation cues, read alike for comparing wordings ("no", "denies", "never").
NEGATION_CUES = frozenset(
    [
        "no",
        "not",
        "never",
        "denies",
        "denied",
        "deny",
        "denying",
        "without",
        "none",
        "nor",
        "neither",
    ]
)

MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}


@dataclass(frozen=True)
class Unit:
    canonical: str
    factor: float
    offset: float = 0.0


# Unit spellings -> canonical unit and conversion (value * factor + offset).
UNITS: dict[str, Unit] = {
    **dict.fromkeys(("mg", "mgs", "milligram", "milligrams"), Unit("mg", 1.0)),
    **dict.fromkeys(("g", "gm", "gram", "grams"), Unit("mg", 1000.0)),
    **dict.fromkeys(("mcg", "ug", "µg", "microgram", "micrograms"), Unit("mg", 0.001)),
    **dict.fromkeys(("kg", "kgs", "kilogram", "kilograms", "kilo", "kilos"), Unit("kg", 1.0)),
    **dict.fromkeys(("lb", "lbs", "pound", "pounds"), Unit("kg", 0.45359237)),
    **dict.fromkeys(("ml", "mls", "milliliter", "milliliters", "cc"), Unit("ml", 1.0)),
    **dict.fromkeys(("l", "liter", "liters", "litre", "litres"), Unit("ml", 1000.0)),
    **dict.fromkeys(("unit", "units", "u", "iu"), Unit("unit", 1.0)),
    **dict.fromkeys(("%", "percent", "pct"), Unit("%", 1.0)),
    **dict.fromkeys(("mmhg",), Unit("mmhg", 1.0)),
    **dict.fromkeys(("bpm",), Unit("bpm", 1.0)),
    **dict.fromkeys(("mg/dl",), Unit("mg/dl", 1.0)),
    **dict.fromkeys(("mmol/l",), Unit("mmol/l", 1.0)),
    **dict.fromkeys(("c", "°c", "celsius"), Unit("c", 1.0)),
    **dict.fromkeys(("f", "°f", "fahrenheit"), Unit("c", 5 / 9, -32 * 5 / 9)),
    **dict.fromkeys(("cm", "centimeter", "centimeters"), Unit("cm", 1.0)),
    **dict.fromkeys(("mm",), Unit("cm", 0.1)),
    **dict.fromkeys(("day", "days"), Unit("day", 1.0)),
    **dict.fromkeys(("week", "weeks"), Unit("day", 7.0)),
    **dict.fromkeys(("month", "months"), Unit("day", 30.0)),
    **dict.fromkeys(("year", "years"), Unit("year", 1.0)),
    **dict.fromkeys(("hour", "hours"), Unit("hour", 1.0)),
    **dict.fromkeys(("minute", "minutes", "min", "mins"), Unit("minute", 1.0)),
}
# Multi-word unit spellings, joined before unit lookup.
UNIT_PHRASES = (
    (("mm", "hg"), "mmhg"),
    (("beats", "per", "minute"), "bpm"),
    (("mg", "/", "dl"), "mg/dl"),
    (("mmol", "/", "l"), "mmol/l"),
    (("degrees", "celsius"), "celsius"),
    (("degrees", "fahrenheit"), "fahrenheit"),
)

# Dosing frequencies -> doses per day. Single shorthand tokens and phrases.
FREQUENCY_WORDS: dict[str, float] = {
    "qd": 1.0,
    "od": 1.0,
    "daily": 1.0,
    "nightly": 1.0,
    "qhs": 1.0,
    "qam": 1.0,
    "qpm": 1.0,
    "bid": 2.0,
    "tid": 3.0,
    "qid": 4.0,
    "weekly": 1 / 7,
    "biweekly": 1 / 14,
    "monthly": 1 / 30,
    "qod": 0.5,
}
COUNT_WORDS = {"once": 1.0, "twice": 2.0, "thrice": 3.0}
NUMBER_WORDS = {
    "one": 1.0,
    "two": 2.0,
    "three": 3.0,
    "four": 4.0,
    "five": 5.0,
    "six": 6.0,
    "eight": 8.0,
    "twelve": 12.0,
}
PERIOD_PER_DAY = {"day": 1.0, "daily": 1.0, "week": 1 / 7, "month": 1 / 30, "night": 1.0}
