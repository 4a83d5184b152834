"""The readers-writer lock the lexical engine's searches share an index under."""

from __future__ import annotations

import threading
import time

from services.kernel.retrieval.rwlock import ReadWriteLock


def _started(target: object) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_readers_share_and_a_writer_waits_for_them() -> None:
    lock = ReadWriteLock()
    lock.acquire_read()
    second_reader = threading.Event()
    _started(lambda: (lock.acquire_read(), second_reader.set()))
    assert second_reader.wait(5), "a second reader waited for the first"
    wrote = threading.Event()
    _started(lambda: (lock.acquire_write(), wrote.set()))
    time.sleep(0.2)
    assert not wrote.is_set(), "a writer got in while two readers held the lock"
    lock.release_read()
    time.sleep(0.1)
    assert not wrote.is_set(), "a writer got in while one reader held the lock"
    lock.release_read()
    assert wrote.wait(5)
    lock.release_write()


def test_a_waiting_writer_goes_before_new_readers() -> None:
    lock = ReadWriteLock()
    lock.acquire_read()
    order: list[str] = []
    writer = _started(lambda: (lock.acquire_write(), order.append("writer"), lock.release_write()))
    time.sleep(0.2)  # the writer is waiting now
    reader = _started(lambda: (lock.acquire_read(), order.append("reader"), lock.release_read()))
    time.sleep(0.2)
    assert order == [], "a new reader got in ahead of the waiting writer"
    lock.release_read()
    writer.join(5)
    reader.join(5)
    assert order == ["writer", "reader"]


def test_downgrade_keeps_other_writers_out_and_lets_readers_in() -> None:
    lock = ReadWriteLock()
    lock.acquire_write()
    lock.downgrade()
    read = threading.Event()
    _started(lambda: (lock.acquire_read(), read.set(), lock.release_read()))
    assert read.wait(5), "a reader waited for a downgraded writer"
    wrote = threading.Event()
    _started(lambda: (lock.acquire_write(), wrote.set(), lock.release_write()))
    time.sleep(0.2)
    assert not wrote.is_set(), "a writer got in while the downgraded one still read"
    lock.release_read()
    assert wrote.wait(5)
