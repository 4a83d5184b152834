"""Alembic environment. Runs on a connection handed over by `migrate.py`, so
the same code migrates SQLite and PostgreSQL, from `hacs migrate` or at start.

`target_metadata` is every table imported so far (autogenerate wants them
all: import `services.app.schema` first, as its test does); upgrades only
run the scripts in `versions/`.
"""

from __future__ import annotations

from alembic import context

from services.common.db.base import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
