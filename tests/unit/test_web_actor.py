"""Who did it is the logged-in user, never a name in the request body: a body's ``by`` is ignored (docs/web.md)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.quality import views as web_quality
from core.quality.complaints import Complaints
from core.quality.spot_checks import CRITERIA, SpotChecks
from core.web.app import make_app
from tests.unit.conftest import T0
from tests.web_login import login_headers

NUMBER = "110-20261129-000001"


async def _ended_call(service: TicketService) -> None:
    await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="agi")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-05")
    await service.record_step("1.1", Step.HUNG_UP, at=T0 + 60, source="ami")


async def test_a_ticket_is_closed_in_the_name_of_who_closed_it(service: TicketService) -> None:
    await _ended_call(service)
    boss = await login_headers(service.engine, Role.SUPERVISOR, username="zhang")
    async with TestClient(TestServer(make_app(service, health={})), headers=boss) as client:
        resp = await client.post(f"/api/tickets/{NUMBER}/close", json={"disposition": "已处置", "by": "wang"})
        assert resp.status == 200, await resp.text()
        closed = await resp.json()
    assert closed["steps"][-1]["step"] == Step.CLOSED and closed["steps"][-1]["detail"]["by"] == "zhang"


async def test_a_ticket_closes_without_a_by(service: TicketService) -> None:
    await _ended_call(service)
    boss = await login_headers(service.engine, Role.SUPERVISOR, username="zhang")
    async with TestClient(TestServer(make_app(service, health={})), headers=boss) as client:
        resp = await client.post(f"/api/tickets/{NUMBER}/close", json={"disposition": "已处置"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["steps"][-1]["detail"]["by"] == "zhang"


async def test_spot_checks_name_the_supervisor_who_drew_scored_and_published(
    service: TicketService, engine: AsyncEngine, clock: Any
) -> None:
    await _ended_call(service)
    app = make_app(service, health={})
    web_quality.add_routes(app, spot_checks=SpotChecks(engine, clock=clock, default_size=1))
    boss = await login_headers(service.engine, Role.SUPERVISOR, username="zhang")
    async with TestClient(TestServer(app), headers=boss) as client:
        sample = await (await client.post("/api/quality/draws", json={"day": "20261129", "by": "li"})).json()
        assert sample["drawn_by"] == "zhang"
        scores = {c: 4 for c in CRITERIA}
        resp = await client.post("/api/quality/draws/20261129/scores",
                                 json={"ticket": NUMBER, "by": "li", "scores": scores})
        assert resp.status == 200, await resp.text()
        again = await (await client.get("/api/quality/draws/20261129")).json()
        assert again["calls"][0]["scored_by"] == "zhang"
        assert (await client.post("/api/quality/reports/20261129/publish", json={})).status == 201
        report = await (await client.get("/api/quality/reports/20261129")).json()
        assert report["published_by"] == "zhang"


async def test_a_follow_up_is_answered_in_the_name_of_the_supervisor(
    service: TicketService, engine: AsyncEngine, clock: Any
) -> None:
    app = make_app(service, health={})
    web_quality.add_routes(app, complaints=Complaints(engine, clock=clock))
    boss = await login_headers(service.engine, Role.SUPERVISOR, username="zhang")
    async with TestClient(TestServer(app), headers=boss) as client:
        opened = await (await client.post("/api/complaints", json={"ticket": NUMBER, "reason": "态度差"})).json()
        resp = await client.post(f"/api/complaints/{opened['id']}/answer", json={"answer": "已致歉", "by": "东城派出所"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["answered_by"] == "zhang"
