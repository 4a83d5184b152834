"""RecordMemoryFeedback: a caller says whether a memory helped; its importance follows.

The adjustment is the documented one in importance.py (reinforce towards 1,
weaken towards 0, or set exactly); INCORRECT also halves the confidence. The
feedback and its comment are written to the audit log with the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from hacs.records.v1 import record_pb2

from services.common.caller import Caller, current_call
from services.common.db.base import utcnow
from services.common.errors import NotFound
from services.kernel.records.access import may_access, require_own_parent
from services.kernel.records.write_plans import Revision
from services.kernel.records.writes import RecordWriter
from services.memory import importance
from services.memory.memories import parse_memory_name


@dataclass(frozen=True)
class FeedbackOutcome:
    record: record_pb2.Record
    previous: float
    importance: float


class FeedbackDesk:
    def __init__(self, writer: RecordWriter) -> None:
        self._writer = writer

    async def record(
        self,
        caller: Caller,
        name_text: str,
        kind: int,
        explicit: float | None,
        comment: str,
        kind_name: str,
    ) -> FeedbackOutcome:
        name = parse_memory_name(name_text)
        require_own_parent(caller, name.tenant_id, "write:memory")
        caller.require("write:memory", str(name))
        state = current_call()
        if state is not None:
            state.details["feedback"] = kind_name
            if comment:
                state.details["comment"] = comment[:1000]
        now = utcnow()
        before: list[float] = []

        def revise(current: record_pb2.Record) -> record_pb2.Record:
            if not may_access(caller, current):
                raise NotFound("MemoryBlock", str(name))
            before.append(importance.effective(current, now))
            return importance.apply_feedback(current, kind, now, explicit)

        paths = ("memory_block.importance_score", "memory_block.confidence_score")
        written = await self._writer.write(
            caller,
            name.tenant_id,
            revisions=[Revision(str(name), revise, paths)],
            revised_field="memory",
            now=now,
        )
        record = written.revised[str(name)]
        return FeedbackOutcome(record, before[0], record.memory_block.importance_score)
