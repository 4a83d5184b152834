"""MemoryService end to end: records store, change log, Milvus Lite, the shipped model.

One platform for the module (the model and Milvus start once); every test
works in its own tenant, so tests do not see each other's memories.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from hacs.memory.v1 import memory_service_pb2 as pb
from hacs.memory.v1 import memory_service_pb2_grpc, recall_pb2
from hacs.records.v1 import memory_block_pb2, record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from services.memory.index_rows import ALL_KINDS
from tests.support.harness import Harness, NewTenant, bearer, make_settings, running_platform

MT = memory_block_pb2.MemoryType
NOW = datetime.now(UTC)


@pytest.fixture(scope="module", params=["milvus-lite", "milvus-server"])
async def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    """On Milvus Lite and on a real Milvus server (Recall must see what Remember wrote the
    moment Remember returns, on both)."""
    root = tmp_path_factory.mktemp("memory")
    overrides = {}
    if request.param == "milvus-server":
        overrides["milvus_uri"] = request.getfixturevalue("milvus_uri")
    settings = make_settings(
        root / "data",
        f"sqlite+aiosqlite:///{root / 'hacs.db'}",
        services="tenant,records,embedding,search,memory",
        indexer_enabled="false",
        **overrides,
    )
    async with running_platform(settings) as harness:
        yield harness


class Ward:
    """A tenant with two agents, a physician and its administrator."""

    def __init__(self, hacs: Harness, tenant: NewTenant) -> None:
        self.hacs = hacs
        self.tenant = tenant
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(hacs.channel)
        self.records = record_service_pb2_grpc.RecordServiceStub(hacs.channel)
        self.admin = bearer(tenant.admin_token)
        self.agent_a: tuple[tuple[str, str]] = self.admin
        self.agent_b: tuple[tuple[str, str]] = self.admin
        self.doctor: tuple[tuple[str, str]] = self.admin

    @property
    def name(self) -> str:
        return self.tenant.name

    def actor(self, actor_id: str) -> str:
        return f"{self.name}/actors/{actor_id}"

    async def patient(self, patient_id: str) -> str:
        record = record_pb2.Record()
        record.patient.full_name = patient_id.title()
        reply = await self.records.CreateRecord(
            rpb.CreateRecordRequest(parent=self.name, record_id=patient_id, record=record),
            metadata=self.admin,
        )
        return reply.record.name

    async def remember(
        self, md: tuple[tuple[str, str]], *blocks: record_pb2.Record, patient: str = ""
    ) -> list[record_pb2.Record]:
        reply = await self.memory.Remember(
            pb.RememberRequest(parent=self.name, memories=list(blocks), patient=patient),
            metadata=md,
        )
        return list(reply.memories)

    async def recall(
        self, md: tuple[tuple[str, str]], query: str, **kw: object
    ) -> pb.RecallResponse:
        return await self.memory.Recall(
            pb.RecallRequest(parent=self.name, query=query, **kw),  # type: ignore[arg-type]
            metadata=md,
        )


async def ward(hacs: Harness) -> Ward:
    tenant = await hacs.new_tenant(limits={"calls_per_minute": 100_000})  # type: ignore[arg-type]
    w = Ward(hacs, tenant)
    w.agent_a = bearer((await hacs.new_actor(tenant, "agent-a", "agent"))[1])
    w.agent_b = bearer((await hacs.new_actor(tenant, "agent-b", "agent"))[1])
    w.doctor = bearer((await hacs.new_actor(tenant, "doctor", "physician"))[1])
    return w


def memory(
    content: str,
    kind: int = MT.MEMORY_TYPE_EPISODIC,
    *,
    tags: tuple[str, ...] = (),
    importance: float | None = None,
    event_time: datetime | None = None,
) -> record_pb2.Record:
    record = record_pb2.Record()
    block = record.memory_block
    block.memory_type = kind  # type: ignore[assignment]
    block.content = content
    block.tags.extend(tags)
    if importance is not None:
        block.importance_score = importance
    if event_time is not None:
        block.event_time.FromDatetime(event_time)
    return record


def stamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


async def status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    return failure.value.code()


async def test_remember_fills_in_the_server_fields(platform: Harness) -> None:
    w = await ward(platform)
    block = memory("Patient prefers morning appointments.", tags=("Scheduling", "scheduling "))
    block.memory_block.access_count = 99  # output only: dropped
    [stored] = await w.remember(w.agent_a, block)
    m = stored.memory_block
    assert m.agent == w.actor("agent-a")
    assert list(m.tags) == ["scheduling"]
    assert (m.importance_score, m.confidence_score, m.access_count) == (0.5, 0.8, 0)
    assert m.vector_id == f"{w.tenant.tenant_id}/{stored.name.rsplit('/', 1)[1]}"
    got = await w.memory.GetMemory(pb.GetMemoryRequest(name=stored.name), metadata=w.agent_a)
    assert got.memory == stored
    listed = await w.memory.ListMemories(pb.ListMemoriesRequest(parent=w.name), metadata=w.agent_a)
    assert [r.name for r in listed.memories] == [stored.name]


async def test_recall_ranks_newer_first_at_equal_similarity_and_importance_breaks_ties(
    platform: Harness,
) -> None:
    w = await ward(platform)
    text = "The patient's daughter asked to be called before any medication change."
    old, new = await w.remember(
        w.agent_a,
        memory(text, event_time=NOW - timedelta(days=30)),
        memory(text, event_time=NOW - timedelta(days=1)),
    )
    reply = await w.recall(
        w.agent_a, "call the daughter about medication changes", record_access=False
    )
    ranked = [r.memory.name for r in reply.results]
    assert ranked == [new.name, old.name]
    first, second = reply.results
    assert first.scores.semantic == pytest.approx(second.scores.semantic, abs=1e-5)
    assert first.scores.lexical == pytest.approx(second.scores.lexical)
    assert first.scores.recency > second.scores.recency
    assert 0.0 < first.scores.final_score <= 1.0
    assert reply.weights.semantic > 0  # the defaults, filled in

    other = "Wound dressing on the left foot is changed every other day."
    low, high = await w.remember(
        w.agent_a,
        memory(other, importance=0.2, event_time=NOW),
        memory(other, importance=0.9, event_time=NOW),
    )
    reply = await w.recall(w.agent_a, "wound dressing schedule", top_k=2, record_access=False)
    assert [r.memory.name for r in reply.results] == [high.name, low.name]
    assert reply.results[0].scores.recency == pytest.approx(reply.results[1].scores.recency)


async def test_recall_counts_access_and_reinforces_importance(platform: Harness) -> None:
    w = await ward(platform)
    [stored] = await w.remember(w.agent_a, memory("Patient is afraid of needles."))
    reply = await w.recall(w.agent_a, "needle phobia")
    [result] = reply.results
    assert result.memory.memory_block.access_count == 1
    assert result.memory.memory_block.importance_score > 0.5
    assert result.memory.version == stored.version + 1
    quiet = await w.recall(w.agent_a, "needle phobia", record_access=False)
    assert quiet.results[0].memory.memory_block.access_count == 1


async def test_as_of_recalls_what_was_known_then(platform: Harness) -> None:
    w = await ward(platform)
    [edited, forgotten] = await w.remember(
        w.agent_a,
        memory("Plan: physiotherapy twice a week for the knee."),
        memory("Plan: knee brace to be worn at night."),
    )
    await asyncio.sleep(0.05)
    then = datetime.now(UTC)
    await asyncio.sleep(0.05)
    changed = record_pb2.Record(name=edited.name)
    changed.memory_block.content = "Plan: knee surgery scheduled instead of physiotherapy."
    await w.memory.UpdateMemory(
        pb.UpdateMemoryRequest(
            memory=changed, update_mask=FieldMask(paths=["memory_block.content"])
        ),
        metadata=w.agent_a,
    )
    await w.memory.Forget(
        pb.ForgetRequest(name=forgotten.name, reason="obsolete"), metadata=w.agent_a
    )
    [later] = await w.remember(w.agent_a, memory("Plan: knee injection next month."))

    now = await w.recall(w.agent_a, "knee plan", record_access=False)
    assert {r.memory.name for r in now.results} == {edited.name, later.name}
    assert (
        "surgery"
        in next(r for r in now.results if r.memory.name == edited.name).memory.memory_block.content
    )

    past = await w.recall(w.agent_a, "knee plan", as_of=stamp(then))
    by_name = {r.memory.name: r.memory for r in past.results}
    assert set(by_name) == {edited.name, forgotten.name}
    assert "physiotherapy twice a week" in by_name[edited.name].memory_block.content
    assert by_name[edited.name].version == 1 and not by_name[forgotten.name].HasField("delete_time")


async def test_consolidation_plans_merges_and_never_merges_contradictions(
    platform: Harness,
) -> None:
    w = await ward(platform)
    patient = await w.patient("ana")
    sources = await w.remember(
        w.agent_a,
        memory(
            "Patient takes metformin 500 mg twice daily.", MT.MEMORY_TYPE_SEMANTIC, tags=("meds",)
        ),
        memory("Patient takes metformin 500mg BID.", MT.MEMORY_TYPE_SEMANTIC, tags=("diabetes",)),
        memory(
            "Metformin 500 milligrams twice a day: the patient takes it.", MT.MEMORY_TYPE_SEMANTIC
        ),
        memory("Patient takes metformin 1000 mg twice daily.", MT.MEMORY_TYPE_SEMANTIC),
        memory("Patient prefers morning appointments.", MT.MEMORY_TYPE_SEMANTIC),
        patient=patient,
    )
    duplicates, contradicting = {s.name for s in sources[:3]}, sources[3].name

    async def run(dry_run: bool) -> list[pb.ConsolidateResponse]:
        stream = w.memory.Consolidate(
            pb.ConsolidateRequest(parent=w.name, dry_run=dry_run), metadata=w.agent_a
        )
        return [event async for event in stream]

    plan = await run(dry_run=True)
    kinds = [e.WhichOneof("event") for e in plan]
    assert kinds[-1] == "result" and kinds.count("result") == 1 and "progress" in kinds
    [group] = [e.group for e in plan if e.HasField("group")]
    assert set(group.source_memories) == duplicates and not group.merged_memory.name
    contradictions = [e.contradiction for e in plan if e.HasField("contradiction")]
    assert contradictions and all(contradicting in c.memories for c in contradictions)
    assert {"500 mg", "1000 mg"} <= {
        v.value for c in contradictions for f in c.facts for v in f.values
    }
    assert plan[-1].result.dry_run and plan[-1].result.blocks_removed == 2
    for source in sources:  # nothing written
        got = await w.memory.GetMemory(pb.GetMemoryRequest(name=source.name), metadata=w.agent_a)
        assert not got.memory.HasField("delete_time")

    applied = await run(dry_run=False)
    [group] = [e.group for e in applied if e.HasField("group")]
    merged = group.merged_memory
    assert merged.name and merged.memory_block.patient == patient
    provenance = {(s.memory, s.version, s.content) for s in merged.memory_block.consolidated_from}
    assert provenance == {
        (s.name, s.version, s.memory_block.content) for s in sources if s.name in duplicates
    }
    assert set(merged.memory_block.tags) == {"meds", "diabetes"}
    for name in duplicates:
        got = await w.memory.GetMemory(pb.GetMemoryRequest(name=name), metadata=w.agent_a)
        assert got.memory.HasField("delete_time")
        assert got.memory.memory_block.superseded_by == merged.name
    still = await w.memory.GetMemory(pb.GetMemoryRequest(name=contradicting), metadata=w.agent_a)
    assert not still.memory.HasField("delete_time")
    recalled = await w.recall(w.agent_a, "metformin dose", record_access=False)
    names = {r.memory.name for r in recalled.results}
    assert merged.name in names and contradicting in names and not names & duplicates


async def test_patient_erasure_leaves_nothing_behind(platform: Harness) -> None:
    w = await ward(platform)
    ana, ben = await w.patient("ana"), await w.patient("ben")
    about_ana = await w.remember(
        w.agent_a,
        memory("Ana reported dizziness after the dose increase."),
        memory("Ana's son is her emergency contact."),
        patient=ana,
    )
    by_context = memory("Discussed the fall risk with the family.")
    by_context.memory_block.context_metadata.update({"patient_id": "ana"})
    [by_context] = await w.remember(w.doctor, by_context)
    await w.memory.Forget(
        pb.ForgetRequest(name=about_ana[1].name, reason="wrong"), metadata=w.agent_a
    )
    [about_ben] = await w.remember(w.agent_a, memory("Ben reported dizziness too."), patient=ben)
    doomed = {m.name for m in [*about_ana, by_context]}

    erase = pb.ErasePatientMemoriesRequest(parent=w.name, patient=ana, reason="GDPR Art. 17 #12")
    assert await status_of(w.memory.ErasePatientMemories(erase, metadata=w.agent_a)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    dry = pb.ErasePatientMemoriesRequest()
    dry.CopyFrom(erase)
    dry.dry_run = True
    planned = await w.memory.ErasePatientMemories(dry, metadata=w.admin)
    assert planned.dry_run and set(planned.memories) == doomed and planned.vectors_erased >= 3

    done = await w.memory.ErasePatientMemories(erase, metadata=w.admin)
    assert set(done.memories) == doomed and done.memories_erased == 3
    assert done.versions_erased >= 4 and done.vectors_erased >= 3

    for name in doomed:
        assert (
            await status_of(w.memory.GetMemory(pb.GetMemoryRequest(name=name), metadata=w.admin))
            == grpc.StatusCode.NOT_FOUND
        )
        assert (
            await status_of(
                w.records.ListRecordHistory(
                    rpb.ListRecordHistoryRequest(name=name), metadata=w.admin
                )
            )
            == grpc.StatusCode.NOT_FOUND
        )
    changes = await w.records.ListChanges(rpb.ListChangesRequest(parent=w.name), metadata=w.admin)
    purged = {c.name for c in changes.changes if c.operation == 4}  # CHANGE_OPERATION_PURGE
    assert purged == doomed
    kernel = w.hacs.server.kernel
    assert kernel is not None
    index = await kernel.vector_index()
    names = ", ".join(f'"{n}"' for n in doomed)
    for kind in ALL_KINDS:  # live and history, whole memories and passages
        assert await index.count(kind, w.tenant.tenant_id, f"name in [{names}]") == 0
    recalled = await w.recall(
        w.admin,
        "dizziness",
        filter=recall_pb2.MemoryFilter(agents=[w.actor("agent-a"), w.actor("doctor")]),
    )
    assert [r.memory.name for r in recalled.results] == [about_ben.name]
    events = await w.hacs.tenant.ListAuditEvents(
        tpb.ListAuditEventsRequest(parent=w.name), metadata=w.admin
    )
    erased = [
        e
        for e in events.audit_events
        if e.method.endswith("ErasePatientMemories") and e.outcome == "OK"
    ]
    assert any(e.details["reason"] == "GDPR Art. 17 #12" for e in erased)


async def test_tenant_and_agent_scoping_hold(platform: Harness) -> None:
    w, other = await ward(platform), await ward(platform)
    [mine] = await w.remember(w.agent_a, memory("Agent A noted the patient dislikes loud rooms."))
    get = pb.GetMemoryRequest(name=mine.name)
    assert await status_of(w.memory.GetMemory(get, metadata=w.agent_b)) == grpc.StatusCode.NOT_FOUND
    assert (
        await status_of(w.memory.GetMemory(get, metadata=other.admin)) == grpc.StatusCode.NOT_FOUND
    )
    nosy = recall_pb2.MemoryFilter(agents=[w.actor("agent-a")])
    assert await status_of(w.recall(w.agent_b, "loud rooms", filter=nosy)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert not (await w.recall(w.agent_b, "loud rooms")).results
    assert [
        r.memory.name for r in (await w.recall(w.doctor, "loud rooms", filter=nosy)).results
    ] == [mine.name]
    assert not (await other.recall(other.admin, "loud rooms")).results
    foreign = pb.RememberRequest(parent=w.name, memories=[memory("x")])
    assert await status_of(other.memory.Remember(foreign, metadata=other.admin)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    as_other_agent = memory("Pretending to be agent B.")
    as_other_agent.memory_block.agent = w.actor("agent-b")
    assert (
        await status_of(w.remember(w.agent_a, as_other_agent)) == grpc.StatusCode.PERMISSION_DENIED
    )


async def test_bad_input_gets_invalid_argument_naming_the_field(platform: Harness) -> None:
    w = await ward(platform)
    cases = [
        (
            w.memory.Remember(
                pb.RememberRequest(parent=w.name, memories=[memory("  ")]), metadata=w.agent_a
            ),
            "memories[0].memory_block.content",
        ),
        (
            w.memory.Remember(
                pb.RememberRequest(parent=w.name, memories=[record_pb2.Record()]),
                metadata=w.agent_a,
            ),
            "memories[0].memory_block",
        ),
        (w.recall(w.agent_a, "x", top_k=101), "top_k"),
        (w.recall(w.agent_a, ""), "query"),
        (
            w.memory.Forget(
                pb.ForgetRequest(name=f"{w.name}/memoryBlocks/m-1"), metadata=w.agent_a
            ),
            "reason",
        ),
        (
            w.memory.GetMemory(
                pb.GetMemoryRequest(name=f"{w.name}/patients/p-1"), metadata=w.agent_a
            ),
            "name",
        ),
    ]
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in failure.value.details()
    [stored] = await w.remember(w.agent_a, memory("Patient uses a walker."))
    output_only = pb.UpdateMemoryRequest(
        memory=record_pb2.Record(name=stored.name),
        update_mask=FieldMask(paths=["memory_block.access_count"]),
    )
    assert await status_of(w.memory.UpdateMemory(output_only, metadata=w.agent_a)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_feedback_and_updates_adjust_the_memory(platform: Harness) -> None:
    w = await ward(platform)
    [stored] = await w.remember(
        w.agent_a, memory("Patient responds well to short written instructions.")
    )
    useful = await w.memory.RecordMemoryFeedback(
        pb.RecordMemoryFeedbackRequest(name=stored.name, feedback=pb.MEMORY_FEEDBACK_USEFUL),
        metadata=w.agent_a,
    )
    assert useful.importance > useful.previous_importance
    wrong = await w.memory.RecordMemoryFeedback(
        pb.RecordMemoryFeedbackRequest(name=stored.name, feedback=pb.MEMORY_FEEDBACK_INCORRECT),
        metadata=w.agent_a,
    )
    assert wrong.importance < useful.importance
    assert wrong.memory.memory_block.confidence_score == pytest.approx(0.4)

    change = record_pb2.Record(name=stored.name, etag=stored.etag)  # stale by now
    change.memory_block.content = "Patient prefers pictures over written instructions."
    mask = FieldMask(paths=["memory_block.content"])
    update = pb.UpdateMemoryRequest(memory=change, update_mask=mask)
    assert await status_of(w.memory.UpdateMemory(update, metadata=w.agent_a)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    update.memory.etag = wrong.memory.etag
    updated = await w.memory.UpdateMemory(update, metadata=w.agent_a)
    assert updated.memory.memory_block.content.startswith("Patient prefers pictures")
    top = (await w.recall(w.agent_a, "pictures instead of text", top_k=1)).results[0]
    assert top.memory.name == stored.name and "pictures" in top.memory.memory_block.content


async def test_memories_written_through_the_record_service_are_recalled(platform: Harness) -> None:
    w = await ward(platform)
    record = memory("Interpreter needed: the patient speaks Portuguese.")
    record.memory_block.agent = w.actor("agent-a")
    await w.records.CreateRecord(
        rpb.CreateRecordRequest(parent=w.name, record=record), metadata=w.admin
    )
    found = await w.recall(w.agent_a, "which language does the patient speak", top_k=1)
    assert "Portuguese" in found.results[0].memory.memory_block.content


async def test_cluster_groups_related_memories_under_their_terms(platform: Harness) -> None:
    w = await ward(platform)
    await w.remember(
        w.agent_a,
        memory("Metformin dose increased to 1000 mg for diabetes."),
        memory("Diabetes review: metformin tolerated, HbA1c improving."),
        memory("Glucophage continued for type 2 diabetes."),
        memory("Left knee pain after a fall on the stairs."),
        memory("Knee pain worse when climbing stairs."),
        memory("Physiotherapy for the painful left knee."),
    )
    reply = await w.memory.Cluster(
        pb.ClusterRequest(parent=w.name, params={"distance_threshold": 0.7}),  # type: ignore[arg-type]
        metadata=w.agent_a,
    )
    assert reply.memory_count == 6
    top_terms = [{t.term for t in c.label_terms[:3]} for c in reply.clusters]
    assert any("metformin" in terms for terms in top_terms)
    assert any("knee" in terms for terms in top_terms)
    knee = next(c for c in reply.clusters if "knee" in {t.term for t in c.label_terms[:3]})
    assert len(knee.members) == 3 and knee.representative in knee.members


async def test_lists_page_in_order_and_citations_and_ttl_apply(platform: Harness) -> None:
    w = await ward(platform)
    stored = await w.remember(
        w.agent_a,
        *[
            memory(f"Routine note number {i} about hydration.", importance=i / 10)
            for i in range(1, 6)
        ],
    )
    pages, token = [], ""
    while True:
        reply = await w.memory.ListMemories(
            pb.ListMemoriesRequest(
                parent=w.name, order_by="importance_score desc", page_size=2, page_token=token
            ),
            metadata=w.agent_a,
        )
        pages.append([m.name for m in reply.memories])
        token = reply.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [n for p in pages for n in p] == [m.name for m in reversed(stored)]

    cited = stored[0]
    citing = memory("Hydration plan reviewed again.")
    citing.memory_block.related_memories.append(cited.name)
    await w.remember(w.agent_a, citing)
    again = await w.memory.GetMemory(pb.GetMemoryRequest(name=cited.name), metadata=w.agent_a)
    assert again.memory.memory_block.importance_score > cited.memory_block.importance_score

    task = memory("Working: reconcile the medication list.", MT.MEMORY_TYPE_WORKING)
    task.memory_block.ttl_seconds = 60
    [task] = await w.remember(w.agent_a, task)
    assert task.memory_block.HasField("expire_time")
    later = stamp(datetime.now(UTC) + timedelta(hours=1))
    kept = await w.recall(
        w.agent_a, "reconcile medication list", query_time=later, record_access=False
    )
    assert task.name not in {r.memory.name for r in kept.results}
    expired_too = recall_pb2.MemoryFilter(include_expired=True)
    found = await w.recall(
        w.agent_a,
        "reconcile medication list",
        query_time=later,
        filter=expired_too,
        record_access=False,
    )
    assert task.name in {r.memory.name for r in found.results}


async def _memory_rows(hacs: Harness, tenant_id: str) -> dict[str, dict[str, object]]:
    """Every row of the tenant in the memory collections (live and history), by key."""
    kernel = hacs.server.kernel
    assert kernel is not None
    index = await kernel.vector_index()
    rows: dict[str, dict[str, object]] = {}
    for kind in ALL_KINDS:
        found = await index.call(
            index.client.query,
            await index.ensure(kind),
            filter=f'tenant_id == "{tenant_id}"',
            output_fields=["pk", "name", "kind", "text", "title", "patient_id", "clinical_time",
                           "codes", "labels", "version", "grp", "extra", "dense"],
        )  # fmt: skip
        rows.update({f"{kind}:{row['pk']}": row for row in found})
    return rows


async def test_rebuild_recreates_live_and_past_rows_from_the_records(platform: Harness) -> None:
    from services.memory.wiring import build_memory_index

    w = await ward(platform)
    tenant_id = w.tenant.tenant_id
    edited, forgotten, tagged, *_ = await w.remember(
        w.agent_a,
        memory("Plan: physiotherapy twice a week for the knee."),
        memory("Plan: knee brace to be worn at night."),
        memory("Patient prefers morning appointments for knee checks."),
        memory("Patient takes metformin 500 mg twice daily.", MT.MEMORY_TYPE_SEMANTIC),
        memory("Patient takes metformin 500mg BID.", MT.MEMORY_TYPE_SEMANTIC),
    )
    await asyncio.sleep(0.05)
    then = datetime.now(UTC)
    await asyncio.sleep(0.05)
    changed = record_pb2.Record(name=edited.name)
    changed.memory_block.content = "Plan: knee surgery scheduled instead of physiotherapy."
    retagged = record_pb2.Record(name=tagged.name)
    retagged.memory_block.tags.append("scheduling")
    for update, path in ((changed, "memory_block.content"), (retagged, "memory_block.tags")):
        await w.memory.UpdateMemory(
            pb.UpdateMemoryRequest(memory=update, update_mask=FieldMask(paths=[path])),
            metadata=w.agent_a,
        )
    await w.memory.Forget(pb.ForgetRequest(name=forgotten.name, reason="x"), metadata=w.agent_a)
    consolidated = [
        e
        async for e in w.memory.Consolidate(
            pb.ConsolidateRequest(parent=w.name), metadata=w.agent_a
        )
    ]
    assert any(e.HasField("group") for e in consolidated)  # the doubles are superseded
    await w.recall(w.agent_a, "knee plan")  # access counts: new versions, same rows
    asked = stamp(datetime.now(UTC))
    queries = [
        dict(query="knee plan"),
        dict(query="knee plan", as_of=stamp(then)),
        dict(query="metformin dose", filter=recall_pb2.MemoryFilter(include_superseded=True)),
    ]

    async def answers() -> list[list[tuple[str, int, float]]]:
        replies = [
            await w.recall(w.agent_a, record_access=False, query_time=asked, **q)  # type: ignore[arg-type]
            for q in queries
        ]
        return [
            [(r.memory.name, r.memory.version, r.scores.final_score) for r in reply.results]
            for reply in replies
        ]

    before, rows = await answers(), await _memory_rows(platform, tenant_id)
    assert any(row["extra"]["end"] == "superseded" for row in rows.values())  # type: ignore[index]
    kernel = platform.server.kernel
    assert kernel is not None
    index = await kernel.vector_index()
    for kind in ALL_KINDS:  # the index is lost
        await index.delete_where(kind, tenant_id, "")

    memories, written = await build_memory_index(kernel).rebuild(tenant_id)
    assert memories == 6 and written >= len(rows)  # five remembered, one merged
    rebuilt = await _memory_rows(platform, tenant_id)
    assert set(rebuilt) == set(rows)
    for pk, row in rows.items():  # the same words, fields, validity and vector
        again = rebuilt[pk]
        assert {k: v for k, v in again.items() if k != "dense"} == {
            k: v for k, v in row.items() if k != "dense"
        }, pk
        assert float(np.dot(again["dense"], row["dense"])) > 0.999  # type: ignore[arg-type]
    after = await answers()
    for old, new in zip(before, after, strict=True):
        assert [(name, version) for name, version, _ in new] == [(n, v) for n, v, _ in old]
        assert [s for *_, s in new] == pytest.approx([s for *_, s in old], abs=1e-3)
