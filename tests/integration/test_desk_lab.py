"""The call-taker's desk in headless Chromium against the real lab: a 110 call from SIPp, answered by a real
softphone seat, worked from the keyboard alone through to the officer in the conference and the closed ticket."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from core.auth.users import AuthService, Role
from siplab.softphone import Softphone
from tests.browser.cdp import Browser
from tests.browser.desk import start_shift
from tests.web_login import PASSWORD, TEST_SCRYPT_N

from .conftest import start_backend
from .test_dispatch import city, steps_until

pytestmark = pytest.mark.lab

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
SEAT = "bseat01"
# officer003 stands at 31.2404, 121.4857: the handset is 30 m from him.
HANDSET = ("31.2406", "121.4858")


async def _pause_lab_seats(ami, paused: bool) -> None:
    for i in range(1, 101):
        await ami.action("QueuePause", {"Interface": f"PJSIP/seat{i:03d}", "Paused": "true" if paused else "false",
                                        **({"Reason": "desk test"} if paused else {})})


async def _text(browser: Browser, selector: str) -> str:
    return await browser.evaluate(f"document.querySelector({json.dumps(selector)}).textContent")


@pytest.fixture
async def desk_backend(backend_settings, tmp_path):
    running = await start_backend(replace(backend_settings, city_file=city(tmp_path, timeout_s=8)))
    auth = AuthService(running.service.engine, scrypt_n=TEST_SCRYPT_N)
    await auth.add_user("taker-1", PASSWORD, Role.CALL_TAKER)
    await auth.add_user("taker-2", PASSWORD, Role.CALL_TAKER)
    await auth.add_user("officer003", PASSWORD, Role.OFFICER)
    yield running
    await running.runner.cleanup()


async def test_a_call_worked_from_the_desk_by_keyboard(desk_backend, calls):
    running = desk_backend
    ami = running.backend.ami
    base = f"http://127.0.0.1:{running.settings.http_port}"
    joins: list[str] = []
    events = ami.subscribe()
    phone = Softphone(SEAT, "lab-bseat01-secret")
    await _pause_lab_seats(ami, True)
    try:
        await phone.start()
        async with Browser(1366, 768) as browser:
            # Shift start: the seat by keyboard, then the queue rings it.
            await start_shift(browser, base, "taker-1", PASSWORD, SEAT)

            caller = f"136{random.randrange(10**8):08d}"
            call = asyncio.create_task(calls.place([(caller, "Desk", *HANDSET)], talk_s=14, patience_s=15,
                                                   scenario="caller_located.xml"))
            await browser.wait_for("deskStats.pops.some((p) => p.event === 'answered')", 15)
            number = await _text(browser, "#t-number")
            ticket = await running.service.get(number)
            assert ticket.caller_id == caller and ticket.seat == SEAT
            # the network's position is on screen before anyone typed
            assert "31.2406" in await _text(browser, "#t-location")
            await browser.screenshot(SCREENSHOTS / "desk-pop.png")

            # Two keys from the answer to the dispatch: preview, confirm.
            await browser.press("d")
            await browser.wait_for("document.querySelector('#plan tbody').children.length > 0")
            await browser.press("Enter")
            await browser.wait_for("deskStats.dispatchedAt !== null")
            assert await browser.evaluate("deskStats.keysAtDispatch") == 2

            # Notes while talking: the keyword is marked as it is typed, saved with Enter.
            await browser.press("n")
            await browser.send("Input.insertText", text="报警人称有人持刀抢劫")
            await browser.wait_for("document.querySelectorAll('#notes-marked mark.kw').length === 2")
            await browser.press("Enter")
            await browser.wait_for("document.querySelector('#t-steps li.note_added') !== null")
            # The suggestion (侵犯人身 · 紧急) accepted with one key.
            await browser.press("a")
            await browser.wait_for("document.getElementById('t-priority').textContent.includes('侵犯人身')")

            await browser.wait_for("document.querySelector('#t-steps li.officer_joined') !== null", 20)
            await browser.screenshot(SCREENSHOTS / "desk-dispatched.png")
            # A reload in the middle of the call comes back to the same call.
            await browser.goto(f"{base}/desk")
            await browser.wait_for("document.body.dataset.ready === '1'", 15)
            assert await _text(browser, "#t-number") == number

            # A second call-taker never sees it as theirs and cannot act on it.
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/api/login", json={"username": "taker-2", "password": PASSWORD}) as r:
                    token = (await r.json())["token"]
                other = {"Authorization": f"Bearer {token}"}
                async with http.get(f"{base}/api/desk", headers=other) as r:
                    assert (await r.json())["call"] is None
                async with http.post(f"{base}/api/tickets/{number}/notes", json={"text": "x"}, headers=other) as r:
                    assert r.status == 403 and (await r.json())["error_id"] == "not-your-call"

                stats = await call
                assert stats.get("SuccessfulCall(C)") == "1", stats
                await steps_until(running, number, "hung_up", 10)
                # The officer arrives and clears from his phone; then the ticket is the call-taker's to close.
                async with http.post(f"{base}/api/login", json={"username": "officer003", "password": PASSWORD}) as r:
                    officer = {"Authorization": f"Bearer {(await r.json())['token']}"}
                async with http.post(f"{base}/api/tickets/{number}/arrived", headers=officer,
                                     json={"badge": "officer003", "lat": 31.2406, "lon": 121.4858}) as r:
                    assert r.status == 200, await r.text()
                async with http.post(f"{base}/api/tickets/{number}/clear", headers=officer,
                                     json={"disposition": "嫌疑人已控制 suspect held"}) as r:
                    assert r.status == 200, await r.text()
            await browser.wait_for("document.getElementById('t-state').textContent === 'cleared'", 10)
            # Close with a disposition; closing again is refused with its reason.
            await browser.press("x")
            await browser.send("Input.insertText", text="已派警处置 officer sent")
            await browser.press("Enter")
            await browser.wait_for("document.getElementById('t-state').textContent === 'closed'", 10)
            await browser.press("x")
            await browser.send("Input.insertText", text="again")
            await browser.press("Enter")
            await browser.wait_for("document.body.dataset.lastError === 'illegal-transition'")
            await browser.screenshot(SCREENSHOTS / "desk-closed.png")
            assert not [c for c in browser.console if c.startswith("exception")], browser.console
    finally:
        await phone.stop()
        await ami.action("QueueRemove", {"Queue": "emergency-110", "Interface": f"PJSIP/{SEAT}"})
        await _pause_lab_seats(ami, False)

    await running.settle()
    while not events.empty():
        e = events.get_nowait()
        if e.name == "ConfbridgeJoin" and e.get("Conference") == ticket.uniqueid:
            joins.append(e.get("Channel"))
    assert len(joins) == 3, joins  # caller, seat, officer in one room
    t = await running.service.get(number)
    names = [s.step for s in t.steps]
    assert [n for n in names if n != "located"][:4] == ["received", "queued", "seat_ringing", "answered"], names
    # the network's position came with the call: located before the call-taker's first key
    assert names.index("located") < names.index("dispatch_requested"), names
    for step in ("dispatch_requested", "officer_ringing", "officer_joined", "note_added", "classified", "hung_up"):
        assert step in names, (step, names)
    assert names[-1] == "closed"
    assert next(s for s in t.steps if s.step == "dispatch_requested").detail["by"] == "taker-1"
    assert next(s for s in t.steps if s.step == "officer_joined").detail["badge"] == "officer003"
    assert next(s for s in t.steps if s.step == "note_added").detail["keywords"] == ["持刀", "抢劫"]
    # Asterisk's own steps in its clock's order (API steps are stamped by the backend's clock)
    stamps = [s.at_us for s in t.steps if s.source == "ami"]
    assert stamps == sorted(stamps)
    assert t.recordings, "the call is recorded"
    assert time.time() - t.created_at_us / 1e6 < 120


async def test_a_text_report_taken_and_called_back_from_the_desk_with_one_key(desk_backend):
    running = desk_backend
    ami = running.backend.ami
    base = f"http://127.0.0.1:{running.settings.http_port}"
    await AuthService(running.service.engine, scrypt_n=TEST_SCRYPT_N).add_user("app-gw", PASSWORD, Role.GATEWAY)
    sender = f"+86139{random.randrange(10**8):08d}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/login", json={"username": "app-gw", "password": PASSWORD}) as r:
            gateway = {"Authorization": f"Bearer {(await r.json())['token']}"}
        async with http.post(f"{base}/api/reports", headers=gateway,
                             json={"ref": f"desk-{sender[1:]}", "sender": sender, "text": "有人在小区门口打架"}) as r:
            assert r.status == 201, await r.text()
            number = (await r.json())["number"]
    phone = Softphone(SEAT, "lab-bseat01-secret")
    await _pause_lab_seats(ami, True)
    try:
        await phone.start()
        async with Browser(1366, 768) as browser:
            await start_shift(browser, base, "taker-1", PASSWORD, SEAT)
            await browser.wait_for(f"[...document.querySelectorAll('#reports tbody tr')]"
                                   f".some((tr) => tr.dataset.number === {number!r})")
            await browser.press("t")  # the oldest waiting report: this one
            await browser.wait_for(f"document.getElementById('t-number').textContent === {number!r}")
            await browser.press("b")  # call the reporter back: the seat's phone first, then the reporter
            await browser.wait_for("document.querySelector('#t-steps li.callback_answered') !== null", 20)
            await browser.screenshot(SCREENSHOTS / "desk-callback.png")
    finally:
        await phone.stop()
        await ami.action("QueueRemove", {"Queue": "emergency-110", "Interface": f"PJSIP/{SEAT}"})
        await _pause_lab_seats(ami, False)
    t = await steps_until(running, number, "callback_answered", 5)
    requested = next(s for s in t.steps if s.step == "callback_requested")
    assert (requested.detail["by"], requested.detail["seat"], requested.detail["to"]) == ("taker-1", SEAT, sender)
