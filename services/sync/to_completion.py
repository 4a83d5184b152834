"""Database calls that finish even when the stream that made them is cancelled.

A Watch or Collaborate client can disconnect at any moment, which cancels the
coroutine serving it. Cancelled in the middle of an aiosqlite transaction, a
coroutine can leave its connection holding SQLite's write lock (the rollback
never runs), and every writer of the process then waits for it. So the sync
service runs each of its database calls in a task of its own and only stops
*waiting* for it on cancellation: the call still commits or rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def to_completion(call: Coroutine[Any, Any, T]) -> T:
    task = asyncio.ensure_future(call)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Nobody may await a task its caller abandoned: consume its outcome here."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.exception()
