"""A supervisor declares a major incident on the supervisor's page, uploads its message for callers, and ends it."""

from __future__ import annotations

import base64
import math
import struct
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.calls.views import SERVICE
from core.triage.major import MESSAGE_CLASS, MessageFiles, wav
from core.triage.major_views import MAJOR
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.browser.desk import log_in
from tests.web_login import PASSWORD, TEST_SCRYPT_N

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
async def center(engine: AsyncEngine, tmp_path: Path):
    app = make_app(TicketService(engine), health={}, major_messages=MessageFiles(tmp_path / "sounds"))
    auth = AuthService(engine, scrypt_n=TEST_SCRYPT_N)
    await auth.add_user("chief", PASSWORD, Role.SUPERVISOR)
    await auth.add_user("li", PASSWORD, Role.CALL_TAKER)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield server, app, tmp_path / "sounds"


async def _text(browser: Browser, selector: str) -> str:
    return await browser.evaluate(f"document.querySelector({selector!r}).textContent")


async def test_declare_upload_and_end_a_major_incident(center, screenshots: Path) -> None:
    server, app, sounds = center
    incidents = app[MAJOR]
    message = wav(b"".join(struct.pack("<h", round(5000 * math.sin(2 * math.pi * 440 * i / 8000)))
                           for i in range(2 * 8000)))
    async with Browser(width=1500, height=700) as browser:
        await browser.goto(str(server.make_url("/supervisor")))
        await browser.wait_for("!document.getElementById('login').hidden")
        await browser.type_into("#login input[name=username]", "chief")
        await browser.type_into("#login input[name=password]", PASSWORD)
        await browser.click("#login button[type=submit]")
        await browser.wait_for("!document.getElementById('major-declare').hidden")
        assert "none declared" in await _text(browser, "#major-state")

        # a place is required: the API's refusal is shown and nothing is declared
        await browser.click("#major-declare button[type=submit]")
        await browser.wait_for("document.querySelector('#major-declare .error').textContent !== ''")
        assert incidents.current is None

        await browser.evaluate("document.querySelector('#major-declare select[name=kind]').value = 'fire'")
        await browser.type_into("#major-declare input[name=address]", "中山路 88 号仓库")
        await browser.type_into("#major-declare input[name=lat]", "31.2304")
        await browser.type_into("#major-declare input[name=lon]", "121.4737")
        await browser.type_into("#major-declare input[name=reason]", "仓库起火，大量来电")
        await browser.click("#major-declare button[type=submit]")
        await browser.wait_for("!document.getElementById('major-current').hidden")
        incident = incidents.current
        assert incident is not None and incident.declared_by == "chief" and incident.address == "中山路 88 号仓库"
        banner = await _text(browser, "#major-current")
        assert "火灾 fire — 中山路 88 号仓库" in banner and incident.ticket in banner and "generic" in banner

        # the room is told: the call-takers' desks and the wallboard show it, with the ticket press-1 callers join
        async with Browser() as desk:
            await log_in(desk, str(server.make_url("")).rstrip("/"), "li", PASSWORD)
            await desk.wait_for("!document.getElementById('major-badge').hidden")
            shown = await _text(desk, "#major-badge")
            assert "中山路 88 号仓库" in shown and incident.ticket in shown
        async with Browser() as wall:
            await wall.goto(str(server.make_url("/wallboard")))
            await wall.wait_for("!document.getElementById('login').hidden")
            await wall.type_into("#login input[name=username]", "chief")
            await wall.type_into("#login input[name=password]", PASSWORD)
            await wall.click("#login button[type=submit]")
            await wall.wait_for("!document.getElementById('major-banner').hidden")
            assert incident.ticket in await _text(wall, "#major-banner")
            await wall.screenshot(screenshots / "wallboard-major-incident.png")

        # the message for callers, as a supervisor's file
        data = base64.b64encode(message).decode()
        await browser.evaluate(
            "(() => { const bytes = Uint8Array.from(atob('" + data + "'), c => c.charCodeAt(0));"
            " const dt = new DataTransfer(); dt.items.add(new File([bytes], 'fire.wav', {type: 'audio/wav'}));"
            " document.querySelector('#major-message input[name=file]').files = dt.files; })()")
        await browser.click("#major-message button[type=submit]")
        await browser.wait_for("document.getElementById('major-current').textContent.includes('recorded message')")
        assert incidents.current.moh_class == MESSAGE_CLASS
        assert (sounds / "major-incident.wav").read_bytes()[44:44 + len(message) - 44] == message[44:]
        await browser.screenshot(screenshots / "supervisor-major-incident.png")
        await browser.screenshot(DOCS / "major-incident.png")

        await browser.type_into("#major-end input[name=reason]", "火已扑灭 fire out")
        await browser.click("#major-end button[type=submit]")
        await browser.wait_for("!document.getElementById('major-declare').hidden")
        assert incidents.current is None
        (ended,) = await incidents.recent(1)
        assert (ended.ended_by, ended.end_reason) == ("chief", "火已扑灭 fire out")
        steps = [s.step for s in (await app[SERVICE].get(ended.ticket)).steps]
        assert [s for s in steps if s.value.startswith("major_incident_")] == [
            Step.MAJOR_INCIDENT_DECLARED, Step.MAJOR_INCIDENT_MESSAGE, Step.MAJOR_INCIDENT_ENDED]
