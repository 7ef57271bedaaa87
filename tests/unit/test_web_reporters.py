"""Who may report arrival and clearing: an officer for himself on the ticket he is dispatched to, a station for
its own incidents and officers, supervisors for anyone. Through the full application with real tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.auth.users import Role
from core.calls.lifecycle import State, Step
from core.calls.tickets import TicketService, TicketView
from core.dispatch.officers import OfficerService, OfficerStatus
from core.dispatch.planner import DispatchPlanner
from core.web.app import make_app
from tests.dispatch_city import (
    CENTER,
    answered_call,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.unit.conftest import FakeClock
from tests.web_login import login_headers

HERE = point_in(CENTER)


@pytest.fixture
def planner(service: TicketService, clock: FakeClock) -> DispatchPlanner:
    return DispatchPlanner(service, OfficerService(service.engine, clock), clock=clock)


@pytest.fixture
async def client(service: TicketService, planner: DispatchPlanner) -> AsyncIterator[TestClient]:
    await load(
        planner.officers,
        officer("e1", "east", point_in(CENTER, 80)),
        officer("e2", "east", point_in(ring_cell(1), 0)),
        officer("w1", "west", point_in(ring_cell(2))),
    )
    async with TestClient(TestServer(make_app(service, health={}, dispatch=planner))) as client:
        yield client


async def _dispatched(service: TicketService, planner: DispatchPlanner) -> TicketView:
    """An answered call in east's area with e1 dispatched to it (he joined the conference)."""
    ticket = await answered_call(service)
    await planner.locate(ticket.number, lat=HERE[0], lon=HERE[1])
    plan = await planner.begin(ticket.number)
    assert plan.choice.officer is not None and plan.choice.officer.badge == "e1"
    await planner.joined(ticket.number, plan.rungs[0])
    return ticket


async def _answer(resp: Any, status: int) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    return body


def _arrival(badge: str) -> dict[str, Any]:
    return {"badge": badge, "lat": HERE[0], "lon": HERE[1]}


async def test_an_officer_cannot_report_arrival_for_another_badge(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await _dispatched(service, planner)
    e2 = await login_headers(service.engine, Role.OFFICER, username="e2")
    resp = await client.post(f"/api/tickets/{ticket.number}/arrived", json=_arrival("e1"), headers=e2)
    assert (await _answer(resp, 403))["error_id"] == "own-badge-only"
    stored = await service.get(ticket.number)
    assert stored is not None and stored.state is not State.ON_SCENE


async def test_an_officer_cannot_report_arrival_on_a_ticket_he_is_not_dispatched_to(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await _dispatched(service, planner)
    e2 = await login_headers(service.engine, Role.OFFICER, username="e2")
    resp = await client.post(f"/api/tickets/{ticket.number}/arrived", json=_arrival("e2"), headers=e2)
    assert (await _answer(resp, 403))["error_id"] == "not-your-ticket"
    assert (await planner.officers.get("e2")).status is OfficerStatus.AVAILABLE


async def test_an_officer_cannot_clear_a_ticket_he_is_not_dispatched_to(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await _dispatched(service, planner)
    e2 = await login_headers(service.engine, Role.OFFICER, username="e2")
    resp = await client.post(f"/api/tickets/{ticket.number}/clear", json={"disposition": "已处置"}, headers=e2)
    assert (await _answer(resp, 403))["error_id"] == "not-your-ticket"
    stored = await service.get(ticket.number)
    assert stored is not None and Step.CLEARED not in [s.step for s in stored.steps]


async def test_the_dispatched_officer_reports_arrival_and_clearing_in_his_own_name(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await _dispatched(service, planner)
    e1 = await login_headers(service.engine, Role.OFFICER, username="e1")
    arrived = await _answer(await client.post(f"/api/tickets/{ticket.number}/arrived", json=_arrival("e1"),
                                              headers=e1), 200)
    assert arrived["state"] == State.ON_SCENE and arrived["steps"][-1]["detail"]["badge"] == "e1"
    cleared = await _answer(await client.post(f"/api/tickets/{ticket.number}/clear",
                                              json={"disposition": "纠纷已调解"}, headers=e1), 200)
    assert cleared["state"] == State.CLEARED


async def test_a_station_reports_for_its_own_officers_or_those_the_ticket_holds(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await _dispatched(service, planner)
    east = await login_headers(service.engine, Role.STATION, station="east")
    resp = await client.post(f"/api/tickets/{ticket.number}/arrived", json=_arrival("w1"), headers=east)
    assert (await _answer(resp, 403))["error_id"] == "not-your-officer"
    assert (await planner.officers.get("w1")).status is OfficerStatus.AVAILABLE
    arrived = await _answer(await client.post(f"/api/tickets/{ticket.number}/arrived", json=_arrival("e1"),
                                              headers=east), 200)
    assert arrived["steps"][-1]["detail"]["badge"] == "e1"


async def test_a_station_cannot_report_on_another_stations_incident(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await _dispatched(service, planner)
    west = await login_headers(service.engine, Role.STATION, station="west")
    for path, body in (("arrived", _arrival("w1")), ("clear", {"disposition": "已处置"})):
        resp = await client.post(f"/api/tickets/{ticket.number}/{path}", json=body, headers=west)
        assert (await _answer(resp, 404))["error_id"] == "unknown-ticket"
    stored = await service.get(ticket.number)
    assert stored is not None and stored.state is State.DISPATCHED



async def test_clearing_names_the_logged_in_user_not_the_by_of_the_body(
    client: TestClient, service: TicketService, planner: DispatchPlanner
) -> None:
    ticket = await _dispatched(service, planner)
    e1 = await login_headers(service.engine, Role.OFFICER, username="e1")
    await _answer(await client.post(f"/api/tickets/{ticket.number}/arrived", json=_arrival("e1"), headers=e1), 200)
    boss = await login_headers(service.engine, Role.SUPERVISOR, username="zhang")
    cleared = await _answer(await client.post(f"/api/tickets/{ticket.number}/clear",
                                              json={"disposition": "已处置", "by": "e1"}, headers=boss), 200)
    assert cleared["state"] == State.CLEARED and cleared["steps"][-1]["detail"]["by"] == "zhang"
