"""Incidents entered by stations (counter, patrol, tip): numbered, journaled, classified, counted and mapped like calls."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from core.alerts.board import Alert
from core.auth.users import Role
from core.calls.lifecycle import State, Step
from core.calls.tables import Ticket
from core.calls.tickets import TicketService
from core.dispatch.heatmap import HeatmapQuery, heatmap
from core.dispatch.places import Place
from core.dispatch.planner import DispatchPlanner
from core.quality.journal import Journaler, verify
from core.triage.desk import TriageDesk
from core.triage.station_incidents import InvalidIncident, NotOwnStation, parse_entry
from tests.dispatch_city import (
    CENTER,
    answered_call,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.triage_setup import RecordingPort, desk_client, make_desk, planner_for
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers

PLACE = "人民大道200号"
COUNTER = {"how": "counter", "text": "自行车在车站门口被盗", "address": PLACE, "type": "property", "priority": 3,
           "reporter": "13800000000", "occurred_at": "2026-11-29T18:00:00+08:00"}


@pytest.fixture
async def center(service: TicketService, clock: FakeClock) -> tuple[DispatchPlanner, TriageDesk]:
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    await planner.places.replace([Place(PLACE, *point_in(CENTER))])
    return planner, make_desk(service, planner, clock)


@pytest.fixture
async def client(service: TicketService, center: tuple[DispatchPlanner, TriageDesk]) -> AsyncIterator[TestClient]:
    async with desk_client(service, *center) as client:
        yield client


async def _tickets(service: TicketService) -> int:
    async with service.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(Ticket))).scalar_one()


async def _post(client: TestClient, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/incidents", json=body, headers=headers)
    return resp.status, await resp.json()


async def test_a_counter_incident_is_a_ticket_taken_located_classified_counted_mapped_and_journaled(
    service: TicketService, center: tuple[DispatchPlanner, TriageDesk], client: TestClient
) -> None:
    planner, desk = center
    east = await login_headers(service.engine, Role.STATION, station="east", username="east-desk")
    status, body = await _post(client, COUNTER, east)
    assert status == 201, body
    assert re.fullmatch(r"110-20261129-\d{6}", body["number"])
    assert (body["state"], body["station"], body["cell"], body["type"]) == ("taken", "east", CENTER, "property")
    assert (body["entered_by_station"], body["duplicate"], body["major_incident"]) == ("east", False, False)

    ticket = await service.get(body["number"])
    assert ticket is not None and ticket.caller_id == "13800000000"
    assert [s.step for s in ticket.steps] == [Step.REPORTED, Step.LOCATED, Step.TAKEN, Step.CLASSIFIED]
    reported, located, taken, classified = ticket.steps
    assert reported.source == "station" and reported.detail["channel"] == "station"
    assert {k: reported.detail[k] for k in ("how", "text", "entered_by", "entered_by_station", "occurred_at")} == {
        "how": "counter", "text": COUNTER["text"], "entered_by": "east-desk", "entered_by_station": "east",
        "occurred_at": "2026-11-29T10:00:00.000Z"}
    assert "13800000000" not in str(dict(reported.detail))  # the reporter's number lives on the ticket row only
    assert (located.detail["address"], located.detail["via"], located.detail["station"]) == (PLACE, "gazetteer", "east")
    assert taken.detail["by"] == "east-desk"
    assert dict(classified.detail) == {"type": "property", "priority": 3, "by": "east-desk"}

    # The heat map counts it in its cell, for the center and for the station.
    mapped = await heatmap(service.engine, planner.officers, HeatmapQuery(round((T0 - 3600) * 1e6),
                                                                        round((T0 + 3600) * 1e6)), T0)
    assert mapped["incidents"] == 1 and {c["cell"]: c["count"] for c in mapped["cells"]}[CENTER] == 1
    own_map = await (await client.get("/api/heatmap", params={"from": str(T0 - 3600), "to": str(T0 + 3600)},
                                      headers=east)).json()
    assert own_map["incidents"] == 1

    # /api/stats counts it by its type and station.
    await desk.index.flush()
    stats = await (await client.get("/api/stats", params={"from": str(T0 - 3600), "to": str(T0 + 3600)},
                                    headers=await login_headers(service.engine, Role.SUPERVISOR))).json()
    assert [(s["type"], s["station"], s["total"]) for s in stats["series"]] == [("property", "east", 1)]

    # The station closes it; the journal holds every step and verifies.
    closed = await client.post(f"/api/tickets/{body['number']}/close", json={"disposition": "已登记立案"},
                               headers=east)
    assert closed.status == 200, await closed.text()
    assert (await closed.json())["state"] == "closed"
    assert await Journaler(service.engine).catch_up() == 5
    report = await verify(service.engine)
    assert report.ok, report.findings


async def test_the_same_ref_is_the_same_ticket(service: TicketService, client: TestClient) -> None:
    east = await login_headers(service.engine, Role.STATION, station="east")
    lat, lon = point_in(CENTER)
    entry = {"how": "patrol", "text": "巡逻发现路边车辆车窗被砸", "lat": lat, "lon": lon, "type": "property",
             "priority": 3, "ref": "patrol-2026-0042"}
    status, first = await _post(client, entry, east)
    assert status == 201 and first["duplicate"] is False
    status, again = await _post(client, {**entry, "type": "dispute"}, east)  # sent twice: answered, not redone
    assert status == 200 and again["duplicate"] is True
    assert (again["number"], again["type"], again["state"]) == (first["number"], "property", "taken")
    ticket = await service.get(first["number"])
    assert ticket is not None and [s.step for s in ticket.steps] == [Step.REPORTED, Step.LOCATED, Step.TAKEN,
                                                                     Step.CLASSIFIED]
    assert ticket.uniqueid == "station:east:patrol-2026-0042"
    # Without a ref every entry is its own incident.
    entry.pop("ref")
    numbers = {(await _post(client, entry, east))[1]["number"] for _ in range(2)}
    assert len(numbers) == 2 and await _tickets(service) == 3


def _bad_entries() -> list[Any]:
    lat, lon = point_in(CENTER)
    return [
        pytest.param({**COUNTER, "occurred_at": T0 + 3600}, 400, "invalid-incident", id="in-the-future"),
        pytest.param({**COUNTER, "occurred_at": "2026-12-01T08:00:00+08:00"}, 400, "invalid-incident",
                     id="in-the-future-iso"),
        pytest.param({**COUNTER, "occurred_at": T0 - 31 * 86400}, 400, "invalid-incident", id="older-than-30-days"),
        pytest.param({**COUNTER, "occurred_at": "2026-11-29T18:00:00"}, 400, "invalid-incident", id="time-no-zone"),
        pytest.param({**COUNTER, "occurred_at": "yesterday"}, 400, "invalid-incident", id="time-not-a-time"),
        pytest.param({**COUNTER, "type": "burglary"}, 400, "invalid-body", id="unknown-type"),
        pytest.param({**COUNTER, "priority": 0}, 400, "invalid-body", id="priority-0"),
        pytest.param({**COUNTER, "how": "phone"}, 400, "invalid-body", id="unknown-how"),
        pytest.param({k: v for k, v in COUNTER.items() if k != "address"}, 400, "invalid-incident", id="no-place"),
        pytest.param({**COUNTER, "lat": lat}, 400, "invalid-incident", id="lat-without-lon"),
        pytest.param({**COUNTER, "text": "有人\x00打架"}, 400, "invalid-incident", id="nul-in-text"),
        pytest.param({**COUNTER, "text": "\x1b[2J有人打架"}, 400, "invalid-incident", id="escape-in-text"),
        pytest.param({**COUNTER, "address": "人民大道\x07200号"}, 400, "invalid-incident", id="bell-in-address"),
        pytest.param({**COUNTER, "text": "   "}, 400, "invalid-body", id="blank-text"),
        pytest.param({**COUNTER, "reporter": "<script>"}, 400, "invalid-body", id="bad-reporter"),
        pytest.param({**COUNTER, "ref": "a b"}, 400, "invalid-body", id="bad-ref"),
        pytest.param({**COUNTER, "lon": lon, "lat": 91}, 400, "invalid-body", id="lat-out-of-range"),
        pytest.param({**COUNTER, "entered_by": "someone-else"}, 400, "invalid-body", id="unknown-field"),
        pytest.param({**COUNTER, "station": "west"}, 403, "own-station-only", id="forging-another-station"),
        pytest.param({**COUNTER, "address": "人民大道999号"}, 422, "address-not-found", id="unknown-address"),
    ]


@pytest.mark.parametrize(("entry", "status", "error_id"), _bad_entries())
async def test_bad_entries_are_refused_and_nothing_is_stored(
    service: TicketService, client: TestClient, entry: dict[str, Any], status: int, error_id: str
) -> None:
    east = await login_headers(service.engine, Role.STATION, station="east")
    got, body = await _post(client, entry, east)
    assert (got, body["error_id"]) == (status, error_id), body
    assert await _tickets(service) == 0


async def test_a_lone_surrogate_and_the_wrong_roles_are_refused(service: TicketService, client: TestClient) -> None:
    east = await login_headers(service.engine, Role.STATION, station="east")
    raw = '{"how":"tip","text":"\\ud800","address":"' + PLACE + '","type":"other","priority":4}'
    resp = await client.post("/api/incidents", data=raw.encode(), headers={**east, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error_id"] == "invalid-incident"
    for role in (Role.CALL_TAKER, Role.OFFICER, Role.GATEWAY):
        got, body = await _post(client, COUNTER, await login_headers(service.engine, role))
        assert got == 403, (role, body)
    # A supervisor enters for a station the center knows, or for none.
    supervisor = await login_headers(service.engine, Role.SUPERVISOR, username="duty-chief")
    got, body = await _post(client, {**COUNTER, "station": "north"}, supervisor)
    assert (got, body["error_id"]) == (400, "unknown-station")
    assert await _tickets(service) == 0
    got, body = await _post(client, {**COUNTER, "station": "west"}, supervisor)
    assert (got, body["entered_by_station"], body["station"]) == (201, "west", "east")
    got, body = await _post(client, {**COUNTER, "ref": "t1"}, supervisor)
    assert (got, body["entered_by_station"]) == (201, None)
    ticket = await service.get(body["number"])
    assert ticket is not None and ticket.uniqueid == "station:duty-chief:t1"


def test_the_entry_is_checked_without_the_web() -> None:
    body = {**COUNTER, "priority": True}
    with pytest.raises(InvalidIncident, match="priority"):
        parse_entry(body, by="u", own_station="east", now=T0)
    with pytest.raises(NotOwnStation):
        parse_entry({**COUNTER, "station": "west"}, by="u", own_station="east", now=T0)
    entry = parse_entry({**COUNTER, "occurred_at": T0 - 60}, by="u", own_station="east", now=T0)
    assert (entry.station, entry.occurred_at, str(entry.type), int(entry.priority)) == ("east", T0 - 60, "property", 3)
    assert parse_entry({**COUNTER, "station": "west"}, by="chief", own_station=None, now=T0).station == "west"
    for when in (10**400, "1e400", "nan", "0001-01-01T00:00:00+14:00"):
        with pytest.raises(InvalidIncident, match="occurred_at"):
            parse_entry({**COUNTER, "occurred_at": when}, by="u", own_station="east", now=T0)


async def test_a_fraud_incident_a_station_entered_is_handed_over_to_nobody(
    service: TicketService, center: tuple[DispatchPlanner, TriageDesk], client: TestClient
) -> None:
    """The fraud rule conferences the anti-fraud desk into a call and pushes a report's data: a station's own
    incident has no caller, and the station has it already."""
    _planner, desk = center
    port = RecordingPort()
    desk.set_handover_port(port)
    east = await login_headers(service.engine, Role.STATION, station="east")
    lat, lon = point_in(CENTER)
    status, body = await _post(client, {"how": "counter", "text": "老人被冒充公检法骗走五万元", "lat": lat, "lon": lon,
                                        "type": "fraud", "priority": 2}, east)
    assert status == 201 and body["type"] == "fraud"
    ticket = await service.get(body["number"])
    assert ticket is not None and Step.HANDED_OVER not in [s.step for s in ticket.steps]
    assert port.calls == [] and await desk.pusher.for_ticket(body["number"]) == []
    assert await desk.current_decision(body["number"]) is None
    # Re-classified by a supervisor, it is still not routed; "hand over as the rules say" finds no rule.
    supervisor = await login_headers(service.engine, Role.SUPERVISOR)
    again = await client.post(f"/api/tickets/{body['number']}/classify", json={"type": "fraud", "priority": 1},
                              headers=supervisor)
    assert again.status == 200 and (await again.json())["handover"] is None
    handover = await client.post(f"/api/tickets/{body['number']}/handover", json={}, headers=supervisor)
    assert handover.status == 409
    assert port.calls == [] and await desk.pusher.for_ticket(body["number"]) == []


async def test_a_keyword_in_the_text_alerts_supervisors(service: TicketService, client: TestClient) -> None:
    east = await login_headers(service.engine, Role.STATION, station="east")
    status, body = await _post(client, {**COUNTER, "how": "tip", "text": "群众举报：昨晚有人在仓库持刀抢劫",
                                        "type": "person", "priority": 1}, east)
    assert status == 201 and body["keywords"] == ["抢劫"] and body["major_incident"] is True
    async with service.engine.connect() as conn:
        [alert] = (await conn.execute(select(Alert).where(Alert.kind == "major_incident"))).all()
    assert alert.ref == body["number"] and "抢劫" in alert.message and "station report" in alert.message


async def test_a_station_closes_what_it_entered_and_nothing_else(
    service: TicketService, client: TestClient
) -> None:
    east = await login_headers(service.engine, Role.STATION, station="east")
    west = await login_headers(service.engine, Role.STATION, station="west")
    # Entered by east in west's area: the incident is west's, the entry east's.
    lat, lon = point_in(ring_cell(2))
    status, body = await _post(client, {"how": "patrol", "text": "路口两车剐蹭", "lat": lat, "lon": lon,
                                        "type": "traffic", "priority": 3}, east)
    assert (status, body["station"], body["entered_by_station"]) == (201, "west", "east")
    number = body["number"]
    refused = await client.post(f"/api/tickets/{number}/close", json={"disposition": "x"}, headers=west)
    assert refused.status == 404
    call = await answered_call(service)
    refused = await client.post(f"/api/tickets/{call.number}/close", json={"disposition": "x"}, headers=east)
    assert refused.status == 404
    closed = await client.post(f"/api/tickets/{number}/close", json={"disposition": "双方协商解决"}, headers=east)
    assert closed.status == 200, await closed.text()
    ticket = await service.get(number)
    assert ticket is not None and ticket.state is State.CLOSED and ticket.steps[-1].detail["by"] != "-"
