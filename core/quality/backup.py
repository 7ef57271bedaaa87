"""``jiejing backup`` and ``jiejing restore``: the store, the recordings and the journal's key and anchors, together.

A backup is a folder: the store (``store.db``, SQLite's online backup, consistent while the backend writes; or
``store.pgdump``, PostgreSQL's ``pg_dump --format=custom``, one consistent snapshot as well), ``recordings/``
(every file of the recordings folder, the fallback ``<uniqueid>.wav`` files too), ``attachments/`` (the
reports' kept photos and videos, ``<sha256>.<ext>``, when ``JIEJING_ATTACHMENTS_DIR`` is set), ``journal/key`` and
``journal/anchors``, and ``manifest.json`` naming each file's place on the host and its sha256. Recordings are
bound to tickets by their absolute path (the journal signs it), so a restore puts every file back where it was;
attachments go back into the attachments folder they came from (their steps name them by sha256).
``restore`` checks every file against the manifest before it writes anything, and refuses to overwrite a store
that has data or a file that differs; ``jiejing journal verify`` afterwards proves the restored trail whole.

PostgreSQL goes through the client tools on ``PATH`` (Debian: ``postgresql-client``; its ``pg_dump`` must not
be older than the server). They reach the database named by ``JIEJING_DB_URL``: host, port and user in
libpq's environment, the database as ``--dbname``, the password in ``PGPASSWORD`` only, never on a command
line (``ps`` shows those to every user of the host). ``pg_restore`` runs in one transaction, so a failed
restore leaves the database as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.calls.recordings import file_sha256
from core.config import Settings, sqlite_path
from core.quality.config import QualitySettings
from core.store import make_engine

FORMAT = 1
MANIFEST = "manifest.json"
PG_DUMP_FILE = "store.pgdump"
# libpq's sslmode values; asyncpg's ``ssl`` query option takes the same words (and true/false).
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


class BackupError(RuntimeError):
    """The backup cannot be made, or cannot be restored as it is: the message says why; nothing was changed."""


@dataclass
class Summary:
    store: str
    recordings: int = 0
    attachments: int = 0
    journal_files: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.jiejing-tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


@dataclass(frozen=True)
class PgConnection:
    """How ``pg_dump`` and ``pg_restore`` reach the database of a ``postgresql[+driver]://`` URL."""

    dbname: str  # a libpq conninfo naming the database alone, for --dbname (a name with "=" stays a name)
    env: dict[str, str]  # PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE: only what the URL gives
    shown: str  # user@host:port/database, for messages and the manifest: never the password

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The tools' environment: ``base`` (the process's) with the URL's values over it. What the URL leaves
        out (the port, the password) stays libpq's default or the operator's PG* variable, as for asyncpg."""
        return {**(os.environ if base is None else base), **self.env}


def _conninfo_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_connection(url: str) -> PgConnection:
    """The SQLAlchemy URL (``postgresql+asyncpg://user:pass@host:port/db``) as libpq's connection.

    The user and password are URL-decoded (``p%40ss`` is ``p@ss``); a missing port or host is left to libpq's
    defaults (5432, the local socket) like asyncpg does; ``?host=/run/postgresql`` names a socket directory and
    ``?ssl=`` or ``?sslmode=`` becomes ``PGSSLMODE``. The driver's other options do not change the database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BackupError(f"JIEJING_DB_URL is not a database URL: {exc}") from None
    if parsed.get_backend_name() != "postgresql":
        raise BackupError(f"JIEJING_DB_URL is not PostgreSQL ({parsed.get_backend_name()})")
    if not parsed.database:
        raise BackupError("JIEJING_DB_URL names no database")
    env: dict[str, str] = {}
    query = {key: value if isinstance(value, str) else value[-1] for key, value in parsed.query.items()}
    host = query.get("host") or parsed.host
    if host:
        env["PGHOST"] = host
    if parsed.port:
        env["PGPORT"] = str(parsed.port)
    if parsed.username:
        env["PGUSER"] = parsed.username
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    ssl = (query.get("sslmode") or query.get("ssl") or "").lower()
    if ssl:
        ssl = {"true": "require", "false": "disable"}.get(ssl, ssl)
        if ssl not in _SSLMODES:
            raise BackupError(f"JIEJING_DB_URL's ssl={ssl!r} is not one of {', '.join(sorted(_SSLMODES))}")
        env["PGSSLMODE"] = ssl
    shown = f"{parsed.username or ''}{'@' if parsed.username else ''}{host or 'local socket'}"
    shown += f":{parsed.port}/{parsed.database}" if parsed.port else f"/{parsed.database}"
    return PgConnection(dbname=f"dbname={_conninfo_value(parsed.database)}", env=env, shown=shown)


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not on PATH: install PostgreSQL's client tools (Debian: apt install "
                          "postgresql-client), of the server's major version or newer")
    return found


def _run_pg_tool(argv: list[str], connection: PgConnection) -> None:
    name = Path(argv[0]).name
    try:
        done = subprocess.run(argv, env=connection.environ(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", check=False)
    except OSError as exc:
        raise BackupError(f"{name} could not be run: {exc}") from None
    if done.returncode != 0:
        said = " / ".join(line.strip() for line in done.stderr.strip().splitlines()[-5:]) or "no message"
        raise BackupError(f"{name} failed (exit status {done.returncode}) on {connection.shown}: {said}")


def _pg_dump(url: str, target: Path) -> PgConnection:
    """``pg_dump --format=custom`` of the whole database into ``target``: one snapshot, however busy the store."""
    connection = pg_connection(url)
    tool = _pg_tool("pg_dump")
    try:
        _run_pg_tool([tool, "--format=custom", "--no-password", f"--file={target}", f"--dbname={connection.dbname}"],
                     connection)
    except BackupError:
        target.unlink(missing_ok=True)
        raise
    return connection


async def _pg_tables_with_rows(url: str) -> list[str]:
    """The tables of the database (any schema but the system's; not ``alembic_version``) that hold a row."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(text(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg\\_%' "
                "AND table_name <> 'alembic_version' ORDER BY table_schema, table_name"))).all()
            found = []
            for schema, name in tables:
                quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))
                if (await conn.execute(text(f"SELECT 1 FROM {quoted} LIMIT 1"))).first() is not None:
                    found.append(name if schema == "public" else f"{schema}.{name}")
            return found
    finally:
        await engine.dispose()


def _pg_check_empty(url: str, connection: PgConnection) -> None:
    try:
        full = asyncio.run(_pg_tables_with_rows(url))
    except Exception as exc:  # the driver's errors (refused, no such database, bad password) share no base
        raise BackupError(f"the store {connection.shown} cannot be read: {type(exc).__name__}: {exc}") from None
    if full:
        shown = ", ".join(full[:3]) + (f" and {len(full) - 3} more" if len(full) > 3 else "")
        raise BackupError(f"the store {connection.shown} already holds data ({shown}): restore into an empty "
                          "database")


def _pg_restore(dump: Path, connection: PgConnection) -> None:
    """Into an empty database: objects the dump holds that exist without rows (a schema made by ``jiejing db
    upgrade``) are replaced; one transaction, so a failure leaves the database as it was."""
    _run_pg_tool([_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--clean", "--if-exists",
                  "--single-transaction", "--exit-on-error", "--no-password", f"--dbname={connection.dbname}",
                  str(dump)], connection)


def backup(settings: Settings, quality: QualitySettings, folder: Path) -> Summary:
    """Write a backup into ``folder``, which must be empty or new."""
    if folder.exists() and any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty: give a new folder for each backup")
    folder.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    db = sqlite_path(settings.db_url)
    if db is not None:
        if not Path(db).is_file():
            raise BackupError(f"the store {db} does not exist")
        target = folder / "store.db"
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # page by page under SQLite's own locking: one consistent moment
        finally:
            dst.close()
            src.close()
        files.append({"kind": "store", "file": "store.db", "path": str(Path(db).absolute()),
                      "sha256": file_sha256(target), "size": target.stat().st_size})
        summary = Summary(store=f"SQLite {db}")
    elif make_url(settings.db_url).get_backend_name() == "postgresql":
        target = folder / PG_DUMP_FILE
        connection = _pg_dump(settings.db_url, target)
        files.append({"kind": "store", "engine": "postgresql", "file": PG_DUMP_FILE,
                      "path": connection.shown, "sha256": file_sha256(target), "size": target.stat().st_size})
        summary = Summary(store=f"PostgreSQL {connection.shown}")
    else:
        summary = Summary(store="not included")
        summary.notes.append("the store is neither SQLite nor PostgreSQL: back it up with the database's own tool, "
                             "at the same moment as this backup")
    if settings.recordings_dir:
        root = Path(settings.recordings_dir)
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            relative = path.relative_to(root)
            _copy(path, folder / "recordings" / relative)
            files.append({"kind": "recording", "file": f"recordings/{relative}", "path": str(path.absolute()),
                          "sha256": file_sha256(folder / "recordings" / relative), "size": path.stat().st_size})
            summary.recordings += 1
    else:
        summary.notes.append("no recordings folder is set: no recordings were copied")
    if quality.attachments_dir and Path(quality.attachments_dir).is_dir():
        root = Path(quality.attachments_dir)  # flat: <sha256>.<ext>; hidden ones are files still being written
        for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
            _copy(path, folder / "attachments" / path.name)
            files.append({"kind": "attachment", "file": f"attachments/{path.name}", "path": str(path.absolute()),
                          "sha256": file_sha256(folder / "attachments" / path.name), "size": path.stat().st_size})
            summary.attachments += 1
    for kind, name, variable, configured in (
        ("journal_key", "key", "JIEJING_JOURNAL_KEY_FILE", quality.journal_key_file),
        ("journal_anchors", "anchors", "JIEJING_JOURNAL_ANCHOR_FILE", quality.journal_anchor_file),
    ):
        if not configured:
            summary.notes.append(f"{variable} is not set: not in the backup")
            continue
        if not Path(configured).is_file():
            raise BackupError(f"{configured} ({kind}) does not exist")
        _copy(Path(configured), folder / "journal" / name)
        if kind == "journal_key":
            os.chmod(folder / "journal" / name, 0o600)
        files.append({"kind": kind, "file": f"journal/{name}", "path": str(Path(configured).absolute()),
                      "sha256": file_sha256(folder / "journal" / name), "size": Path(configured).stat().st_size})
        summary.journal_files += 1
    summary.bytes = sum(f["size"] for f in files)
    manifest = {"format": FORMAT, "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "store": summary.store,
                "files": files, "notes": summary.notes}
    (folder / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return summary


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BackupError(f"{folder} has no readable {MANIFEST}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BackupError(f"{folder / MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), list):
        raise BackupError(f"{folder / MANIFEST} is not a backup of format {FORMAT}")
    return manifest


def restore(settings: Settings, quality: QualitySettings, folder: Path) -> Summary:
    """Put a backup back on this host; every check comes before the first write."""
    manifest = _manifest(folder)
    plan: list[tuple[dict[str, Any], Path, Path]] = []
    pg_store: tuple[Path, PgConnection] | None = None
    for entry in manifest["files"]:
        name = str(entry.get("file", ""))
        source = (folder / name).resolve()
        if folder.resolve() not in source.parents:
            raise BackupError(f"{MANIFEST} names a file outside the backup: {name!r}")
        if not source.is_file():
            raise BackupError(f"{name} is missing from the backup")
        if file_sha256(source) != entry.get("sha256"):
            raise BackupError(f"{name} does not match its sha256 in the manifest: the backup is damaged")
        kind = entry.get("kind")
        if kind == "store" and entry.get("engine") == "postgresql":
            if sqlite_path(settings.db_url) is not None:
                raise BackupError("the backup holds a PostgreSQL dump but JIEJING_DB_URL is SQLite")
            connection = pg_connection(settings.db_url)
            _pg_tool("pg_restore")
            _pg_check_empty(settings.db_url, connection)
            pg_store = (source, connection)
            continue
        elif kind == "store":
            db = sqlite_path(settings.db_url)
            if db is None:
                raise BackupError("the backup holds an SQLite store but JIEJING_DB_URL is not SQLite")
            target = Path(db)
            if target.exists() and target.stat().st_size and _has_rows(target):
                raise BackupError(f"the store {target} already holds data: restore into an empty one")
        elif kind == "recording":
            target = Path(entry["path"])
            if settings.recordings_dir and Path(settings.recordings_dir).absolute() not in target.parents:
                raise BackupError(f"recording {target} is not inside JIEJING_RECORDINGS_DIR "
                                  f"{settings.recordings_dir}: recordings are bound by their path")
        elif kind == "attachment":
            target = Path(entry["path"])
            if quality.attachments_dir and Path(quality.attachments_dir).absolute() not in target.parents:
                raise BackupError(f"attachment {target} is not inside JIEJING_ATTACHMENTS_DIR "
                                  f"{quality.attachments_dir}: attachments are kept there")
            if not target.name.startswith(f"{entry.get('sha256')}."):
                raise BackupError(f"attachment {target} is not named by its sha256")
        elif kind in ("journal_key", "journal_anchors"):
            configured = quality.journal_key_file if kind == "journal_key" else quality.journal_anchor_file
            target = Path(configured or entry["path"])
        else:
            raise BackupError(f"{MANIFEST} names a file of unknown kind {kind!r}")
        if kind != "store" and target.exists() and file_sha256(target) != entry["sha256"]:
            raise BackupError(f"{target} exists and differs from the backup's: move it away first")
        plan.append((entry, source, target))
    summary = Summary(store=str(manifest.get("store", "")), notes=list(manifest.get("notes", [])))
    if pg_store is not None:  # first: the step most likely to fail, and it changes nothing when it does
        dump, connection = pg_store
        _pg_restore(dump, connection)
        summary.store = f"PostgreSQL {connection.shown} (from {summary.store.removeprefix('PostgreSQL ')})"
        summary.bytes += dump.stat().st_size
    for entry, source, target in plan:
        _copy(source, target)
        if entry["kind"] == "journal_key":
            os.chmod(target, 0o600)
            summary.journal_files += 1
        elif entry["kind"] == "journal_anchors":
            summary.journal_files += 1
        elif entry["kind"] == "recording":
            summary.recordings += 1
        elif entry["kind"] == "attachment":
            summary.attachments += 1
        summary.bytes += source.stat().st_size
    return summary


def _has_rows(db: Path) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'")]
        return any(conn.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone() for t in tables)
    finally:
        conn.close()
