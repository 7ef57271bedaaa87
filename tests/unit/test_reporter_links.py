"""The reporter's status link: sent once by SMS when an officer joins, showing distance and ETA live, ended when
the ticket is cleared; public, so bounded: unguessable tokens, rate limits, no officer's personal data."""

from __future__ import annotations

import asyncio
import re

from aiohttp.test_utils import TestClient, TestServer

from core.calls.tickets import TicketService
from core.dispatch.geo import eta_s, haversine_m
from core.quality.outbox import Outbox
from core.quality.reporter_links import ReporterLinks, digest
from core.quality.status_views import RateLimit, add_status_routes
from core.web.app import make_app
from tests.dispatch_city import CENTER, answered_call, load, officer, point_in
from tests.triage_setup import planner_for
from tests.unit.conftest import FakeClock

URL = "https://110.example.org"


async def _dispatched(service: TicketService, clock: FakeClock, uniqueid: str = "1.1", *, north_m: float = 2000):
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, north_m)))
    outbox = Outbox(service.engine, None)
    links = ReporterLinks(service.engine, service, outbox, public_url=URL, travel=planner.settings, clock=clock)
    links.attach(service, planner.officers)
    ticket = await answered_call(service, uniqueid)
    lat, lon = point_in(CENTER)
    await planner.locate(ticket.number, lat=lat, lon=lon, address="人民大道200号")
    plan = await planner.begin(ticket.number)
    await planner.ringing(ticket.number, plan.rungs[0])
    await planner.joined(ticket.number, plan.rungs[0])
    for _ in range(100):  # the SMS is queued by a task the step started
        if (message := await outbox.get(f"status:{ticket.number}")) is not None:
            break
        await asyncio.sleep(0.01)
    return planner, links, outbox, ticket, message


def _token(body: str) -> str:
    found = re.search(rf"{re.escape(URL)}/s/([A-Za-z0-9_-]+)", body)
    assert found, body
    return found.group(1)


async def test_the_reporter_gets_one_sms_with_a_link_that_shows_distance_and_eta(service, clock):
    planner, links, outbox, ticket, message = await _dispatched(service, clock)
    assert message is not None and message.to == "+8613800000000" and ticket.number in message.body
    token = _token(message.body)
    assert len(token) == 22  # 128 random bits
    status = await links.status(token)
    assert status["phase"] == "on_the_way" and status["number"] == ticket.number
    (seen,) = status["officers"]
    officer_now = await planner.officers.get("e1")
    expected = haversine_m(officer_now.lat, officer_now.lon, *point_in(CENTER))
    assert abs(seen["distance_m"] - expected) <= 1 and 1900 < seen["distance_m"] < 2100
    assert seen["eta_s"] == round(eta_s(expected, speed_kmh=planner.settings.speed_kmh,
                                        detour=planner.settings.detour))
    # the badge and the unit, nothing else of the officer: no name, no position
    assert set(seen) == {"badge", "unit", "arrived", "distance_m", "eta_s", "located_at"}
    assert seen["badge"] == "e1" and officer_now.name not in str(status)

    # A second officer's join (or a replayed step) sends nothing more; the table keeps only the digest.
    assert await links.send(ticket) is None
    from sqlalchemy import select

    from core.quality.tables import StatusLinkRow

    async with service.engine.connect() as conn:
        stored = (await conn.execute(select(StatusLinkRow.token_sha256))).scalars().all()
    assert stored == [digest(token)] and token not in stored


async def test_no_link_for_a_landline(service, clock):
    outbox = Outbox(service.engine, None)
    links = ReporterLinks(service.engine, service, outbox, public_url=URL)
    landline = await service.open_call(uniqueid="2.1", caller_id="02188886666", at=0, source="agi")
    assert await links.send(landline) is None
    assert sum((await outbox.counts()).values()) == 0


async def test_the_page_is_pushed_on_every_move_and_ends_with_the_ticket(service, clock):
    planner, links, outbox, ticket, message = await _dispatched(service, clock, north_m=2000)
    token = _token(message.body)
    app = make_app(service, health={}, dispatch=planner)
    add_status_routes(app, links)
    async with TestClient(TestServer(app)) as client:
        page = await client.get(f"/s/{token}")
        assert page.status == 200 and "110 报警进展" in await page.text()
        assert page.headers["Referrer-Policy"] == "no-referrer"
        first = await (await client.get(f"/api/status/{token}")).json()
        ws = await client.ws_connect(f"/api/status/{token}/ws")
        assert (await asyncio.wait_for(ws.receive_json(), 2))["officers"][0]["distance_m"] == \
            first["officers"][0]["distance_m"]
        # The officer drives closer: the socket carries it at once, not at the next refresh.
        lat, lon = point_in(CENTER, 800)
        await planner.officers.update_location("e1", lat, lon, accuracy_m=12)
        closer = await asyncio.wait_for(ws.receive_json(), 1)
        assert 700 < closer["officers"][0]["distance_m"] < 900
        assert closer["officers"][0]["eta_s"] < first["officers"][0]["eta_s"]
        # Arrival: shown as such.
        await planner.arrived(ticket.number, badge="e1", lat=lat, lon=lon)
        arrived = await asyncio.wait_for(ws.receive_json(), 1)
        assert arrived["phase"] == "arrived" and arrived["officers"][0]["arrived"] is True
        # Cleared: the socket says so and closes; the link is gone (410) for good.
        await planner.clear(ticket.number, disposition="已处置", by="e1")
        phases = []
        while not phases or phases[-1] == "arrived":  # a push per change: the arrival's position, then the clear
            phases.append((await asyncio.wait_for(ws.receive_json(), 1))["phase"])
        assert phases[-1] == "ended" and len(phases) <= 3
        await ws.close()
        gone = await client.get(f"/api/status/{token}")
        assert gone.status == 410 and (await gone.json())["error_id"] == "link-ended"


async def test_unknown_and_malformed_tokens_and_floods_are_refused(service, clock):
    planner, links, outbox, ticket, message = await _dispatched(service, clock)
    app = make_app(service, health={}, dispatch=planner)
    add_status_routes(app, links, limit=RateLimit(limit=5, window_s=60))
    async with TestClient(TestServer(app)) as client:
        for bad in ("A" * 22, "short", "x" * 500, "%00%0a" * 4, "..%2F..%2Fetc"):
            resp = await client.get(f"/api/status/{bad}")
            assert resp.status in (404, 429), (bad, resp.status)
        # five requests a minute from one address: the sixth waits
        statuses = [(await client.get(f"/api/status/{_token(message.body)}")).status for _ in range(3)]
        assert statuses[-1] == 429 and (await client.get(f"/s/{_token(message.body)}")).status == 429
    limit = RateLimit(limit=2, window_s=10, clock=lambda: now[0])
    now = [0.0]
    assert limit.allow("ip:a", "token:t") and limit.allow("ip:a", "token:t") and not limit.allow("ip:a", "token:t")
    assert not limit.allow("ip:b", "token:t")  # the token's own budget is spent too
    now[0] = 11.0
    assert limit.allow("ip:a", "token:t")
