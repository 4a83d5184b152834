"""Checking a tenant's audit chain, and the signed checkpoints that pin its head.

A checkpoint is a JWS (RS256, the platform's signing keys) of one tenant's chain head:
its sequence number and chain hash at a moment. Kept outside the database — a directory
on other storage (a bucket with object lock, a WORM volume) and the log stream — it
proves how far the chain reached: a tail deleted after it leaves a checkpoint the table
can no longer match. `hacs audit checkpoint` writes them (a CronJob in the chart),
`hacs audit verify` checks the table against the chain and the checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import func, select

from services.common.audit import AuditEventRow, chain_head
from services.common.audit_chain import GENESIS, chain_hash, content_hash
from services.common.db.engine import Database
from services.common.signing_keys import SigningKeys

CHECKPOINT_TYPE = "hacs-audit-checkpoint"
PAGE = 5_000


@dataclass(frozen=True)
class Checkpoint:
    tenant_id: str
    seq: int
    chain_hash: str
    time: str  # ISO 8601, when it was taken

    def sign(self, keys: SigningKeys) -> str:
        key = keys.active
        return jwt.encode(
            {"tenant": self.tenant_id, "seq": self.seq, "hash": self.chain_hash, "at": self.time},
            key.private_key,
            algorithm="RS256",
            headers={"kid": key.kid, "typ": CHECKPOINT_TYPE},
        )

    @classmethod
    def read(cls, token: str, public_keys: Mapping[str, Any]) -> Checkpoint:
        """Verify a checkpoint's signature; ValueError when it does not hold."""
        try:
            header = jwt.get_unverified_header(token)
            key = public_keys.get(str(header.get("kid")))
            if key is None or header.get("typ") != CHECKPOINT_TYPE:
                raise ValueError("signed by a key this platform does not know")
            claims = jwt.decode(token, key, algorithms=["RS256"])
            return cls(str(claims["tenant"]), int(claims["seq"]), str(claims["hash"]), claims["at"])
        except (jwt.PyJWTError, KeyError, TypeError) as exc:
            raise ValueError(f"not a valid checkpoint: {exc}") from exc


def public_keys(keys: SigningKeys) -> dict[str, Any]:
    return {k.kid: k.private_key.public_key() for k in keys.keys}


async def head(db: Database, tenant_id: str) -> Checkpoint:
    """The tenant's chain head now (sequence 0 and 64 zeros for an empty chain)."""
    async with db.transaction(tenant_id) as session:
        seq, hashed = await chain_head(session, tenant_id)
    return Checkpoint(tenant_id, seq, hashed, datetime.now(UTC).isoformat())


def append_checkpoint(directory: Path, token: str, tenant_id: str) -> Path:
    """Append one signed checkpoint to `<directory>/<tenant>.jws` (one per line), synced."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{tenant_id}.jws"
    with path.open("a", encoding="ascii") as out:
        out.write(token + "\n")
        out.flush()
        os.fsync(out.fileno())
    return path


def read_checkpoints(
    directory: Path, tenant_id: str, keys: Mapping[str, Any]
) -> tuple[list[Checkpoint], list[str]]:
    """A tenant's checkpoints from `directory`, and a problem per line that fails."""
    path = directory / f"{tenant_id}.jws"
    if not path.exists():
        return [], []
    found, problems = [], []
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            checkpoint = Checkpoint.read(line.strip(), keys)
        except ValueError as exc:
            problems.append(f"{path.name} line {number}: {exc}")
            continue
        if checkpoint.tenant_id != tenant_id:
            problems.append(f"{path.name} line {number}: a checkpoint of {checkpoint.tenant_id}")
            continue
        found.append(checkpoint)
    return found, problems


@dataclass
class Report:
    tenant_id: str
    events: int = 0  # chained events read
    first_seq: int = 0
    last_seq: int = 0
    unchained: int = 0  # events written before the chain existed
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


async def verify(db: Database, tenant_id: str, checkpoints: Iterable[Checkpoint]) -> Report:
    """Recompute the tenant's chain from the table; compare with the checkpoints.

    The first remaining event anchors the chain: 1 after the genesis hash, or a later
    number once retention removed the oldest events (then its previous hash must be one a
    checkpoint vouches for, or the report says the start is unanchored).
    """
    report = Report(tenant_id)
    by_seq = {c.seq: c for c in sorted(checkpoints, key=lambda c: c.seq)}
    report.checkpoints = len(by_seq)
    vouched = {c.chain_hash for c in by_seq.values()}
    async with db.transaction(tenant_id) as session:
        report.unchained = int(
            await session.scalar(
                select(func.count())
                .select_from(AuditEventRow)
                .where(AuditEventRow.tenant_id == tenant_id, AuditEventRow.seq.is_(None))
            )
            or 0
        )
    previous: str | None = None
    expected_seq: int | None = None
    after = 0
    while True:
        async with db.transaction(tenant_id) as session:
            rows = list(
                (
                    await session.scalars(
                        select(AuditEventRow)
                        .where(AuditEventRow.tenant_id == tenant_id, AuditEventRow.seq > after)
                        .order_by(AuditEventRow.seq)
                        .limit(PAGE)
                    )
                ).all()
            )
        if not rows:
            break
        for row in rows:
            seq = int(row.seq or 0)
            if expected_seq is None:
                report.first_seq = seq
                if seq == 1 and row.prev_hash != GENESIS:
                    report.problems.append("event 1 does not start from the genesis hash")
                elif seq > 1 and row.prev_hash not in vouched:
                    report.problems.append(
                        f"the chain starts at event {seq} (earlier ones removed) and no "
                        "checkpoint vouches for where it starts"
                    )
            elif seq != expected_seq:
                report.problems.append(f"events {expected_seq}..{seq - 1} are missing")
            elif row.prev_hash != previous:
                report.problems.append(f"event {seq} does not link to event {seq - 1}")
            fields = {
                "tenant_id": row.tenant_id,
                "event_time": row.event_time,
                "actor": row.actor,
                "method": row.method,
                "permission": row.permission,
                "resource": row.resource,
                "outcome": row.outcome,
                "details": row.details,
            }
            if content_hash(seq, fields) != row.content_hash:
                report.problems.append(f"event {seq} was changed after it was written")
            if chain_hash(row.prev_hash or "", row.content_hash or "") != row.chain_hash:
                report.problems.append(f"event {seq}'s chain hash does not follow from it")
            checkpoint = by_seq.get(seq)
            if checkpoint is not None and checkpoint.chain_hash != row.chain_hash:
                report.problems.append(
                    f"event {seq} differs from the checkpoint taken at {checkpoint.time}"
                )
            previous, expected_seq = row.chain_hash, seq + 1
            report.events += 1
            report.last_seq = seq
        after = int(rows[-1].seq or 0)
    for seq, checkpoint in by_seq.items():
        if seq > report.last_seq:
            report.problems.append(
                f"a checkpoint taken at {checkpoint.time} saw event {seq}, but the log ends "
                f"at {report.last_seq}: events were removed from its end"
            )
            break
    return report
