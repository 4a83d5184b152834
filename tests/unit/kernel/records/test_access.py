"""The one access policy per record type: permissions by type, owners where a type has them."""

from __future__ import annotations

from hacs.records.v1 import memory_block_pb2, observation_pb2, record_pb2

from services.common.caller import Caller
from services.kernel.records.access import may_access, owner_of, sees_every_owner
from services.kernel.records.resource_types import BY_FIELD

A = "tenants/ward/actors/agent-a"
B = "tenants/ward/actors/agent-b"


def memory_of(agent: str) -> record_pb2.Record:
    return record_pb2.Record(memory_block=memory_block_pb2.MemoryBlock(agent=agent, content="x"))


def caller(actor: str, role: str, *permissions: str) -> Caller:
    return Caller("ward", actor, role, frozenset(permissions))


def test_an_agent_reaches_its_own_memories_only() -> None:
    agent_a = caller("agent-a", "agent", "read:memory", "write:memory")
    assert may_access(agent_a, memory_of(A))
    assert not may_access(agent_a, memory_of(B))
    assert not sees_every_owner(agent_a, BY_FIELD["memory_block"])
    assert owner_of(memory_of(B)) == B


def test_admin_memory_and_other_roles_reach_every_agents_memories() -> None:
    supervisor = caller("agent-s", "agent", "admin:memory")
    doctor = caller("dr", "physician", "read:memory")
    assert may_access(supervisor, memory_of(B)) and may_access(doctor, memory_of(B))


def test_types_without_an_owner_are_left_to_their_permissions() -> None:
    agent_a = caller("agent-a", "agent", "read:observation")
    observation = record_pb2.Record(observation=observation_pb2.Observation(status="final"))
    assert owner_of(observation) == "" and may_access(agent_a, observation)
    assert sees_every_owner(agent_a, BY_FIELD["observation"])
