"""Times a query names, and how close a memory's time is to them.

"What did Melanie paint on October 13, 2023?", "What happened in February
2023?": a question that names a day or a month is about memories from then,
whatever their words. The dates are read the way the rest of the service
reads dates (text.analyse: ISO, numeric, "March 5, 2024", "5 March 2024",
"March 2024"), each as the window it spans: a day, or a whole month.

Recall's recency component uses these windows when there are any (see
ranking.recency): a memory inside one scores 1, and the score halves every
half-life of the memory's type beyond its edges, on either side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.memory.text import analyse


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime  # exclusive

    def distance(self, when: datetime) -> timedelta:
        if when < self.start:
            return self.start - when
        if when >= self.end:
            return when - self.end
        return timedelta(0)


def named_windows(query: str) -> tuple[Window, ...]:
    """The days and months the query names, as UTC windows (none for a bare year)."""
    windows: list[Window] = []
    for token in analyse(query).tokens:
        if token.kind != "date" or not isinstance(token.value, tuple):
            continue
        year, month, day = token.value
        if not month:
            continue
        try:
            if day:
                start = datetime(year, month, day, tzinfo=UTC)
                windows.append(Window(start, start + timedelta(days=1)))
            else:
                start = datetime(year, month, 1, tzinfo=UTC)
                end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
                windows.append(Window(start, end))
        except ValueError:  # "February 31": not a day
            continue
    return tuple(dict.fromkeys(windows))
