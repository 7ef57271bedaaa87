"""Schema migrations on SQLite: every schema state, upgrades, the start-up refusal of serve, the CLI.

The database of the previous release is its real DDL (``tests/prev_release.py`` says how it was
dumped); PostgreSQL's side is ``tests/integration/test_migrate_postgres.py``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import migrate
from core.calls.tickets import TicketService
from core.migrate import SchemaError, State
from core.store import Base, make_engine
from core.tables import init_schema, metadata
from telephony import cli
from tests import prev_release

BASELINE_TABLES = 28  # in the previous release's DDL and in revision 0001
HEAD = migrate.head()
# The revisions after the baseline, oldest first, and the number a probe revision added by a test gets.
LATER = tuple(s.revision for s in reversed(list(migrate.scripts().walk_revisions())) if s.revision != migrate.BASELINE)
PROBE = f"{int(HEAD) + 1:04d}"


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _previous_release_db(path: Path, *, rows: bool = True) -> Path:
    with sqlite3.connect(path) as db:
        db.executescript(prev_release.sqlite_ddl())
    db.close()
    if rows:
        async def fill() -> None:
            engine = make_engine(_url(path))
            async with engine.begin() as conn:
                await prev_release.insert_rows(conn)
            await engine.dispose()

        asyncio.run(fill())
    return path


async def _sql(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


@pytest.fixture
def prev_db(tmp_path: Path) -> Path:
    """A SQLite file made by the previous release's DDL, with rows in several tables."""
    return _previous_release_db(tmp_path / "prev.db")


@pytest.fixture
async def prev_engine(tmp_path: Path) -> AsyncEngine:
    path = tmp_path / "prev-empty.db"
    _previous_release_db(path, rows=False)
    engine = make_engine(_url(path))
    yield engine
    await engine.dispose()


@pytest.fixture
def migrations_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the migrations, used instead of the real ones."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS", copy)
    migrate.scripts.cache_clear()
    yield copy
    migrate.scripts.cache_clear()


@pytest.fixture
def add_revision(migrations_copy: Path) -> Callable[[str], None]:
    """Add a revision after the head (PROBE), given the body of its ``upgrade()``, to the copy of the migrations."""

    def add(body: str) -> None:
        (migrations_copy / "versions" / f"{PROBE}_probe.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = '{PROBE}'\ndown_revision = '{HEAD}'\nbranch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade():\n" + "".join(f"    {line}\n" for line in body.splitlines())
        )
        migrate.scripts.cache_clear()

    return add


# --- the revisions build the models' schema -----------------------------------------------------------


def test_one_head_and_it_is_what_the_release_needs() -> None:
    assert migrate.scripts().get_heads() == [migrate.head()]
    assert migrate.scripts().get_base() == migrate.BASELINE


async def test_migrations_build_exactly_the_models_schema(engine: AsyncEngine) -> None:
    """``engine`` (conftest) is made by init_schema, that is by every revision."""
    assert (await migrate.schema_state(engine)).state is State.CURRENT
    async with engine.connect() as conn:
        diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    assert diffs == []


async def test_baseline_metadata_is_what_the_baseline_creates(tmp_path: Path) -> None:
    """The tables an unversioned database is compared with are those the baseline revision makes."""
    engine = make_engine(_url(tmp_path / "baseline.db"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(migrate.alembic_config(c), migrate.BASELINE))
        async with engine.connect() as conn:
            assert await conn.run_sync(migrate.differences, migrate.baseline_metadata()) == []
    finally:
        await engine.dispose()
    assert len(migrate.baseline_metadata().tables) == BASELINE_TABLES
    assert set(migrate.baseline_metadata().tables) <= set(Base.metadata.tables)


async def test_baseline_matches_the_previous_release_ddl(prev_engine: AsyncEngine) -> None:
    async with prev_engine.connect() as conn:
        assert await conn.run_sync(migrate.differences, migrate.baseline_metadata()) == []


# --- schema_state --------------------------------------------------------------------------------------


async def test_state_empty_then_current(tmp_path: Path) -> None:
    engine = make_engine(_url(tmp_path / "new.db"))
    try:
        assert await migrate.schema_state(engine) == migrate.SchemaState(State.EMPTY)
        done = await migrate.upgrade(engine)
        assert done.before.state is State.EMPTY and done.applied == (migrate.BASELINE, *LATER) and not done.stamped
        state = await migrate.schema_state(engine)
        assert (state.state, state.revision, state.tables) == (State.CURRENT, migrate.head(), len(metadata.tables))
        again = await migrate.upgrade(engine)
        assert again.before.state is State.CURRENT and again.applied == ()
        assert "nothing to do" in again.describe()
    finally:
        await engine.dispose()


async def test_state_unversioned(prev_engine: AsyncEngine) -> None:
    state = await migrate.schema_state(prev_engine)
    assert (state.state, state.revision, state.tables) == (State.UNVERSIONED, None, BASELINE_TABLES)


async def test_state_behind(engine: AsyncEngine, add_revision: Callable[[str], None]) -> None:
    add_revision("op.create_table('probe', sa.Column('id', sa.Integer(), primary_key=True))")
    state = await migrate.schema_state(engine)
    assert (state.state, state.revision) == (State.BEHIND, HEAD)
    assert f"this release needs {PROBE}" in state.describe()


async def test_state_ahead_or_unknown(engine: AsyncEngine) -> None:
    await _sql(engine, "UPDATE alembic_version SET version_num = '0042'")
    state = await migrate.schema_state(engine)
    assert (state.state, state.revision) == (State.UNKNOWN, "0042")
    with pytest.raises(SchemaError, match="0042, which this release does not have"):
        await migrate.upgrade(engine)
    assert (await migrate.schema_state(engine)).revision == "0042"


async def test_version_table_without_a_row_is_not_a_revision(tmp_path: Path) -> None:
    engine = make_engine(_url(tmp_path / "v.db"))
    try:
        await _sql(engine, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        assert (await migrate.schema_state(engine)).state is State.EMPTY
        await _sql(engine, "CREATE TABLE something (x INTEGER)")
        assert (await migrate.schema_state(engine)).state is State.UNVERSIONED
    finally:
        await engine.dispose()


# --- upgrade ---------------------------------------------------------------------------------------------


def test_previous_release_database_upgraded_by_the_cli_keeps_every_row(
    prev_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database the previous release made and filled: ``jiejing db upgrade`` stamps and upgrades it, no row lost.

    The DDL is the previous release's own, dumped once with that release's code on the path:
    ``git worktree add /tmp/jj-prev 7fd36c7`` then ``PYTHONPATH=/tmp/jj-prev python tests/fixtures/dump_schema.py
    tests/fixtures/schema_7fd36c7 postgresql+asyncpg://…/EMPTY_DATABASE`` (SQLite's ``.schema`` statements and
    ``pg_dump --schema-only``).
    """

    async def read(columns: dict[str, list[str]] | None = None) -> dict:
        engine = make_engine(_url(prev_db))
        try:
            async with engine.connect() as conn:
                return await prev_release.snapshot(conn, columns)
        finally:
            await engine.dispose()

    before = asyncio.run(read())
    assert all(rows for _, rows in before.values()), "every table of the test has rows"
    columns = {table: names for table, (names, _) in before.items()}  # later migrations add columns
    monkeypatch.setenv("JIEJING_DB_URL", _url(prev_db))
    assert cli.main(["db", "status"]) == 1
    assert "unversioned" in capsys.readouterr().out
    assert cli.main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert f"match the baseline: recorded as revision {migrate.BASELINE}" in out
    assert asyncio.run(read(columns)) == before

    async def check() -> None:
        engine = make_engine(_url(prev_db))
        try:
            assert (await migrate.schema_state(engine)).state is State.CURRENT
            ticket = await TicketService(engine).get("110-20261129-000001")
            assert ticket is not None and len(ticket.steps) == 3 and len(ticket.recordings) == 1
            assert ticket.steps[2].detail == {"disposition": "已出警"}
        finally:
            await engine.dispose()

    asyncio.run(check())
    assert cli.main(["db", "status"]) == 0
    assert f"current (revision {migrate.head()})" in capsys.readouterr().out
    assert cli.main(["db", "upgrade"]) == 0
    assert "nothing to do" in capsys.readouterr().out


async def test_unversioned_database_that_differs_from_the_baseline_is_left_alone(prev_engine: AsyncEngine) -> None:
    await _sql(prev_engine, "DROP INDEX ix_tickets_state", "ALTER TABLE users ADD COLUMN nickname VARCHAR(20)",
               "CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaError) as refused:
        await migrate.upgrade(prev_engine)
    message = str(refused.value)
    assert "not those of the release before the migrations" in message
    assert "index ix_tickets_state on tickets (state) missing" in message
    assert "column users.nickname not expected" in message
    assert "table notes not expected" in message
    assert (await migrate.schema_state(prev_engine)).state is State.UNVERSIONED  # no version table was left


async def test_unversioned_column_of_another_type_is_named(prev_engine: AsyncEngine) -> None:
    await _sql(prev_engine, "DROP TABLE ticket_counters",
               "CREATE TABLE ticket_counters (day VARCHAR(8) NOT NULL, last TEXT NOT NULL, "
               "CONSTRAINT pk_ticket_counters PRIMARY KEY (day))")
    with pytest.raises(SchemaError, match=r"column ticket_counters\.last is TEXT, expected INTEGER"):
        await migrate.upgrade(prev_engine)


async def test_behind_database_gets_the_later_revision_and_keeps_its_rows(
    prev_db: Path, add_revision: Callable[[str], None]
) -> None:
    """An unversioned database is stamped at the baseline, then a revision that copies tickets runs.

    Copying ``tickets`` (SQLite's way to alter a table) drops it under the rows of ticket_steps,
    recordings, incidents… that refer to it: the foreign keys must be off during the migration.
    """
    add_revision(
        "with op.batch_alter_table('tickets', recreate='always') as batch:\n"
        "    batch.add_column(sa.Column('language', sa.String(8), nullable=True))"
    )
    engine = make_engine(_url(prev_db))
    try:
        async with engine.connect() as conn:
            before = await prev_release.snapshot(conn)
        done = await migrate.upgrade(engine)
        assert done.stamped and done.applied == (*LATER, PROBE)
        assert f"applied {', '.join((*LATER, PROBE))}; the schema is at revision {PROBE}" in done.describe()
        columns = {table: names for table, (names, _) in before.items()}
        async with engine.connect() as conn:
            assert await prev_release.snapshot(conn, columns) == before
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
            assert (await conn.execute(text("SELECT count(*) FROM tickets WHERE language IS NULL"))).scalar_one() == 2
        assert await migrate.schema_state(engine) == migrate.SchemaState(State.CURRENT, PROBE, len(metadata.tables))
    finally:
        await engine.dispose()


async def test_failed_revision_leaves_the_database_as_it_was(
    prev_db: Path, add_revision: Callable[[str], None]
) -> None:
    """A revision that leaves steps of a deleted ticket is undone whole, the stamp of the baseline too."""
    add_revision(
        "op.create_table('probe', sa.Column('id', sa.Integer(), primary_key=True))\n"
        "op.execute(\"DELETE FROM tickets WHERE id = 2\")"
    )
    engine = make_engine(_url(prev_db))
    try:
        async with engine.connect() as conn:
            before = await prev_release.snapshot(conn)
        with pytest.raises(SchemaError, match="foreign keys point nowhere"):
            await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert await prev_release.snapshot(conn) == before
            tables = (await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))).scalars().all()
            assert "probe" not in tables and "alembic_version" not in tables
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
        assert (await migrate.schema_state(engine)).state is State.UNVERSIONED
    finally:
        await engine.dispose()


async def test_two_upgrades_at_once_migrate_once(tmp_path: Path) -> None:
    engines = [make_engine(_url(tmp_path / "race.db")) for _ in range(2)]
    try:
        done = await asyncio.gather(*(migrate.upgrade(e) for e in engines))
        assert sorted(d.before.state for d in done) == [State.CURRENT, State.EMPTY]
        assert (await migrate.schema_state(engines[0])).state is State.CURRENT
    finally:
        for e in engines:
            await e.dispose()


async def test_in_memory_database(tmp_path: Path) -> None:
    engine = make_engine("sqlite+aiosqlite://")
    try:
        await init_schema(engine)
        assert (await migrate.schema_state(engine)).state is State.CURRENT
    finally:
        await engine.dispose()


# --- what serve and the other commands do at start --------------------------------------------------------


async def test_ensure_ready_creates_an_empty_database(tmp_path: Path) -> None:
    engine = make_engine(_url(tmp_path / "fresh.db"))
    try:
        assert (await migrate.ensure_ready(engine)).state is State.EMPTY
        assert (await migrate.ensure_ready(engine)).state is State.CURRENT
    finally:
        await engine.dispose()


async def test_ensure_ready_refuses_unversioned_and_behind(
    prev_engine: AsyncEngine, engine: AsyncEngine, add_revision: Callable[[str], None]
) -> None:
    with pytest.raises(SchemaError, match=r"unversioned .* run `jiejing db upgrade`"):
        await migrate.ensure_ready(prev_engine)
    assert (await migrate.schema_state(prev_engine)).state is State.UNVERSIONED
    add_revision("op.create_table('probe', sa.Column('id', sa.Integer(), primary_key=True))")
    with pytest.raises(SchemaError, match=rf"behind \(revision {HEAD}, this release needs {PROBE}\).*`jiejing db upgrade`"):
        await migrate.ensure_ready(engine)
    assert (await migrate.schema_state(engine)).revision == HEAD


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_refuses_an_earlier_release_database(
    prev_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jiejing serve` on an unversioned database: exit 3 with what to run, before listening anywhere."""
    monkeypatch.setenv("JIEJING_LAB", "yes")  # the lab's secrets and city: the schema is what is refused
    monkeypatch.setenv("JIEJING_DB_URL", _url(prev_db))
    monkeypatch.setenv("JIEJING_HTTP_PORT", str(_free_port()))
    monkeypatch.setenv("JIEJING_AGI_PORT", str(_free_port()))
    monkeypatch.setenv("JIEJING_AMI_PORT", str(_free_port()))  # nobody there: the refusal comes first
    assert cli.main(["serve"]) == 3
    err = capsys.readouterr().err
    assert "made by a release before the migrations" in err and "run `jiejing db upgrade`" in err
    state = asyncio.run(_state(_url(prev_db)))
    assert state.state is State.UNVERSIONED


async def _state(url: str) -> migrate.SchemaState:
    engine = make_engine(url)
    try:
        return await migrate.schema_state(engine)
    finally:
        await engine.dispose()


async def test_serve_creates_the_schema_of_an_empty_database(tmp_path: Path) -> None:
    """A fresh install starts with one command: serve's assembly, started (Asterisk absent), migrates an empty store."""
    from aiohttp import web

    from core.config import Settings
    from telephony import serve

    url = _url(tmp_path / "fresh.db")
    settings = replace(Settings(), db_url=url, http_port=_free_port(), agi_port=_free_port(), ami_port=_free_port(),
                       intake_port=_free_port())
    runner = web.AppRunner(serve.make_web_app(serve.build(settings)))
    await runner.setup()
    try:
        assert (await _state(url)) == migrate.SchemaState(State.CURRENT, migrate.head(), len(metadata.tables))
    finally:
        await runner.cleanup()


def test_users_command_refuses_an_earlier_release_database(
    prev_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JIEJING_DB_URL", _url(prev_db))
    assert cli.main(["users", "list"]) == 3
    assert "run `jiejing db upgrade`" in capsys.readouterr().err


def test_users_command_creates_an_empty_database_by_the_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JIEJING_DB_URL", _url(tmp_path / "users.db"))
    assert cli.main(["users", "list"]) == 0
    assert cli.main(["db", "status"]) == 0
    assert "current" in capsys.readouterr().out


# --- a new revision ---------------------------------------------------------------------------------------


def test_new_revision_of_unchanged_models_is_empty(migrations_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`jiejing db revision` drafts the next revision; with the models as the migrations leave them, it does nothing."""
    assert cli.main(["db", "revision", "-m", "nothing new"]) == 0
    path = migrations_copy / "versions" / f"{PROBE}_nothing_new.py"
    assert f"wrote {path}" in capsys.readouterr().out
    source = path.read_text()
    assert f"revision: str = '{PROBE}'" in source and f"down_revision: str | None = '{HEAD}'" in source
    upgrade = source[source.index("def upgrade() -> None:"):source.index("def downgrade() -> None:")]
    assert [line.strip() for line in upgrade.splitlines()[1:] if line.strip() and "###" not in line] == ["pass"]
