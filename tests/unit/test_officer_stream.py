"""Officers on the step stream: their own tickets' steps and briefings only, from ringing until released."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from core.auth.users import Role
from core.calls.events import StepBroadcaster
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from tests.dispatch_city import (
    CENTER,
    T0,
    answered_call,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.triage_setup import desk_client, make_desk, planner_for
from tests.unit.conftest import FakeClock
from tests.web_login import login_headers

WAIT_S = 2.0


def _drain(subscription: Any) -> list[dict[str, Any]]:
    out = []
    while subscription.pending():
        out.append(json.loads(subscription._queue.get_nowait()))
    return out


# -- the broadcaster alone -----------------------------------------------------------------


async def test_an_officer_subscription_follows_the_tickets_holding_his_badge(service: TicketService) -> None:
    broadcaster = StepBroadcaster()
    service.add_listener(broadcaster.on_step)
    e1, w1, east = broadcaster.subscribe(badge="e1"), broadcaster.subscribe(badge="w1"), broadcaster.subscribe("east")
    a = await answered_call(service, "1.1")
    b = await answered_call(service, "1.2")
    assert _drain(e1) == [] and _drain(w1) == []  # nobody holds them yet
    for uniqueid, badge in (("1.1", "e1"), ("1.2", "w1")):
        await service.record_step(uniqueid, Step.DISPATCH_REQUESTED, at=T0 + 5, source="api", station="east")
        await service.record_step(uniqueid, Step.OFFICER_RINGING, at=T0 + 6, source="ami", badge=badge)
    await service.record_step("1.1", Step.OFFICER_JOINED, at=T0 + 9, source="ami", badge="e1")
    await service.record_step("1.2", Step.OFFICER_NO_ANSWER, at=T0 + 9, source="ami", badge="w1",
                              outcome="no_answer")
    await service.record_step("1.2", Step.LADDER_EXHAUSTED, at=T0 + 10, source="ami", released=[])
    assert [m["step"] for m in _drain(e1)] == ["officer_ringing", "officer_joined"]
    # Released by no-answer: he hears of it, then of nothing more on that ticket.
    assert [m["step"] for m in _drain(w1)] == ["officer_ringing", "officer_no_answer"]
    assert broadcaster.officers_of(a.number) == {"e1"} and broadcaster.officers_of(b.number) == set()
    # The station's view is as before: every step of its tickets.
    assert len(_drain(east)) == 7

    # Non-step messages reach the officer when they name his ticket; ``badge`` narrows to him alone.
    assert broadcaster.publish({"type": "briefing", "number": a.number}, "east") == 2
    assert broadcaster.publish({"type": "briefing", "number": b.number}, "east") == 1
    assert broadcaster.publish({"type": "surge", "ref": CENTER}, "east") == 1
    assert broadcaster.publish({"type": "briefing", "number": a.number}, "east", badge="e1") == 1
    assert broadcaster.publish({"type": "briefing", "number": b.number}, "east", badge="w1") == 0
    assert [m["number"] for m in _drain(e1)] == [a.number, a.number]
    assert _drain(w1) == []
    assert [m["type"] for m in _drain(east)] == ["briefing", "briefing", "surge"]

    # Clearing ends the officer's view of the ticket, after he has seen the step.
    await service.record_step("1.1", Step.CLEARED, at=T0 + 60, source="api", disposition="已处置")
    assert [m["step"] for m in _drain(e1)] == ["cleared"]
    assert broadcaster.officers_of(a.number) == set()


def test_officers_are_primed_after_a_restart() -> None:
    broadcaster = StepBroadcaster()
    broadcaster.prime_officers({"110-20261129-000001": ["e1", "e2"]})
    assert broadcaster.officers_of("110-20261129-000001") == {"e1", "e2"}
    assert broadcaster.publish({"type": "briefing", "number": "110-20261129-000001"}, None) == 0
    e2 = broadcaster.subscribe(badge="e2")
    assert broadcaster.publish({"type": "briefing", "number": "110-20261129-000001"}, None) == 1
    assert _drain(e2)[0]["number"] == "110-20261129-000001"


# -- through the app: the WebSocket with an officer's token ---------------------------------


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return await asyncio.wait_for(ws.receive_json(), WAIT_S)


async def _nothing_more(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.receive(), 0.2)


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_an_officer_s_socket_carries_his_ticket_and_its_briefing_only(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)),
               officer("w1", "west", point_in(ring_cell(2))))
    desk = make_desk(service, planner, clock)
    async with desk_client(service, planner, desk) as client:
        e1_headers = await login_headers(service.engine, Role.OFFICER, username="e1")
        w1_headers = await login_headers(service.engine, Role.OFFICER, username="w1")
        east_headers = await login_headers(service.engine, Role.STATION, station="east")
        # An officer's stream is his own: he may not ask for a station's.
        refused = await client.get("/api/events", params={"station": "east"}, headers=e1_headers)
        assert refused.status == 403
        e1 = await client.ws_connect("/api/events", params={"access_token": _token(e1_headers)})
        w1 = await client.ws_connect("/api/events", params={"access_token": _token(w1_headers)})
        east = await client.ws_connect("/api/events", params={"station": "east",
                                                              "access_token": _token(east_headers)})
        assert (await _next(e1)) == {"type": "hello", "station": None, "badge": "e1"}
        assert (await _next(w1))["badge"] == "w1"
        assert (await _next(east)) == {"type": "hello", "station": "east", "badge": None}

        a = await answered_call(service, "1.1")
        await planner.locate(a.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1], address="人民大道200号")
        # The keyword matches before anyone is sent: the station gets the briefing, no officer yet.
        await desk.add_note(a.number, "有人持刀抢劫", by="seat-05")
        east_seen = [await _next(east) for _ in range(3)]
        assert [m.get("step", m["type"]) for m in east_seen] == ["located", "note_added", "briefing"]

        b = await answered_call(service, "1.2")
        await planner.locate(b.number, lat=point_in(ring_cell(2))[0], lon=point_in(ring_cell(2))[1])
        plan_b = await planner.begin(b.number)
        assert plan_b.rungs[0].badge == "w1"
        await planner.ringing(b.number, plan_b.rungs[0])
        await planner.no_answer(b.number, plan_b.rungs[0])
        assert [(m["number"], m["step"]) for m in [await _next(w1) for _ in range(2)]] == [
            (b.number, "officer_ringing"), (b.number, "officer_no_answer")]

        plan_a = await planner.begin(a.number)
        assert plan_a.rungs[0].badge == "e1"
        await planner.ringing(a.number, plan_a.rungs[0])
        await planner.joined(a.number, plan_a.rungs[0])
        ringing, joined, briefing = [await _next(e1) for _ in range(3)]
        assert (ringing["number"], ringing["step"]) == (a.number, "officer_ringing")
        assert (joined["number"], joined["step"]) == (a.number, "officer_joined")
        assert briefing["type"] == "briefing" and briefing["number"] == a.number
        assert briefing["pushed_to"] == "e1" and briefing["keywords"] == ["抢劫"]
        assert briefing["location"]["address"] == "人民大道200号"
        await planner.arrived(a.number, badge="e1", lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
        assert (await _next(e1))["step"] == "arrived"

        # The station saw the dispatch steps as before, but not the briefing meant for the officer alone.
        east_steps = [(await _next(east))["step"] for _ in range(4)]
        assert east_steps == ["dispatch_requested", "officer_ringing", "officer_joined", "arrived"]
        # Released by no-answer, w1 hears nothing more of ticket B, nor anything of A.
        await planner.exhausted(b.number)
        await service.record_step("1.2", Step.HUNG_UP, at=T0 + 90, source="ami")
        await _nothing_more(w1)
        await _nothing_more(e1)  # nor does e1 hear of B
        await _nothing_more(east)
        for ws in (e1, w1, east):
            await ws.close()


async def test_a_joining_officer_is_briefed_only_when_there_is_something_to_brief(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    published: list[tuple[dict[str, Any], str | None, str | None]] = []
    desk.set_publisher(lambda m, s, badge=None: published.append((m, s, badge)))
    await desk.alerts.start()
    try:
        plain = await answered_call(service, "1.1")
        assert await desk.brief_officer(plain.number, "e1") is None
        assert published == []
        # A major-incident alert on record is enough, keywords or not.
        desk.alerts.raise_alert("major_incident", plain.number, "重大警情")
        await desk.alerts.flush()
        briefing = await desk.brief_officer(plain.number, "e1")
        assert briefing is not None and briefing["pushed_to"] == "e1"
        assert published == [(briefing, None, "e1")]
    finally:
        await desk.alerts.stop()
