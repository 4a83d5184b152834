"""Which code may run against which schema, so that a release can be rolled back.

A Helm upgrade migrates the database before the new pods roll; a rollback then
starts the previous release's code against a schema newer than it knows. That
works when every migration in between only added things, so each migration
declares its kind (`kind = "expand"` or `kind = "contract"` in its file):

- expand: additive. New tables, nullable columns or columns with a server
  default, new indexes, backfills. Code written before it keeps working.
- contract: drops, renames, tightens (NOT NULL, a narrower type, a new
  constraint old writers may break). Code written before it breaks.

Beside `alembic_version`, the one row of `hacs_schema_compat` holds the oldest
revision whose code may run against the schema: the newest contract migration
applied (its own release is the first that no longer needs what it removed),
or the first revision when none was. `hacs migrate` rewrites it after every
upgrade from the kinds the migrations declare, so a migration author only
declares the kind.

A build then compares the database with its own migrations (`SchemaState.fit`):
at its head, it runs; behind, it migrates (or asks for `hacs migrate`); ahead
and the recorded minimum is one of its own revisions, it runs without touching
the schema (it never downgrades); ahead of what it may run against, it refuses
and names the revision whose release it needs. See docs/deploy-migrations.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import String, insert, inspect, select, update
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base

EXPAND = "expand"
CONTRACT = "contract"
KINDS = (EXPAND, CONTRACT)


class SchemaCompatRow(Base):
    """One row: the oldest revision whose code may run against this schema."""

    __tablename__ = "hacs_schema_compat"

    min_code_revision: Mapped[str] = mapped_column(String(32), primary_key=True)


def kind_of(script: Any) -> str:
    """The kind a migration script declares; ValueError if it declares none."""
    kind = getattr(script.module, "kind", None)
    if kind not in KINDS:
        raise ValueError(
            f"migration {script.revision} ({script.path}) must declare "
            f"kind = {EXPAND!r} or {CONTRACT!r}, not {kind!r}"
        )
    return str(kind)


def history(scripts: ScriptDirectory, revision: str) -> list[tuple[str, str]]:
    """(revision, kind) of every migration up to `revision`, oldest first."""
    applied = [(s.revision, kind_of(s)) for s in scripts.iterate_revisions(revision, "base")]
    return applied[::-1]


def min_code_revision(applied: Sequence[tuple[str, str]]) -> str:
    """The oldest revision whose code may run after these (revision, kind) migrations."""
    contracts = [revision for revision, kind in applied if kind == CONTRACT]
    return contracts[-1] if contracts else applied[0][0]


def record(connection: Any, scripts: ScriptDirectory, revision: str) -> None:
    """Write the minimum code revision for a schema at `revision` (on a sync connection,
    in the migration's transaction); nothing before the migration that creates the table."""
    if not inspect(connection).has_table(SchemaCompatRow.__tablename__):
        return
    minimum = min_code_revision(history(scripts, revision))
    written = recorded(connection)
    # Written only when it changes: processes starting together (auto-migrate) all get here.
    if written is None:
        connection.execute(insert(SchemaCompatRow).values(min_code_revision=minimum))
    elif written != minimum:
        connection.execute(update(SchemaCompatRow).values(min_code_revision=minimum))


def recorded(connection: Any) -> str | None:
    """The minimum code revision the database records (None: it records none)."""
    if not inspect(connection).has_table(SchemaCompatRow.__tablename__):
        return None
    value = connection.execute(select(SchemaCompatRow.min_code_revision)).scalar()
    return str(value) if value is not None else None


class Fit(Enum):
    CURRENT = "current"  # at this build's head
    BEHIND = "behind"  # empty or older: `hacs migrate` brings it here
    AHEAD = "ahead"  # newer, only expanded since this build's head: run as it is
    TOO_NEW = "too new"  # newer, contracted past this build's head: needs a newer release


@dataclass(frozen=True)
class SchemaState:
    """The database's revision and recorded minimum, against this build's migrations."""

    current: str | None
    min_code_revision: str | None
    head: str
    known: frozenset[str]  # this build's revisions

    @property
    def fit(self) -> Fit:
        if self.current == self.head:
            return Fit.CURRENT
        if self.current is None or self.current in self.known:
            return Fit.BEHIND
        # A minimum this build knows is one of its own revisions, so at or before its head.
        if self.min_code_revision is not None and self.min_code_revision in self.known:
            return Fit.AHEAD
        return Fit.TOO_NEW

    def explain(self) -> str:
        """What a person reads in the log: the revisions involved and what to do."""
        at = f"database schema is at {self.current!r}"
        fit = self.fit
        if fit is Fit.CURRENT:
            return f"{at}, this build's head"
        if fit is Fit.BEHIND:
            return (
                f"{at}, this build needs {self.head!r}: "
                "run `hacs migrate` (or set HACS_AUTO_MIGRATE=true)"
            )
        if fit is Fit.AHEAD:
            return (
                f"{at}, newer than this build's {self.head!r}; it may run code from revision "
                f"{self.min_code_revision!r} on (only expand migrations since), so this build "
                "runs without migrating (it never downgrades)"
            )
        if self.min_code_revision is None:
            needs = "and records no minimum code revision (table hacs_schema_compat)"
        else:
            needs = (
                f"and a contract migration there needs code of revision "
                f"{self.min_code_revision!r} or later"
            )
        return (
            f"{at}, newer than this build's {self.head!r}, {needs}: deploy the release whose "
            "migrations include that revision (the one that migrated this database, or later); "
            "`hacs migrate` from this build cannot help, it never downgrades"
        )
