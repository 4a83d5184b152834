"""Schema migrations (Alembic) for SQLite and PostgreSQL, run programmatically.

`upgrade` never downgrades: a database newer than this build (a rollback of a
release) is left as it is when this build may run against it, and refused with
what to do when it may not (services/common/db/compatibility.py). After each
upgrade it records the oldest code revision the schema admits and runs the
applied migrations' `reconcile(connection)` steps: idempotent repairs of what
an older release may have written since (see docs/deploy-migrations.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from services.common.db import compatibility
from services.common.db.compatibility import Fit, SchemaState
from services.common.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


class SchemaTooNew(RuntimeError):
    """The database was contracted past this build's migrations: a newer release must run."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


async def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate to `revision`, record what code the schema admits and reconcile.

    A database ahead of this build is not touched: logged when this build may run
    against it, SchemaTooNew when it may not.
    """
    state = await schema_state(db)
    if state.fit is Fit.AHEAD:
        log.warning("not migrating: %s", state.explain())
        return
    if state.fit is Fit.TOO_NEW:
        raise SchemaTooNew(state.explain())

    def run(sync_connection: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)
        current = MigrationContext.configure(sync_connection).get_current_revision()
        if current is None:
            return
        directory = ScriptDirectory.from_config(config)
        compatibility.record(sync_connection, directory, current)
        for script in reversed(list(directory.iterate_revisions(current, "base"))):
            reconcile = getattr(script.module, "reconcile", None)
            if reconcile is not None:
                reconcile(sync_connection)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(db: Database) -> str | None:
    def read(sync_connection: Any) -> str | None:
        return MigrationContext.configure(sync_connection).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def schema_state(db: Database) -> SchemaState:
    """The database's revision and recorded minimum code revision, against this build."""

    def read(sync_connection: Any) -> tuple[str | None, str | None]:
        current = MigrationContext.configure(sync_connection).get_current_revision()
        return current, compatibility.recorded(sync_connection)

    async with db.engine.connect() as conn:
        current, minimum = await conn.run_sync(read)
    directory = scripts()
    head = directory.get_current_head()
    assert head is not None
    return SchemaState(
        current=current,
        min_code_revision=minimum,
        head=head,
        known=frozenset(script.revision for script in directory.walk_revisions()),
    )


def head_revision() -> str:
    head = scripts().get_current_head()
    assert head is not None
    return head
