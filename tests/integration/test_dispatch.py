"""Flattened dispatch through the lab Asterisk: caller, seat and officer in one room."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from siplab.asterisk import CITY_FILE
from siplab.softphone import Softphone

from .conftest import start_backend

pytestmark = pytest.mark.lab

CENTER = (31.2304, 121.4737)  # officer001 stands here; station "east"


def city(tmp_path: Path, *, timeout_s: float, phones: dict[str, str] | None = None,
         desks: dict[str, tuple[str, str]] | None = None) -> str:
    """The lab city with short ring timeouts and some phones swapped for silent ones."""
    data = json.loads(CITY_FILE.read_text())
    for station in data["stations"]:
        station["answer_timeout_s"] = timeout_s
        if desks and station["id"] in desks:
            station["duty_desk"], station["superior"] = desks[station["id"]]
    for officer in data["officers"]:
        if phones and officer["badge"] in phones:
            officer["endpoint"] = phones[officer["badge"]]
    path = tmp_path / "city.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return str(path)


def _number() -> str:
    return f"136{random.randrange(10**8):08d}"


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def answered_ticket(running, caller: str):
    async def find():
        for t in await running.service.list_recent(20):
            if t.caller_id == caller and t.state == "answered" and running.backend.events.legs(t.uniqueid):
                return t
        return None
    return await wait_for(find, 10, f"the call from {caller} to be answered")


async def steps_until(running, number: str, step: str, timeout: float):
    async def find():
        t = await running.service.get(number)
        return t if t and step in [s.step for s in t.steps] else None
    return await wait_for(find, timeout, f"step {step} on {number}")


@pytest.fixture
async def dispatch_backend(backend_settings, tmp_path, request):
    kwargs = getattr(request, "param", {"timeout_s": 5})
    running = await start_backend(replace(backend_settings, city_file=city(tmp_path, **kwargs)))
    yield running
    await running.runner.cleanup()


async def test_dispatched_call_has_caller_seat_and_officer_in_one_room(dispatch_backend, calls):
    running = dispatch_backend
    joins: list = []
    queue = running.backend.ami.subscribe()
    caller = _number()
    call = asyncio.create_task(calls.place([(caller, "Robbery")], talk_s=8, patience_s=10))
    ticket = await answered_ticket(running, caller)
    await running.backend.planner.locate(ticket.number, lat=CENTER[0], lon=CENTER[1], address="人民路1号")
    await running.backend.dispatcher.dispatch(ticket.number, by="test")
    joined = await steps_until(running, ticket.number, "officer_joined", 15)
    stats = await call
    assert stats.get("SuccessfulCall(C)") == "1", stats
    await running.settle()
    while not queue.empty():
        e = queue.get_nowait()
        if e.name == "ConfbridgeJoin" and e.get("Conference") == ticket.uniqueid:
            joins.append(e.get("Channel"))
    assert len(joins) == 3, joins
    assert {j.split("/")[1].split("-")[0][:4] for j in joins} == {"carr", "seat", "offi"}

    t = await running.service.get(ticket.number)
    names = [s.step for s in t.steps]
    assert names[:4] == ["received", "queued", "seat_ringing", "answered"]
    assert names[4:8] == ["located", "dispatch_requested", "officer_ringing", "officer_joined"]
    assert names[-1] == "hung_up" and t.state == "en_route"
    assert t.steps[6].detail["badge"] == "officer001"
    stamps = [s.at_us for s in t.steps]
    assert stamps == sorted(stamps)
    # the recording is one file over the whole call, before and after the move
    assert len(t.recordings) == 1
    assert 9.0 <= t.recordings[0].duration_s <= 11.0
    assert joined is not None


@pytest.mark.parametrize("dispatch_backend", [{"timeout_s": 5, "phones": {"officer001": "PJSIP/silent001"}}],
                         indirect=True)
async def test_officer_does_not_answer_unit_duty_desk_joins(dispatch_backend, calls):
    running = dispatch_backend
    caller = _number()
    call = asyncio.create_task(calls.place([(caller, "No answer")], talk_s=15, patience_s=17))
    ticket = await answered_ticket(running, caller)
    await running.backend.planner.locate(ticket.number, lat=CENTER[0], lon=CENTER[1])
    await running.backend.dispatcher.dispatch(ticket.number, by="test")
    t = await steps_until(running, ticket.number, "officer_joined", 20)
    ladder = [(s.step, s.detail.get("kind"), s.detail.get("outcome")) for s in t.steps
              if s.step.startswith("officer_")]
    assert ladder == [
        ("officer_ringing", "officer", None),
        ("officer_no_answer", "officer", "no_answer"),
        ("officer_ringing", "duty_desk", None),
        ("officer_joined", "duty_desk", None),
    ]
    no_answer = next(s for s in t.steps if s.step == "officer_no_answer")
    ringing = next(s for s in t.steps if s.step == "officer_ringing")
    # the officer rang for the station's timeout (5 s, the shortest a station may set) before the ladder moved on
    assert 4_800_000 <= no_answer.at_us - ringing.at_us <= 7_000_000
    officer = await running.backend.officers.get("officer001")
    assert officer.status == "available"  # released for the next dispatch
    stats = await call
    assert stats.get("SuccessfulCall(C)") == "1", stats


@pytest.mark.parametrize("dispatch_backend", [{
    "timeout_s": 5, "phones": {"officer001": "PJSIP/silent001"},
    "desks": {"east": ("PJSIP/silent002", "PJSIP/silent003")}}], indirect=True)
async def test_ladder_exhausted_call_taker_keeps_the_caller(dispatch_backend, calls):
    running = dispatch_backend
    caller = _number()
    call = asyncio.create_task(calls.place([(caller, "Nobody")], talk_s=22, patience_s=24))
    ticket = await answered_ticket(running, caller)
    await running.backend.planner.locate(ticket.number, lat=CENTER[0], lon=CENTER[1])
    await running.backend.dispatcher.dispatch(ticket.number, by="test")
    t = await steps_until(running, ticket.number, "ladder_exhausted", 30)
    assert [s.detail.get("kind") for s in t.steps if s.step == "officer_no_answer"] == [
        "officer", "duty_desk", "superior"]
    assert t.state == "answered"  # back with the call-taker, who may dispatch again
    alerts = await running.backend.open_alerts()
    assert any(a["kind"] == "dispatch" and a["ref"] == ticket.number for a in alerts), alerts
    stats = await call  # the caller stayed with the call-taker until the end
    assert stats.get("SuccessfulCall(C)") == "1", stats


async def test_call_taker_dispatches_from_a_real_softphone_with_star_1(dispatch_backend, calls, lab_paths):
    running = dispatch_backend
    ami = running.backend.ami
    await ami.action("QueueAdd", {"Queue": "emergency-110", "Interface": "PJSIP/bseat01", "MemberName": "bseat01"})
    for i in range(1, 101):
        await ami.action("QueuePause", {"Interface": f"PJSIP/seat{i:03d}", "Paused": "true", "Reason": "test"})
    phone = Softphone("bseat01", "lab-bseat01-secret")
    try:
        await phone.start()
        caller = _number()
        call = asyncio.create_task(calls.place([(caller, "Softphone")], talk_s=8, patience_s=9))
        await phone.wait_for("CALL_ESTABLISHED", 10)
        ticket = await answered_ticket(running, caller)
        assert ticket.seat == "bseat01"
        await running.backend.planner.locate(ticket.number, lat=CENTER[0], lon=CENTER[1])
        await phone.command("sndcode", "*1")
        t = await steps_until(running, ticket.number, "officer_joined", 15)
        requested = next(s for s in t.steps if s.step == "dispatch_requested")
        assert requested.detail.get("by") == "bseat01"
        stats = await call
        assert stats.get("SuccessfulCall(C)") == "1", stats
    finally:
        await phone.stop()
        await ami.action("QueueRemove", {"Queue": "emergency-110", "Interface": "PJSIP/bseat01"})
        for i in range(1, 101):
            await ami.action("QueuePause", {"Interface": f"PJSIP/seat{i:03d}", "Paused": "false"})


async def test_position_sent_by_the_network_locates_the_incident_and_picks_the_nearest_officer(
        dispatch_backend, calls):
    running = dispatch_backend
    caller = _number()
    # officer003 stands at 31.2404, 121.4857; the handset is 30 m from him
    call = asyncio.create_task(calls.place([(caller, "Located", "31.2406", "121.4858")], talk_s=8, patience_s=10,
                                           scenario="caller_located.xml"))
    ticket = await answered_ticket(running, caller)
    t = await steps_until(running, ticket.number, "located", 5)
    located = next(s for s in t.steps if s.step == "located")
    assert (located.detail["lat"], located.detail["lon"]) == (31.2406, 121.4858)
    assert located.detail["address"] == "network position (PIDF-LO)"
    assert located.detail["station"] == "east"
    # located before a call-taker said a word: right after the call was received
    assert located.at_us - t.steps[0].at_us < 1_000_000
    await running.backend.dispatcher.dispatch(ticket.number, by="test")
    t = await steps_until(running, ticket.number, "officer_joined", 15)
    assert next(s for s in t.steps if s.step == "officer_joined").detail["badge"] == "officer003"
    stats = await call
    assert stats.get("SuccessfulCall(C)") == "1", stats


async def test_a_text_report_is_dispatched_by_ringing_the_officer_s_phone_alone(dispatch_backend):
    """No caller to conference: the nearest officer's phone is rung alone through the same ladder; his answer
    puts him on the way (en route), and the reporter's ticket has every step."""
    import aiohttp

    from core.auth.users import AuthService, Role
    from tests.web_login import PASSWORD, TEST_SCRYPT_N

    running = dispatch_backend
    auth = AuthService(running.service.engine, scrypt_n=TEST_SCRYPT_N)
    await auth.add_user("app-gateway", PASSWORD, Role.GATEWAY)
    await auth.add_user("taker-r", PASSWORD, Role.CALL_TAKER)
    base = f"http://127.0.0.1:{running.settings.http_port}"
    async with aiohttp.ClientSession() as http:
        async def token(user: str) -> dict[str, str]:
            async with http.post(f"{base}/api/login", json={"username": user, "password": PASSWORD}) as r:
                return {"Authorization": f"Bearer {(await r.json())['token']}"}

        gateway, taker = await token("app-gateway"), await token("taker-r")
        report = {"ref": f"app-{random.randrange(10**9)}", "sender": _number(), "text": "小区门口有人打架，有人受伤",
                  "lat": CENTER[0], "lon": CENTER[1], "address": "人民大道200号"}
        async with http.post(f"{base}/api/reports", json=report, headers=gateway) as r:
            assert r.status in (200, 201), await r.text()
            number = (await r.json())["number"]
        async with http.post(f"{base}/api/tickets/{number}/take", json={}, headers=taker) as r:
            assert r.status == 200, await r.text()
        async with http.put(f"{base}/api/tickets/{number}/location", json={"lat": CENTER[0], "lon": CENTER[1]},
                            headers=taker) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{base}/api/tickets/{number}/dispatch", headers=taker) as r:
            assert r.status == 202, await r.text()
    ticket = await steps_until(running, number, "officer_joined", 20)
    steps = [s.step for s in ticket.steps]
    assert steps[0] == "reported" and steps.index("taken") < steps.index("dispatch_requested")
    ringing = [s for s in ticket.steps if s.step == "officer_ringing"]
    joined = [s for s in ticket.steps if s.step == "officer_joined"][0]
    assert ringing[0].detail["badge"] == joined.detail["badge"] == "officer001"
    assert str(ticket.state) == "en_route"
    officer = await running.backend.officers.get("officer001")
    assert str(officer.status) == "dispatched" and officer.ticket == number
