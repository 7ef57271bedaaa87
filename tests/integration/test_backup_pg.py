"""`jiejing backup` and `jiejing restore` with the store on a real PostgreSQL: ``pg_dump --format=custom`` of a
center's database, restored by ``pg_restore`` into another, empty database with the recordings and journal files
on an emptied host, passes `jiejing journal verify`; a database with rows is never restored into.

Runs when JIEJING_TEST_PG_URL names a database (sip-lab/test.sh makes one), with PostgreSQL's client tools on
PATH. The test makes two databases of its own beside it, named after it, and drops them afterwards: the role of
the URL needs CREATEDB (``ALTER ROLE jiejing CREATEDB``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from core.calls.tables import Recording, Ticket
from core.store import make_engine
from core.tables import init_schema
from telephony import cli
from tests.integration.test_store_postgres import PG_URL
from tests.unit.test_backup import make_host

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="JIEJING_TEST_PG_URL is not set; sip-lab/test.sh sets it after starting PostgreSQL"
)


async def _admin(*statements: str) -> None:
    engine = make_engine(PG_URL, isolation_level="AUTOCOMMIT")  # CREATE/DROP DATABASE run outside a transaction
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Two new, empty databases beside the test database (the center's, and the one restored into): URLs."""
    assert PG_URL is not None
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.fail("pg_dump and pg_restore are not on PATH: install postgresql-client")
    base = make_url(PG_URL)
    suffix = uuid.uuid4().hex[:8]
    names = [f"{base.database}_backup_{suffix}", f"{base.database}_restore_{suffix}"]
    try:
        asyncio.run(_admin(*(f'CREATE DATABASE "{name}"' for name in names)))
    except DBAPIError as exc:
        asyncio.run(_admin(*(f'DROP DATABASE IF EXISTS "{name}"' for name in names)))
        if "permission denied" in str(exc):
            pytest.fail(f"the role {base.username} of JIEJING_TEST_PG_URL cannot create databases: "
                        f"ALTER ROLE {base.username} CREATEDB")
        raise
    try:
        yield tuple(base.set(database=name).render_as_string(hide_password=False) for name in names)
    finally:
        asyncio.run(_admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names)))


async def _counts(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            tickets = (await conn.execute(select(func.count()).select_from(Ticket))).scalar_one()
            recordings = (await conn.execute(select(func.count()).select_from(Recording))).scalar_one()
            return tickets, recordings
    finally:
        await engine.dispose()


def _backup_then_lose_the_host(
    source: str, root: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    make_host(root, source, monkeypatch)
    assert cli.main(["journal", "verify"]) == 0
    capsys.readouterr()
    assert cli.main(["backup", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["store"].startswith("PostgreSQL ") and summary["store"].endswith(make_url(source).database)
    assert (summary["recordings"], summary["journal_files"], summary["notes"]) == (2, 2, [])
    manifest = json.loads((folder / "manifest.json").read_text())
    (store,) = [f for f in manifest["files"] if f["kind"] == "store"]
    assert (store["engine"], store["file"]) == ("postgresql", "store.pgdump")
    assert (folder / "store.pgdump").read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert f":{make_url(source).password}@" not in json.dumps(manifest)  # the password is never written
    shutil.rmtree(root)  # the host's files are lost; its database stays, for comparison


def test_postgresql_backup_restored_into_an_empty_database_verifies(
    databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source, target = databases
    root, folder = tmp_path / "host", tmp_path / "backup"
    _backup_then_lose_the_host(source, root, folder, monkeypatch, capsys)

    monkeypatch.setenv("JIEJING_DB_URL", target)
    assert cli.main(["restore", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"restored: store PostgreSQL {make_url(target).username}@" in out and "2 recordings" in out
    assert asyncio.run(_counts(target)) == asyncio.run(_counts(source)) == (2, 1)
    assert cli.main(["journal", "verify"]) == 0
    out = capsys.readouterr().out
    assert "journal: intact" in out and "1 recording files re-hashed" in out and "1 anchors checked" in out
    assert (root / "recordings" / "fallback-only.wav").is_file()

    # The database holds rows now: a second restore is refused before anything is written.
    (root / "recordings" / "1.2.wav").unlink()
    assert cli.main(["restore", str(folder)]) == 1
    assert "already holds data (journal_entries, recordings, ticket_counters" in capsys.readouterr().err
    assert not (root / "recordings" / "1.2.wav").exists()


def test_postgresql_restore_replaces_an_empty_schema(
    databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A new host's database that `jiejing db upgrade` gave its tables, none with a row, takes the restore."""
    source, target = databases
    root, folder = tmp_path / "host", tmp_path / "backup"
    _backup_then_lose_the_host(source, root, folder, monkeypatch, capsys)

    async def upgrade() -> None:
        engine = make_engine(target)
        try:
            await init_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(upgrade())
    assert asyncio.run(_counts(target)) == (0, 0)
    monkeypatch.setenv("JIEJING_DB_URL", target)
    assert cli.main(["restore", str(folder)]) == 0
    assert asyncio.run(_counts(target)) == (2, 1)
    assert cli.main(["journal", "verify"]) == 0
    assert "journal: intact" in capsys.readouterr().out
