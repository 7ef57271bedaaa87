"""Silent callers through the real lab Asterisk: a SIPp caller who sends only silence (and later keys) reaches a
seat, is flagged silent, hears the prompt while he stays on the line, answers with 5 5 and 1; a caller who speaks
is never flagged. Nobody is hung up by the system: the seat ends each call after its talk time."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

import aiohttp
import pytest

from core.auth.users import Role
from siplab import silent_caller, sipp, storm
from tests.web_login import login_headers

from .conftest import start_backend

pytestmark = pytest.mark.lab

SILENT_AFTER_S = 3.0
TALK_S = 20.0  # the seat's talk time: it, not the system, ends the call
# The caller's keys, in seconds from his answer by the dialplan (the seat answers about a second later,
# he is flagged silent 3 s after that, the prompt takes about 3 s).
KEYS = ((10.0, "5"), (10.6, "5"), (13.0, "1"))


async def _place(calls, caller: str, audio) -> dict[str, str]:
    run_dir = calls.paths.run / f"test-silent-{int(time.time() * 1000)}"
    run_dir.mkdir(parents=True)
    storm.write_injection(run_dir / "callers.csv", [(caller, "Silent")])
    storm.prepare_callers(calls.paths, run_dir, talk_s=TALK_S, patience_s=40)  # the seats' talk time
    scenario = sipp.render("caller.xml", run_dir, PATIENCE_MS=40_000, AUDIO=audio)
    return await storm.drive_calls(run_dir, scenario, 1, 1, timeout=90)


async def _ticket_of(service, caller: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in await service.list_recent(20):
            if t.caller_id == caller:
                return t
        await asyncio.sleep(0.1)
    raise AssertionError(f"no ticket for {caller}")


async def _step(service, number: str, name: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticket = await service.get(number)
        found = [s for s in ticket.steps if s.step == name]
        if found:
            return found[0], ticket
        await asyncio.sleep(0.1)
    ticket = await service.get(number)
    raise AssertionError(f"{number}: no {name} within {timeout} s: {[str(s.step) for s in ticket.steps]}")


@pytest.fixture
async def silent_backend(backend_settings):
    running = await start_backend(replace(backend_settings, silent_after_s=SILENT_AFTER_S))
    yield running
    await running.runner.cleanup()


async def test_a_silent_caller_is_flagged_prompted_and_answers_with_keys(silent_backend, calls, tmp_path):
    running = silent_backend
    service = running.service
    events = running.backend.ami.subscribe()
    supervisor = await login_headers(service.engine, Role.SUPERVISOR)
    caller = f"139{random.randrange(10**8):08d}"
    audio = silent_caller.write_pcap(tmp_path / "silent.pcap", TALK_S + 10, KEYS)
    call = asyncio.create_task(_place(calls, caller, audio))

    ticket = await _ticket_of(service, caller)
    answered, _ = await _step(service, ticket.number, "answered", 15)
    flagged, _ = await _step(service, ticket.number, "caller_silent", SILENT_AFTER_S + 3)
    assert SILENT_AFTER_S - 0.2 <= (flagged.at_us - answered.at_us) / 1e6 <= SILENT_AFTER_S + 1.0
    assert flagged.detail["after_s"] == SILENT_AFTER_S

    base = f"http://127.0.0.1:{running.settings.http_port}"
    async with aiohttp.ClientSession(base, headers=supervisor) as http:
        async with http.post(f"/api/tickets/{ticket.number}/prompt") as resp:
            assert resp.status == 202, await resp.text()
        async with http.post(f"/api/tickets/{ticket.number}/prompt") as resp:  # one prompt at a time
            assert resp.status == 409 and (await resp.json())["error_id"] == "prompt-busy"
        played, _ = await _step(service, ticket.number, "prompt_played", 10)
        async with http.post(f"/api/tickets/{ticket.number}/questions", json={"text": "您有危险吗？是按1，否按2"}) as resp:
            assert resp.status == 201, await resp.text()
    assert played.detail["outcome"] == "played", played.detail
    assert played.detail["playback"] == "SUCCESS"
    assert played.detail["heard_on"].startswith("PJSIP/carrier-"), played.detail

    stats = await call
    assert stats.get("SuccessfulCall(C)") == "1", stats  # the call ran its course: nobody cut it
    await running.settle()
    ticket = await service.get(ticket.number)
    names = [str(s.step) for s in ticket.steps]
    keys = [s for s in ticket.steps if s.step == "caller_key"]
    assert [k.detail["key"] for k in keys] == ["5", "5", "1"], names
    assert [k.detail["answer"] for k in keys] == [None, "cannot_speak", "yes"]
    assert {k.detail["question"] for k in keys} == {"您有危险吗？是按1，否按2"}
    # the keys came 0.6 s and 2.4 s apart, as pressed
    assert abs((keys[1].at_us - keys[0].at_us) / 1e6 - 0.6) < 0.25
    assert abs((keys[2].at_us - keys[1].at_us) / 1e6 - 2.4) < 0.25
    # the seat hung up after its talk time, not the system
    hung_up = next(s for s in ticket.steps if s.step == "hung_up")
    assert (hung_up.at_us - answered.at_us) / 1e6 >= TALK_S - 1, names
    assert names.index("caller_silent") < names.index("prompt_played") < names.index("caller_key")

    # Asterisk put the spy on the caller's own channel: the prompt was on his line
    spies = []
    while not events.empty():
        e = events.get_nowait()
        if e.name == "ChanSpyStart":
            spies.append((e.get("SpyeeUniqueid"), e.get("SpyeeChannel")))
    assert spies == [(ticket.uniqueid, played.detail["heard_on"])], spies


async def test_a_caller_who_speaks_is_not_flagged(silent_backend, calls):
    running = silent_backend
    service = running.service
    caller = f"137{random.randrange(10**8):08d}"
    stats = await _place(calls, caller, sipp.audio_pcap(calls.paths.run))
    assert stats.get("SuccessfulCall(C)") == "1", stats
    await running.settle()
    ticket = await _ticket_of(service, caller)
    names = [str(s.step) for s in ticket.steps]
    assert "answered" in names and "hung_up" in names, names
    assert "caller_silent" not in names and "caller_spoke" not in names, names
    assert running.backend.silent.flagged == 0 and running.backend.silent.not_watched == 0
