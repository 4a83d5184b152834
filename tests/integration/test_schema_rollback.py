"""A rollback of one release: the previous release's code against the new schema (issue 21).

What is simulated, and why. A Helm upgrade runs `hacs migrate` (this build's
head) before the new pods roll; a rollback then starts the previous release's
pods against that schema. No release before this one has the compatibility
check (services/common/db/compatibility.py), so the "previous release" here is
this build minus its newest migration: a copy of `services/` in a temporary
directory with the newest file of migrations/versions/ deleted, so that its
head is the revision before. Its Python code is this build's; what differs is
what a rollback changes for the check, the set of migrations it knows. The
database is a fresh PostgreSQL one migrated with the real tree's head; the
copy runs as its own process (`python -m services.cli serve`, tenant and
records, PYTHONPATH and working directory at the copy) with
HACS_AUTO_MIGRATE off and on, and must start, write a record and read it
back through the generated client stubs, without touching alembic_version.

The negative case marks the database as a contract step would (the
recorded minimum code revision is the newest migration, which the copy does
not know): the copy must refuse to start, with or without auto-migrate, and
say which revision's release it needs; its `hacs migrate` must refuse too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hacs.records.v1 import record_service_pb2, record_service_pb2_grpc
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2, tenant_service_pb2_grpc
from sqlalchemy import text

from services.common.db import migrate
from services.common.db.engine import Database
from tests.support import clinical
from tests.support.edge import start_serve
from tests.support.postgres import create_database

pytestmark = pytest.mark.postgres

REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PreviousBuild:
    root: Path  # holds `services/`, minus the newest migration
    head: str  # its head: the revision before this build's


@pytest.fixture(scope="module")
def previous_build(tmp_path_factory: pytest.TempPathFactory) -> PreviousBuild:
    root = tmp_path_factory.mktemp("previous-release")
    shutil.copytree(
        REPOSITORY / "services",
        root / "services",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    versions = sorted((root / "services/common/db/migrations/versions").glob("[0-9]*.py"))
    versions[-1].unlink()
    probe = _run(root, "-c", "import services; from services.common.db import migrate; "
                 "print(services.__file__); print(migrate.head_revision())")  # fmt: skip
    location, head = probe.stdout.split()
    assert Path(location).is_relative_to(root), "the copy, not this tree, must be imported"
    newest = migrate.head_revision()
    assert head != newest and head in {s.revision for s in migrate.scripts().walk_revisions()}
    return PreviousBuild(root, head)


def _environment(root: Path, **env: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), **env}


def _run(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=_environment(root, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
async def new_schema(postgres_admin_url: str) -> AsyncIterator[tuple[str, Database]]:
    """A fresh PostgreSQL database at this build's head (the upgrade's `hacs migrate`)."""
    url = await create_database(postgres_admin_url)
    db = Database(url)
    await migrate.upgrade(db)
    try:
        yield url, db
    finally:
        await db.close()


async def _write_and_read_a_record(address: str, operator_key: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
        records = record_service_pb2_grpc.RecordServiceStub(channel)

        async def token(api_key: str) -> tuple[tuple[str, str]]:
            reply = await tenants.IssueToken(
                tenant_service_pb2.IssueTokenRequest(api_key=api_key), timeout=10
            )
            return (("authorization", f"Bearer {reply.access_token}"),)

        created = await tenants.CreateTenant(
            tenant_service_pb2.CreateTenantRequest(
                tenant_id="rolled-back",
                tenant=tenant_pb2.Tenant(display_name="Rolled Back"),
                admin=tenant_pb2.Actor(display_name="Admin"),
            ),
            metadata=await token(operator_key),
            timeout=10,
        )
        admin = await token(created.admin_api_key.secret)
        written = await records.CreateRecord(
            record_service_pb2.CreateRecordRequest(
                parent="tenants/rolled-back", record=clinical.patient("Rollback")
            ),
            metadata=admin,
            timeout=10,
        )
        read = await records.GetRecord(
            record_service_pb2.GetRecordRequest(name=written.record.name),
            metadata=admin,
            timeout=10,
        )
    assert read.record.patient.name[0].family == "Rollback"
    assert read.record.version == 1


@pytest.mark.parametrize("auto_migrate", ["false", "true"])
async def test_the_previous_release_runs_against_the_new_schema(
    previous_build: PreviousBuild,
    new_schema: tuple[str, Database],
    tmp_path: Path,
    auto_migrate: str,
) -> None:
    url, db = new_schema
    newest = migrate.head_revision()
    data = tmp_path / "data"
    process, address, _ = start_serve(
        "previous",
        tmp_path,
        {
            "PYTHONPATH": str(previous_build.root),
            "HACS_DATABASE_URL": url,
            "HACS_DATA_DIR": str(data),
            "HACS_SERVICES": "tenant,records",
            "HACS_AUTO_MIGRATE": auto_migrate,
        },
        cwd=previous_build.root,
    )
    try:
        await _write_and_read_a_record(address, (data / "operator.key").read_text().strip())
    finally:
        process.terminate()
        process.wait(timeout=30)
    log = (tmp_path / "previous.log").read_text()
    assert f"database schema is at '{newest}', newer than this build's " in log
    assert f"'{previous_build.head}'" in log
    assert await migrate.current_revision(db) == newest  # not downgraded, not failed on

    # The previous release's `hacs migrate` (a rollback's hook) leaves the schema too.
    migrated = _run(previous_build.root, "-m", "services.cli", "migrate", HACS_DATABASE_URL=url)
    assert migrated.returncode == 0, migrated.stderr
    assert await migrate.current_revision(db) == newest


async def test_the_previous_release_refuses_a_schema_contracted_past_it(
    previous_build: PreviousBuild, new_schema: tuple[str, Database], tmp_path: Path
) -> None:
    url, db = new_schema
    newest = migrate.head_revision()
    async with db.engine.begin() as conn:  # as if the newest migration were a contract
        await conn.execute(
            text("UPDATE hacs_schema_compat SET min_code_revision = :m"), {"m": newest}
        )
    for auto_migrate in ("false", "true"):
        served = _run(
            previous_build.root,
            "-m",
            "services.cli",
            "serve",
            HACS_DATABASE_URL=url,
            HACS_DATA_DIR=str(tmp_path / f"data-{auto_migrate}"),
            HACS_SERVICES="tenant,records",
            HACS_AUTO_MIGRATE=auto_migrate,
            HACS_GRPC_LISTEN="127.0.0.1:0",
            HACS_HTTP_LISTEN="127.0.0.1:0",
        )
        output = served.stdout + served.stderr
        assert served.returncode == 1, output
        assert f"database schema is at '{newest}', newer than this build's " in output
        assert f"needs code of revision '{newest}' or later" in output
        assert "deploy the release whose migrations include that revision" in output
    migrated = _run(previous_build.root, "-m", "services.cli", "migrate", HACS_DATABASE_URL=url)
    assert migrated.returncode == 1
    assert f"needs code of revision '{newest}' or later" in migrated.stdout + migrated.stderr
    assert await migrate.current_revision(db) == newest
