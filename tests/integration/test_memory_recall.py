"""Recall's signals end to end: passages, conversation context, named times, history rows.

Same platform as test_memory_service.py (its module fixture, imported), each
test in its own tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hacs.memory.v1 import memory_service_pb2 as pb
from hacs.memory.v1 import recall_pb2

from services.kernel.retrieval.vector_index import VectorIndex
from services.memory.index_rows import ALL_KINDS, HISTORY, PASSAGE, WHOLE
from tests.integration.test_memory_service import memory, platform, stamp, ward
from tests.support.harness import Harness

__all__ = ["platform"]  # the module fixture, shared

DAY = timedelta(days=1)
T0 = datetime(2023, 5, 8, 13, 0, tzinfo=UTC)


async def vector_index(hacs: Harness) -> VectorIndex:
    assert hacs.server.kernel is not None
    return await hacs.server.kernel.vector_index()


async def rows(hacs: Harness, tenant_id: str, kind: str, name: str) -> int:
    return await (await vector_index(hacs)).count(kind, tenant_id, f'name == "{name}"')


async def test_one_sentence_of_a_long_memory_is_found_by_its_passage(platform: Harness) -> None:
    w = await ward(platform)
    chatty = memory(
        "Thanks for asking! The weather was lovely all week. "
        "I finally got promoted to assistant manager at the warehouse. "
        "The kids are doing great at school and the dog learned a new trick."
    )
    chatty.memory_block.participants.append("John")
    stored, _ = await w.remember(
        w.agent_a, chatty, memory("Maria bought a new bicycle for her commute.")
    )
    tenant = w.tenant.tenant_id
    assert await rows(platform, tenant, WHOLE, stored.name) == 1
    assert await rows(platform, tenant, PASSAGE, stored.name) == 4  # one per sentence
    reply = await w.recall(w.agent_a, "What was John promoted to?", record_access=False)
    assert reply.results[0].memory.name == stored.name


async def test_a_reply_is_recalled_through_the_message_it_answers(platform: Harness) -> None:
    w = await ward(platform)
    question = memory("Maria: How did the kids react at the military memorial last week?")
    [asked] = await w.remember(w.agent_a, question)
    answer = memory("John: They were awestruck and humbled.")
    answer.memory_block.related_memories.append(asked.name)
    unrelated = memory("John: The bakery on the corner sells sourdough on Fridays.")
    [replied, other] = await w.remember(w.agent_a, answer, unrelated)
    reply = await w.recall(
        w.agent_a, "How did John's kids feel at the military memorial?", record_access=False
    )
    ranked = [r.memory.name for r in reply.results]
    assert ranked.index(replied.name) < ranked.index(other.name)
    by_name = {r.memory.name: r.scores for r in reply.results}
    # It inherits share x the cited memory's semantic score when that is higher.
    assert by_name[replied.name].semantic >= 0.75 * by_name[asked.name].semantic - 1e-6


async def test_a_named_day_ranks_memories_from_that_day_first(platform: Harness) -> None:
    w = await ward(platform)
    text = "Melanie showed a new painting of a sunset by the lake."
    early, named, late = await w.remember(
        w.agent_a,
        memory(text, event_time=T0),
        memory(text, event_time=T0 + 30 * DAY),
        memory(text, event_time=T0 + 60 * DAY),
    )
    on = (T0 + 30 * DAY).strftime("%B %-d, %Y")  # "June 7, 2023"
    reply = await w.recall(
        w.agent_a,
        f"What painting did Melanie show on {on}?",
        record_access=False,
        query_time=stamp(T0 + 90 * DAY),
    )
    assert reply.results[0].memory.name == named.name
    assert reply.results[0].scores.recency == pytest.approx(1.0)
    # Without a named time, recency is age at the query time again: the newest first.
    plain = await w.recall(
        w.agent_a,
        "What painting did Melanie show?",
        record_access=False,
        query_time=stamp(T0 + 90 * DAY),
    )
    assert [r.memory.name for r in plain.results] == [late.name, named.name, early.name]


async def test_edits_and_forgetting_move_rows_to_history_and_as_of_still_sees_them(
    platform: Harness,
) -> None:
    w = await ward(platform)
    tenant = w.tenant.tenant_id
    [stored] = await w.remember(w.agent_a, memory("Plan: knee brace at night. Ice twice daily."))
    before = datetime.now(UTC)
    edited = pb.UpdateMemoryRequest(memory=stored)
    edited.memory.memory_block.content = "Plan: physiotherapy twice a week."
    edited.update_mask.paths.append("memory_block.content")
    await w.memory.UpdateMemory(edited, metadata=w.agent_a)
    assert await rows(platform, tenant, HISTORY[WHOLE], stored.name) == 1
    assert await rows(platform, tenant, HISTORY[PASSAGE], stored.name) == 2
    assert await rows(platform, tenant, PASSAGE, stored.name) == 1
    then = await w.recall(w.agent_a, "knee brace", as_of=stamp(before))
    assert then.results[0].memory.memory_block.content.startswith("Plan: knee brace")
    await w.memory.Forget(pb.ForgetRequest(name=stored.name, reason="done"), metadata=w.agent_a)
    assert await rows(platform, tenant, WHOLE, stored.name) == 0
    assert await rows(platform, tenant, PASSAGE, stored.name) == 0
    now = await w.recall(w.agent_a, "physiotherapy", record_access=False)
    assert stored.name not in [r.memory.name for r in now.results]
    counted = 0
    for kind in ALL_KINDS:
        counted += await rows(platform, tenant, kind, stored.name)
    assert counted == 1 + 2 + 1 + 1  # history: two revisions, their passages


async def test_expired_working_memories_are_not_recalled(platform: Harness) -> None:
    w = await ward(platform)
    short = memory("Working note: call pharmacy about the refill.", 5)  # MEMORY_TYPE_WORKING
    short.memory_block.ttl_seconds = 1
    [stored] = await w.remember(w.agent_a, short)
    reply = await w.recall(
        w.agent_a,
        "pharmacy refill",
        record_access=False,
        query_time=stamp(datetime.now(UTC) + timedelta(minutes=5)),
        filter=recall_pb2.MemoryFilter(),
    )
    assert stored.name not in [r.memory.name for r in reply.results]
