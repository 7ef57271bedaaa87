"""Playing a recording over HTTP: supervisors only, the bound file unaltered and inside the recordings folder,
and every playback in the journal before the file is sent."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.quality import views as web_quality
from core.quality.journal import KIND_ACCESS, JournalEntry, Journaler, verify
from core.quality.journal_status import JournalWatch
from core.web.app import make_app
from tests.unit.test_journal import _call
from tests.web_login import login_headers

AUDIO = b"RIFF" + b"\x00" * 40 + b"recorded call" * 200


@pytest.fixture
async def recorded(service: TicketService, tmp_path: Path) -> tuple[str, str, Path]:
    folder = tmp_path / "monitor"
    folder.mkdir()
    wav = folder / "1.1.wav"
    wav.write_bytes(AUDIO)
    number = await _call(service, "1.1")
    await service.bind_recording(number, str(wav))
    return number, hashlib.sha256(AUDIO).hexdigest(), wav


@pytest.fixture
async def client(service: TicketService, engine: AsyncEngine, recorded) -> AsyncIterator[TestClient]:
    app = make_app(service, health={})
    web_quality.add_routes(app, journal=JournalWatch(engine), recordings_dir=str(recorded[2].parent))
    async with TestClient(TestServer(app)) as client:
        yield client


async def _played(engine: AsyncEngine) -> list[dict]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(JournalEntry.payload).where(JournalEntry.kind == KIND_ACCESS))).scalars()
        return [json.loads(p) for p in rows]


async def test_a_supervisor_plays_a_recording_and_the_journal_says_so(client, engine, recorded) -> None:
    number, sha256, _ = recorded
    await Journaler(engine).catch_up()
    supervisor = await login_headers(engine, Role.SUPERVISOR, username="li-supervisor")
    resp = await client.get(f"/api/tickets/{number}/recordings/{sha256}", headers=supervisor)
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
    assert await resp.read() == AUDIO
    played = await _played(engine)
    assert [(p["ticket"], p["sha256"], p["by"], p["what"]) for p in played] == [
        (number, sha256, "li-supervisor", "recording_played")]
    report = await verify(engine)
    assert report.ok, report.findings


async def test_only_supervisors_and_admins_play(client, engine, recorded) -> None:
    number, sha256, _ = recorded
    for role in (Role.CALL_TAKER, Role.OFFICER, Role.STATION, Role.GATEWAY):
        headers = await login_headers(engine, role)
        assert (await client.get(f"/api/tickets/{number}/recordings/{sha256}", headers=headers)).status == 403
    assert (await client.get(f"/api/tickets/{number}/recordings/{sha256}")).status == 401
    assert await _played(engine) == []


async def test_an_altered_missing_or_unknown_recording_is_not_played(client, engine, recorded) -> None:
    number, sha256, wav = recorded
    admin = await login_headers(engine, Role.ADMIN)
    assert (await client.get(f"/api/tickets/{number}/recordings/{'0' * 64}", headers=admin)).status == 404
    assert (await client.get(f"/api/tickets/{number}/recordings/../../etc", headers=admin)).status == 404
    wav.write_bytes(AUDIO + b"spliced")
    resp = await client.get(f"/api/tickets/{number}/recordings/{sha256}", headers=admin)
    assert resp.status == 409 and (await resp.json())["error_id"] == "recording-altered"
    wav.unlink()
    resp = await client.get(f"/api/tickets/{number}/recordings/{sha256}", headers=admin)
    assert resp.status == 404 and (await resp.json())["error_id"] == "recording-gone"
    assert await _played(engine) == []


async def test_a_recording_outside_the_recordings_folder_is_not_played(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.wav"
    elsewhere.write_bytes(AUDIO)
    number = await _call(service, "2.1")
    await service.bind_recording(number, str(elsewhere))
    (tmp_path / "monitor").mkdir()
    app = make_app(service, health={})
    web_quality.add_routes(app, journal=JournalWatch(engine), recordings_dir=str(tmp_path / "monitor"))
    async with TestClient(TestServer(app)) as client:
        admin = await login_headers(engine, Role.ADMIN)
        resp = await client.get(f"/api/tickets/{number}/recordings/{hashlib.sha256(AUDIO).hexdigest()}",
                                headers=admin)
        assert resp.status == 409 and (await resp.json())["error_id"] == "recording-outside-folder"
