"""Mobilising support: who is picked (own station, bordering stations, the county), the ladders, the steps."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.events import StepBroadcaster
from core.calls.lifecycle import IllegalTransition, Step
from core.calls.tickets import TicketService, TicketView
from core.dispatch.heatmap import HeatmapQuery, heatmap
from core.dispatch.mobilise import MobilisationRefused, Mobiliser, SupportRequest
from core.dispatch.officers import City, OfficerService, OfficerStatus, UnknownStation
from core.dispatch.planner import DispatchPlanner
from core.dispatch.views import MOBILISER
from core.triage.keywords import dispatched_badges
from tests.dispatch_city import (
    CENTER,
    EAST,
    SOUTH,
    T0,
    WEST,
    answered_call,
    city,
    city_cells,
    dispatch_app,
    officer,
    point_in,
    ring_cell,
)
from tests.triage_setup import make_desk, planner_for
from tests.unit.conftest import FakeClock


class Phones:
    """The telephony side's ring, as a unit test needs it: who answers, in the order rung."""

    def __init__(self, answering: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.answering = set(answering)
        self.rung: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, number: str, endpoint: str, timeout_s: float) -> tuple[bool, str]:
        self.rung.append(endpoint)
        if self.gate is not None:
            await self.gate.wait()
        return (True, "answered") if endpoint in self.answering else (False, "no_answer")


@pytest.fixture
def officers(engine: AsyncEngine, clock: FakeClock) -> OfficerService:
    return OfficerService(engine, clock)


@pytest.fixture
def planner(service: TicketService, officers: OfficerService, clock: FakeClock) -> DispatchPlanner:
    return DispatchPlanner(service, officers, clock=clock)


def one_county() -> City:
    """The test city with south moved into east's and west's county bureau."""
    cells = city_cells()
    stations = tuple(replace(s, cells=cells[s.id]) for s in (EAST, WEST, replace(SOUTH, bureau=EAST.bureau)))
    return replace(city(), stations=stations)


async def located(planner: DispatchPlanner, uniqueid: str = "1.1", where: tuple[float, float] | None = None
                  ) -> TicketView:
    ticket = await answered_call(planner.tickets, uniqueid)
    lat, lon = where or point_in(CENTER)
    await planner.locate(ticket.number, lat=lat, lon=lon, address="人民大道200号")
    return ticket


def badges(selection) -> list[tuple[str, str]]:
    return [(p.officer.badge, str(p.tier)) for p in selection.picks]


# -- the selection -----------------------------------------------------------------------------


async def test_the_incident_station_s_officers_come_first_nearest_first(planner: DispatchPlanner) -> None:
    await planner.officers.load_city(city(
        officer("e-far", "east", point_in(ring_cell(3))),  # an east car out in the south's area
        officer("e-near", "east", point_in(CENTER, 100)),
        officer("w-closer", "west", point_in(ring_cell(2))),  # nearer than e-far, but of another station
        officer("e-mid", "east", point_in(ring_cell(1))),
    ))
    ticket = await located(planner)
    selection = await Mobiliser(planner).select(ticket.number, SupportRequest(officers=3))
    assert badges(selection) == [("e-near", "station"), ("e-mid", "station"), ("e-far", "station")]
    assert selection.picks[2].distance_m > [p for p in selection.reserve if p.officer.badge == "w-closer"][0].distance_m
    assert selection.short == 0
    assert selection.tiers == {"station": ("east",), "neighbour": ("west",), "county": ()}


async def test_too_few_on_duty_at_the_station_then_the_neighbours_then_the_county(planner: DispatchPlanner) -> None:
    await planner.officers.load_city(replace(one_county(), officers=(
        officer("e1", "east", point_in(CENTER, 200)),
        officer("e-off", "east", point_in(CENTER, 10), status=OfficerStatus.OFF_DUTY),
        officer("e-rest", "east", point_in(CENTER, 20), shifts=((T0 + 3600, T0 + 7200),)),  # not rostered now
        officer("e-nowhere", "east", None),  # no position
        officer("w-far", "west", point_in(ring_cell(2, 5))),
        officer("w-near", "west", point_in(ring_cell(2, 0))),
        officer("s1", "south", point_in(ring_cell(3))),
    )))
    ticket = await located(planner)
    selection = await Mobiliser(planner).select(ticket.number, SupportRequest(officers=4))
    west_order = sorted(["w-far", "w-near"], key=lambda b: b)  # both in ring 2: checked by distance below
    assert [b for b, _ in badges(selection)][0] == "e1"
    assert [t for _, t in badges(selection)] == ["station", "neighbour", "neighbour", "county"]
    assert {b for b, _ in badges(selection)[1:3]} == set(west_order)
    distances = [p.distance_m for p in selection.picks[1:3]]
    assert distances == sorted(distances)  # within the neighbouring station, nearest first
    assert badges(selection)[3] == ("s1", "county")
    assert selection.tiers == {"station": ("east",), "neighbour": ("west",), "county": ("south",)}


async def test_what_the_county_cannot_give_is_reported_short(planner: DispatchPlanner) -> None:
    # south belongs to another county bureau and does not border east: the city bureau's matter
    await planner.officers.load_city(city(
        officer("e1", "east", point_in(CENTER, 50)),
        officer("w1", "west", point_in(ring_cell(2))),
        officer("s1", "south", point_in(ring_cell(3))),
    ))
    ticket = await located(planner)
    selection = await Mobiliser(planner).select(ticket.number, SupportRequest(officers=5))
    assert badges(selection) == [("e1", "station"), ("w1", "neighbour")]
    assert selection.short == 3


async def test_named_units_are_taken_first_and_the_count_from_the_rest(planner: DispatchPlanner) -> None:
    await planner.officers.load_city(city(
        officer("e1", "east", point_in(CENTER, 50)),
        officer("e2", "east", point_in(CENTER, 80)),
        officer("s1", "south", point_in(ring_cell(3))),
    ))
    ticket = await located(planner)
    mobiliser = Mobiliser(planner)
    # south is in another county bureau: only by name
    selection = await mobiliser.select(ticket.number, SupportRequest(officers=1, units={"south": 1, "east": 1}))
    assert badges(selection) == [("s1", "named"), ("e1", "named"), ("e2", "station")]  # no pick taken twice
    short = await mobiliser.select(ticket.number, SupportRequest(units={"south": 3}))
    assert short.units_short == {"south": 2}
    with pytest.raises(UnknownStation):
        await mobiliser.select(ticket.number, SupportRequest(units={"north": 1}))


async def test_an_incident_in_the_neighbouring_station_s_area_looks_both_ways(planner: DispatchPlanner) -> None:
    await planner.officers.load_city(city(
        officer("e1", "east", point_in(CENTER)),
        officer("s1", "south", point_in(ring_cell(3))),
    ))
    ticket = await located(planner, where=point_in(ring_cell(2)))  # a west cell: no west officer on duty
    selection = await Mobiliser(planner).select(ticket.number, SupportRequest(officers=2))
    assert selection.tiers["station"] == ("west",)
    assert set(selection.tiers["neighbour"]) == {"east", "south"}  # both border ring 2, across the county line too
    assert {t for _, t in badges(selection)} == {"neighbour"} and len(selection.picks) == 2


@pytest.mark.parametrize("asked", [SupportRequest(), SupportRequest(officers=51), SupportRequest(officers=-1),
                                   SupportRequest(units={"east": 0})])
def test_a_request_for_nobody_or_too_many_is_refused(asked: SupportRequest) -> None:
    with pytest.raises(ValueError):
        asked.checked()


# -- the mobilisation ------------------------------------------------------------------------


async def test_every_pick_rung_alone_joined_or_escalated_each_a_step(planner: DispatchPlanner) -> None:
    await planner.officers.load_city(city(
        officer("e1", "east", point_in(CENTER, 50)),
        officer("e2", "east", point_in(CENTER, 90)),
        officer("w1", "west", point_in(ring_cell(2))),
    ))
    phones = Phones({"PJSIP/e1", "PJSIP/desk-east", "PJSIP/w1"})  # e2 does not answer; his duty desk does
    planner.ring_alone = phones
    ticket = await located(planner)
    mobiliser = Mobiliser(planner)
    plan = await mobiliser.mobilise(ticket.number, SupportRequest(officers=3), by="sup")
    assert [p["badge"] for p in plan.to_json()["picks"]] == ["e1", "e2", "w1"]
    assert [r["kind"] for r in plan.to_json()["picks"][0]["ladder"]] == ["officer", "duty_desk", "superior"]
    await mobiliser.wait(ticket.number)

    t = await planner.tickets.get(ticket.number)
    assert t is not None and str(t.state) == "answered"  # the ticket's own call is untouched
    support = [(s.step, s.detail.get("pick"), s.detail.get("kind")) for s in t.steps if s.step.startswith("support")]
    assert support[0] == (Step.SUPPORT_REQUESTED, None, None)
    for badge in ("e1", "w1"):
        assert [x[0] for x in support if x[1] == badge] == [Step.SUPPORT_RINGING, Step.SUPPORT_JOINED]
    assert [(x[0], x[2]) for x in support if x[1] == "e2"] == [
        (Step.SUPPORT_RINGING, "officer"), (Step.SUPPORT_NO_ANSWER, "officer"),
        (Step.SUPPORT_RINGING, "duty_desk"), (Step.SUPPORT_JOINED, "duty_desk")]
    requested = t.steps[[s.step for s in t.steps].index(Step.SUPPORT_REQUESTED)]
    assert requested.detail["by"] == "sup" and requested.detail["station"] == "east"
    assert all(s.detail["station"] == "east" for s in t.steps if s.step.startswith("support"))

    e1, e2, w1 = [await planner.officers.get(b) for b in ("e1", "e2", "w1")]
    assert (e1.status, e1.ticket) == (OfficerStatus.DISPATCHED, ticket.number)
    assert (w1.status, w1.ticket) == (OfficerStatus.DISPATCHED, ticket.number)
    assert (e2.status, e2.ticket) == (OfficerStatus.AVAILABLE, None)  # released: his desk sends someone

    status = await mobiliser.status(ticket.number)
    assert {p["badge"]: p["state"] for p in status["picks"]} == {"e1": "on_the_way", "e2": "escalated",
                                                                  "w1": "on_the_way"}
    assert status["counts"] == {"on_the_way": 2, "escalated": 1} and status["running"] is False
    assert sorted(dispatched_badges(t)) == ["e1", "e2", "w1"]  # each may read the incident card

    stood = await mobiliser.stand_down(ticket.number, by="sup")
    assert stood.steps[-1].step is Step.SUPPORT_STOOD_DOWN and stood.steps[-1].detail["released"] == ["e1", "w1"]
    assert (await planner.officers.get("e1")).status is OfficerStatus.AVAILABLE


async def test_a_pick_nobody_answers_for_is_unanswered_and_the_officer_free(planner: DispatchPlanner) -> None:
    await planner.officers.load_city(city(officer("e1", "east", point_in(CENTER, 50))))
    phones = Phones()
    planner.ring_alone = phones
    ticket = await located(planner)
    mobiliser = Mobiliser(planner)
    await mobiliser.mobilise(ticket.number, SupportRequest(officers=1), by="sup")
    await mobiliser.wait(ticket.number)
    assert phones.rung == ["PJSIP/e1", "PJSIP/desk-east", "PJSIP/chief-east"]
    t = await planner.tickets.get(ticket.number)
    assert t is not None and t.steps[-1].step is Step.SUPPORT_UNANSWERED
    assert (await mobiliser.status(ticket.number))["picks"][0]["state"] == "unanswered"
    assert (await planner.officers.get("e1")).status is OfficerStatus.AVAILABLE


async def test_a_desk_rung_for_two_officers_is_rung_once_at_a_time(planner: DispatchPlanner) -> None:
    await planner.officers.load_city(city(officer("e1", "east", point_in(CENTER, 50)),
                                          officer("e2", "east", point_in(CENTER, 90))))
    calls: list[tuple[str, str]] = []
    busy: set[str] = set()

    async def ring(number: str, endpoint: str, timeout_s: float) -> tuple[bool, str]:
        assert endpoint not in busy, f"{endpoint} rung twice at once"
        busy.add(endpoint)
        calls.append(("start", endpoint))
        await asyncio.sleep(0.01)
        busy.discard(endpoint)
        return endpoint == "PJSIP/desk-east", "no_answer"

    planner.ring_alone = ring
    ticket = await located(planner)
    mobiliser = Mobiliser(planner)
    await mobiliser.mobilise(ticket.number, SupportRequest(officers=2), by="sup")
    await mobiliser.wait(ticket.number)
    assert [e for _, e in calls].count("PJSIP/desk-east") == 2
    assert {p["state"] for p in (await mobiliser.status(ticket.number))["picks"]} == {"escalated"}


async def test_refusals_reserve_nobody(planner: DispatchPlanner, service: TicketService) -> None:
    await planner.officers.load_city(city(officer("e1", "east", point_in(CENTER, 50))))
    mobiliser = Mobiliser(planner)
    ticket = await located(planner)
    with pytest.raises(MobilisationRefused) as no_phones:
        await mobiliser.mobilise(ticket.number, SupportRequest(officers=1), by="sup")
    assert no_phones.value.status == 503
    phones = Phones({"PJSIP/e1"})
    phones.gate = asyncio.Event()
    planner.ring_alone = phones
    unlocated = await answered_call(service, "2.2")
    with pytest.raises(Exception) as not_located:
        await mobiliser.mobilise(unlocated.number, SupportRequest(officers=1), by="sup")
    assert getattr(not_located.value, "error_id", None) == "not-located"
    await mobiliser.mobilise(ticket.number, SupportRequest(officers=1), by="sup")
    with pytest.raises(MobilisationRefused) as running:
        await mobiliser.mobilise(ticket.number, SupportRequest(officers=1), by="sup")
    assert running.value.error_id == "mobilisation-running"
    phones.gate.set()
    await mobiliser.wait(ticket.number)
    await service.record_step("1.1", Step.HUNG_UP, at=T0 + 10, source="ami")
    await service.close(ticket.number, disposition="done", by="sup", at=T0 + 20)
    with pytest.raises(IllegalTransition):
        await mobiliser.mobilise(ticket.number, SupportRequest(officers=1), by="sup")


async def test_the_heat_map_shows_the_coverage_the_mobilised_officers_left(
        planner: DispatchPlanner, service: TicketService, clock: FakeClock) -> None:
    # One officer covers the south cells; mobilised to the centre, he leaves them cold.
    await planner.officers.load_city(city(
        officer("e1", "east", point_in(CENTER, 50)),
        officer("s1", "south", point_in(ring_cell(3))),
    ))
    query = HeatmapQuery(round((T0 - 3600) * 1e6), round((T0 + 3600) * 1e6), cold_km=1.0)
    before = await heatmap(service.engine, planner.officers, query, T0)
    assert before["left_by_support"] == 0 and before["mobilised"] == []
    planner.ring_alone = Phones({"PJSIP/s1"})
    ticket = await located(planner)
    mobiliser = Mobiliser(planner)
    await mobiliser.mobilise(ticket.number, SupportRequest(units={"south": 1}), by="sup")
    await mobiliser.wait(ticket.number)
    after = await heatmap(service.engine, planner.officers, query, T0)
    assert after["mobilised"] == ["s1"]
    left = {c["cell"] for c in after["cells"] if c["left_by_support"]}
    assert ring_cell(3) in left
    was_cold = {c["cell"] for c in before["cells"] if c["cold"]}
    assert not left & was_cold  # only cells that were covered before
    assert after["cold_cells"] - before["cold_cells"] == len(left)
    assert [o["mobilised"] for o in after["officers"] if o["badge"] == "s1"] == [True]
    # the ordinary dispatch's officer is busy too, but leaves no "support" hole
    plan = await planner.begin(ticket.number)
    assert plan.choice.officer is not None and plan.choice.officer.badge == "e1"
    assert (await heatmap(service.engine, planner.officers, query, T0))["mobilised"] == ["s1"]


async def test_a_mobilised_officer_s_stream_carries_the_ticket_until_he_is_stood_down(
        planner: DispatchPlanner, service: TicketService) -> None:
    broadcaster = StepBroadcaster()
    service.add_listener(broadcaster.on_step)
    await planner.officers.load_city(city(officer("e1", "east", point_in(CENTER, 50)),
                                          officer("e2", "east", point_in(CENTER, 90))))
    planner.ring_alone = Phones({"PJSIP/e1", "PJSIP/desk-east"})
    ticket = await located(planner)
    e1, e2 = broadcaster.subscribe(badge="e1"), broadcaster.subscribe(badge="e2")
    mobiliser = Mobiliser(planner)
    await mobiliser.mobilise(ticket.number, SupportRequest(officers=2), by="sup")
    await mobiliser.wait(ticket.number)
    assert broadcaster.officers_of(ticket.number) == {"e1"}  # e2 did not answer: released from the stream
    assert e1.pending() >= 2 and e2.pending() >= 2  # e2 heard of his own ring and of his release
    await mobiliser.stand_down(ticket.number, by="sup")
    assert broadcaster.officers_of(ticket.number) == frozenset()


async def test_the_api_mobilises_for_supervisors_and_shows_the_outcome(
        planner: DispatchPlanner, service: TicketService) -> None:
    await planner.officers.load_city(city(officer("e1", "east", point_in(CENTER, 50)),
                                          officer("w1", "west", point_in(ring_cell(2)))))
    planner.ring_alone = Phones({"PJSIP/e1", "PJSIP/w1"})
    ticket = await located(planner)
    async with TestClient(TestServer(dispatch_app(service, planner))) as client:
        bad = await client.post(f"/api/tickets/{ticket.number}/mobilise", json={"officers": 0})
        assert bad.status == 400 and (await bad.json())["error_id"] == "invalid-body"
        twice = await client.post(f"/api/tickets/{ticket.number}/mobilise",
                                  json={"units": [{"station": "west", "officers": 1}, {"station": "west",
                                                                                       "officers": 1}]})
        assert twice.status == 400
        unknown = await client.post(f"/api/tickets/{ticket.number}/mobilise",
                                    json={"units": [{"station": "north", "officers": 1}]})
        assert unknown.status == 404 and (await unknown.json())["error_id"] == "unknown-station"
        started = await client.post(f"/api/tickets/{ticket.number}/mobilise", json={"officers": 2})
        assert started.status == 202, await started.text()
        body = await started.json()
        assert [(p["badge"], p["tier"]) for p in body["picks"]] == [("e1", "station"), ("w1", "neighbour")]
        mobiliser = client.app[MOBILISER]
        await mobiliser.wait(ticket.number)
        status = await (await client.get(f"/api/tickets/{ticket.number}/mobilisation")).json()
        assert status["counts"] == {"on_the_way": 2}
        stood = await client.post(f"/api/tickets/{ticket.number}/stand-down")
        assert (await stood.json())["released"] == ["e1", "w1"]


async def test_every_mobilised_officer_who_answers_is_pushed_the_briefing(
        service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    published: list[tuple[dict, str | None, str | None]] = []
    desk.set_publisher(lambda m, s, badge=None: published.append((m, s, badge)))
    await planner.officers.load_city(city(officer("e1", "east", point_in(CENTER, 50)),
                                          officer("e2", "east", point_in(CENTER, 90))))
    planner.ring_alone = Phones({"PJSIP/e1", "PJSIP/desk-east"})
    ticket = await located(planner)  # no keyword, no warning, no alert: a plain dispatch would brief nobody
    await desk.start()
    try:
        mobiliser = Mobiliser(planner)
        await mobiliser.mobilise(ticket.number, SupportRequest(officers=2), by="sup")
        await mobiliser.wait(ticket.number)
        await desk.flush_joins()
    finally:
        await desk.stop()
    briefings = [(m["number"], m["pushed_to"], badge) for m, _, badge in published if m.get("type") == "briefing"]
    assert briefings == [(ticket.number, "e1", "e1")]  # e2 did not answer: his desk took his place, not him
