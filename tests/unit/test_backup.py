"""`jiejing backup` and `jiejing restore`: a host's store, recordings and journal files, restored onto an empty
host, pass `jiejing journal verify`; a damaged backup or an occupied target changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from core.calls.tickets import TicketService
from core.quality import backup
from core.quality.journal import Journaler
from core.store import make_engine
from core.tables import init_schema
from telephony import cli
from tests.unit.test_journal import KEY, _call


def make_host(root: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A center's files under ``root``, as the settings name them, and its store at ``db_url`` (empty): two calls,
    a bound recording and a fallback one that is not, the journal caught up and anchored."""
    (root / "recordings").mkdir(parents=True)
    (root / "journal").mkdir()
    key = root / "journal" / "key"
    key.write_bytes(KEY + b"\n")
    os.chmod(key, 0o600)
    (root.parent / "none.toml").write_text("")
    monkeypatch.setenv("JIEJING_CONFIG", str(root.parent / "none.toml"))
    monkeypatch.setenv("JIEJING_DB_URL", db_url)
    monkeypatch.setenv("JIEJING_RECORDINGS_DIR", str(root / "recordings"))
    monkeypatch.setenv("JIEJING_JOURNAL_KEY_FILE", str(key))
    monkeypatch.setenv("JIEJING_JOURNAL_ANCHOR_FILE", str(root / "journal" / "anchors"))

    async def fill() -> None:
        engine = make_engine(db_url)
        try:
            await init_schema(engine)
            service = TicketService(engine)
            await _call(service, "1.1")
            number = await _call(service, "1.2", seat="seat-02")
            wav = root / "recordings" / "1.2.wav"
            wav.write_bytes(b"RIFF-recorded-call" * 500)
            (root / "recordings" / "fallback-only.wav").write_bytes(b"RIFF-fallback" * 10)  # not bound: kept too
            await service.bind_recording(number, str(wav))
            journaler = Journaler(engine, anchor_key=KEY, anchor_file=root / "journal" / "anchors")
            await journaler.catch_up()
            await journaler.anchor()
        finally:
            await engine.dispose()

    asyncio.run(fill())
    return root


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "host"
    return make_host(root, f"sqlite+aiosqlite:///{root / 'jiejing.db'}", monkeypatch)


def test_backup_restored_onto_an_empty_host_verifies(host: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["journal", "verify"]) == 0
    capsys.readouterr()
    folder = tmp_path / "backup-1"
    assert cli.main(["backup", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["recordings"], summary["journal_files"], summary["notes"]) == (2, 2, [])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(f["kind"] for f in manifest["files"]) == ["journal_anchors", "journal_key", "recording",
                                                            "recording", "store"]
    assert oct((folder / "journal" / "key").stat().st_mode & 0o777) == "0o600"

    shutil.rmtree(host)  # the host is lost; a new one has the same layout and nothing in it
    assert cli.main(["restore", str(folder)]) == 0
    assert "restored: store SQLite" in capsys.readouterr().out
    assert cli.main(["journal", "verify"]) == 0
    out = capsys.readouterr().out
    assert "journal: intact" in out and "1 recording files re-hashed" in out and "1 anchors checked" in out

    assert cli.main(["restore", str(folder)]) == 1  # the store has data now: never overwritten
    assert "already holds data" in capsys.readouterr().err


def test_a_damaged_backup_is_refused_before_anything_is_written(host: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "backup-2"
    assert cli.main(["backup", str(folder)]) == 0
    assert cli.main(["backup", str(folder)]) == 1  # never into a used folder
    assert "is not empty" in capsys.readouterr().err
    shutil.rmtree(host)
    wav = folder / "recordings" / "1.2.wav"
    wav.write_bytes(wav.read_bytes()[:-1] + b"X")
    assert cli.main(["restore", str(folder)]) == 1
    assert "recordings/1.2.wav does not match its sha256" in capsys.readouterr().err
    assert not host.exists()  # nothing was written


def test_attachments_are_backed_up_and_restored_to_their_place(
    host: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = host / "attachments"
    photos.mkdir()
    jpeg = b"\xff\xd8\xff\xe0 a report's photo"
    sha256 = hashlib.sha256(jpeg).hexdigest()
    (photos / f"{sha256}.jpg").write_bytes(jpeg)
    (photos / ".0123.part").write_bytes(b"still being fetched")  # hidden: not a kept file yet
    monkeypatch.setenv("JIEJING_ATTACHMENTS_DIR", str(photos))
    folder = tmp_path / "backup-5"
    assert cli.main(["backup", str(folder)]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = [f for f in manifest["files"] if f["kind"] == "attachment"]
    assert entry == {"kind": "attachment", "file": f"attachments/{sha256}.jpg", "path": str(photos / f"{sha256}.jpg"),
                     "sha256": sha256, "size": len(jpeg)}

    shutil.rmtree(host)
    assert cli.main(["restore", str(folder)]) == 0
    assert (photos / f"{sha256}.jpg").read_bytes() == jpeg and not (photos / ".0123.part").exists()

    # The same checks as recordings: a damaged copy, a differing file in place, a place outside the folder.
    (host / "jiejing.db").unlink()
    (photos / f"{sha256}.jpg").write_bytes(b"another photo")
    assert cli.main(["restore", str(folder)]) == 1
    assert "exists and differs" in capsys.readouterr().err
    (photos / f"{sha256}.jpg").unlink()
    monkeypatch.setenv("JIEJING_ATTACHMENTS_DIR", str(tmp_path / "elsewhere"))
    assert cli.main(["restore", str(folder)]) == 1
    assert "not inside JIEJING_ATTACHMENTS_DIR" in capsys.readouterr().err
    monkeypatch.setenv("JIEJING_ATTACHMENTS_DIR", str(photos))
    (folder / "attachments" / f"{sha256}.jpg").write_bytes(b"damaged")
    assert cli.main(["restore", str(folder)]) == 1
    assert f"attachments/{sha256}.jpg does not match its sha256" in capsys.readouterr().err
    assert not (photos / f"{sha256}.jpg").exists() and not (host / "jiejing.db").exists()


def test_restore_never_overwrites_a_file_that_differs(host: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "backup-3"
    assert cli.main(["backup", str(folder)]) == 0
    (host / "jiejing.db").unlink()
    (host / "journal" / "anchors").write_text("someone else's anchors\n")
    assert cli.main(["restore", str(folder)]) == 1
    assert "anchors exists and differs" in capsys.readouterr().err
    assert not (host / "jiejing.db").exists()


def test_a_manifest_pointing_outside_the_backup_is_refused(host: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "backup-4"
    assert cli.main(["backup", str(folder)]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][0]["file"] = "../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["restore", str(folder)]) == 1
    assert "outside the backup" in capsys.readouterr().err


# -- PostgreSQL: pg_dump / pg_restore, reached through libpq's environment -------------------------------------

def test_the_url_becomes_libpq_s_environment_and_the_password_stays_off_the_command_line() -> None:
    pg = backup.pg_connection("postgresql+asyncpg://ji%40jing:p%40ss%2Fw%3Ard%25%20x@db.example:6432/jiejing")
    assert pg.env == {"PGHOST": "db.example", "PGPORT": "6432", "PGUSER": "ji@jing", "PGPASSWORD": "p@ss/w:rd% x"}
    assert pg.dbname == "dbname='jiejing'" and pg.shown == "ji@jing@db.example:6432/jiejing"
    # no port: libpq's default (or the operator's PGPORT), as asyncpg does; no password: PGPASSWORD or ~/.pgpass
    bare = backup.pg_connection("postgresql+asyncpg://jiejing@127.0.0.1/jiejing")
    assert bare.env == {"PGHOST": "127.0.0.1", "PGUSER": "jiejing"} and bare.shown == "jiejing@127.0.0.1/jiejing"
    assert bare.environ({"PGPORT": "5433", "PATH": "/bin"}) == {"PGPORT": "5433", "PATH": "/bin", **bare.env}
    socket = backup.pg_connection("postgresql+asyncpg:///jie'jing\\?host=/run/postgresql&ssl=require")
    assert socket.env == {"PGHOST": "/run/postgresql", "PGSSLMODE": "require"}
    assert socket.dbname == "dbname='jie\\'jing\\\\'"  # a conninfo value: quoted, so "=" or "'" stay the name's
    assert backup.pg_connection("postgresql://u:@h/d?ssl=true").env == {"PGHOST": "h", "PGUSER": "u",
                                                                      "PGPASSWORD": "", "PGSSLMODE": "require"}
    for url, said in (("postgresql+asyncpg://h:5432/", "names no database"),
                      ("sqlite+aiosqlite:///x.db", "is not PostgreSQL"),
                      ("postgresql+asyncpg://h/d?ssl=maybe", "is not one of")):
        with pytest.raises(backup.BackupError, match=said):
            backup.pg_connection(url)


FAKE_TOOL = """#!/bin/sh
# what a PostgreSQL client tool was given: its arguments, one a line, and the password it found
{ echo "$(basename "$0")"; for a in "$@"; do echo "arg $a"; done; echo "PGPASSWORD=$PGPASSWORD"; } >> "$TOOL_LOG"
for a in "$@"; do case "$a" in --file=*) printf 'PGDMP-custom-archive' > "${a#--file=}";; esac; done
exit "${TOOL_EXIT:-0}"
"""


@pytest.fixture
def pg_host(host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host's files with a PostgreSQL store; pg_dump and pg_restore are scripts that log what they got."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (tools / name).write_text(FAKE_TOOL)
        os.chmod(tools / name, 0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    monkeypatch.setenv("TOOL_LOG", str(tmp_path / "tools.log"))
    monkeypatch.setenv("JIEJING_DB_URL", "postgresql+asyncpg://jiejing:s3cr%40t@db.invalid/jiejing")
    (host / "jiejing.db").unlink()
    return tools


def test_a_postgresql_store_is_dumped_and_restored_by_the_client_tools(
    pg_host: Path, host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder = tmp_path / "backup-pg"
    assert cli.main(["backup", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["store"] == "PostgreSQL jiejing@db.invalid/jiejing" and summary["notes"] == []
    manifest = json.loads((folder / "manifest.json").read_text())
    (store,) = [f for f in manifest["files"] if f["kind"] == "store"]
    assert (store["engine"], store["file"], store["path"]) == ("postgresql", "store.pgdump", summary["store"][11:])
    assert store["sha256"] == backup.file_sha256(folder / "store.pgdump") and "s3cr" not in json.dumps(manifest)
    log = (tmp_path / "tools.log").read_text().splitlines()
    assert log == ["pg_dump", "arg --format=custom", "arg --no-password", f"arg --file={folder / 'store.pgdump'}",
                   "arg --dbname=dbname='jiejing'", "PGPASSWORD=s3cr@t"]

    shutil.rmtree(host)
    (tmp_path / "tools.log").unlink()
    monkeypatch.setenv("JIEJING_DB_URL", "postgresql+asyncpg://jiejing:s3cr%40t@db.invalid:5433/jiejing_new")
    asked: list[str] = []

    async def full(url: str) -> list[str]:
        asked.append(url)
        return ["tickets", "ticket_steps", "recordings", "journal_entries"]

    monkeypatch.setattr(backup, "_pg_tables_with_rows", full)
    assert cli.main(["restore", str(folder)]) == 1
    assert ("the store jiejing@db.invalid:5433/jiejing_new already holds data (tickets, ticket_steps, recordings "
            "and 1 more)") in capsys.readouterr().err
    assert asked and not host.exists() and not (tmp_path / "tools.log").exists()  # refused before any write

    async def empty(url: str) -> list[str]:
        return []

    monkeypatch.setattr(backup, "_pg_tables_with_rows", empty)
    assert cli.main(["restore", str(folder)]) == 0
    assert ("restored: store PostgreSQL jiejing@db.invalid:5433/jiejing_new (from jiejing@db.invalid/jiejing); "
            "2 recordings; 0 attachments; 2 journal files") in capsys.readouterr().out
    log = (tmp_path / "tools.log").read_text().splitlines()
    assert log[0] == "pg_restore" and log[-1] == "PGPASSWORD=s3cr@t" and "s3cr" not in "".join(log[1:-1])
    assert {"arg --no-owner", "arg --single-transaction", "arg --dbname=dbname='jiejing_new'",
            f"arg {folder / 'store.pgdump'}"} <= set(log)
    assert (host / "recordings" / "1.2.wav").is_file() and (host / "journal" / "anchors").is_file()


def test_a_failing_or_missing_pg_dump_is_a_clear_refusal(
    pg_host: Path, host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TOOL_EXIT", "1")
    assert cli.main(["backup", str(tmp_path / "b1")]) == 1
    assert "pg_dump failed (exit status 1) on jiejing@db.invalid/jiejing" in capsys.readouterr().err
    assert not (tmp_path / "b1" / "store.pgdump").exists()
    (pg_host / "pg_dump").unlink()
    monkeypatch.setenv("PATH", str(pg_host))
    assert cli.main(["backup", str(tmp_path / "b2")]) == 1
    assert "pg_dump is not on PATH: install PostgreSQL's client tools" in capsys.readouterr().err


def test_a_backup_restores_only_into_a_store_of_its_kind(
    host: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder = tmp_path / "backup-sqlite"
    assert cli.main(["backup", str(folder)]) == 0
    monkeypatch.setenv("JIEJING_DB_URL", "postgresql+asyncpg://jiejing@db.invalid/jiejing")
    assert cli.main(["restore", str(folder)]) == 1
    assert "holds an SQLite store but JIEJING_DB_URL is not SQLite" in capsys.readouterr().err
