"""Repeat callers within 10 minutes are linked to their open ticket; prank numbers are flagged and still answered."""

from __future__ import annotations

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService, TicketView
from core.triage.repeat import RepeatCallers
from tests.triage_setup import desk_client, make_desk, planner_for, repaired
from tests.unit.conftest import FakeClock
from tests.web_login import login_headers


async def _call(service: TicketService, clock: FakeClock, uniqueid: str, caller: str = "13800000001") -> TicketView:
    return await service.open_call(uniqueid=uniqueid, caller_id=caller, at=clock.now, source="agi")


async def test_a_call_within_ten_minutes_links_to_the_open_ticket(service: TicketService, clock: FakeClock) -> None:
    repeat = RepeatCallers(service, clock=clock)
    first = await _call(service, clock, "1.1")
    clock.now += 9 * 60
    second = await _call(service, clock, "1.2")
    assert await repeat.check(second.number) == first.number
    stored = await service.get(second.number)
    assert stored is not None
    link = stored.steps[-1]
    assert (link.step, link.detail["to"], link.detail["prank"]) == (Step.REPEAT_LINKED, first.number, False)
    assert stored.state.value == "received"  # linked, and queued like any other call
    assert (await repeat.flags([stored]))[second.number] == {"repeat_of": first.number, "prank": False}
    assert await repeat.check(second.number) is None  # once only


async def test_no_link_after_ten_minutes_to_a_closed_ticket_or_for_withheld_numbers(
    service: TicketService, clock: FakeClock
) -> None:
    repeat = RepeatCallers(service, clock=clock)
    await _call(service, clock, "2.1")
    clock.now += 10 * 60 + 1
    late = await _call(service, clock, "2.2")
    assert await repeat.check(late.number) is None
    # The earlier call was abandoned and then closed: nothing open to link to.
    closed = await _call(service, clock, "3.1", "13800000003")
    await service.record_step(closed.uniqueid, Step.ABANDONED, at=clock.now, source="ami")
    await service.close(closed.number, disposition="abandoned", by="ct")
    clock.now += 60
    again = await _call(service, clock, "3.2", "13800000003")
    assert await repeat.check(again.number) is None
    await _call(service, clock, "4.1", "anonymous")
    hidden = await _call(service, clock, "4.2", "anonymous")
    assert await repeat.check(hidden.number) is None
    other = await _call(service, clock, "5.1", "13900000000")
    assert await repeat.check(other.number) is None


async def test_the_listener_links_new_calls_and_flags_prank_numbers(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    async with desk_client(service, planner, desk) as client:
        supervisor = await login_headers(service.engine, Role.SUPERVISOR)
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        body = {"phone": "13800000009", "reason": "每晚骚扰"}
        assert (await client.post("/api/prank-numbers", json=body, headers=taker)).status == 403
        resp = await client.post("/api/prank-numbers", json=body, headers=supervisor)
        assert resp.status == 201, await resp.text()
        first = await _call(service, clock, "6.1", "13800000009")
        clock.now += 30
        second = await _call(service, clock, "6.2", "13800000009")
        await desk.repeat.flush()
        got = await (await client.get(f"/api/tickets/{second.number}", headers=taker)).json()
        assert got["triage"]["repeat_of"] == first.number and got["triage"]["prank"] is True
        assert got["steps"][-1]["step"] == "repeat_linked"
        # Flagged, never blocked: the call goes on to the queue and a seat.
        await service.record_step(second.uniqueid, Step.QUEUED, at=clock.now, source="ami")
        view = await service.record_step(second.uniqueid, Step.ANSWERED, at=clock.now, source="ami", seat="s1")
        assert view.state.value == "answered"
        listed = await (await client.get("/api/prank-numbers", headers=supervisor)).json()
        assert [n["phone"] for n in listed["numbers"]] == ["13800000009"]
        assert (await client.delete("/api/prank-numbers/13800000009", headers=supervisor)).status == 200
        assert (await client.delete("/api/prank-numbers/13800000009", headers=supervisor)).status == 404
        got = await (await client.get(f"/api/tickets/{second.number}", headers=taker)).json()
        assert got["triage"]["prank"] is False


async def test_calls_left_out_of_a_full_queue_are_checked_from_the_store(
    service: TicketService, clock: FakeClock, monkeypatch
) -> None:
    from core.triage import repeat as repeat_module

    monkeypatch.setattr(repeat_module, "WORK_MAX", 1)
    repeat = RepeatCallers(service, clock=clock)
    remove = service.add_listener(repeat.on_step)
    try:
        first = await _call(service, clock, "8.1")
        clock.now += 60
        second = await _call(service, clock, "8.2")  # no room: the first is still waiting
        assert repeat.overflow.dropped == 1 and repeat.health()["ok"] is False
        await repeat.start()
        await repaired(repeat.overflow)
        assert repeat.health()["ok"] is True
        stored = await service.get(second.number)
        assert stored.steps[-1].step == Step.REPEAT_LINKED and stored.steps[-1].detail["to"] == first.number
    finally:
        remove()
        await repeat.stop()
