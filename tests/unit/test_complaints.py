"""Follow-ups: deadline, overdue alert raised once, answer recorded and sent to the caller, alert resolved."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.quality import views as web_quality
from core.quality.complaints import OVERDUE, Complaints
from core.quality.outbox import Outbox
from core.web.app import make_app
from tests.web_login import login_headers

NUMBER = "110-20261129-000001"


async def test_complaint_deadline_alert_and_answer(service: TicketService, engine: AsyncEngine, clock: Any) -> None:
    outbox = Outbox(engine, None, clock=clock)
    complaints = Complaints(engine, clock=clock, deadline_hours=72, outbox=outbox)
    app = make_app(service, health={})
    web_quality.add_routes(app, complaints=complaints)
    async with TestClient(TestServer(app), headers=await login_headers(service.engine, Role.SUPERVISOR)) as client:
        resp = await client.post("/api/complaints", json={"ticket": NUMBER, "reason": "民警态度差", "station": "东城派出所"})
        assert resp.status == 201
        follow_up = await resp.json()
        assert follow_up["state"] == "open" and follow_up["deadline"] == "2026-12-02T11:30:00.000Z"
        assert (await client.post("/api/complaints", json={"ticket": "nope", "reason": "x"})).status == 400
        assert (await client.post("/api/complaints", json={"ticket": NUMBER})).status == 400

        clock.now += 71 * 3600
        assert await complaints.check_overdue() == []
        clock.now += 2 * 3600
        raised = await complaints.check_overdue()
        assert [(a.kind, a.ref) for a in raised] == [(OVERDUE, str(follow_up["id"]))]
        assert "东城派出所" in raised[0].message
        assert await complaints.check_overdue() == []  # raised once
        overdue = await (await client.get("/api/complaints", params={"state": "overdue"})).json()
        assert [f["id"] for f in overdue["follow_ups"]] == [follow_up["id"]]
        assert len((await (await client.get("/api/alerts")).json())["alerts"]) == 1

        url = f"/api/complaints/{follow_up['id']}/answer"
        assert (await client.post(url, json={"by": "东城派出所"})).status == 400
        resp = await client.post(url, json={"answer": "已批评教育当事民警并致歉", "by": "东城派出所",
                                            "caller": "+8613800000000"})
        assert resp.status == 200
        answered = await resp.json()
        assert answered["state"] == "answered" and answered["answer"] == "已批评教育当事民警并致歉"
        assert (await client.post(url, json={"answer": "again", "by": "x"})).status == 409
        assert (await client.post("/api/complaints/999/answer", json={"answer": "a", "by": "b"})).status == 404
        assert (await (await client.get("/api/alerts")).json())["alerts"] == []  # resolved by the answer
    message = await outbox.get(f"answer:{follow_up['id']}")
    assert message is not None and message.to == "+8613800000000" and "已批评教育" in message.body
