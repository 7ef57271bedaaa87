"""``jiejing backup`` and ``jiejing restore``: the store, the recordings and the journal's key and anchors, together.

A backup is a folder: ``store.db`` (SQLite's online backup, consistent while the backend writes; for PostgreSQL
the folder says to use ``pg_dump`` and holds the rest), ``recordings/`` (every file of the recordings folder,
the fallback ``<uniqueid>.wav`` files too), ``journal/key`` and ``journal/anchors``, and ``manifest.json``
naming each file's place on the host and its sha256. Recordings are bound to tickets by their absolute path
(the journal signs it), so a restore puts every file back where it was. ``restore`` checks every file against
the manifest before it writes anything, and refuses to overwrite a store that has data or a file that differs;
``jiejing journal verify`` afterwards proves the restored trail whole.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.calls.recordings import file_sha256
from core.config import Settings, sqlite_path
from core.quality.config import QualitySettings

FORMAT = 1
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """The backup cannot be made, or cannot be restored as it is: the message says why; nothing was changed."""


@dataclass
class Summary:
    store: str
    recordings: int = 0
    journal_files: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.jiejing-tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


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
    else:
        summary = Summary(store="not included")
        summary.notes.append("the store is not SQLite: back it up with the database's own tool "
                             "(PostgreSQL: pg_dump -Fc, at the same moment as this backup)")
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
        if kind == "store":
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
        elif kind in ("journal_key", "journal_anchors"):
            configured = quality.journal_key_file if kind == "journal_key" else quality.journal_anchor_file
            target = Path(configured or entry["path"])
        else:
            raise BackupError(f"{MANIFEST} names a file of unknown kind {kind!r}")
        if kind != "store" and target.exists() and file_sha256(target) != entry["sha256"]:
            raise BackupError(f"{target} exists and differs from the backup's: move it away first")
        plan.append((entry, source, target))
    summary = Summary(store=str(manifest.get("store", "")), notes=list(manifest.get("notes", [])))
    for entry, source, target in plan:
        _copy(source, target)
        if entry["kind"] == "journal_key":
            os.chmod(target, 0o600)
            summary.journal_files += 1
        elif entry["kind"] == "journal_anchors":
            summary.journal_files += 1
        elif entry["kind"] == "recording":
            summary.recordings += 1
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
