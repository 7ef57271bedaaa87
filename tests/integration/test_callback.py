"""Calling a reporter back from a seat through the lab Asterisk: seat first, then the reporter over the
carrier trunk (the lab's carrier-out trunk ends at the answering phones on port 5090), recorded and bound."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest

from core.auth.users import Role
from tests.web_login import login_headers

pytestmark = pytest.mark.lab


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _sender() -> str:
    return f"+86139{random.randrange(10**8):08d}"


async def test_a_text_report_is_called_back_from_a_seat_and_recorded(backend) -> None:
    running = backend
    engine = running.service.engine
    gateway = await login_headers(engine, Role.GATEWAY)
    desk = await login_headers(engine, Role.CALL_TAKER, username="zhao")
    base = f"http://127.0.0.1:{running.settings.http_port}"
    sender = _sender()
    supervisor = await login_headers(engine, Role.SUPERVISOR)
    async with aiohttp.ClientSession(base) as http:
        # zhao's shift: logged in to seat097 (already a member of the lab's queue)
        async with http.post("/api/seats/seat097/login", headers=desk, json={}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post("/api/reports", headers=gateway,
                             json={"ref": f"cb-{sender[1:]}", "sender": sender, "text": "楼下有人吵架"}) as resp:
            assert resp.status == 201, await resp.text()
            number = (await resp.json())["number"]
        async with http.post(f"/api/tickets/{number}/take", headers=desk, json={"seat": "seat097"}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(f"/api/tickets/{number}/callback", headers=desk, json={"seat": "seat097"}) as resp:
            assert resp.status == 202, await resp.text()
            assert await resp.json() == {"number": number, "seat": "seat097", "to": sender}
        # the seat board shows the seat on this call while the call-back lasts
        async with http.get("/api/seats", headers=supervisor) as resp:
            seat = next(s for s in (await resp.json())["seats"] if s["seat"] == "seat097")
            assert (seat["state"], seat["ticket"]) == ("on_call", number), seat

        # the seat answers after 1 s and hangs up 8 s later; the reporter's phone answers after 3 s
        async def recorded():
            ticket = await running.service.get(number)
            return ticket if ticket and ticket.recordings and not running.backend.callbacks.busy(number) else None

        try:
            ticket = await wait_for(recorded, 30, "the call-back's recording to be bound")
        except AssertionError:
            seen = await running.service.get(number)
            raise AssertionError(f"call-back never ended with a recording: {seen and seen.to_json()}") from None
        names = [str(s.step) for s in ticket.steps]
        assert names == ["reported", "taken", "callback_requested", "callback_answered", "callback_ended"], \
            ticket.to_json()["steps"]
        stamps = [s.at_us for s in ticket.steps]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
        requested, answered = ticket.steps[2].detail, ticket.steps[3].detail
        assert (requested["by"], requested["seat"], requested["to"]) == ("zhao", "seat097", sender)
        assert answered["reporter_channel"].startswith("PJSIP/carrier-out-")
        # the reporter answered ~3 s after the seat did, within its ring time
        assert 2.0 <= (ticket.steps[3].at_us - ticket.steps[2].at_us) / 1e6 <= 10.0
        # the seat's phone hangs up 8 s after it answered, the reporter having answered ~3 s in
        assert 3.0 <= (ticket.steps[4].at_us - ticket.steps[3].at_us) / 1e6 <= 7.0
        assert str(ticket.state) == "taken"
        (recording,) = ticket.recordings
        assert recording.path.endswith(f"/{number}_{requested['channel']}.wav")
        # MixMonitor starts when the seat picks up and stops when its phone hangs up 8 s later (plus the set-up)
        assert recording.duration_s is not None and 6.0 <= recording.duration_s <= 12.0, recording

        async with http.get("/api/seats", headers=supervisor) as resp:
            seat = next(s for s in (await resp.json())["seats"] if s["seat"] == "seat097")
            assert seat["state"] in ("wrap_up", "available"), seat

        # -- refusals on the same desk ------------------------------------------------------
        async with http.post(f"/api/tickets/{number}/callback", headers=desk, json={"seat": "seat 42"}) as resp:
            assert resp.status == 400 and (await resp.json())["error_id"] == "invalid-body"

        other = _sender()
        async with http.post("/api/reports", headers=gateway,
                             json={"ref": f"cb-{other[1:]}", "sender": other, "text": "电动车被偷"}) as resp:
            lost = (await resp.json())["number"]
        async with http.post(f"/api/tickets/{lost}/take", headers=desk, json={}) as resp:
            assert resp.status == 200
        # a call-taker calls back from their own seat only
        async with http.post(f"/api/tickets/{lost}/callback", headers=desk, json={"seat": "seat999"}) as resp:
            assert resp.status == 403 and (await resp.json())["error_id"] == "not-your-seat", await resp.text()
        # the lab has seats 001-100: PJSIP has no seat999 to ring (a supervisor may name any seat)
        async with http.post(f"/api/tickets/{lost}/callback", headers=supervisor, json={"seat": "seat999"}) as resp:
            assert resp.status == 409 and (await resp.json())["error_id"] == "seat-not-reachable", await resp.text()


async def test_a_caller_id_that_is_not_a_number_never_reaches_asterisk(backend) -> None:
    running = backend
    service = running.service
    events = running.backend.ami.subscribe()
    # an abandoned 110 call whose carrier sent text aimed at the dialplan as its caller id
    uid = f"lab-hostile-{time.time():.6f}"
    now = time.time()
    ticket = await service.open_call(uniqueid=uid, caller_id="13800138000,Hangup&PJSIP/officer001",
                                     at=now, source="ami")
    await service.record_step(uid, "queued", at=now + 0.1, source="ami")
    await service.record_step(uid, "abandoned", at=now + 0.2, source="ami")
    desk = await login_headers(service.engine, Role.SUPERVISOR)  # an abandoned call is no call-taker's own
    async with aiohttp.ClientSession(f"http://127.0.0.1:{running.settings.http_port}") as http:
        async with http.post(f"/api/tickets/{ticket.number}/callback", headers=desk,
                             json={"seat": "seat043"}) as resp:
            assert resp.status == 409
            assert (await resp.json())["error_id"] == "no-callback-number"
    await asyncio.sleep(1.0)
    seen = []
    while not events.empty():
        event = events.get_nowait()
        if event.name == "Newchannel":
            seen.append(event.get("Channel"))
    assert not [c for c in seen if c and ("seat043" in c or "carrier-out" in c)], seen
    after = await service.get(ticket.number)
    assert after is not None and [str(s.step) for s in after.steps] == ["received", "queued", "abandoned"]
