"""Major-incident keywords: matching mixed Chinese and English, the file, the alert within a second, the briefing."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import select

from core.alerts.board import Alert
from core.auth.users import Role
from core.calls.events import StepBroadcaster
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.triage.desk import default_files
from core.triage.keywords import KeywordError, load_keywords, parse_keywords
from tests.dispatch_city import CENTER, answered_call, load, officer, point_in
from tests.triage_setup import KEYWORDS, desk_client, make_desk, planner_for
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers, on_seat


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("有人在楼下杀人了！", ["杀人"]),
        ("a ROBBERY at the bank, 有人被绑架", ["robbery", "绑架"]),
        ("劫匪说要搞爆炸explosion", ["爆炸", "explosion"]),  # no space between Chinese and English
        ("they kidnapped my son; kidnapping!", ["kidnapped", "kidnapping"]),
        ("Murder-suicide reported", ["murder"]),
        ("the murderer ran", []),  # a whole word, unless the list says murder*
        ("robberyX and xrobbery are not words here", []),
        ("邻居吵架，无人受伤", []),
        ("", []),
    ],
)
def test_matching(text: str, found: list[str]) -> None:
    assert parse_keywords(KEYWORDS).match(text) == found


def test_the_shipped_lists_load_and_cover_the_four_named_crimes() -> None:
    keywords = load_keywords(default_files()["keywords"])
    assert keywords.match("杀人 抢劫 绑架 爆炸") == ["杀人", "抢劫", "绑架", "爆炸"]
    assert set(keywords.match("murder, robbery, kidnapping and an explosion")) == {
        "murder", "robbery", "kidnapping", "explosion"}


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[a]\nzh = [\"杀人\"]\nfr = [\"meurtre\"]\n", 3, "unknown key 'fr'"),
        ("[a]\nen = [\"杀人\"]\n", 2, "not a Latin-script word"),
        ("[a]\nzh = [\"杀*\"]\n", 2, "only an English word may end in *"),
        ("[a]\nen = [\"\"]\n", 2, "must be 1-50 characters"),
        ("[a]\nen = []\n", 1, "no keywords at all"),
        ("[a]\nen = [\"x\"\n", 2, "not valid TOML"),
    ],
)
def test_bad_keyword_files_name_the_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(KeywordError) as caught:
        parse_keywords(text, "keywords.toml")
    assert caught.value.line == line and reason in caught.value.reason


async def _alerts(service: TicketService) -> list[Alert]:
    async with service.engine.connect() as conn:
        return list((await conn.execute(select(Alert).where(Alert.kind == "major_incident"))).all())


async def test_a_keyword_note_alerts_supervisors_within_a_second_and_pushes_the_briefing(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    desk = make_desk(service, planner, clock)
    lat, lon = point_in(CENTER)
    # History: the same caller called before, and something happened at the same address.
    earlier = await answered_call(service, "0.1")
    await planner.locate(earlier.number, lat=lat, lon=lon, address="人民大道200号")
    await desk.triage.classify(earlier.number, "dispute", 3)
    clock.now += 3600
    ticket = await answered_call(service, "1.1")
    await planner.locate(ticket.number, lat=lat, lon=lon, address="人民大道200号")
    await desk.warnings.add("place", "持刀人员曾在此出没", by="sup", address="人民大道200号")
    await desk.warnings.add("person", "报警人有暴力前科", by="sup", phone="13800000000")
    await desk.warnings.add("person", "someone else", by="sup", phone="13900000000")
    broadcaster = StepBroadcaster()
    bureau = broadcaster.subscribe(None)
    async with desk_client(service, planner, desk, broadcaster) as client:
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        await on_seat(client, taker)
        started = time.monotonic()
        resp = await client.post(f"/api/tickets/{ticket.number}/notes",
                                 json={"text": "报警人称有人持刀抢劫, robbery in progress"}, headers=taker)
        body = await resp.json()
        assert resp.status == 201, body
        assert body["keywords"] == ["抢劫", "robbery"] and body["major_incident"] is True
        assert body["ticket"]["steps"][-1]["detail"]["keywords"] == ["抢劫", "robbery"]
        while not await _alerts(service):
            assert time.monotonic() - started < 1.0, "no major-incident alert within 1 s"
            await asyncio.sleep(0.01)
        [alert] = await _alerts(service)
        assert alert.ref == ticket.number
        assert "抢劫" in alert.message and "人民大道200号" in alert.message
        pushed = [json.loads(bureau._queue.get_nowait()) for _ in range(bureau.pending())]
        [briefing] = [m for m in pushed if m["type"] == "briefing"]
        assert briefing["number"] == ticket.number and briefing["station"] == "east"
        assert briefing["location"]["address"] == "人民大道200号"
        assert [t["number"] for t in briefing["caller"]["earlier_tickets"]] == [earlier.number]
        assert briefing["caller"]["earlier_tickets"][0]["type"] == "dispute"
        assert [i["number"] for i in briefing["earlier_incidents_here"]] == [earlier.number]
        warnings = sorted(w["text"] for w in briefing["danger_warnings"])
        assert warnings == ["报警人有暴力前科", "持刀人员曾在此出没"]
        # A second keyword note keeps the one alert.
        await client.post(f"/api/tickets/{ticket.number}/notes", json={"text": "还有人质 hostage"}, headers=taker)
        await desk.alerts.flush()
        assert len(await _alerts(service)) == 1


async def test_the_briefing_is_for_the_ticket_s_officers_and_the_desk(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    ticket = await answered_call(service)
    await service.record_step(ticket.uniqueid, Step.DISPATCH_REQUESTED, at=T0 + 5, source="api")
    await service.record_step(ticket.uniqueid, Step.OFFICER_JOINED, at=T0 + 9, source="ami", badge="007",
                              kind="officer")
    async with desk_client(service, planner, desk) as client:
        url = f"/api/tickets/{ticket.number}/briefing"
        sent = await login_headers(service.engine, Role.OFFICER, username="007")
        other = await login_headers(service.engine, Role.OFFICER, username="008")
        supervisor = await login_headers(service.engine, Role.SUPERVISOR)
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        await on_seat(client, taker)
        resp = await client.get(url, headers=sent)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["officers"] == ["007"] and body["location"] is None
        assert (await client.get(url, headers=other)).status == 403
        assert (await client.get(url, headers=supervisor)).status == 200
        assert (await client.get(url, headers=taker)).status == 200


async def test_danger_warning_api(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    async with desk_client(service, planner, desk) as client:
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        await on_seat(client, taker)
        supervisor = await login_headers(service.engine, Role.SUPERVISOR)
        resp = await client.post("/api/danger-warnings", json={"kind": "place", "text": "恶犬", "cell": CENTER},
                                 headers=taker)
        created = await resp.json()
        assert resp.status == 201, created
        assert (await client.post("/api/danger-warnings", json={"kind": "person", "text": "x"},
                                  headers=taker)).status == 400  # a person warning needs a phone
        listed = await (await client.get("/api/danger-warnings", params={"cell": CENTER}, headers=taker)).json()
        assert [w["text"] for w in listed["warnings"]] == ["恶犬"]
        retire = f"/api/danger-warnings/{created['id']}/retire"
        assert (await client.post(retire, json={}, headers=taker)).status == 403
        assert (await client.post(retire, json={}, headers=supervisor)).status == 200
        listed = await (await client.get("/api/danger-warnings", params={"cell": CENTER}, headers=taker)).json()
        assert listed["warnings"] == []
