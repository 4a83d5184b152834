"""Alembic environment. Runs on a connection handed over by `migrate.py`, so
the same code migrates SQLite and PostgreSQL, from `hacs migrate` or at start."""

from __future__ import annotations

from alembic import context

from services.app.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
