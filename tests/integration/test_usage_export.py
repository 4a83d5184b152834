"""Hourly usage exported through ExportUsage and `hacs usage export`, on SQLite and PostgreSQL.

A scripted workload runs against a fresh tenant; the export must say exactly what it
did: calls and errors per method, the actors that called, the records it stored. The
server's meter is held at one moment so the workload falls in one hour whatever the
wall clock does. Then who may read what, and what a bad request is told.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hacs.client import error_details
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.records.v1 import record_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as pb

from services.common.db.base import utcnow
from services.common.hourly_usage import HourlyMeter, hour_of
from services.tooling import usage_command
from tests.support import clinical
from tests.support.harness import Harness, NewTenant, bearer

TENANT = "/hacs.tenant.v1.TenantService/"
RECORDS = "/hacs.records.v1.RecordService/"
# (metric, dimension) -> value: what the workload below does, and nothing else.
WORKLOAD = {
    ("calls", RECORDS + "BatchCreateRecords"): 1,
    ("calls", TENANT + "GetTenant"): 3,
    ("calls", TENANT + "CreateActor"): 1,
    ("calls", TENANT + "CreateApiKey"): 1,
    ("calls", TENANT + "ListActors"): 2,
    ("calls", TENANT + "GetActor"): 1,
    ("errors", TENANT + "ListActors"): 2,
    ("active_actors", ""): 2,  # the administrator and the nurse
    ("records_stored", "patients"): 2,
}


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def held(meter: HourlyMeter) -> datetime:
    """Stop the meter's clock now; the hour it falls in."""
    moment = utcnow()
    meter.clock = lambda: moment
    return hour_of(moment)


async def scripted_workload(hacs: Harness, tenant: NewTenant) -> None:
    admin = bearer(tenant.admin_token)
    records = record_service_pb2_grpc.RecordServiceStub(hacs.channel)
    # First, so that the hour's first flush for the tenant (its gauge sample) comes after.
    await records.BatchCreateRecords(
        rpb.BatchCreateRecordsRequest(
            parent=tenant.name,
            requests=[
                rpb.CreateRecordRequest(record=clinical.patient(family))
                for family in ("Garcia", "Okafor")
            ],
        ),
        metadata=admin,
    )
    for _ in range(3):
        await hacs.tenant.GetTenant(pb.GetTenantRequest(name=tenant.name), metadata=admin)
    _, nurse = await hacs.new_actor(tenant, "nurse-joy", "nurse")  # CreateActor, CreateApiKey
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await hacs.tenant.ListActors(
                pb.ListActorsRequest(parent=tenant.name), metadata=bearer(nurse)
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await hacs.tenant.GetActor(
        pb.GetActorRequest(name=f"{tenant.name}/actors/nurse-joy"), metadata=bearer(nurse)
    )


async def export_all(
    hacs: Harness, token: str, request: pb.ExportUsageRequest
) -> list[pb.HourlyUsage]:
    rows: list[pb.HourlyUsage] = []
    while True:
        reply = await hacs.tenant.ExportUsage(request, metadata=bearer(token))
        rows.extend(reply.rows)
        if not reply.next_page_token:
            return rows
        request.page_token = reply.next_page_token


def summed(rows: list[tuple[str, str, str, int]], tenant_id: str) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for tenant, metric, dimension, value in rows:
        if tenant == tenant_id:
            found[(metric, dimension)] = found.get((metric, dimension), 0) + value
    return found


async def cli_export(hacs: Harness, out: Path, *options: str) -> int:
    parser = argparse.ArgumentParser()
    usage_command.add_arguments(parser)
    args = parser.parse_args(["export", *options, "--out", str(out)])
    return await usage_command.run(args, hacs.server.settings)


async def test_export_and_cli_sum_a_scripted_workload_exactly(
    hacs: Harness, tmp_path: Path
) -> None:
    assert hacs.server.platform is not None
    meter = hacs.server.platform.metering
    hour = held(meter)
    tenant = await hacs.new_tenant()
    await scripted_workload(hacs, tenant)
    window = {"start_time": ts(hour), "end_time": ts(hour + timedelta(hours=1))}

    # The tenant's administrator reads its own (the call itself is counted after it).
    own = await hacs.tenant.ExportUsage(
        pb.ExportUsageRequest(parent=tenant.name, **window),  # type: ignore[arg-type]
        metadata=bearer(tenant.admin_token),
    )
    assert not own.next_page_token
    assert {r.hour.ToDatetime(tzinfo=UTC) for r in own.rows} == {hour}
    assert {(r.metric, r.dimension): r.value for r in own.rows} == WORKLOAD

    # An operator pages through them, three at a time: each row once, in order, and now
    # with the administrator's export. Then one metric alone.
    operator = await hacs.operator_token()
    paged = await export_all(
        hacs,
        operator,
        pb.ExportUsageRequest(parent=tenant.name, page_size=3, **window),  # type: ignore[arg-type]
    )
    expected = {**WORKLOAD, ("calls", TENANT + "ExportUsage"): 1}
    keys = [(r.metric, r.dimension) for r in paged]
    assert keys == sorted(expected)
    assert {(r.metric, r.dimension): r.value for r in paged} == expected
    errors = await hacs.tenant.ExportUsage(
        pb.ExportUsageRequest(parent=tenant.name, metrics=["errors"], **window),  # type: ignore[arg-type]
        metadata=bearer(operator),
    )
    assert [(r.dimension, r.value) for r in errors.rows] == [(TENANT + "ListActors", 2)]

    # The command reads the database: what the server counted since must be written first.
    await meter.flush()
    span = ["--from", hour.isoformat(), "--to", (hour + timedelta(hours=1)).isoformat()]
    as_csv = tmp_path / "usage.csv"
    assert await cli_export(hacs, as_csv, "--tenant", tenant.tenant_id, *span) == 0
    with as_csv.open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert {line["hour"] for line in lines} == {hour.isoformat()}
    assert (
        summed([(x["tenant"], x["metric"], x["dimension"], int(x["value"])) for x in lines],
               tenant.tenant_id)
        == expected
    )  # fmt: skip
    as_json = tmp_path / "usage.json"
    assert await cli_export(
        hacs, as_json, "--all-tenants", *span, "--format", "json", "--metrics", "calls,errors"
    ) == 0  # fmt: skip
    objects = json.loads(as_json.read_text())
    assert {o["tenant"] for o in objects} >= {tenant.tenant_id, "platform"}
    assert summed(
        [(o["tenant"], o["metric"], o["dimension"], o["value"]) for o in objects], tenant.tenant_id
    ) == {k: v for k, v in expected.items() if k[0] in ("calls", "errors")}
    # The operator's CreateTenant is the platform's usage, not the tenant's.
    platform_calls = summed(
        [(o["tenant"], o["metric"], o["dimension"], o["value"]) for o in objects], "platform"
    )
    assert platform_calls[("calls", TENANT + "CreateTenant")] >= 1
    assert await cli_export(hacs, tmp_path / "x", "--tenant", "nobody-here", *span) == 2


async def test_a_tenant_reads_only_its_own_usage(hacs: Harness) -> None:
    north = await hacs.new_tenant()
    south = await hacs.new_tenant()
    _, nurse = await hacs.new_actor(north, "nurse-joy", "nurse")
    now = utcnow()
    window = {"start_time": ts(now - timedelta(hours=1)), "end_time": ts(now)}

    async def code(token: str, parent: str) -> grpc.StatusCode:
        try:
            await hacs.tenant.ExportUsage(
                pb.ExportUsageRequest(parent=parent, **window),  # type: ignore[arg-type]
                metadata=bearer(token),
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    denied = grpc.StatusCode.PERMISSION_DENIED
    assert await code(north.admin_token, south.name) == denied  # another tenant's
    assert await code(north.admin_token, "tenants/-") == denied  # every tenant's
    assert await code(nurse, north.name) == denied  # no audit:tenant
    assert await code(north.admin_token, north.name) == grpc.StatusCode.OK
    operator = await hacs.operator_token()
    assert await code(operator, "tenants/-") == grpc.StatusCode.OK
    assert await code(operator, "tenants/nobody-here") == grpc.StatusCode.NOT_FOUND


async def test_bad_export_requests_say_what_is_wrong(hacs: Harness) -> None:
    tenant = await hacs.new_tenant()
    now = utcnow()

    async def violations(request: pb.ExportUsageRequest) -> dict[str, str]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await hacs.tenant.ExportUsage(request, metadata=bearer(tenant.admin_token))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = error_details(caught.value)["BadRequest"].field_violations
        return {v.field: v.description for v in found}

    bad = await violations(
        pb.ExportUsageRequest(
            parent="hospitals/st-marys",
            end_time=ts(now),
            metrics=["calls", "bogus", "calls"],
            page_size=-1,
        )
    )
    assert bad == {
        "parent": "'hospitals/st-marys' is neither a tenant ('tenants/{tenant}') nor every "
        "tenant ('tenants/-')",
        "start_time": "is required (a UTC time; rows are per hour)",
        "metrics[1]": "'bogus' is not one of: calls, errors, embedding_tokens, "
        "llm_input_tokens, llm_output_tokens, active_actors, records_stored, vectors_stored",
        "metrics[2]": "'calls' is listed twice",
        "page_size": "must not be negative",
    }
    backwards = await violations(
        pb.ExportUsageRequest(parent=tenant.name, start_time=ts(now), end_time=ts(now))
    )
    assert backwards == {"end_time": "must be after start_time"}
    too_long = await violations(
        pb.ExportUsageRequest(
            parent=tenant.name, start_time=ts(now - timedelta(days=400)), end_time=ts(now)
        )
    )
    assert too_long == {"end_time": "is more than 366 days after start_time; export in parts"}
    forged = await violations(
        pb.ExportUsageRequest(
            parent=tenant.name,
            start_time=ts(now - timedelta(days=1)),
            end_time=ts(now),
            page_token="bm90LWEtdG9rZW4",
        )
    )
    assert forged == {"page_token": "is not a page token returned by this list"}
