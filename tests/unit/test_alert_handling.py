"""Alerts are acknowledged and resolved by a supervisor, with who, when and what was done."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.alerts.board import AlertBoard
from core.auth.users import Role
from core.calls.tickets import TicketService
from tests.unit.conftest import FakeClock
from tests.unit.test_web_auth import full_app
from tests.web_login import login_headers


@pytest.fixture
async def client(service: TicketService, engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[TestClient]:
    board = AlertBoard(engine)
    await board.start()
    board.raise_alert("major_incident", "110-20261207-000001", "重大警情: 爆炸")
    board.raise_alert("dispatch_exhausted", "110-20261207-000002", "nobody answered")
    await board.stop()
    async with TestClient(TestServer(full_app(service, engine, clock))) as client:
        yield client


async def test_acknowledge_then_resolve_with_who_and_what(client: TestClient, engine: AsyncEngine) -> None:
    supervisor = await login_headers(engine, Role.SUPERVISOR, username="zhang")
    alerts = (await (await client.get("/api/alerts", headers=supervisor)).json())["alerts"]
    assert [a["kind"] for a in alerts] == ["major_incident", "dispatch_exhausted"]
    first, second = alerts[0]["id"], alerts[1]["id"]

    acked = await client.post(f"/api/alerts/{first}/acknowledge", headers=supervisor)
    assert acked.status == 200, await acked.text()
    view = await acked.json()
    assert view["acknowledged_by"] == "zhang" and view["acknowledged_at_us"] and view["resolved_at_us"] is None

    empty = await client.post(f"/api/alerts/{second}/resolve", json={"resolution": "  "}, headers=supervisor)
    assert empty.status == 400
    done = await client.post(f"/api/alerts/{second}/resolve", json={"resolution": "改派巡逻组"}, headers=supervisor)
    assert done.status == 200, await done.text()
    view = await done.json()
    assert (view["resolved_by"], view["resolution"], view["acknowledged_by"]) == ("zhang", "改派巡逻组", "zhang")
    again = await client.post(f"/api/alerts/{second}/resolve", json={"resolution": "x"}, headers=supervisor)
    assert again.status == 409 and (await again.json())["error_id"] == "alert-resolved"
    assert (await client.post(f"/api/alerts/{second}/acknowledge", headers=supervisor)).status == 409

    still_open = (await (await client.get("/api/alerts", headers=supervisor)).json())["alerts"]
    assert [a["id"] for a in still_open] == [first]
    every = (await (await client.get("/api/alerts?all=1", headers=supervisor)).json())["alerts"]
    assert {a["id"]: a["resolution"] for a in every} == {first: None, second: "改派巡逻组"}


async def test_unknown_alerts_and_roles(client: TestClient, engine: AsyncEngine) -> None:
    supervisor = await login_headers(engine, Role.SUPERVISOR)
    assert (await client.post("/api/alerts/999/acknowledge", headers=supervisor)).status == 404
    assert (await client.post("/api/alerts/x1/acknowledge", headers=supervisor)).status == 404
    taker = await login_headers(engine, Role.CALL_TAKER)
    assert (await client.post("/api/alerts/1/acknowledge", headers=taker)).status == 403
    assert (await client.post("/api/alerts/1/resolve", json={"resolution": "x"}, headers=taker)).status == 403
