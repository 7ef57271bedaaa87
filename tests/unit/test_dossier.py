"""A ticket's dossier: exported by a supervisor (and journaled), checked away from the center; any change to
its entries, steps, recording or anchor is found."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.quality import views as web_quality
from core.quality.dossier import DossierError, check
from core.quality.journal import KIND_ACCESS, JournalEntry, Journaler
from core.quality.journal_status import JournalWatch
from core.web.app import make_app
from telephony import cli
from tests.unit.test_journal import KEY, _call
from tests.web_login import login_headers

AUDIO = b"RIFF" + b"\x00" * 40 + b"the call" * 300


@pytest.fixture
async def center(service: TicketService, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[tuple]:
    wav = tmp_path / "monitor" / "1.1.wav"
    wav.parent.mkdir()
    wav.write_bytes(AUDIO)
    number = await _call(service, "1.1")
    await _call(service, "1.2")  # another ticket's entries sit in between
    await service.bind_recording(number, str(wav))
    anchors = tmp_path / "journal.anchors"
    journaler = Journaler(engine, anchor_key=KEY, anchor_file=anchors)
    await journaler.catch_up()
    await journaler.anchor()
    app = make_app(service, health={})
    web_quality.add_routes(app, journal=JournalWatch(engine, anchor_file=anchors, anchor_key=KEY),
                           recordings_dir=str(wav.parent))
    async with TestClient(TestServer(app)) as client:
        yield client, number, wav


async def _export(client: TestClient, engine: AsyncEngine, number: str) -> dict:
    supervisor = await login_headers(engine, Role.SUPERVISOR, username="zhang-sup")
    resp = await client.get(f"/api/tickets/{number}/dossier", headers=supervisor)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Disposition"] == f'attachment; filename="dossier-{number}.json"'
    return await resp.json()


async def test_an_exported_dossier_checks_out_and_its_export_is_journaled(center, engine: AsyncEngine) -> None:
    client, number, _ = center
    dossier = await _export(client, engine, number)
    assert dossier["ticket"]["number"] == number and dossier["exported_by"] == "zhang-sup"
    kinds = [e["kind"] for e in dossier["journal"]]
    assert kinds.count("step") == len(dossier["ticket"]["steps"]) and "recording" in kinds
    assert kinds[-1] == KIND_ACCESS and json.loads(dossier["journal"][-1]["payload"])["what"] == "dossier_exported"
    assert all(json.loads(e["payload"])["ticket"] == number for e in dossier["journal"])  # no other ticket's
    assert len(dossier["anchors"]) == 1 and json.loads(dossier["anchors"][0])["seq"] >= max(
        e["seq"] for e in dossier["journal"] if e["kind"] != KIND_ACCESS)
    assert check(dossier, recording=AUDIO, key=KEY) == []
    async with engine.connect() as conn:
        access = (await conn.execute(select(JournalEntry.payload).where(JournalEntry.kind == KIND_ACCESS))).scalars()
        assert [json.loads(p)["by"] for p in access] == ["zhang-sup"]


async def test_every_change_to_a_dossier_is_found(center, engine: AsyncEngine) -> None:
    client, number, _ = center
    dossier = await _export(client, engine, number)

    moved = copy.deepcopy(dossier)
    moved["ticket"]["steps"][1]["at_us"] += 1_000_000  # "answered a second later"
    assert any("the ticket says" in f for f in check(moved))

    altered = copy.deepcopy(dossier)
    entry = altered["journal"][0]
    entry["payload"] = entry["payload"].replace('"source":"agi"', '"source":"ami"')
    assert any("altered" in f for f in check(altered))

    dropped = copy.deepcopy(dossier)
    dropped["journal"] = [e for e in dropped["journal"] if e["kind"] != "recording"]
    assert any("has no journal entry" in f for f in check(dropped))

    assert any("matches none" in f for f in check(dossier, recording=AUDIO + b"spliced"))
    assert any("signature does not verify" in f for f in check(dossier, key=b"x" * 32))
    with pytest.raises(DossierError):
        check({"format": "something else"})


async def test_the_dossier_command(center, engine: AsyncEngine, tmp_path: Path, capsys) -> None:
    client, number, wav = center
    dossier = await _export(client, engine, number)
    path = tmp_path / "dossier.json"
    path.write_text(json.dumps(dossier, ensure_ascii=False))
    key = tmp_path / "key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    assert cli.main(["dossier", "check", str(path), "--recording", str(wav), "--key", str(key)]) == 0
    assert f"dossier of {number}: {len(dossier['journal'])} journal entries, intact" in capsys.readouterr().out
    dossier["journal"][1]["hash"] = hashlib.sha256(b"x").hexdigest()
    path.write_text(json.dumps(dossier))
    assert cli.main(["dossier", "check", str(path)]) == 1
    assert "FOUND journal entry" in capsys.readouterr().out
    path.write_text("{not json")
    assert cli.main(["dossier", "check", str(path)]) == 2


async def test_only_supervisors_export_and_unknown_tickets_leave_no_trace(center, engine: AsyncEngine) -> None:
    client, number, _ = center
    taker = await login_headers(engine, Role.CALL_TAKER)
    assert (await client.get(f"/api/tickets/{number}/dossier", headers=taker)).status == 403
    admin = await login_headers(engine, Role.ADMIN)
    assert (await client.get("/api/tickets/110-20200101-000009/dossier", headers=admin)).status == 404
    async with engine.connect() as conn:
        assert (await conn.execute(select(JournalEntry.seq).where(JournalEntry.kind == KIND_ACCESS))).first() is None
