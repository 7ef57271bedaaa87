"""Schema migrations on PostgreSQL (asyncpg): the revisions build the models' schema, and a database made by
the release before the migrations is upgraded without losing a row.

The previous release's database is its real DDL, ``pg_dump --schema-only`` of what its ``create_all`` made
(``tests/prev_release.py`` says how it was dumped), loaded into a schema of the test's own.

Runs when JIEJING_TEST_PG_URL names a database, e.g.
``postgresql+asyncpg://jiejing:jiejing@127.0.0.1:5432/jiejing_test``. Each test works in a schema of its
own, dropped afterwards: the database's other data is left alone.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import migrate
from core.calls.tickets import TicketService
from core.migrate import SchemaError, State
from core.tables import metadata
from tests import prev_release
from tests.integration.test_store_postgres import PG_URL, _engine, pg_schema  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="JIEJING_TEST_PG_URL is not set; sip-lab/test.sh sets it after starting PostgreSQL"
)


@pytest.fixture
async def pg_engine(pg_schema: str) -> AsyncIterator[AsyncEngine]:
    engine = _engine(pg_schema)
    yield engine
    await engine.dispose()


@pytest.fixture
async def prev_engine(pg_schema: str) -> AsyncIterator[AsyncEngine]:
    """The test's schema as the previous release made it (its pg_dump), still without rows."""
    loader = _engine(pg_schema)
    try:
        async with loader.begin() as conn:
            for statement in prev_release.postgresql_statements(pg_schema):
                await conn.exec_driver_sql(statement)
    finally:
        await loader.dispose()  # the dump's SET statements stay with its own connections
    engine = _engine(pg_schema)
    yield engine
    await engine.dispose()


async def test_migrations_build_exactly_the_models_schema(pg_engine: AsyncEngine) -> None:
    assert (await migrate.schema_state(pg_engine)).state is State.EMPTY
    done = await migrate.upgrade(pg_engine)
    assert done.applied == migrate.revisions_after(None)
    state = await migrate.schema_state(pg_engine)
    assert (state.state, state.revision) == (State.CURRENT, migrate.head())
    async with pg_engine.connect() as conn:
        diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
        assert diffs == []


async def test_previous_release_database_upgraded_keeps_every_row(prev_engine: AsyncEngine) -> None:
    """The previous release's PostgreSQL schema with rows in it: ``jiejing db upgrade`` keeps every row.

    The DDL is the previous release's own, dumped once with that release's code on the path:
    ``git worktree add /tmp/jj-prev 7fd36c7`` then ``PYTHONPATH=/tmp/jj-prev python tests/fixtures/dump_schema.py
    tests/fixtures/schema_7fd36c7 postgresql+asyncpg://…/EMPTY_DATABASE`` (SQLite's ``.schema`` statements and
    ``pg_dump --schema-only``).
    """
    async with prev_engine.begin() as conn:
        await prev_release.insert_rows(conn)
    async with prev_engine.connect() as conn:
        before = await prev_release.snapshot(conn)
    assert all(rows for _, rows in before.values()), "every table of the test has rows"
    assert (await migrate.schema_state(prev_engine)).state is State.UNVERSIONED
    with pytest.raises(SchemaError, match="run `jiejing db upgrade`"):
        await migrate.ensure_ready(prev_engine)  # what `jiejing serve` does at start

    out = io.StringIO()
    assert await migrate.db_command("upgrade", prev_engine, out) == 0  # what `jiejing db upgrade` runs
    assert f"match the baseline: recorded as revision {migrate.BASELINE}" in out.getvalue()

    columns = {table: names for table, (names, _) in before.items()}
    async with prev_engine.connect() as conn:
        assert await prev_release.snapshot(conn, columns) == before
    assert (await migrate.ensure_ready(prev_engine)).state is State.CURRENT
    ticket = await TicketService(prev_engine).get("110-20261129-000001")
    assert ticket is not None and len(ticket.steps) == 3 and len(ticket.recordings) == 1
    assert ticket.steps[2].detail == {"disposition": "已出警"}
    out = io.StringIO()
    assert await migrate.db_command("status", prev_engine, out) == 0
    assert f"current (revision {migrate.head()})" in out.getvalue()


async def test_unversioned_database_that_differs_is_left_alone(prev_engine: AsyncEngine) -> None:
    async with prev_engine.begin() as conn:
        await conn.execute(text("ALTER TABLE tickets ALTER COLUMN seat TYPE VARCHAR(64)"))
        await conn.execute(text("DROP INDEX ix_officers_ticket"))
    with pytest.raises(SchemaError) as refused:
        await migrate.upgrade(prev_engine)
    message = str(refused.value)
    assert "column tickets.seat is VARCHAR(64), expected VARCHAR(255)" in message
    assert "index ix_officers_ticket on officers (ticket) missing" in message
    assert (await migrate.schema_state(prev_engine)).state is State.UNVERSIONED


async def test_two_processes_starting_at_once_migrate_once(pg_schema: str) -> None:
    engines = [_engine(pg_schema) for _ in range(3)]
    try:
        found = await asyncio.gather(*(migrate.ensure_ready(e) for e in engines))
        assert {s.state for s in found} <= {State.EMPTY, State.CURRENT}
        assert (await migrate.schema_state(engines[0])).state is State.CURRENT
        async with engines[0].connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one() == 1
    finally:
        for e in engines:
            await e.dispose()
