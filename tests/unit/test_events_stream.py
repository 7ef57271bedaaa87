"""The step stream: station filtering, slow subscribers, and the WebSocket through a real aiohttp server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from core.calls.events import StepBroadcaster
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.dispatch.officers import OfficerService
from core.dispatch.planner import DispatchPlanner
from core.dispatch.views import BROADCASTER, SOCKETS
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

WAIT_S = 2.0


@pytest.fixture
def planner(service: TicketService, clock: FakeClock) -> DispatchPlanner:
    return DispatchPlanner(service, OfficerService(service.engine, clock), clock=clock)


def _drain(subscription: Any) -> list[dict[str, Any]]:
    out = []
    while subscription.pending():
        out.append(json.loads(subscription._queue.get_nowait()))
    return out


# -- the broadcaster alone -----------------------------------------------------------------


async def test_station_filter_and_remembered_station(service: TicketService, planner: DispatchPlanner) -> None:
    await load(planner.officers)
    broadcaster = StepBroadcaster()
    service.add_listener(broadcaster.on_step)
    everyone, east, west = broadcaster.subscribe(), broadcaster.subscribe("east"), broadcaster.subscribe("west")
    ticket = await answered_call(service, "1.1")
    await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1], address="人民大道")
    await service.record_step("1.1", Step.HUNG_UP, at=T0 + 60, source="ami")  # no station in its detail
    seen_by_all = _drain(everyone)
    assert [m["step"] for m in seen_by_all] == ["received", "queued", "answered", "located", "hung_up"]
    assert [m["station"] for m in seen_by_all] == [None, None, None, "east", "east"]
    assert [m["step"] for m in _drain(east)] == ["located", "hung_up"]
    assert _drain(west) == []
    located = seen_by_all[3]
    assert located["number"] == ticket.number
    assert located["seq"] == 4 and located["state"] == "answered"
    assert located["detail"]["address"] == "人民大道" and located["detail"]["cell"] == CENTER
    assert located["at"].endswith("Z") and isinstance(located["at_us"], int)
    # Closing forgets the ticket's station.
    await service.close(ticket.number, disposition="已处置", by="seat-05")
    assert [m["step"] for m in _drain(east)] == ["closed"]
    assert broadcaster.station_of(ticket.number) is None


async def test_a_slow_subscriber_is_cut_off_without_holding_up_the_others(service: TicketService) -> None:
    broadcaster = StepBroadcaster(queue_size=3)
    slow, fast = broadcaster.subscribe(), broadcaster.subscribe()
    ticket = await answered_call(service, "1.1")
    for _ in range(3):
        broadcaster.on_step(ticket, ticket.steps[-1])
    assert len(_drain(fast)) == 3  # fast keeps up
    assert not slow.closed.is_set() and slow.pending() == 3
    broadcaster.on_step(ticket, ticket.steps[-1])  # slow's queue is full: the fourth overflows
    assert slow.closed.is_set() and slow.reason == "slow"
    assert slow.pending() == 0  # its backlog is dropped, not kept
    assert broadcaster.subscribers == 1 and broadcaster.slow_disconnects == 1
    broadcaster.on_step(ticket, ticket.steps[-1])
    assert len(_drain(fast)) == 2


def test_prime_restores_stations_after_a_restart() -> None:
    broadcaster = StepBroadcaster()
    broadcaster.prime({"110-20261129-000001": "west", "110-20261129-000002": None})
    assert broadcaster.station_of("110-20261129-000001") == "west"
    assert broadcaster.station_of("110-20261129-000002") is None
    with pytest.raises(ValueError, match="queue_size"):
        StepBroadcaster(queue_size=0)


# -- the WebSocket -------------------------------------------------------------------------


@asynccontextmanager
async def serve(
    service: TicketService, planner: DispatchPlanner, broadcaster: StepBroadcaster | None = None
) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(dispatch_app(service, planner, broadcaster))) as client:
        yield client


async def _hello(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    hello = await asyncio.wait_for(ws.receive_json(), WAIT_S)
    assert hello["type"] == "hello"
    return hello


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return await asyncio.wait_for(ws.receive_json(), WAIT_S)


async def _nothing_more(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.receive(), 0.2)


async def test_websocket_stream_by_station(service: TicketService, planner: DispatchPlanner) -> None:
    await load(planner.officers)
    async with serve(service, planner) as client:
        city = await client.ws_connect("/api/events")
        east = await client.ws_connect("/api/events?station=east")
        west = await client.ws_connect("/api/events?station=west")
        assert (await _hello(east))["station"] == "east"
        await _hello(west)
        assert (await _hello(city))["station"] is None

        a = await answered_call(service, "1.1")
        await planner.locate(a.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
        b = await answered_call(service, "1.2")
        await planner.locate(b.number, lat=point_in(ring_cell(2))[0], lon=point_in(ring_cell(2))[1])
        # Outside the city: no station, so only the city-wide view hears of it.
        c = await answered_call(service, "1.3")
        await planner.locate(c.number, lat=30.0, lon=120.0)

        city_steps = [(m["number"], m["step"], m["station"]) for m in [await _next(city) for _ in range(12)]]
        assert city_steps[3] == (a.number, "located", "east")
        assert city_steps[7] == (b.number, "located", "west")
        assert city_steps[11] == (c.number, "located", None)
        assert (await _next(east))["number"] == a.number
        assert (await _next(west))["number"] == b.number
        await _nothing_more(east)
        await _nothing_more(west)
        await city.close()
        await east.close()
        await west.close()


async def test_bad_station_and_plain_http_are_refused(service: TicketService, planner: DispatchPlanner) -> None:
    async with serve(service, planner) as client:
        resp = await client.get("/api/events?station=" + "x" * 40)
        assert resp.status == 400
        assert (await resp.json())["error_id"] == "invalid-station"
        resp = await client.get("/api/events")
        assert resp.status == 400
        assert (await resp.json())["error_id"] == "websocket-only"


async def test_slow_websocket_client_is_closed_with_1013(service: TicketService, planner: DispatchPlanner) -> None:
    broadcaster = StepBroadcaster(queue_size=2)
    async with serve(service, planner, broadcaster) as client:
        ws = await client.ws_connect("/api/events")
        await _hello(ws)
        ticket = await answered_call(service, "1.1")  # three steps, one at a time: kept up with
        for _ in range(3):
            await _next(ws)
        for _ in range(5):  # a burst faster than the socket drains
            broadcaster.on_step(ticket, ticket.steps[-1])
        message = await asyncio.wait_for(ws.receive(), WAIT_S)
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 1013
        assert broadcaster.slow_disconnects == 1
        await asyncio.sleep(0.05)
        assert broadcaster.subscribers == 0


async def test_shutdown_closes_sockets_with_1001_and_unsubscribes(
    service: TicketService, planner: DispatchPlanner
) -> None:
    await load(planner.officers)
    app = dispatch_app(service, planner)
    broadcaster = app[BROADCASTER]
    server = TestServer(app)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.make_url("/api/events"))
        await _hello(ws)
        assert len(app[SOCKETS]) == 1
        closing = asyncio.create_task(server.close())
        message = await asyncio.wait_for(ws.receive(), WAIT_S)
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 1001
        await asyncio.wait_for(closing, WAIT_S + 3)
    assert app[SOCKETS] == set()
    # The listener is gone with the app: later steps reach no broadcaster.
    ticket = await answered_call(service, "1.9")
    await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
    assert broadcaster.station_of(ticket.number) is None


async def test_stream_is_primed_with_open_incidents_at_start(service: TicketService, planner: DispatchPlanner) -> None:
    await load(planner.officers, officer("e1", "east", point_in(CENTER)))
    ticket = await answered_call(service, "1.1")
    await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
    # A restart: a new app whose broadcaster has seen nothing yet.
    async with serve(service, planner) as client:
        east = await client.ws_connect("/api/events?station=east")
        await _hello(east)
        await service.record_step("1.1", Step.HUNG_UP, at=T0 + 60, source="ami")
        message = await _next(east)
        assert (message["step"], message["station"]) == ("hung_up", "east")
        await east.close()
