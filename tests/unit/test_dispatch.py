"""Choosing the officer, the ladder, reservations under concurrency, outcomes, and the lifecycle rows."""

from __future__ import annotations

import asyncio
from typing import Any

import h3
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.lifecycle import (
    CALL_CONNECTED_STATES,
    CALL_LIVE_STATES,
    IllegalTransition,
    State,
    Step,
    advance,
)
from core.calls.tickets import TicketService, TicketView
from core.dispatch.officers import OfficerBusy, OfficerService, OfficerStatus
from core.dispatch.planner import (
    DispatchPlanner,
    DispatchSettings,
    NotLocated,
    RungKind,
    choose_officer,
    ladder,
)
from tests.dispatch_city import (
    CENTER,
    T0,
    answered_call,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.unit.conftest import FakeClock


@pytest.fixture
def officers(engine: AsyncEngine, clock: FakeClock) -> OfficerService:
    return OfficerService(engine, clock)


@pytest.fixture
def planner(service: TicketService, officers: OfficerService, clock: FakeClock) -> DispatchPlanner:
    return DispatchPlanner(service, officers, clock=clock)


async def located_call(planner: DispatchPlanner, uniqueid: str, where: tuple[float, float]) -> TicketView:
    ticket = await answered_call(planner.tickets, uniqueid)
    await planner.locate(ticket.number, lat=where[0], lon=where[1], address="人民大道200号")
    return ticket


# -- the choice ----------------------------------------------------------------------------


async def test_nearest_in_the_incident_cell(officers: OfficerService) -> None:
    await load(
        officers,
        officer("far", "east", point_in(CENTER, 150)),
        officer("near", "east", point_in(CENTER, 50)),
        officer("ring1", "east", point_in(ring_cell(1))),
    )
    choice = await choose_officer(officers, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1], at=T0)
    assert choice.officer is not None and choice.officer.badge == "near"
    assert choice.candidate is not None
    assert choice.candidate.ring == 0
    assert choice.candidate.distance_m == pytest.approx(50, abs=1)
    assert choice.candidate.eta_s == pytest.approx(50 * 1.3 / (30 / 3.6), rel=0.05)
    assert [c.officer.badge for c in choice.others] == ["far", "ring1"]
    assert choice.station == "east"


async def test_the_incident_cell_comes_before_a_closer_officer_in_ring_1(officers: OfficerService) -> None:
    incident = point_in(CENTER, 250)
    across = point_in(CENTER, 560)
    # Preconditions of the geometry: incident inside the centre cell, "across" just outside it.
    assert h3.latlng_to_cell(*incident, 8) == CENTER
    across_cell = h3.latlng_to_cell(*across, 8)
    assert h3.grid_distance(CENTER, across_cell) == 1
    await load(
        officers,
        officer("inside", "east", point_in(CENTER, -250)),  # ~500 m away
        officer("across", "east", across),  # ~310 m away, but in ring 1
    )
    choice = await choose_officer(officers, lat=incident[0], lon=incident[1], at=T0)
    assert choice.officer is not None and choice.officer.badge == "inside"
    assert choice.others[0].distance_m < choice.candidate.distance_m  # type: ignore[union-attr]


async def test_ties_go_to_the_longest_waiting_then_the_lower_badge(
    officers: OfficerService, clock: FakeClock
) -> None:
    spot = point_in(CENTER, 100)
    await load(officers, officer("b07", "east", spot), officer("b03", "east", spot))
    choice = await choose_officer(officers, cell=CENTER, at=T0)
    assert choice.officer is not None and choice.officer.badge == "b03"  # same wait: badge order
    clock.now = T0 + 60
    await officers.set_status("b03", "off_duty")
    await officers.set_status("b03", "available")  # back on duty later: b07 has waited longer
    choice = await choose_officer(officers, cell=CENTER, at=T0 + 61)
    assert choice.officer is not None and choice.officer.badge == "b07"
    # Deterministic: asking again changes nothing.
    again = await choose_officer(officers, cell=CENTER, at=T0 + 61)
    assert [c.officer.badge for c in (again.candidate, *again.others)] == ["b07", "b03"]  # type: ignore[union-attr]


async def test_nobody_in_the_cell_finds_ring_1_before_ring_2(officers: OfficerService) -> None:
    await load(
        officers,
        officer("ring2", "west", point_in(ring_cell(2))),
        officer("ring1", "east", point_in(ring_cell(1))),
    )
    choice = await choose_officer(officers, cell=CENTER, at=T0)
    assert choice.candidate is not None
    assert (choice.candidate.officer.badge, choice.candidate.ring) == ("ring1", 1)
    assert (choice.lat, choice.lon) == pytest.approx(h3.cell_to_latlng(CENTER))  # measured from the centre


async def test_busy_off_duty_and_off_roster_officers_are_skipped(officers: OfficerService) -> None:
    await load(
        officers,
        officer("ringing", "east", point_in(CENTER)),
        officer("dispatched", "east", point_in(CENTER)),
        officer("signed_off", "east", point_in(CENTER), status=OfficerStatus.OFF_DUTY),
        officer("yesterday", "east", point_in(CENTER), shifts=((T0 - 86400, T0 - 43200),)),
        officer("unlocated", "east", None),
        officer("free", "west", point_in(ring_cell(2))),
    )
    assert await officers.reserve("ringing", "A")
    assert await officers.reserve("dispatched", "B") and await officers.mark_dispatched("dispatched", "B")
    choice = await choose_officer(officers, cell=CENTER, at=T0)
    assert choice.officer is not None and choice.officer.badge == "free"
    assert choice.others == ()


async def test_search_stops_at_max_k(officers: OfficerService) -> None:
    await load(officers, officer("ring3", "south", point_in(ring_cell(3))))
    assert (await choose_officer(officers, cell=CENTER, at=T0)).officer is not None
    narrow = await choose_officer(officers, cell=CENTER, at=T0, settings=DispatchSettings(max_k=2))
    assert narrow.officer is None
    assert narrow.station == "east"


async def test_stale_fixes_are_skipped_when_limited(officers: OfficerService, clock: FakeClock) -> None:
    clock.now = T0 - 900
    await load(officers, officer("stale", "east", point_in(CENTER)))
    clock.now = T0
    await load(officers, officer("stale", "east", None), officer("fresh", "west", point_in(ring_cell(2))))
    unlimited = await choose_officer(officers, cell=CENTER, at=T0)
    limited = await choose_officer(officers, cell=CENTER, at=T0, settings=DispatchSettings(max_fix_age_s=300))
    assert unlimited.officer is not None and unlimited.officer.badge == "stale"
    assert limited.officer is not None and limited.officer.badge == "fresh"


async def test_choice_needs_a_place(officers: OfficerService) -> None:
    with pytest.raises(ValueError, match="lat and lon, or its cell"):
        await choose_officer(officers, at=T0)
    with pytest.raises(ValueError, match="not " + ring_cell(1)):
        await choose_officer(officers, cell=ring_cell(1), lat=point_in(CENTER)[0], lon=point_in(CENTER)[1], at=T0)


async def test_an_unassigned_cell_takes_the_nearest_assigned_station(officers: OfficerService) -> None:
    await load(officers)
    outside = sorted(h3.grid_ring(CENTER, 4))[0]  # the test city ends at ring 3 (south)
    choice = await choose_officer(officers, cell=outside, at=T0)
    assert choice.station == "south"
    far = await choose_officer(officers, lat=0.0, lon=0.0, at=T0)
    assert far.station is None and far.officer is None


# -- the ladder ----------------------------------------------------------------------------


async def test_ladder_follows_the_officers_unit(planner: DispatchPlanner, officers: OfficerService) -> None:
    # An officer of the west station patrolling an east cell: his unit's desks back him up.
    await load(officers, officer("w1", "west", point_in(CENTER)))
    ticket = await located_call(planner, "1.1", point_in(CENTER))
    plan = await planner.preview(ticket.number)
    assert [(r.kind, r.endpoint, r.timeout_s) for r in plan.rungs] == [
        (RungKind.OFFICER, "PJSIP/w1", 20.0),
        (RungKind.DUTY_DESK, "PJSIP/desk-west", 20.0),
        (RungKind.SUPERIOR, "PJSIP/chief-west", 20.0),
    ]
    assert plan.rungs[0].badge == "w1" and plan.rungs[0].officer_id is not None
    assert plan.incident.station == "east"
    assert not plan.reserved
    assert (await officers.get("w1")).status is OfficerStatus.AVAILABLE  # a preview reserves nobody


async def test_ladder_per_station_configuration(planner: DispatchPlanner, officers: OfficerService) -> None:
    await load(officers, officer("s1", "south", point_in(ring_cell(3))))
    ticket = await located_call(planner, "1.1", point_in(ring_cell(3)))
    plan = await planner.preview(ticket.number)
    # south rings the officer, then straight to its superior, 25 s each.
    assert [(r.kind, r.endpoint, r.timeout_s) for r in plan.rungs] == [
        (RungKind.OFFICER, "PJSIP/s1", 25.0),
        (RungKind.SUPERIOR, "PJSIP/chief-south", 25.0),
    ]


async def test_all_busy_leaves_the_incident_stations_desks(planner: DispatchPlanner, officers: OfficerService) -> None:
    await load(officers, officer("e1", "east", point_in(CENTER)), officer("w1", "west", point_in(ring_cell(2))))
    await officers.reserve("e1", "other")
    await officers.reserve("w1", "other")
    ticket = await located_call(planner, "1.1", point_in(CENTER))
    plan = await planner.begin(ticket.number)
    assert plan.choice.officer is None and not plan.reserved
    assert [(r.kind, r.endpoint) for r in plan.rungs] == [
        (RungKind.DUTY_DESK, "PJSIP/desk-east"),
        (RungKind.SUPERIOR, "PJSIP/chief-east"),
    ]
    assert not plan.exhausted
    assert ladder(plan.choice, None) == []


# -- reservations under concurrency --------------------------------------------------------


async def test_simultaneous_dispatches_never_share_an_officer(
    planner: DispatchPlanner, officers: OfficerService
) -> None:
    await load(
        officers,
        officer("o1", "east", point_in(CENTER, 20)),
        officer("o2", "east", point_in(CENTER, 60)),
    )
    numbers = [(await located_call(planner, f"1.{i}", point_in(CENTER))).number for i in range(4)]
    plans = await asyncio.gather(*(planner.begin(n) for n in numbers))
    chosen = [p.choice.officer.badge for p in plans if p.choice.officer is not None]
    assert sorted(chosen) == ["o1", "o2"]
    assert sum(p.reserved for p in plans) == 2
    for plan in plans:
        if plan.choice.officer is not None:
            held = await officers.get(plan.choice.officer.badge)
            assert (held.status, held.ticket) == (OfficerStatus.RINGING, plan.number)


async def test_another_process_taking_the_officer_first_moves_on_to_the_next(
    service: TicketService, engine: AsyncEngine, clock: FakeClock, planner: DispatchPlanner
) -> None:
    # A second planner with its own OfficerService shares only the database,
    # as another backend process would: its choice lock does not protect us.
    other = DispatchPlanner(service, OfficerService(engine, clock), clock=clock)
    await load(
        planner.officers, officer("o1", "east", point_in(CENTER, 20)), officer("o2", "east", point_in(CENTER, 60))
    )
    a = await located_call(planner, "1.1", point_in(CENTER))
    b = await located_call(planner, "1.2", point_in(CENTER))
    seen_by_other = await other.preview(b.number)
    assert seen_by_other.choice.officer is not None and seen_by_other.choice.officer.badge == "o1"
    mine = await planner.begin(a.number)
    theirs = await other.begin(b.number)
    assert mine.choice.officer is not None and mine.choice.officer.badge == "o1"
    assert theirs.choice.officer is not None and theirs.choice.officer.badge == "o2"
    both = await asyncio.gather(
        planner.begin((await located_call(planner, "1.3", point_in(CENTER))).number),
        other.begin((await located_call(planner, "1.4", point_in(CENTER))).number),
    )
    assert all(p.choice.officer is None for p in both)


# -- outcomes ------------------------------------------------------------------------------


async def test_ladder_walk_officer_no_answer_then_desk_joins(
    planner: DispatchPlanner, officers: OfficerService, service: TicketService
) -> None:
    await load(officers, officer("e1", "east", point_in(CENTER)))
    ticket = await located_call(planner, "1.1", point_in(CENTER))
    plan = await planner.begin(ticket.number, by="seat-05")
    officer_rung, desk_rung, _ = plan.rungs
    await planner.ringing(ticket.number, officer_rung, at=T0 + 10)
    view = await planner.no_answer(ticket.number, officer_rung, outcome="no_answer", at=T0 + 25)
    assert view.state is State.DISPATCHING
    assert (await officers.get("e1")).status is OfficerStatus.AVAILABLE  # released at once
    await planner.ringing(ticket.number, desk_rung, at=T0 + 26)
    view = await planner.joined(ticket.number, desk_rung, at=T0 + 30)
    assert view.state is State.DISPATCHED
    steps = [(s.step, s.detail.get("kind"), s.detail.get("outcome")) for s in view.steps[-6:]]
    assert steps == [
        (Step.LOCATED, None, None),
        (Step.DISPATCH_REQUESTED, None, None),
        (Step.OFFICER_RINGING, "officer", None),
        (Step.OFFICER_NO_ANSWER, "officer", "no_answer"),
        (Step.OFFICER_RINGING, "duty_desk", None),
        (Step.OFFICER_JOINED, "duty_desk", None),
    ]
    assert all(s.detail["station"] == "east" for s in view.steps[-6:])
    requested = view.steps[-5].detail
    assert requested["officer"]["badge"] == "e1" and requested["by"] == "seat-05"
    assert [r["endpoint"] for r in requested["ladder"]] == ["PJSIP/e1", "PJSIP/desk-east", "PJSIP/chief-east"]


async def test_officer_joins_caller_hangs_up_officer_arrives_and_clears(
    planner: DispatchPlanner, officers: OfficerService, service: TicketService, clock: FakeClock
) -> None:
    await load(officers, officer("e1", "east", point_in(CENTER, 100)))
    ticket = await located_call(planner, "1.1", point_in(CENTER))
    plan = await planner.begin(ticket.number)
    await planner.ringing(ticket.number, plan.rungs[0])
    view = await planner.joined(ticket.number, plan.rungs[0])
    assert view.state is State.DISPATCHED and view.call_live
    assert (await officers.get("e1")).status is OfficerStatus.DISPATCHED
    view = await service.record_step("1.1", Step.HUNG_UP, at=T0 + 90, source="ami")
    assert view.state is State.EN_ROUTE and not view.call_live
    clock.now = T0 + 400
    view = await planner.arrived(ticket.number, badge="e1", lat=point_in(CENTER, 10)[0], lon=point_in(CENTER)[1])
    assert view.state is State.ON_SCENE
    assert view.steps[-1].detail["distance_m"] == pytest.approx(10, abs=1)
    e1 = await officers.get("e1")
    assert (e1.status, e1.ticket, e1.located_at_us) == (OfficerStatus.ON_SCENE, ticket.number, round((T0 + 400) * 1e6))
    view = await planner.clear(ticket.number, disposition="纠纷已调解", by="e1")
    assert view.state is State.CLEARED
    assert view.steps[-1].detail == {"disposition": "纠纷已调解", "by": "e1", "station": "east"}
    assert (await officers.get("e1")).status is OfficerStatus.AVAILABLE
    closed = await service.close(ticket.number, disposition="已处置", by="seat-05")
    assert closed.state is State.CLOSED


async def test_exhausted_ladder_returns_the_caller_to_the_call_taker(
    service: TicketService, officers: OfficerService, clock: FakeClock
) -> None:
    alerts: list[tuple[str, dict[str, Any]]] = []
    planner = DispatchPlanner(service, officers, clock=clock, on_exhausted=lambda t, d: alerts.append((t.number, d)))
    await load(officers, officer("e1", "east", point_in(CENTER)))
    ticket = await located_call(planner, "1.1", point_in(CENTER))
    plan = await planner.begin(ticket.number)
    await planner.ringing(ticket.number, plan.rungs[0])
    view = await planner.exhausted(ticket.number, reason="no_answer")
    assert view.state is State.ANSWERED and view.call_live
    assert (await officers.get("e1")).status is OfficerStatus.AVAILABLE
    assert alerts == [(ticket.number, {"reason": "no_answer", "released": ["e1"], "station": "east"})]
    # The call-taker may try again.
    again = await planner.begin(ticket.number)
    assert again.reserved


async def test_caller_hangs_up_while_the_ladder_rings(
    planner: DispatchPlanner, officers: OfficerService, service: TicketService
) -> None:
    await load(officers, officer("e1", "east", point_in(CENTER)))
    ticket = await located_call(planner, "1.1", point_in(CENTER))
    plan = await planner.begin(ticket.number)
    await planner.ringing(ticket.number, plan.rungs[0])
    view = await service.record_step("1.1", Step.HUNG_UP, at=T0 + 20, source="ami")
    assert view.state is State.DISPATCHING_ENDED and not view.call_live
    view = await planner.joined(ticket.number, plan.rungs[0])
    assert view.state is State.EN_ROUTE


async def test_dispatch_refusals_leave_nobody_reserved(
    planner: DispatchPlanner, officers: OfficerService, service: TicketService
) -> None:
    await load(officers, officer("e1", "east", point_in(CENTER)))
    ticket = await answered_call(service, "1.1")
    with pytest.raises(NotLocated):
        await planner.begin(ticket.number)
    queued = await service.open_call(uniqueid="1.2", caller_id="139", at=T0, source="agi")
    await planner.locate(queued.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
    with pytest.raises(IllegalTransition):
        await planner.begin(queued.number)  # not yet answered by a call-taker
    assert (await officers.get("e1")).status is OfficerStatus.AVAILABLE
    plan = await planner.preview(queued.number)
    with pytest.raises(ValueError, match="outcome must be one of"):
        await planner.no_answer(queued.number, plan.rungs[0], outcome="maybe")


async def test_arrival_of_an_officer_working_another_ticket_is_refused(
    planner: DispatchPlanner, officers: OfficerService, service: TicketService
) -> None:
    await load(officers, officer("e1", "east", point_in(CENTER)))
    ticket = await located_call(planner, "1.1", point_in(CENTER))
    plan = await planner.begin(ticket.number)
    await planner.joined(ticket.number, plan.rungs[0])
    other = await located_call(planner, "1.2", point_in(CENTER))
    other_plan = await planner.begin(other.number)
    assert other_plan.rungs[0].kind is RungKind.DUTY_DESK  # e1 is taken
    with pytest.raises(IllegalTransition):
        await planner.arrived(other.number, badge="e1", lat=0.0, lon=0.0)  # other is still dispatching
    await planner.joined(other.number, other_plan.rungs[0])
    with pytest.raises(OfficerBusy, match="dispatched for ticket " + ticket.number):
        await planner.arrived(other.number, badge="e1", lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])


# -- lifecycle rows of dispatch ------------------------------------------------------------


def _walk(*steps: Step) -> list[State]:
    state: State | None = None
    seen = []
    for step in steps:
        state = advance(state, step)
        seen.append(state)
    return seen


def test_path_dispatch_with_caller_on_the_line_until_arrival() -> None:
    path = _walk(
        Step.RECEIVED, Step.QUEUED, Step.LOCATED, Step.ANSWERED, Step.DISPATCH_REQUESTED, Step.OFFICER_RINGING,
        Step.OFFICER_NO_ANSWER, Step.OFFICER_RINGING, Step.OFFICER_JOINED, Step.ARRIVED, Step.HUNG_UP,
        Step.CLEARED, Step.CLOSED,
    )
    assert path[2] is State.QUEUED  # located changes nothing
    assert path[-5:] == [State.DISPATCHED, State.ON_SCENE, State.ON_SCENE, State.CLEARED, State.CLOSED]


def test_path_ladder_exhausted_after_the_caller_hung_up() -> None:
    path = _walk(
        Step.RECEIVED, Step.QUEUED, Step.ANSWERED, Step.DISPATCH_REQUESTED, Step.HUNG_UP,
        Step.OFFICER_RINGING, Step.OFFICER_NO_ANSWER, Step.LADDER_EXHAUSTED, Step.CLOSED,
    )
    assert path[-5:] == [State.DISPATCHING_ENDED] * 3 + [State.ENDED, State.CLOSED]


def test_only_call_states_are_live() -> None:
    assert {State.DISPATCHING, State.DISPATCHED} <= CALL_LIVE_STATES
    assert not {State.DISPATCHING_ENDED, State.EN_ROUTE, State.ON_SCENE, State.CLEARED} & CALL_LIVE_STATES


def test_a_hang_up_in_every_connected_state_leaves_the_call_dead() -> None:
    # The AMI adapter records hung_up in these states; each must end the live call.
    assert CALL_CONNECTED_STATES <= CALL_LIVE_STATES
    for state in CALL_CONNECTED_STATES:
        assert advance(state, Step.HUNG_UP) not in CALL_LIVE_STATES


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (State.QUEUED, Step.DISPATCH_REQUESTED),  # no call-taker has judged it yet
        (State.ENDED, Step.DISPATCH_REQUESTED),
        (State.DISPATCHING, Step.DISPATCH_REQUESTED),  # one ladder at a time
        (State.ANSWERED, Step.OFFICER_JOINED),
        (State.DISPATCHING, Step.ARRIVED),
        (State.ANSWERED, Step.CLEARED),
        (State.DISPATCHED, Step.CLOSED),  # clear first
        (State.ON_SCENE, Step.CLOSED),
        (State.EN_ROUTE, Step.HUNG_UP),  # the call already ended
        (State.ON_SCENE, Step.LOCATED),
        (State.CLOSED, Step.LOCATED),
        (State.CLEARED, Step.ARRIVED),
        (State.DISPATCHED, Step.LADDER_EXHAUSTED),
    ],
)
def test_illegal_dispatch_steps(state: State, step: Step) -> None:
    with pytest.raises(IllegalTransition, match=f"step {step} is not allowed for a ticket in state {state}"):
        advance(state, step)
