"""`jiejing backup` and `jiejing restore`: a host's store, recordings and journal files, restored onto an empty
host, pass `jiejing journal verify`; a damaged backup or an occupied target changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from core.calls.tickets import TicketService
from core.quality.journal import Journaler
from core.store import make_engine
from core.tables import init_schema
from telephony import cli
from tests.unit.test_journal import KEY, _call


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A center's files under one folder, as the settings name them, with two calls, a recording, anchors."""
    root = tmp_path / "host"
    (root / "recordings").mkdir(parents=True)
    (root / "journal").mkdir()
    key = root / "journal" / "key"
    key.write_bytes(KEY + b"\n")
    os.chmod(key, 0o600)
    monkeypatch.setenv("JIEJING_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("JIEJING_DB_URL", f"sqlite+aiosqlite:///{root / 'jiejing.db'}")
    monkeypatch.setenv("JIEJING_RECORDINGS_DIR", str(root / "recordings"))
    monkeypatch.setenv("JIEJING_JOURNAL_KEY_FILE", str(key))
    monkeypatch.setenv("JIEJING_JOURNAL_ANCHOR_FILE", str(root / "journal" / "anchors"))

    async def fill() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{root / 'jiejing.db'}")
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
        await engine.dispose()

    asyncio.run(fill())
    return root


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
