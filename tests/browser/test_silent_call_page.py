"""The desk with a silent caller, in headless Chromium, by keyboard as a call-taker: the flag appears on its own,
K plays the prompt, Q asks a yes/no question, the caller's keys (5 5, then 1) appear with their meaning, M texts
him and his SMS reply joins the same ticket on screen.

The Asterisk side is the watch itself (``telephony.silent_calls.SilentCalls``) fed with the AMI events a real call
sends, over an AMI that answers Setvar and Originate; the real call is tests/integration/test_silent_call.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.quality import conversation_views
from core.quality.conversation import KIND, Conversations
from core.quality.outbox import Outbox
from core.seats.board import SeatBoard
from core.web.app import make_app
from telephony import silent_api
from telephony.ami.codec import Event, Response
from telephony.silent_calls import SilentCalls
from tests.browser.cdp import Browser
from tests.browser.desk import start_shift
from tests.web_login import PASSWORD, TEST_SCRYPT_N

DOCS = Path(__file__).resolve().parents[2] / "docs"
CALLER = "+8613700137000"
UID = "1795951900.7"


class Asterisk:
    """An AMI that takes Setvar and Originate and remembers them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def action(self, name: str, headers: dict | None = None, **_kw) -> Response:
        self.sent.append((name, dict(headers or {})))
        return Response([("Response", "Success")])

    async def originate(self, **fields) -> Response:
        self.sent.append(("Originate", fields))
        return Response([("Response", "Success"), ("ActionID", "p1"), ("Message", "Originate successfully queued")])


def ev(name: str, **headers: str) -> Event:
    return Event([("Event", name), ("Timestamp", f"{time.time():.6f}"), *headers.items()])


@pytest.fixture
async def center(engine: AsyncEngine) -> AsyncIterator[tuple[TestServer, TicketService, SilentCalls, Asterisk,
                                                            Conversations]]:
    service = TicketService(engine)
    app = make_app(service, health={}, seats=SeatBoard(engine, wrap_up_s=30))
    asterisk = Asterisk()
    silent = SilentCalls(asterisk, service, after_s=1.0)
    silent_api.add_routes(app, silent)
    conversations = Conversations(service, Outbox(engine, None), window_s=3600)
    conversation_views.add_routes(app, conversations)
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("li", PASSWORD, Role.CALL_TAKER)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield server, service, silent, asterisk, conversations
    await silent.stop()


async def test_a_silent_caller_worked_from_the_desk_by_keyboard(center, browser: Browser, screenshots: Path) -> None:
    server, service, silent, asterisk, conversations = center
    base = f"http://127.0.0.1:{server.port}"
    await start_shift(browser, base, "li", PASSWORD, "seat-07")

    # The call rings and is answered on li's seat; the caller says nothing.
    now = time.time()
    ticket = await service.open_call(uniqueid=UID, caller_id=CALLER, at=now, source="ami")
    await service.record_step(UID, Step.QUEUED, at=now + 0.01, source="ami")
    await service.record_step(UID, Step.SEAT_RINGING, at=now + 0.02, source="ami", seat="seat-07")
    await service.record_step(UID, Step.ANSWERED, at=now + 0.03, source="ami", seat="seat-07")
    silent.on_event(ev("AgentConnect", Uniqueid=UID, Channel="PJSIP/carrier-0000002a",
                       DestChannel="PJSIP/seat-07-0000002b"))
    await browser.wait_for("deskStats.pops.some((p) => p.event === 'answered')")
    assert await browser.evaluate("document.getElementById('silent').hidden") is True
    # One second later (JIEJING_SILENT_AFTER_S here), the flag, without a key pressed.
    await browser.wait_for("!document.getElementById('silent-flag').hidden", 5)
    assert "无声" in await browser.evaluate("document.getElementById('silent-note').textContent")

    # K: the prompt is played to him on the line (a spy on his uniqueid), then the desk says it played.
    await browser.press("k")
    await browser.wait_for("document.getElementById('message').textContent.includes('提示音')")
    originate = next(fields for name, fields in asterisk.sent if name == "Originate")
    assert originate["Variable"] == {"JIEJING_SPY_ON": UID}
    silent.on_event(ev("ChanSpyStart", SpyerUniqueid=originate["ChannelId"], SpyeeUniqueid=UID,
                       SpyeeChannel="PJSIP/carrier-0000002a"))
    silent.on_event(ev("UserEvent", Uniqueid=originate["OtherChannelId"], UserEvent="JiejingPrompt",
                       Status="SUCCESS"))
    await browser.wait_for("document.getElementById('silent-note').textContent.includes('✓')", 5)

    # He presses 5 5: "I cannot speak".
    for _ in range(2):
        silent.on_event(ev("DTMFEnd", Uniqueid=UID, Digit="5", Direction="Received"))
        await asyncio.sleep(0.2)
    await browser.wait_for("!document.getElementById('silent-cannot').hidden", 5)
    # Q: a yes/no question, typed and asked aloud; he answers 1.
    await browser.press("q")
    await browser.send("Input.insertText", text="您现在有危险吗？")
    await browser.press("Enter")
    await browser.wait_for("document.querySelector('#t-steps li.question_asked') !== null", 5)
    silent.on_event(ev("DTMFEnd", Uniqueid=UID, Digit="1", Direction="Received"))
    await browser.wait_for("document.querySelectorAll('#silent-keys li').length === 3", 5)
    keys = await browser.evaluate("[...document.querySelectorAll('#silent-keys li')].map((li) => li.textContent)")
    assert "cannot speak" in keys[1] and "是 yes" in keys[2] and "您现在有危险吗" in keys[2], keys

    # M: a text to him through the outbox; his reply joins this ticket on screen.
    await browser.press("m")
    await browser.send("Input.insertText", text="110：不方便说话请直接回复短信，我们在听。")
    await browser.press("Enter")
    await browser.wait_for("document.querySelectorAll('#sms-thread li.sms_sent').length === 1", 5)
    queued = await conversations.outbox.counts()
    assert queued == {"pending": 1}
    assert await conversations.receive({"From": CALLER, "Body": "家里有人闯入，我在卧室衣柜里", "MessageSid": "SM77"})
    await browser.wait_for("document.querySelectorAll('#sms-thread li.sms_received').length === 1", 5)
    await browser.screenshot(DOCS / "desk-silent.png")
    await browser.screenshot(screenshots / "desk-silent.png")

    after = await service.get(ticket.number)
    names = [str(s.step) for s in after.steps]
    assert names[4:] == ["caller_silent", "prompt_played", "caller_key", "caller_key", "question_asked", "caller_key",
                         "sms_sent", "sms_received"], names
    sent = next(s for s in after.steps if s.step is Step.SMS_SENT)
    assert (sent.detail["to"], sent.detail["by"]) == (CALLER, "li")
    assert (await conversations.outbox.get(sent.detail["message"])).kind == KIND
    assert after.state.value == "answered"  # nothing here hangs up a silent caller
    assert not [c for c in browser.console if c.startswith("exception")], browser.console
