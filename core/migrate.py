"""Schema migrations: where a database's schema stands, and bringing it to this release's.

The revisions are alembic's, in ``core/migrations/versions/`` (configured here, no ``alembic.ini``).
The first, ``0001``, is the baseline: the schema as releases before the migrations made it with
``create_all``, written out table by table so that it never changes when the models do.

A database is in one of these states (``schema_state``):

* empty: no table at all; ``upgrade`` runs every revision (``jiejing serve`` does it by itself);
* current: at this release's head revision;
* behind: at an older revision of this release's history; ``jiejing db upgrade`` runs the rest;
* unversioned: tables but no revision, made by a release before the migrations; ``upgrade`` compares
  its tables with the baseline, refuses on any difference, else records it as the baseline
  (alembic's "stamp") and runs the later revisions;
* unknown: at a revision this release does not have (made by a newer release, or another branch);
  nothing here touches it.

``upgrade`` works in one transaction under a lock (an advisory lock on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite), so two processes starting at once do not both migrate, and a failed
revision leaves the database as it was. On SQLite the foreign keys are checked once at the end
rather than during the migration, since a batch operation copies tables under them.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Index, MetaData, inspect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

BASELINE = "0001"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
# pg_advisory_xact_lock key of schema migrations: "jiejing" in ASCII.
_PG_LOCK_KEY = int.from_bytes(b"jiejing", "big")


class SchemaError(RuntimeError):
    """The database's schema is not one this release can run on, or cannot be brought to it."""


class State(StrEnum):
    EMPTY = "empty"
    CURRENT = "current"
    BEHIND = "behind"
    UNVERSIONED = "unversioned"
    UNKNOWN = "ahead or unknown"


@dataclass(frozen=True, slots=True)
class SchemaState:
    state: State
    revision: str | None = None  # the database's revision, if it records one
    tables: int = 0  # tables besides alembic's own

    def describe(self) -> str:
        head_ = head()
        if self.state is State.EMPTY:
            return f"empty (no tables); the migrations create the schema at revision {head_}"
        if self.state is State.CURRENT:
            return f"current (revision {self.revision})"
        if self.state is State.BEHIND:
            return f"behind (revision {self.revision}, this release needs {head_})"
        if self.state is State.UNVERSIONED:
            return f"unversioned ({self.tables} tables made by a release before the migrations; baseline {BASELINE})"
        return f"ahead or unknown (revision {self.revision}, which this release does not have; its head is {head_})"


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What ``upgrade`` found and did."""

    before: SchemaState
    stamped: bool  # an unversioned database recorded as the baseline
    applied: tuple[str, ...]  # revisions run, oldest first

    def describe(self) -> str:
        if self.before.state is State.CURRENT:
            return f"the schema is current (revision {self.before.revision}); nothing to do"
        lines = []
        if self.stamped:
            lines.append(f"tables of an earlier release match the baseline: recorded as revision {BASELINE}")
        if self.applied:
            lines.append("applied " + ", ".join(self.applied) + f"; the schema is at revision {head()}")
        elif self.stamped:
            lines.append(f"the schema is at revision {head()}")
        return "\n".join(lines)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration of the center; with ``connection``, ``env.py`` migrates on it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Revisions are numbered: 0002_add_something.py ("%%" is a "%" in alembic's configuration).
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def scripts() -> ScriptDirectory:
    """The revisions, read once per process."""
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """This release's schema revision."""
    heads = scripts().get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migrations must have one head, not {heads}: merge them")
    return heads[0]


def revisions_after(from_revision: str | None) -> tuple[str, ...]:
    """Revisions after ``from_revision`` (None: all) up to the head, oldest first."""
    return tuple(s.revision for s in reversed(list(scripts().iterate_revisions(head(), from_revision))))


def _url(engine_or_conn: AsyncEngine | Connection) -> str:
    return engine_or_conn.engine.url.render_as_string(hide_password=True)


def state_of(conn: Connection) -> SchemaState:
    """The schema state of the database ``conn`` is on (synchronous, for ``run_sync``)."""
    names = set(inspect(conn).get_table_names())
    tables = len(names - {VERSION_TABLE})
    revisions = MigrationContext.configure(conn).get_current_heads() if VERSION_TABLE in names else ()
    if not revisions:
        return SchemaState(State.UNVERSIONED if tables else State.EMPTY, tables=tables)
    revision = revisions[0]
    if len(revisions) > 1:
        return SchemaState(State.UNKNOWN, ",".join(revisions), tables)
    if revision == head():
        return SchemaState(State.CURRENT, revision, tables)
    if revision in revisions_after(None):
        return SchemaState(State.BEHIND, revision, tables)
    return SchemaState(State.UNKNOWN, revision, tables)


async def schema_state(engine: AsyncEngine) -> SchemaState:
    """Where the database's schema stands: empty, current, behind, unversioned or unknown."""
    async with engine.connect() as conn:
        return await conn.run_sync(state_of)


# --- the baseline, as alembic operations recorded into a MetaData -------------------------------------


@functools.cache
def baseline_metadata() -> MetaData:
    """The tables and indexes revision 0001 creates, as a MetaData (whatever the models say today).

    The revision's ``upgrade()`` runs with alembic operations that record instead of executing; it
    may only create tables and indexes.
    """
    metadata = MetaData()
    script = scripts().get_revision(BASELINE)
    assert script is not None and script.module is not None
    context = MigrationContext.configure(dialect_name="sqlite", opts={"as_sql": True})

    def record(operation: ops.MigrateOperation) -> Any:
        if isinstance(operation, ops.CreateTableOp):
            return operation.to_table(context).to_metadata(metadata)
        if isinstance(operation, ops.CreateIndexOp):
            made = operation.to_index(context)
            table = metadata.tables[operation.table_name]
            return Index(made.name, *(table.c[c.name] for c in made.columns), unique=bool(made.unique),
                         **made.dialect_kwargs)
        raise TypeError(f"the baseline may only create tables and indexes, not {type(operation).__name__}")

    with Operations.context(context) as operations:
        operations.invoke = record  # type: ignore[method-assign]
        script.module.upgrade()
    return metadata


def _describe_diff(diff: Any) -> Iterable[str]:
    """Alembic's autogenerate differences, said of the database against the expected schema."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        for change in diff:
            kind, _schema, table, column = change[:4]
            if kind == "modify_type":
                yield f"column {table}.{column} is {change[5]}, expected {change[6]}"
            elif kind == "modify_nullable":
                yield f"column {table}.{column} is {'' if change[5] else 'NOT '}NULL, expected " \
                      f"{'' if change[6] else 'NOT '}NULL"
            else:
                yield f"column {table}.{column}: {kind}"
        return
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        yield f"table {diff[1].name} {'missing' if kind == 'add_table' else 'not expected'}"
    elif kind in ("add_column", "remove_column"):
        yield f"column {diff[2]}.{diff[3].name} {'missing' if kind == 'add_column' else 'not expected'}"
    elif kind in ("add_index", "remove_index"):
        index = diff[1]
        columns = ", ".join(str(c.name) for c in index.columns) if index.columns else "expressions"
        yield f"index {index.name} on {index.table.name} ({columns}) " \
              f"{'missing' if kind == 'add_index' else 'not expected'}"
    elif kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        what = "foreign key" if kind.endswith("_fk") else type(constraint).__name__
        yield f"{what} {constraint.name} on {constraint.table.name} " \
              f"{'missing' if kind.startswith('add') else 'not expected'}"
    else:
        yield f"{kind}: {diff[1:]}"


def differences(conn: Connection, expected: MetaData) -> list[str]:
    """How the database's tables differ from ``expected`` (empty: they match); synchronous."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return [line for diff in compare_metadata(context, expected) for line in _describe_diff(diff)]


# --- upgrading ---------------------------------------------------------------------------------------


@asynccontextmanager
async def _locked(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction that no other migration runs beside; committed when the block ends without error."""
    async with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            async with conn.begin():
                if conn.dialect.name == "postgresql":
                    await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
                yield conn
            return
        # SQLite's driver opens no transaction for DDL by itself: take the write lock at once,
        # with the foreign keys off (a batch operation copies tables) and checked before the commit.
        await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise SchemaError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()
        finally:
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            await conn.commit()


def _refusal(state: SchemaState, url: str) -> str:
    if state.state is State.UNKNOWN:
        return (f"the database {url} is at schema revision {state.revision}, which this release does not have "
                f"(its head is {head()}): it was made by a newer release; run that release, or restore a backup")
    return (f"the database {url} is {state.describe()}: back it up and run `jiejing db upgrade` "
            f"(with the same JIEJING_DB_URL) before starting this release")


def _upgrade_sync(conn: Connection, empty_only: bool) -> Upgrade:
    before = state_of(conn)
    if before.state is State.CURRENT:
        return Upgrade(before, False, ())
    if before.state is State.UNKNOWN or (empty_only and before.state is not State.EMPTY):
        raise SchemaError(_refusal(before, _url(conn)))
    stamped = False
    if before.state is State.UNVERSIONED:
        found = differences(conn, baseline_metadata())
        if found:
            listed = "\n  ".join(found)
            raise SchemaError(
                f"the database {_url(conn)} has tables but no schema revision, and they are not those of the "
                f"release before the migrations (revision {BASELINE}), so it was left as it was:\n  {listed}\n"
                "Bring it to that release's schema (e.g. start that release once), then run `jiejing db upgrade` "
                "again."
            )
        command.stamp(alembic_config(conn), BASELINE)
        stamped = True
    applied = revisions_after(before.revision if before.state is State.BEHIND else BASELINE if stamped else None)
    command.upgrade(alembic_config(conn), "head")
    return Upgrade(before, stamped, applied)


async def upgrade(engine: AsyncEngine, *, empty_only: bool = False) -> Upgrade:
    """Bring the database to this release's schema; SchemaError (nothing changed) when it cannot.

    ``empty_only``: create the schema of an empty database, accept a current one, refuse the rest
    (what ``jiejing serve`` does at start).
    """
    async with _locked(engine) as conn:
        return await conn.run_sync(_upgrade_sync, empty_only)


async def ensure_ready(engine: AsyncEngine) -> SchemaState:
    """The start-up check of processes that use the database: the schema must be current.

    An empty database gets the schema by the migrations (a fresh install starts with one command);
    any other state raises SchemaError saying what to do. Returns the state found.
    """
    state = await schema_state(engine)
    if state.state is State.CURRENT:
        return state
    if state.state is not State.EMPTY:
        raise SchemaError(_refusal(state, _url(engine)))
    await upgrade(engine, empty_only=True)
    return state



async def db_command(name: str, engine: AsyncEngine, out: TextIO) -> int:
    """``jiejing db status`` and ``jiejing db upgrade`` on ``engine``: print the result, return the exit code.

    status: 0 when the schema is current, 1 otherwise. upgrade: 0 when the schema is now current;
    SchemaError (nothing changed) when it cannot be upgraded.
    """
    url = _url(engine)
    if name == "status":
        state = await schema_state(engine)
        print(f"{url}: {state.describe()}", file=out)
        return 0 if state.state is State.CURRENT else 1
    if name == "upgrade":
        print(f"{url}: {(await upgrade(engine)).describe()}", file=out)
        return 0
    raise ValueError(f"no such db command: {name}")


# --- writing a new revision (developers) -------------------------------------------------------------


def _next_revision_id() -> str:
    heads = scripts().get_heads()
    return f"{max((int(h) for h in heads), default=0) + 1:04d}"


async def new_revision(message: str, url: str | None = None) -> Path:
    """Write ``versions/NNNN_<message>.py``: what the models have that a database at head lacks.

    Alembic's autogenerate compares ``core.tables.metadata`` with a database brought to head first: by
    default a throw-away SQLite file, or ``url`` (e.g. a PostgreSQL database to compare with, which is
    upgraded to head). The result is a draft to read and complete before it is committed.
    """
    import tempfile

    from core.store import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url or f"sqlite+aiosqlite:///{Path(tmp) / 'head.db'}")
        try:
            if scripts().get_heads():
                await upgrade(engine)
            rev_id = _next_revision_id()

            def write(conn: Connection) -> Any:
                return command.revision(alembic_config(conn), message=message, autogenerate=True, rev_id=rev_id)

            async with engine.begin() as conn:
                script = await conn.run_sync(write)
        finally:
            await engine.dispose()
    return Path(script.path)
