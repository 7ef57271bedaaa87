"""A declared major incident in the lab: callers hear its message, those who press 1 are linked and wait behind.

Real Asterisk, real SIPp callers (``caller_press1.xml``: RFC 2833 digits from the pcaps sip-tester ships). Every
seat is paused while four callers come in, the two who press 1 first; then one seat is released and takes them
one by one: the two ordinary callers first (they came later, at the intake's priority 10), then the two who
pressed 1 (priority 1), and only those two are linked to the incident's ticket. Asterisk started the incident's
music-on-hold class once on every caller (its log says so; the pressers wait again ringing), and the backend told
Asterisk of the incident through its global variables, and took them back when it ended.

A restart of the backend restores a declared incident and a declared surge, and Asterisk is told again.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from dataclasses import replace

import aiohttp
import pytest

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.triage.major import MESSAGE_CLASS, wav
from siplab import asterisk, storm
from tests.integration.conftest import start_backend
from tests.lab_globals import set_global
from tests.web_login import login_headers

pytestmark = pytest.mark.lab


@pytest.fixture
def backend_settings(backend_settings, lab_paths):
    # the message goes where the lab's Asterisk plays it from; no wrap-up, so one seat takes the calls in a row
    return replace(backend_settings, major_message_dir=str(lab_paths.major_messages), wrap_up_s=0.0)


def _message() -> bytes:
    """Three seconds of a spoken-like warble (a test stands in for the supervisor's voice)."""
    return wav(b"".join(struct.pack("<h", round(6000 * math.sin(2 * math.pi * (300 + 200 * (i // 800 % 2)) * i / 8000)))
                        for i in range(3 * 8000)))


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _global(name: str) -> str:
    out = await asyncio.to_thread(asterisk.rx, asterisk.LabPaths(), "dialplan show globals")
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    return ""


async def test_press_1_links_the_caller_and_queues_him_behind(backend, calls) -> None:
    settings = backend.settings
    await backend.wait_connected()
    base = f"http://127.0.0.1:{settings.http_port}"
    chief = await login_headers(backend.service.engine, Role.SUPERVISOR, username="chief")
    full_log = asterisk.LabPaths().root / "var/log/asterisk/full"
    log_from = full_log.stat().st_size
    await storm.set_seats(settings, 100, 0)  # every seat paused: the callers wait
    tag = f"{random.randrange(10**4):04d}"
    pressers = [f"1391{tag}{i:03d}" for i in (1, 2)]
    ordinary = [f"1381{tag}{i:03d}" for i in (1, 2)]
    async with aiohttp.ClientSession(base) as http:
        try:
            resp = await http.post("/api/major-incident", headers=chief, json={
                "kind": "fire", "address": "中山路 88 号仓库 Zhongshan Rd 88 warehouse", "lat": 31.2304, "lon": 121.4737})
            assert resp.status == 201, await resp.text()
            incident = (await resp.json())["current"]
            resp = await http.put("/api/major-incident/message", headers={**chief, "Content-Type": "audio/wav"},
                                  data=_message())
            assert resp.status == 200, await resp.text()
            line = backend.backend.major_line
            await _until(lambda: asyncio.sleep(0, line.applied == (str(incident["id"]), MESSAGE_CLASS)), 10,
                         "Asterisk told of the incident")
            assert await _global("JIEJING_MAJOR") == str(incident["id"])
            assert await _global("JIEJING_MAJOR_MOH") == MESSAGE_CLASS
            # the two who press 1 come first: without the press they would be answered first
            placing = asyncio.create_task(calls.place(
                [(n, "Presser", 2500) for n in pressers] + [(n, "Caller", 0) for n in ordinary],
                rate=2, talk_s=1, patience_s=90, scenario="caller_press1.xml"))

            async def linked() -> bool:
                if placing.done():
                    placing.result()
                tickets = {t.caller_id: t for t in await backend.service.list_recent(50)}
                return all(n in tickets and any(s.step is Step.MAJOR_INCIDENT_LINKED for s in tickets[n].steps)
                           for n in pressers) and all(n in tickets for n in ordinary)

            await _until(linked, 20, "the pressers linked and every caller in")
            await asyncio.sleep(1.0)  # the pressers are back in the queue
            await storm.set_seats(settings, 100, 1)  # one seat takes them, one after another
            stats = await placing
            assert stats.get("SuccessfulCall(C)") == "4", stats
            await backend.settle()
            resp = await http.post("/api/major-incident/end", headers=chief, json={"reason": "fire out"})
            assert resp.status == 200, await resp.text()
            await _until(lambda: asyncio.sleep(0, line.applied == ("", "")), 10, "the offer taken back")
            assert await _global("JIEJING_MAJOR") == ""
        finally:
            await storm.set_seats(settings, 100, None)
    tickets = {t.caller_id: t for t in await backend.service.list_recent(50)}
    answered = {n: next(s.at_us for s in tickets[n].steps if s.step is Step.ANSWERED) for n in pressers + ordinary}
    order = sorted(answered, key=answered.get)
    assert set(order[:2]) == set(ordinary) and set(order[2:]) == set(pressers), order
    for n in pressers:
        (link,) = [dict(s.detail) for s in tickets[n].steps if s.step is Step.MAJOR_INCIDENT_LINKED]
        assert link == {"id": incident["id"], "ticket": incident["ticket"]}
    for n in ordinary:
        assert not any(s.step is Step.MAJOR_INCIDENT_LINKED for s in tickets[n].steps)
    the_incident = await backend.service.get(incident["ticket"])
    callers = [dict(s.detail) for s in the_incident.steps if s.step is Step.MAJOR_INCIDENT_CALLER]
    assert sorted(c["ticket"] for c in callers) == sorted(tickets[n].number for n in pressers)
    assert [str(s.step) for s in the_incident.steps if str(s.step).startswith("major_incident_")][:2] == [
        "major_incident_declared", "major_incident_message"]
    # every caller heard the incident's recorded message while waiting, once (the pressers then wait ringing)
    with full_log.open("rb") as f:
        f.seek(log_from)
        logged = f.read().decode("utf-8", "replace")
    assert logged.count(f"Started music on hold, class '{MESSAGE_CLASS}'") == 4
    assert "Unable to open" not in logged


async def test_a_restarted_backend_restores_the_incident_and_the_surge(backend_settings) -> None:
    first = await start_backend(backend_settings)
    try:
        chief = await login_headers(first.service.engine, Role.SUPERVISOR, username="chief")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{backend_settings.http_port}") as http:
            resp = await http.post("/api/posture", headers=chief, json={"surge": True, "reason": "explosion downtown"})
            assert resp.status == 200, await resp.text()
            resp = await http.post("/api/major-incident", headers=chief,
                                   json={"kind": "explosion", "address": "Port Rd chemical store"})
            assert resp.status == 201, await resp.text()
            incident = (await resp.json())["current"]
        line = first.backend.major_line
        await _until(lambda: asyncio.sleep(0, line.applied == (str(incident["id"]), "jiejing-major-generic")), 10,
                     "Asterisk told of the incident")
        await asyncio.sleep(0.5)  # the posture change is kept by its own task
    finally:
        await first.runner.cleanup()
    # as after an Asterisk restart (globals forgotten): the new backend must set them again
    await set_global(backend_settings, "JIEJING_MAJOR", "")
    assert await _global("JIEJING_MAJOR") == ""
    again = await start_backend(backend_settings)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{backend_settings.http_port}") as http:
            posture = await (await http.get("/api/posture", headers=chief)).json()
            assert (posture["mode"], posture["source"], posture["by"]) == ("surge", "declared", "chief"), posture
            assert posture["wrap_up_suspended"] is True
            state = await (await http.get("/api/major-incident", headers=chief)).json()
            assert state["current"]["id"] == incident["id"] and state["current"]["ticket"] == incident["ticket"]
            line = again.backend.major_line
            await _until(lambda: asyncio.sleep(0, line.applied == (str(incident["id"]), "jiejing-major-generic")),
                         10, "Asterisk told again")
            assert await _global("JIEJING_MAJOR") == str(incident["id"])
            assert (await http.post("/api/major-incident/end", headers=chief, json={})).status == 200
            assert (await http.post("/api/posture", headers=chief,
                                    json={"surge": False, "reason": "over"})).status == 200
            await _until(lambda: asyncio.sleep(0, line.applied == ("", "")), 10, "the offer taken back")
    finally:
        await again.runner.cleanup()
