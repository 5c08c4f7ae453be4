"""Alembic environment: migrations run on the connection the store hands over, in its transaction.

``SqlExperimentStore`` opens a ``BEGIN IMMEDIATE`` transaction, puts the connection in
``config.attributes["connection"]`` and calls ``alembic.command.upgrade``; the whole upgrade then
commits or rolls back with that transaction (SQLite DDL is transactional), so a failed or killed
upgrade leaves the store as it was.
"""

from __future__ import annotations

from alembic import context

from storage.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always passes its connection
    raise RuntimeError("run LocDiff migrations through storage.SqlExperimentStore, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
