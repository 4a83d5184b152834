"""A readers-writer lock for threads: many readers at once, or one writer.

Writers go first: once a writer waits, new readers wait behind it (a steady
stream of searches cannot starve the catch-up that they all need). A writer
can turn into a reader without letting another writer in between
(`downgrade`), so what it just wrote is what it reads.
"""

from __future__ import annotations

import threading


class ReadWriteLock:
    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._changed:
            while self._writing or self._writers_waiting:
                self._changed.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._changed:
            self._readers -= 1
            if self._readers == 0:
                self._changed.notify_all()

    def acquire_write(self) -> None:
        with self._changed:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._changed.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True

    def release_write(self) -> None:
        with self._changed:
            self._writing = False
            self._changed.notify_all()

    def downgrade(self) -> None:
        """Writer -> reader, atomically."""
        with self._changed:
            self._writing = False
            self._readers += 1
            self._changed.notify_all()
