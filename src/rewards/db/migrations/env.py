"""Alembic environment: runs against the connection handed in by rewards.db.migrate."""

from __future__ import annotations

from alembic import context

from rewards.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the programmatic entry point is supported
    raise RuntimeError("run migrations through rewards.db.migrate.upgrade(database_url)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
