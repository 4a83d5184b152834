"""Progress lines for long evaluations, readable on a terminal and in a CI log."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    """One status line: rewritten each second on a terminal, a new line every 30 s in a log."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._every = 1.0 if self._tty else 30.0
        self._started = time.monotonic()
        self._shown = 0.0

    def show(self, line: str, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < self._every:
            return
        self._shown = now
        text = f"  {line} [{now - self._started:,.0f} s]"
        self._out.write(f"\r{text}   " if self._tty else f"{text}\n")
        if final and self._tty:
            self._out.write("\n")
        self._out.flush()
