"""The fuzzer's request generator: reproducible, typed by the contracts, and nasty."""

from __future__ import annotations

import random

from google.protobuf.message import DecodeError
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from services.tooling.fuzz.campaign import methods
from services.tooling.fuzz.messages import Generator, Vocabulary, string_kind

WORDS = Vocabulary(
    "b",
    ["tenants/b", "tenants/b/patients/p"],
    ["tenants/a/patients/q"],
    ids=["p", "q"],
    page_tokens=["tok"],
    tenants=["a", "b"],
)


def _draw(seed: int, index: int) -> list[bytes]:
    every = methods()
    rng = random.Random(f"{seed}:{index}")
    generator = Generator(rng, WORDS)
    method = every[index % len(every)]
    message = generator.message(method.request, careful=index % 2 == 0)
    data = message.SerializeToString()
    return [
        data,
        generator.mutate(message).SerializeToString(),
        generator.corrupt(data, method.request.DESCRIPTOR),
    ]


def test_a_request_is_a_function_of_the_seed_and_its_number() -> None:
    """What makes `hacs fuzz --seed S --only N` replay exactly the request of the run."""
    assert [_draw(7, i) for i in range(150)] == [_draw(7, i) for i in range(150)]
    assert [_draw(7, i) for i in range(20)] != [_draw(8, i) for i in range(20)]


def test_every_rpc_of_every_service_is_found_from_the_descriptors() -> None:
    found = {m.short for m in methods()}
    assert len(found) == 72  # 64, the seven identity RPCs and ExportUsage of TenantService
    assert {"RecordService/CreateRecord", "SyncService/Collaborate", "RagService/Answer"} <= found
    collaborate = next(m for m in methods() if m.short == "SyncService/Collaborate")
    assert collaborate.client_streaming and collaborate.server_streaming


def test_string_fields_are_filled_by_what_their_names_say() -> None:
    assert string_kind("parent") == string_kind("related_memories") == "name"
    assert string_kind("page_token") == "page_token" and string_kind("etag") == "etag"
    assert string_kind("record_id") == "id" and string_kind("query") == "text"
    generator = Generator(random.Random(1), WORDS)
    names = [generator.message(tpb.GetActorRequest, careful=True).name for _ in range(300)]
    assert "tenants/a/patients/q" in names  # another tenant's real name
    assert "tenants/b/patients/p" in names  # the caller's own
    assert any("\n" in n or "\x00" in n or ".." in n for n in names)  # and tricks


def test_values_reach_the_boundaries() -> None:
    generator = Generator(random.Random(3), WORDS)
    sizes = set()
    for _ in range(400):
        request = generator.message(rpb.ListRecordsRequest, careful=False)
        sizes.add(request.page_size)
    assert {0, 2**31 - 1, -(2**31)} <= sizes


def test_corrupted_bytes_are_often_not_a_message_at_all() -> None:
    generator = Generator(random.Random(5), WORDS)
    valid = rpb.GetRecordRequest(name="tenants/b/patients/p").SerializeToString()
    undecodable = 0
    for _ in range(200):
        try:
            rpb.GetRecordRequest.FromString(
                generator.corrupt(valid, rpb.GetRecordRequest.DESCRIPTOR)
            )
        except DecodeError:
            undecodable += 1
    assert 40 <= undecodable < 200
