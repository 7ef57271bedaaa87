"""The desk page in headless Chromium against the backend in-process: refusals that say why, pause and resume
by keyboard, two desks each seeing only their own call, and a text report taken from the waiting list.

The call here is written as the AMI adapter writes it (steps on the ticket service); the real call through
Asterisk is tests/integration/test_desk_lab.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.dispatch.officers import OfficerService, load_city_file
from core.dispatch.planner import DispatchPlanner
from core.seats.board import SeatBoard
from core.triage.reports import ReportIntake, parse_report
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.browser.desk import start_shift
from tests.web_login import PASSWORD, TEST_SCRYPT_N

LAB_CITY = Path(__file__).resolve().parents[2] / "sip-lab" / "city.json"


@pytest.fixture
async def center(engine: AsyncEngine) -> AsyncIterator[tuple[TestServer, TicketService]]:
    service = TicketService(engine)
    app = make_app(service, health={}, seats=SeatBoard(engine, wrap_up_s=30))
    auth = AuthService(engine, scrypt_n=TEST_SCRYPT_N)
    for name in ("li", "wang"):
        await auth.add_user(name, PASSWORD, Role.CALL_TAKER)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield server, service


async def _ring_and_answer(service: TicketService, uid: str, caller: str, seat: str) -> str:
    now = time.time()
    ticket = await service.open_call(uniqueid=uid, caller_id=caller, at=now, source="ami")
    await service.record_step(uid, Step.QUEUED, at=now + 0.01, source="ami")
    await service.record_step(uid, Step.SEAT_RINGING, at=now + 0.02, source="ami", seat=seat)
    await service.record_step(uid, Step.ANSWERED, at=now + 0.03, source="ami", seat=seat)
    return ticket.number


async def test_refusals_say_why_and_a_second_desk_never_sees_the_call(
    center: tuple[TestServer, TicketService], browser: Browser, screenshots: Path
) -> None:
    server, service = center
    base = f"http://127.0.0.1:{server.port}"
    async with Browser(1366, 768) as other:
        await start_shift(browser, base, "li", PASSWORD, "seat-01")
        await start_shift(other, base, "wang", PASSWORD, "seat-02")
        number = await _ring_and_answer(service, "9.1", "13800000001", "seat-01")
        await browser.wait_for("deskStats.pops.some((p) => p.event === 'answered')")
        assert await browser.evaluate("document.getElementById('t-number').textContent") == number
        # The other desk got no pop and shows no call.
        assert await other.evaluate("deskStats.pops.length") == 0
        assert await other.evaluate("document.getElementById('call-body').hidden") is True

        # Dispatch without a location: refused, and the screen says why.
        await browser.press("d")
        await browser.wait_for("document.body.dataset.lastError === 'not-located'")
        assert "✗" in await browser.evaluate("document.getElementById('message').textContent")
        # Closing a live call: refused with the lifecycle's reason.
        await browser.press("x")
        await browser.send("Input.insertText", text="test")
        await browser.press("Enter")
        await browser.wait_for("document.body.dataset.lastError === 'illegal-transition'")
        # Pausing during a call: refused; the seat stays on the call.
        await browser.press("p")
        await browser.send("Input.insertText", text="休息 break")
        await browser.press("Enter")
        await browser.wait_for("document.body.dataset.lastError === 'wrong-seat-state'")
        await browser.screenshot(screenshots / "desk-refused.png")

        # The other call-taker cannot act on this call through the API either.
        token = await other.evaluate("sessionStorage.getItem('jiejing.token')")
        resp = await other.evaluate(
            f"fetch('/api/tickets/{number}/notes', {{method: 'POST', headers: {{'Authorization': 'Bearer {token}', "
            "'Content-Type': 'application/json'}, body: JSON.stringify({text: 'x'})}).then(r => r.json())")
        assert resp["error_id"] == "not-your-call"

        # The call ends: wrap-up, then pause and resume by keyboard.
        await service.record_step("9.1", Step.HUNG_UP, at=time.time(), source="ami")
        await browser.wait_for("document.getElementById('seat-state').dataset.state === 'wrap_up'")
        await browser.press("p")
        await browser.wait_for("document.getElementById('seat-state').dataset.state === 'available'")
        await browser.press("p")
        await browser.send("Input.insertText", text="培训 training")
        await browser.press("Enter")
        await browser.wait_for("document.getElementById('seat-state').dataset.state === 'paused'")
        assert "培训" in await browser.evaluate("document.getElementById('seat-state').textContent")


async def test_a_text_report_is_taken_oldest_first_from_the_desk(
    center: tuple[TestServer, TicketService], browser: Browser, engine: AsyncEngine
) -> None:
    server, service = center
    base = f"http://127.0.0.1:{server.port}"
    intake = ReportIntake(service)
    first = await intake.receive(parse_report({"ref": "r-1", "sender": "13900000001", "text": "楼下有人吵架 quarrel"}, channel="app"))
    await intake.receive(parse_report({"ref": "r-2", "sender": "13900000002", "text": "路灯坏了"}, channel="app"))
    await start_shift(browser, base, "li", PASSWORD, "seat-03")
    await browser.wait_for("document.querySelectorAll('#reports tbody tr').length === 2")
    await browser.press("t")
    await browser.wait_for(f"document.getElementById('t-number').textContent === {first['number']!r}")
    await browser.wait_for("document.querySelectorAll('#reports tbody tr').length === 1")
    assert "楼下有人吵架" in await browser.evaluate("document.getElementById('t-report').textContent")
    taken = await service.get(first["number"])
    assert taken.steps[-1].step is Step.TAKEN and taken.steps[-1].detail["by"] == "li"
    # The report is the call-taker's now: a note on it is accepted.
    await browser.press("n")
    await browser.send("Input.insertText", text="已联系报警人 reporter reached")
    await browser.press("Enter")
    await browser.wait_for("document.querySelector('#t-steps li.note_added') !== null")


async def test_an_address_is_found_in_the_gazetteer_as_it_is_typed(
    engine: AsyncEngine, browser: Browser, screenshots: Path
) -> None:
    service = TicketService(engine)
    planner = DispatchPlanner(service, OfficerService(engine))
    city = load_city_file(LAB_CITY)
    await planner.officers.load_city(city)
    await planner.places.replace(city.places)
    app = make_app(service, health={}, seats=SeatBoard(engine, wrap_up_s=30), dispatch=planner)
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("li", PASSWORD, Role.CALL_TAKER)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        await start_shift(browser, f"http://127.0.0.1:{server.port}", "li", PASSWORD, "seat-01")
        number = await _ring_and_answer(service, "9.3", "13800000003", "seat-01")
        await browser.wait_for("deskStats.pops.some((p) => p.event === 'answered')")

        # L, then part of a name: the gazetteer's places containing it are offered
        await browser.press("l")
        await browser.send("Input.insertText", text="人民")
        await browser.wait_for("[...document.querySelectorAll('#places option')].some((o) => o.value === '人民广场')")
        # a name that is no place of the gazetteer: refused, with the places it could be
        await browser.send("Input.insertText", text="路")
        await browser.press("Enter")
        await browser.wait_for("document.body.dataset.lastError === 'address-not-found'")
        shown = await browser.evaluate("document.getElementById('map-point').textContent")
        assert "人民路1号" in shown, shown
        stored = await service.get(number)
        assert stored is not None and stored.steps[-1].step is Step.ANSWERED

        # the full name: located at the place's position, the trail says by the gazetteer
        await browser.press("l")
        await browser.evaluate("document.getElementById('address').value = ''")
        await browser.send("Input.insertText", text="人民广场")
        await browser.press("Enter")
        await browser.wait_for("document.getElementById('t-location').textContent.includes('人民广场')")
        await browser.screenshot(screenshots / "desk-address.png")
        stored = await service.get(number)
        assert stored is not None and stored.steps[-1].step is Step.LOCATED
        place = next(p for p in city.places if p.name == "人民广场")
        detail = stored.steps[-1].detail
        assert (detail["address"], detail["lat"], detail["lon"], detail["via"]) == ("人民广场", place.lat, place.lon,
                                                                                 "gazetteer")
        # Ctrl+Enter: a text that is no place becomes the address of the position already set
        await browser.press("l")
        await browser.evaluate("document.getElementById('address').value = ''")
        await browser.send("Input.insertText", text="广场东侧喷泉")
        await browser.press("Enter", ctrl=True)
        await browser.wait_for("document.getElementById('t-location').textContent.includes('广场东侧喷泉')")
        stored = await service.get(number)
        assert stored is not None
        detail = stored.steps[-1].detail
        assert (detail["address"], detail["lat"], detail["lon"]) == ("广场东侧喷泉", place.lat, place.lon)
        assert "via" not in detail
