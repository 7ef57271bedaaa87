"""Alembic's environment: runs the revisions on the connection ``core.migrate`` hands over.

The connection (``config.attributes["connection"]``) is the synchronous view, through
``AsyncConnection.run_sync``, of a connection of an engine made by ``core.store.make_engine``, so SQLite
gets its pragmas; the caller owns the transaction and the lock (``core.migrate.upgrade``).
"""

from __future__ import annotations

from alembic import context

from core.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("the migrations run through `jiejing db upgrade` (core.migrate), on a database connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters a table by copying it into a new one: generated revisions use batch operations, which
    # do that there and plain ALTERs on PostgreSQL, so one revision serves both.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
