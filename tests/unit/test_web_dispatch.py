"""Dispatch HTTP routes through a real aiohttp server: happy paths, validation, and domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.calls.lifecycle import State, Step
from core.calls.tickets import TicketService
from core.dispatch.officers import OfficerService, OfficerStatus
from core.dispatch.planner import DispatchPlanner
from tests.dispatch_city import (
    CENTER,
    T0,
    answered_call,
    dispatch_app,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.unit.conftest import FakeClock

NO_SUCH = "110-20261129-999999"


@pytest.fixture
def planner(service: TicketService, clock: FakeClock) -> DispatchPlanner:
    return DispatchPlanner(service, OfficerService(service.engine, clock), clock=clock)


@pytest.fixture
async def client(service: TicketService, planner: DispatchPlanner) -> AsyncIterator[TestClient]:
    await load(
        planner.officers,
        officer("e1", "east", point_in(CENTER, 80)),
        officer("w1", "west", point_in(ring_cell(2))),
    )
    async with TestClient(TestServer(dispatch_app(service, planner))) as client:
        yield client


async def _json(resp: Any, status: int) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def _error(resp: Any, status: int) -> str:
    return (await _json(resp, status))["error"]


async def _error_id(resp: Any, status: int) -> str:
    return (await _json(resp, status))["error_id"]


# -- incident location and preview ---------------------------------------------------------


async def test_locate_then_preview(client: TestClient, service: TicketService) -> None:
    ticket = await answered_call(service)
    lat, lon = point_in(CENTER)
    body = await _json(
        await client.put(
            f"/api/tickets/{ticket.number}/location", json={"address": "人民大道200号", "lat": lat, "lon": lon}
        ),
        200,
    )
    assert body["state"] == "answered"
    assert body["incident"] == {
        "number": ticket.number, "address": "人民大道200号", "lat": lat, "lon": lon, "cell": CENTER,
        "station": "east", "located_at_us": round(T0 * 1e6),
    }
    stored = await service.get(ticket.number)
    assert stored is not None and stored.steps[-1].step is Step.LOCATED
    preview = await _json(await client.get(f"/api/dispatch/preview/{ticket.number}"), 200)
    assert preview["choice"]["officer"]["badge"] == "e1"
    assert preview["choice"]["officer"]["distance_m"] == pytest.approx(80, abs=1)
    assert [r["kind"] for r in preview["ladder"]] == ["officer", "duty_desk", "superior"]
    assert preview["reserved"] is False
    # Correcting the location is another located step, not an error.
    await _json(await client.put(f"/api/tickets/{ticket.number}/location", json={"lat": lat, "lon": lon}), 200)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"lon": 121.0}, '"lat" is required'),
        ({"lat": 91, "lon": 121.0}, "lat must be between -90 and 90"),
        ({"lat": 31.0, "lon": -181}, "lon must be between -180 and 180"),
        ({"lat": "31", "lon": 121.0}, "lat must be a finite number"),
        ({"lat": 31.0, "lon": 121.0, "address": "x" * 501}, '"address" must be at most 500 characters'),
        ({"lat": 31.0, "lon": 121.0, "address": "  "}, '"address" must be a non-empty string'),
    ],
)
async def test_location_body_is_validated(client: TestClient, service: TicketService, body: dict, message: str) -> None:
    ticket = await answered_call(service)
    resp = await client.put(f"/api/tickets/{ticket.number}/location", json=body)
    assert message in (await _json(resp, 400))["error"]
    stored = await service.get(ticket.number)
    assert stored is not None and stored.steps[-1].step is Step.ANSWERED  # nothing written


async def test_unknown_and_unlocated_tickets(client: TestClient, service: TicketService) -> None:
    ok = {"lat": 31.0, "lon": 121.0}
    assert await _error_id(await client.put(f"/api/tickets/{NO_SUCH}/location", json=ok), 404) == "unknown-ticket"
    assert (await _json(await client.put("/api/tickets/garbage/location", json=ok), 404))["error_id"] == "unknown-ticket"
    assert (await _json(await client.get(f"/api/dispatch/preview/{NO_SUCH}"), 404))["error_id"] == "unknown-ticket"
    ticket = await answered_call(service)
    body = await _json(await client.get(f"/api/dispatch/preview/{ticket.number}"), 409)
    assert body["error_id"] == "not-located"


async def test_locating_a_closed_ticket_is_a_conflict(client: TestClient, service: TicketService) -> None:
    ticket = await answered_call(service)
    await service.record_step(ticket.uniqueid, Step.HUNG_UP, at=T0 + 60, source="ami")
    await service.close(ticket.number, disposition="已处置", by="seat-05")
    resp = await client.put(f"/api/tickets/{ticket.number}/location", json={"lat": 31.0, "lon": 121.0})
    refused = await _json(resp, 409)
    assert refused["error_id"] == "illegal-transition"
    assert (refused["details"]["state"], refused["details"]["step"]) == ("closed", "located")


# -- officers ------------------------------------------------------------------------------


async def test_officers_list_location_and_status(client: TestClient) -> None:
    listed = await _json(await client.get("/api/officers"), 200)
    assert [o["badge"] for o in listed["officers"]] == ["e1", "w1"]
    west = await _json(await client.get("/api/officers?station=west"), 200)
    assert [o["badge"] for o in west["officers"]] == ["w1"]
    assert await _error_id(await client.get("/api/officers?station=" + "x" * 40), 400) == "invalid-station"

    lat, lon = point_in(ring_cell(1))
    moved = await _json(await client.post("/api/officers/e1/location", json={"lat": lat, "lon": lon}), 200)
    assert moved["cell"] == ring_cell(1)
    bad = await client.post("/api/officers/e1/location", json={"lat": 100, "lon": 0})
    assert await _error_id(bad, 400) == "invalid-position"
    unknown = await client.post("/api/officers/nobody/location", json={"lat": 1, "lon": 1})
    assert await _error_id(unknown, 404) == "unknown-officer"

    off = await _json(await client.post("/api/officers/e1/status", json={"status": "off_duty"}), 200)
    assert off["status"] == "off_duty"
    refused = await _json(await client.post("/api/officers/e1/status", json={"status": "on_scene"}), 400)
    assert refused["error_id"] == "invalid-body"
    assert refused["details"] == {"field": "status"}
    unknown = await client.post("/api/officers/nobody/status", json={"status": "available"})
    assert await _error_id(unknown, 404) == "unknown-officer"


async def test_status_change_of_a_ringing_officer_is_a_conflict(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await answered_call(service)
    await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
    await planner.begin(ticket.number)
    body = await _json(await client.post("/api/officers/e1/status", json={"status": "off_duty"}), 409)
    assert body["error_id"] == "officer-busy"
    assert body["error"] == f"officer e1 is ringing for ticket {ticket.number}"


# -- arrival and clearing ------------------------------------------------------------------


async def test_arrive_and_clear(client: TestClient, service: TicketService, planner: DispatchPlanner) -> None:
    ticket = await answered_call(service)
    lat, lon = point_in(CENTER)
    await planner.locate(ticket.number, lat=lat, lon=lon)
    plan = await planner.begin(ticket.number)
    await planner.joined(ticket.number, plan.rungs[0])
    await service.record_step(ticket.uniqueid, Step.HUNG_UP, at=T0 + 90, source="ami")

    early_clear = await client.post(f"/api/tickets/{ticket.number}/clear", json={})
    assert (await _json(early_clear, 400))["error"] == '"disposition" must be a non-empty string'
    no_badge = await client.post(f"/api/tickets/{ticket.number}/arrived", json={"lat": lat, "lon": lon})
    assert await _error(no_badge, 400) == '"badge" must be a non-empty string'
    arrived = await _json(
        await client.post(f"/api/tickets/{ticket.number}/arrived", json={"badge": "e1", "lat": lat, "lon": lon}), 200
    )
    assert arrived["state"] == State.ON_SCENE
    assert arrived["steps"][-1]["detail"]["badge"] == "e1"
    again = await client.post(f"/api/tickets/{ticket.number}/arrived", json={"badge": "e1", "lat": lat, "lon": lon})
    assert "step arrived is not allowed for a ticket in state on_scene" in (await _json(again, 409))["error"]

    long = await client.post(f"/api/tickets/{ticket.number}/clear", json={"disposition": "x" * 501})
    assert (await _json(long, 400))["error"] == '"disposition" must be at most 500 characters'
    cleared = await _json(
        await client.post(f"/api/tickets/{ticket.number}/clear", json={"disposition": "纠纷已调解", "by": "e1"}),
        200,
    )
    assert cleared["state"] == State.CLEARED
    assert cleared["steps"][-1]["detail"]["disposition"] == "纠纷已调解"
    officers = (await _json(await client.get("/api/officers"), 200))["officers"]
    assert {o["badge"]: o["status"] for o in officers}["e1"] == OfficerStatus.AVAILABLE


async def test_arrival_for_an_unknown_officer_or_ticket(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    body = {"badge": "e1", "lat": 31.0, "lon": 121.0}
    assert await _error_id(await client.post(f"/api/tickets/{NO_SUCH}/arrived", json=body), 404) == "unknown-ticket"
    ticket = await answered_call(service)
    await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
    plan = await planner.begin(ticket.number)
    await planner.joined(ticket.number, plan.rungs[0])
    stranger = await client.post(f"/api/tickets/{ticket.number}/arrived", json={**body, "badge": "nobody"})
    assert (await _json(stranger, 404))["error_id"] == "unknown-officer"


async def test_bodies_must_be_json_objects(client: TestClient, service: TicketService) -> None:
    ticket = await answered_call(service)
    resp = await client.put(f"/api/tickets/{ticket.number}/location", data=b"[1, 2]")
    assert (await _json(resp, 400))["error_id"] == "body-not-json"
    resp = await client.post("/api/officers/e1/location", data=b"\xff")
    assert (await _json(resp, 400))["error_id"] == "body-not-json"
