"""Admission on the real registry (SQLite): what the tenant service changes reaches the
calls of tokens already issued — at once where the change is announced, within the bound
where it is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.common.caller import PLATFORM_TENANT, Caller
from services.common.db import migrate
from services.common.db.engine import Database
from services.common.errors import Forbidden, Unauthenticated
from services.common.runtime.admission import Admission, Remembered, still_admitted
from services.kernel.tenancy.plans import Limits
from services.kernel.tenancy.standing import TenancyRegistry
from services.tenant.actors import ActorDirectory
from services.tenant.api_keys import ApiKeys
from services.tenant.models import Actor, Tenant
from services.tenant.store import TenantStore
from services.tenant.tenants import TenantAdmin

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OPERATOR = Caller(PLATFORM_TENANT, "operator", "administrator", frozenset({"admin:platform"}))
ADMIN = Caller("ward", "admin", "administrator", frozenset({"admin:*"}))
AGENT_PERMISSIONS = ("read:patient", "write:patient", "read:memory", "write:memory")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}")
    await migrate.upgrade(database)
    yield database
    await database.close()


async def ward(db: Database, admission: Admission | None) -> tuple[str, str]:
    """Tenant `ward` with an agent holding two keys; the keys' ids."""
    announce = {"on_change": admission.announce} if admission else {}
    store = TenantStore(db)
    await TenantAdmin(store, **announce).create(
        OPERATOR,
        Tenant("ward", "Ward", "free", Limits(), "", {}, NOW, NOW, 0),
        Actor("", "admin", "Admin", "administrator", ()),
    )
    await ActorDirectory(store, **announce).create(
        ADMIN, Actor("ward", "bot", "Bot", "agent", AGENT_PERMISSIONS)
    )
    keys = ApiKeys(store, **announce)
    first = await keys.create(ADMIN, "ward", "bot", "first", None)
    second = await keys.create(ADMIN, "ward", "bot", "second", None)
    return first.id, second.id


def token(key_id: str, *permissions: str) -> Caller:
    """The caller a verified token of the agent makes (its permissions as issued)."""
    held = frozenset(permissions or AGENT_PERMISSIONS)
    return Caller("ward", "bot", "agent", held, key_id=key_id)


async def test_revoking_a_key_ends_its_tokens_and_only_its_own(db: Database) -> None:
    admission = Admission(TenancyRegistry(db), bound_seconds=60)
    first, second = await ward(db, admission)
    caller, standing = await admission.admit(token(first))
    assert caller == token(first) and standing.active
    await ApiKeys(TenantStore(db), admission.announce).revoke(ADMIN, "ward", "bot", first)
    with pytest.raises(Unauthenticated, match=rf"API key it was issued for \({first}\) is revoked"):
        await admission.admit(token(first))
    assert (await admission.admit(token(second)))[0] == token(second)
    with pytest.raises(Unauthenticated, match="revoked"):  # a key the registry never issued
        await admission.admit(token("0123456789ab"))


async def test_deleting_an_actor_ends_every_token_it_holds(db: Database) -> None:
    admission = Admission(TenancyRegistry(db), bound_seconds=60)
    first, second = await ward(db, admission)
    await admission.admit(token(first))
    actors = ActorDirectory(TenantStore(db), admission.announce)
    current = await actors.get(ADMIN, "ward", "bot")
    await actors.delete(ADMIN, "ward", "bot", current.etag)
    for key in (first, second, ""):  # "": a token from before tokens named their key
        with pytest.raises(Unauthenticated, match="tenants/ward/actors/bot is deactivated"):
            await admission.admit(token(key))
    with pytest.raises(Unauthenticated):  # an actor that never existed
        await admission.admit(replace(token(first), actor_id="ghost"))


async def test_narrowed_permissions_narrow_live_tokens_and_never_widen_them(
    db: Database,
) -> None:
    admission = Admission(TenancyRegistry(db), bound_seconds=60)
    first, _ = await ward(db, admission)
    actors = ActorDirectory(TenantStore(db), admission.announce)
    current = await actors.get(ADMIN, "ward", "bot")
    narrowed = Actor("ward", "bot", "Bot", "agent", ("read:*", "admin:tenant"))
    await actors.update(ADMIN, narrowed, ["permissions"], current.etag)
    caller, _ = await admission.admit(token(first))
    assert caller.permissions == {"read:patient", "read:memory"}  # not admin:tenant
    assert not caller.can("write:patient") and not caller.can("admin:tenant")
    scoped, _ = await admission.admit(token(first, "read:*"))  # a token asked for read:*
    assert scoped.permissions == {"read:*"}  # read:* under read:* (it was never wider)


async def test_a_role_change_reaches_the_token(db: Database) -> None:
    admission = Admission(TenancyRegistry(db), bound_seconds=60)
    first, _ = await ward(db, admission)
    actors = ActorDirectory(TenantStore(db), admission.announce)
    current = await actors.get(ADMIN, "ward", "bot")
    await actors.update(
        ADMIN, Actor("ward", "bot", "Bot", "nurse", AGENT_PERMISSIONS), ["role"], current.etag
    )
    assert (await admission.admit(token(first)))[0].role == "nurse"


async def test_suspending_the_tenant_stops_its_tokens(db: Database) -> None:
    admission = Admission(TenancyRegistry(db), bound_seconds=60)
    first, _ = await ward(db, admission)
    await admission.admit(token(first))
    tenants = TenantAdmin(TenantStore(db), admission.announce)
    current = await tenants.get(OPERATOR, "ward")
    await tenants.delete(OPERATOR, "ward", current.etag)
    with pytest.raises(Forbidden, match="suspended"):
        await admission.admit(token(first))


async def test_an_unannounced_change_still_arrives_within_the_bound(db: Database) -> None:
    """A replica that missed the announcement (Redis down) reads the registry again once
    what it remembered is older than the bound."""
    admission = Admission(TenancyRegistry(db), bound_seconds=0.3)
    first, _ = await ward(db, None)
    await admission.admit(token(first))
    await ApiKeys(TenantStore(db)).revoke(ADMIN, "ward", "bot", first)  # nobody told
    await admission.admit(token(first))  # still remembered as it was
    await asyncio.sleep(0.4)
    with pytest.raises(Unauthenticated, match="revoked"):
        await admission.admit(token(first))


async def test_a_stream_ends_when_its_caller_loses_a_permission_it_started_with(
    db: Database,
) -> None:
    admission = Admission(TenancyRegistry(db), bound_seconds=60)
    first, _ = await ward(db, admission)
    started, _ = await admission.admit(token(first))
    await still_admitted(admission, started)
    actors = ActorDirectory(TenantStore(db), admission.announce)
    current = await actors.get(ADMIN, "ward", "bot")
    wider = Actor("ward", "bot", "Bot", "agent", (*AGENT_PERMISSIONS, "read:observation"))
    current = await actors.update(ADMIN, wider, ["permissions"], current.etag)
    await still_admitted(admission, started)  # wider: the stream goes on as it was
    narrower = Actor("ward", "bot", "Bot", "agent", ("read:patient",))
    await actors.update(ADMIN, narrower, ["permissions"], current.etag)
    with pytest.raises(Forbidden, match="changed while this stream was open"):
        await still_admitted(admission, started)


async def test_concurrent_first_calls_share_one_registry_read() -> None:
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return 7

    remembered: Remembered[str, int] = Remembered(60)
    assert await asyncio.gather(*(remembered.get("k", read) for _ in range(20))) == [7] * 20
    assert reads == 1
    remembered.forget(lambda key: key == "k")
    assert await remembered.get("k", read) == 7 and reads == 2


async def test_a_failed_read_is_not_remembered() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database unreachable")
        return 1

    remembered: Remembered[str, int] = Remembered(60)
    with pytest.raises(OSError):
        await remembered.get("k", flaky)
    assert await remembered.get("k", flaky) == 1
