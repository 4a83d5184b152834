"""An agent's memories are its own on every path that touches records (issue 20, finding 1).

MemoryService already kept agent A out of agent B's memories; RecordService,
its FHIR export, its change feed and SyncService only checked read:memory /
write:memory. The owner rule now lives once in the kernel's access policy
and holds on each of them; an administrator still reaches every memory.
"""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from hacs.records.v1 import memory_block_pb2, record_pb2
from hacs.records.v1 import record_service_pb2 as pb

from services.common.permissions import default_permissions
from tests.integration.test_records_service import Records, code_of
from tests.support import clinical
from tests.support.harness import Harness, NewTenant
from tests.support.sync import SyncClient, WatchLog, read_until

MB = record_pb2.RESOURCE_TYPE_MEMORY_BLOCK


def memory(agent: str, content: str, patient: str = "") -> record_pb2.Record:
    block = memory_block_pb2.MemoryBlock(
        memory_type=memory_block_pb2.MEMORY_TYPE_EPISODIC, content=content, agent=agent
    )
    if patient:
        block.patient = patient
    return record_pb2.Record(memory_block=block)


async def _ward(hacs: Harness) -> tuple[NewTenant, Records, Records, str, str, str]:
    """A tenant, its administrator's and agent A's record clients, A's and B's names, A's token."""
    tenant = await hacs.new_tenant()
    # An agent as the role makes it, that may also read the change feed and soft-delete
    # memories (so that what refuses B's below is the owner rule, not a missing permission).
    allowed = [*default_permissions("agent"), "read:changes", "delete:memory"]
    _, token_a = await hacs.new_actor(tenant, "agent-a", "agent", allowed)
    await hacs.new_actor(tenant, "agent-b", "agent")
    return (
        tenant,
        Records(hacs, tenant),
        Records(hacs, tenant, token_a),
        f"{tenant.name}/actors/agent-a",
        f"{tenant.name}/actors/agent-b",
        token_a,
    )


async def test_another_agents_memory_cannot_be_read_changed_or_listed(hacs: Harness) -> None:
    tenant, admin, agent_a, a, b, _ = await _ward(hacs)
    patient = await admin.create(clinical.patient("Ben"))
    theirs = await admin.create(memory(b, "B's secret about Ben", patient.name))
    mine = await agent_a.create(memory(a, "A's own note"))
    # Reads: not found, as if it did not exist.
    for call in (
        agent_a.stub.GetRecord(pb.GetRecordRequest(name=theirs.name), metadata=agent_a.md),
        agent_a.stub.GetRecord(
            pb.GetRecordRequest(name=theirs.name, version=1), metadata=agent_a.md
        ),
        agent_a.stub.ListRecordHistory(
            pb.ListRecordHistoryRequest(name=theirs.name), metadata=agent_a.md
        ),
        agent_a.stub.ExportFhir(pb.ExportFhirRequest(name=theirs.name), metadata=agent_a.md),
    ):
        assert (await code_of(call)).code() == grpc.StatusCode.NOT_FOUND
    # Writes: not found, nothing written.
    changed = record_pb2.Record(name=theirs.name)
    changed.memory_block.content = "overwritten"
    update = pb.UpdateRecordRequest(
        record=changed, update_mask=FieldMask(paths=["memory_block.content"])
    )
    for call in (
        agent_a.stub.UpdateRecord(update, metadata=agent_a.md),
        agent_a.stub.DeleteRecord(pb.DeleteRecordRequest(name=theirs.name), metadata=agent_a.md),
    ):
        assert (await code_of(call)).code() == grpc.StatusCode.NOT_FOUND
    assert (await admin.get(theirs.name)).memory_block.content == "B's secret about Ben"
    # Planting a memory in B's name, or handing one's own to B: refused.
    planted = await code_of(agent_a.stub.CreateRecord(
        pb.CreateRecordRequest(parent=tenant.name, record=memory(b, "planted")),
        metadata=agent_a.md,
    ))  # fmt: skip
    assert planted.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "memory_block.agent" in (planted.details() or "")
    handed = record_pb2.Record(name=mine.name)
    handed.memory_block.agent = b
    handover = pb.UpdateRecordRequest(
        record=handed, update_mask=FieldMask(paths=["memory_block.agent"])
    )
    assert (
        await code_of(agent_a.stub.UpdateRecord(handover, metadata=agent_a.md))
    ).code() == grpc.StatusCode.PERMISSION_DENIED
    # Lists, the compartment export and the change feed carry only A's own memories.
    listed = await agent_a.list(resource_types=[MB])
    assert [r.name for r in listed.records] == [mine.name]
    assert {r.name for r in (await admin.list(resource_types=[MB])).records} == {
        mine.name,
        theirs.name,
    }
    export = await agent_a.stub.ExportFhir(
        pb.ExportFhirRequest(patient=patient.name), metadata=agent_a.md
    )
    assert "B's secret" not in export.fhir_json
    assert len(json.loads(export.fhir_json)["entry"]) == 1  # the patient alone
    changes = await agent_a.changes(resource_types=[MB])
    assert {c.name for c in changes.changes} == {mine.name}
    assert changes.next_after_sequence == changes.head_sequence


async def test_a_fhir_import_cannot_write_another_agents_memory(hacs: Harness) -> None:
    tenant, admin, agent_a, _, b, _ = await _ward(hacs)
    theirs = await admin.create(memory(b, "B's"), record_id="m-b")
    exported = await admin.stub.ExportFhir(
        pb.ExportFhirRequest(name=theirs.name), metadata=admin.md
    )
    resource = json.loads(exported.fhir_json)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": resource, "request": {"method": "PUT", "url": "Basic/m-b"}}],
    }
    refused = await code_of(agent_a.stub.ImportFhirBundle(
        pb.ImportFhirBundleRequest(parent=tenant.name, bundle_json=json.dumps(bundle)),
        metadata=agent_a.md,
    ))  # fmt: skip
    assert refused.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    assert (await admin.get(theirs.name)).version == 1


@pytest.mark.parametrize("include_records", [False, True])
async def test_a_watch_streams_only_the_callers_own_memories(
    hacs: Harness, include_records: bool
) -> None:
    tenant, admin, agent_a, a, b, token_a = await _ward(hacs)
    theirs = await admin.create(memory(b, "B's private memory"))
    mine = await agent_a.create(memory(a, "A's memory"))
    watcher = SyncClient(hacs.channel, tenant, token_a)
    stream = watcher.watch(earliest=True, include_records=include_records, resource_types=[MB])
    log = await read_until(stream, WatchLog(), caught_up=True)
    # Live, too: B's next memory does not reach A's stream, A's next one does.
    await admin.create(memory(b, "B again"))
    later = await agent_a.create(memory(a, "A again"))
    await read_until(stream, log, changes=len(log.changes) + 1)
    stream.cancel()
    names = [c.change.name for c in log.changes]
    assert names == [mine.name, later.name]
    assert theirs.name not in names
    if include_records:
        assert all(c.record.memory_block.agent == a for c in log.changes)
