from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from services.common.errors import Unauthenticated
from services.common.signing_keys import SigningKeys, generate_key_file
from services.common.tokens import LEEWAY_SECONDS, LocalKeys, TokenVerifier, bearer_token


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "hacs",
        "aud": "hacs",
        "sub": "tenants/acme/actors/bot",
        "tenant": "acme",
        "actor": "bot",
        "role": "agent",
        "permissions": ["read:patient"],
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return claims


@pytest.fixture
def keys(tmp_path: Path) -> SigningKeys:
    return SigningKeys.load(tmp_path / "keys", generate_if_empty=True)


def _sign(keys: SigningKeys, claims: dict[str, object]) -> str:
    key = keys.active
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


async def test_valid_token_becomes_a_caller(keys: SigningKeys) -> None:
    caller = await TokenVerifier(LocalKeys(keys), issuer="hacs", audience="hacs").verify(
        _sign(keys, _claims())
    )
    assert (caller.tenant_id, caller.actor_id) == ("acme", "bot")
    assert caller.can("read:patient") and not caller.can("write:patient")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": -120}, "expired"),  # relative to now, resolved when the test runs
        ({"aud": "someone-else"}, "rejected"),
        ({"iss": "evil"}, "rejected"),
        ({"sub": "tenants/other/actors/bot"}, "subject"),
        ({"permissions": "admin:*"}, "permissions"),
    ],
)
async def test_bad_tokens_are_refused(
    keys: SigningKeys, overrides: dict[str, object], message: str
) -> None:
    # Claims are built here, not at collection: a long suite must not age them.
    if "exp" in overrides:
        overrides = {**overrides, "exp": int(time.time()) + int(str(overrides["exp"]))}
    verifier = TokenVerifier(LocalKeys(keys), issuer="hacs", audience="hacs")
    with pytest.raises(Unauthenticated, match=message):
        await verifier.verify(_sign(keys, _claims(**overrides)))


async def test_token_signed_by_another_key_is_refused(keys: SigningKeys, tmp_path: Path) -> None:
    other = SigningKeys.load(tmp_path / "other", generate_if_empty=True)
    forged = jwt.encode(
        _claims(), other.active.private_key, algorithm="RS256", headers={"kid": keys.active.kid}
    )
    with pytest.raises(Unauthenticated):
        await TokenVerifier(LocalKeys(keys), issuer="hacs", audience="hacs").verify(forged)


def test_rotation_signs_with_newest_and_publishes_all(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    first = SigningKeys.load(directory, generate_if_empty=True)
    time.sleep(1.1)  # key files are named by creation second
    generate_key_file(directory)
    rotated = SigningKeys.load(directory, generate_if_empty=False)
    assert rotated.active.kid != first.active.kid
    assert {k["kid"] for k in rotated.jwks()["keys"]} == {first.active.kid, rotated.active.kid}


def test_missing_keys_in_a_mounted_directory_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="signing-key Secret"):
        SigningKeys.load(tmp_path / "empty", generate_if_empty=False)


def test_bearer_metadata_is_parsed_strictly() -> None:
    assert bearer_token({"authorization": "Bearer abc"}) == "abc"
    for bad in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer "}):
        with pytest.raises(Unauthenticated):
            bearer_token(bad)


async def test_a_remembered_token_still_ends_when_its_key_is_withdrawn(keys: SigningKeys) -> None:
    local = LocalKeys(keys)
    verifier = TokenVerifier(local, issuer="hacs", audience="hacs")
    token = _sign(keys, _claims())
    first = await verifier.verify(token)
    assert await verifier.verify(token) == first  # remembered: same caller
    local._by_kid.clear()  # the key rotated out of the published set
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.verify(token)


async def test_a_remembered_token_still_expires(keys: SigningKeys) -> None:
    verifier = TokenVerifier(LocalKeys(keys), issuer="hacs", audience="hacs")
    exp = int(time.time()) - LEEWAY_SECONDS + 2  # valid for about two more seconds
    token = _sign(keys, _claims(exp=exp))
    await verifier.verify(token)
    await asyncio.sleep(max(0.0, exp + LEEWAY_SECONDS - time.time()) + 0.2)
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier.verify(token)


async def test_remembered_tokens_are_bounded(keys: SigningKeys) -> None:
    verifier = TokenVerifier(LocalKeys(keys), issuer="hacs", audience="hacs", remembered=3)
    tokens = [
        _sign(keys, _claims(actor=f"a{i}", sub=f"tenants/acme/actors/a{i}")) for i in range(5)
    ]
    callers = [await verifier.verify(t) for t in tokens]
    assert [c.actor_id for c in callers] == [f"a{i}" for i in range(5)]
    assert len(verifier._verified) == 3
    assert await verifier.verify(tokens[0]) == callers[0]  # forgotten, verified again
