"""Text reports: the app's gateway and Twilio's SMS webhook open tickets; keywords alert at once; call-takers take them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from core.alerts.board import Alert
from core.auth.users import Role
from core.calls.events import StepBroadcaster
from core.calls.lifecycle import State, Step
from core.calls.tables import Ticket
from core.calls.tickets import TicketService
from core.config import Settings
from core.quality import views as web_quality
from core.quality.complaints import Complaints
from core.quality.config import QualitySettings
from core.quality.outbox import Outbox
from core.quality.supervision import build
from core.quality.survey import Survey, is_survey_answer, parse_reply
from core.quality.tables import OutboxMessage, SurveyResponse, WebhookReceipt
from core.triage.desk import TriageDesk
from core.triage.reports import (
    ReportIntake,
    TextReport,
    media_attachments,
    parse_report,
)
from core.triage.routing import Mode, RoutingDecision, Target
from core.web.app import make_app
from tests.dispatch_city import CENTER, load, officer, point_in
from tests.triage_setup import desk_client, make_desk, planner_for
from tests.unit.conftest import T0, FakeClock
from tests.unit.test_survey import TOKEN, URL, _closed_call, _reply, _signed
from tests.web_login import login_headers


async def _alerts(service: TicketService) -> list[Any]:
    async with service.engine.connect() as conn:
        return list((await conn.execute(select(Alert).where(Alert.kind == "major_incident"))).all())


async def _tickets(service: TicketService) -> int:
    async with service.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(Ticket))).scalar_one()


async def test_an_app_report_is_a_located_ticket_and_its_keywords_alert_within_a_second(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    desk = make_desk(service, planner, clock)
    broadcaster = StepBroadcaster()
    bureau = broadcaster.subscribe(None)
    lat, lon = point_in(CENTER)
    report = {"ref": "app-7f3a", "sender": "13800000000", "lat": lat, "lon": lon, "address": "人民大道200号",
              "text": "我被绑架了 kidnapped, 在一辆白色面包车里",
              "attachments": [{"kind": "photo", "url": "https://app.example.gov.cn/media/7f3a/1.jpg"}]}
    async with desk_client(service, planner, desk, broadcaster) as client:
        gateway = await login_headers(service.engine, Role.GATEWAY)
        started = time.monotonic()
        resp = await client.post("/api/reports", json=report, headers=gateway)
        body = await resp.json()
        assert resp.status == 201, body
        assert body["keywords"] == ["绑架", "kidnapped"] and body["major_incident"] is True
        assert (body["state"], body["station"], body["duplicate"]) == ("reported", "east", False)
        while not await _alerts(service):
            assert time.monotonic() - started < 1.0, "no major-incident alert within 1 s"
            await asyncio.sleep(0.01)
        [alert] = await _alerts(service)
        assert alert.ref == body["number"] and "绑架" in alert.message and "app report" in alert.message
        pushed = [json.loads(bureau._queue.get_nowait()) for _ in range(bureau.pending())]
        [briefing] = [m for m in pushed if m["type"] == "briefing"]
        assert briefing["number"] == body["number"] and briefing["station"] == "east"
        assert briefing["keywords"] == ["绑架", "kidnapped"]  # what the report said, for the officers

        # The gateway retries after a timeout: the same ticket, no second alert.
        again = await client.post("/api/reports", json=report, headers=gateway)
        assert again.status == 200 and (await again.json())["number"] == body["number"]
        assert (await again.json())["duplicate"] is True
        await desk.alerts.flush()
        assert len(await _alerts(service)) == 1 and await _tickets(service) == 1

        ticket = await service.get(body["number"])
        assert ticket is not None and ticket.state is State.REPORTED and ticket.caller_id == "13800000000"
        first = ticket.steps[0]
        assert (first.step, first.source) == (Step.REPORTED, "app")
        assert first.detail["text"] == report["text"] and first.detail["keywords"] == ["绑架", "kidnapped"]
        assert first.detail["attachments"] == report["attachments"]
        assert ticket.steps[1].step is Step.LOCATED and ticket.steps[1].detail["station"] == "east"

        # Call-takers see it waiting, one takes it, the other is told, it is closed.
        taker = await login_headers(service.engine, Role.CALL_TAKER, username="taker-1")
        other = await login_headers(service.engine, Role.CALL_TAKER, username="taker-2")
        await desk.index.flush()
        waiting = await (await client.get("/api/tickets", params={"status": "reported", "order": "oldest"},
                                          headers=taker)).json()
        assert [(t["number"], t["station"]) for t in waiting["tickets"]] == [(body["number"], "east")]
        took = await client.post(f"/api/tickets/{body['number']}/take", json={"seat": "seat-07"}, headers=taker)
        assert took.status == 200 and (await took.json())["state"] == "taken"
        assert (await took.json())["seat"] == "seat-07"
        late = await client.post(f"/api/tickets/{body['number']}/take", json={}, headers=other)
        assert late.status == 409
        classified = await client.post(f"/api/tickets/{body['number']}/classify", json={"type": "person",
                                                                                     "priority": 1}, headers=taker)
        assert classified.status == 200, await classified.text()
        closed = await client.post(f"/api/tickets/{body['number']}/close", json={"disposition": "已派警", "by": "taker-1"},
                                   headers=taker)
        assert closed.status == 200, await closed.text()
        final = await service.get(body["number"])
        assert final is not None and final.state is State.CLOSED
        assert [s.step for s in final.steps] == [Step.REPORTED, Step.LOCATED, Step.TAKEN, Step.CLASSIFIED,
                                                 Step.CLOSED]
        stats = await (await client.get("/api/stats", params={"from": str(T0 - 3600), "to": str(T0 + 3600)},
                                        headers=await login_headers(service.engine, Role.SUPERVISOR))).json()
        assert [(s["type"], s["station"], s["total"]) for s in stats["series"]] == [("person", "east", 1)]


async def test_report_bodies_are_checked_and_roles_kept_apart(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    good = {"ref": "r1", "sender": "+8613800000000", "text": "门口有人打架"}
    async with desk_client(service, planner, desk) as client:
        gateway = await login_headers(service.engine, Role.GATEWAY)
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        for bad in ({**good, "text": ""}, {**good, "text": "   "}, {**good, "text": "x" * 2001},
                    {**good, "sender": "<script>"}, {**good, "sender": "1" * 21}, {**good, "ref": "a b"},
                    {**good, "ref": "x" * 65}, {**good, "lat": 31.2}, {**good, "lat": 91, "lon": 121},
                    {**good, "channel": "sms"}, {**good, "attachments": [{"kind": "pdf", "url": "https://a/b"}]},
                    {**good, "attachments": [{"kind": "photo", "url": "javascript:alert(1)"}]},
                    {**good, "extra": 1}, {"ref": "r1", "sender": "138"}):
            resp = await client.post("/api/reports", json=bad, headers=gateway)
            assert resp.status == 400, (bad, await resp.text())
        not_json = await client.post("/api/reports", data=b"\xff\xfe{", headers=gateway)
        assert not_json.status == 400
        assert await _tickets(service) == 0  # nothing half-made
        assert (await client.post("/api/reports", json=good, headers=taker)).status == 403
        assert (await client.get("/api/tickets", headers=gateway)).status == 403  # a gateway reads nothing
        assert (await client.post("/api/reports", json=good)).status == 401
        far = await client.post("/api/reports", json={**good, "ref": "r2", "lat": -33.9, "lon": 18.4},
                                headers=gateway)
        body = await far.json()
        # A place far outside the city: located, in no station's cells (jurisdiction unclear), kept.
        assert far.status == 201 and body["station"] is None and body["cell"] and body["location_error"] is None
        bare = await client.post(f"/api/tickets/{body['number']}/take", headers=taker)  # no body: no seat
        assert bare.status == 200 and (await bare.json())["state"] == "taken"
        a_call = await service.open_call(uniqueid="9.9", caller_id="1", at=T0, source="agi")
        assert (await client.post(f"/api/tickets/{a_call.number}/take", json={}, headers=taker)).status == 409
        assert (await client.post("/api/tickets/110-20261129-999999/take", json={}, headers=taker)).status == 404


def test_parse_report_keeps_what_it_was_given() -> None:
    report = parse_report({"ref": "SMabc", "sender": "+8613800000000", "text": "有人抢劫"}, channel="sms")
    assert report == TextReport("sms", "SMabc", "+8613800000000", "有人抢劫")
    with pytest.raises(ValueError, match="channel"):
        parse_report({"ref": "a", "sender": "138", "text": "x"}, channel="fax")
    with pytest.raises(ValueError, match="sender must be wx:"):  # WeChat's senders are no phone numbers
        parse_report({"ref": "a", "sender": "138", "text": "x"}, channel="wechat")


async def test_the_service_refuses_a_bad_report_key(service: TicketService) -> None:
    for channel, ref in (("s m s", "a"), ("sms", ""), ("sms", "a\nb")):
        with pytest.raises(ValueError):
            await service.open_report(channel=channel, ref=ref, sender="138", at=T0, source="sms", text="x")
    assert await _tickets(service) == 0


def _sms_app(service: TicketService, clock: FakeClock) -> tuple[web.Application, Survey, TriageDesk]:
    """The API with triage (so the text-report intake) and the survey's SMS webhook."""
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    complaints = Complaints(service.engine, clock=clock)
    survey = Survey(service.engine, Outbox(service.engine, None, clock=clock), complaints, auth_token=TOKEN,
                    webhook_url=URL, clock=clock)
    app = make_app(service, health={}, dispatch=planner, triage=desk)
    web_quality.add_routes(app, survey=survey, complaints=complaints)
    return app, survey, desk


async def test_sms_that_is_not_a_survey_answer_becomes_a_report(
    service: TicketService, engine: Any, clock: FakeClock
) -> None:
    app, survey, desk = _sms_app(service, clock)
    surveyed = await _closed_call(service, "1.1", caller="+8613800000000")
    await _closed_call(service, "1.2", caller="+8613700000000")
    await _closed_call(service, "1.3", caller="+8613600000000")
    await survey.catch_up()
    async with TestClient(TestServer(app)) as client:
        async def sms(sid: str, text: str, sender: str = "+8613800000000") -> web.Response:
            params = _reply(sid, text, sender)
            return await client.post("/api/twilio/sms", data=params, headers=_signed(params))

        # An answer to the survey stays one.
        assert (await sms("SM" + "1" * 32, "5 5")).status == 200
        # A stranger writes to 110.
        assert (await sms("SM" + "2" * 32, "救命 有人抢劫 robbery", sender="+8613900000000")).status == 200
        # The surveyed caller writes again, and it is no rating: a person must read it.
        assert (await sms("SM" + "3" * 32, "他又来了，在砸门")).status == 200
        # Surveyed callers who write with a digit in it, or rate and name a crime, reach a person.
        assert (await sms("SM" + "5" * 32, "救命 我在3号楼 有人持刀砍人", sender="+8613700000000")).status == 200
        assert (await sms("SM" + "6" * 32, "投诉：民警没来，现在又有人杀人了", sender="+8613600000000")).status == 200
        # Twilio retries the stranger's message: refused as a replay, no second ticket.
        assert (await sms("SM" + "2" * 32, "救命 有人抢劫 robbery", sender="+8613900000000")).status == 409
        empty = await sms("SM" + "4" * 32, "")
        assert empty.status == 200  # genuine, kept as a receipt, nothing to act on
    await desk.alerts.flush()
    async with engine.connect() as conn:
        answers = (await conn.execute(select(SurveyResponse.ticket_number, SurveyResponse.intake_rating))).all()
        receipts = (await conn.execute(select(func.count()).select_from(WebhookReceipt))).scalar_one()
    complaint = next(n for n in answers if n[0] != surveyed)[0]
    assert sorted(tuple(a) for a in answers) == sorted([(surveyed, 5), (complaint, None)]) and receipts == 6
    reports = {(t.caller_id, t.steps[0].detail["text"], t.state) for t in await service.list_recent(10)
               if t.steps[0].step is Step.REPORTED}
    assert reports == {("+8613900000000", "救命 有人抢劫 robbery", State.REPORTED),
                       ("+8613800000000", "他又来了，在砸门", State.REPORTED),
                       ("+8613700000000", "救命 我在3号楼 有人持刀砍人", State.REPORTED),
                       ("+8613600000000", "投诉：民警没来，现在又有人杀人了", State.REPORTED)}
    alerts = sorted(a.message for a in await _alerts(service))
    assert len(alerts) == 2 and all("sms report" in m for m in alerts)
    assert any("抢劫" in m for m in alerts) and any("杀人" in m for m in alerts)


async def test_an_intake_without_triage_still_opens_tickets(service: TicketService, clock: FakeClock) -> None:
    intake = ReportIntake(service, clock=clock)
    result = await intake.receive(TextReport("app", "a1", "13800000000", "有人抢劫", lat=31.2, lon=121.4))
    assert result["state"] == "reported" and result["keywords"] == [] and result["station"] is None
    assert (await intake.receive(TextReport("app", "a1", "13800000000", "有人抢劫")))["duplicate"] is True


async def test_a_failure_after_the_ticket_is_stored_loses_neither_report_nor_alert(
    service: TicketService, clock: FakeClock
) -> None:
    """Once the ticket exists, the rest must not fail the request, and a retry finishes what was left undone."""
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    desk = make_desk(service, planner, clock)

    async def broken_locate(number: str, **_: Any) -> Any:
        raise RuntimeError("database went away")

    lat, lon = point_in(CENTER)
    report = TextReport("app", "b1", "13800000000", "他要引爆炸弹 bomb", lat=lat, lon=lon, address="人民大道1号")
    await desk.start()
    try:
        result = await ReportIntake(service, desk=desk, locate=broken_locate, clock=clock).receive(report)
        assert result["state"] == "reported" and result["major_incident"] is True
        assert result["location_error"] and "database" not in result["location_error"]  # no internals out
        assert result["station"] is None
        await desk.alerts.flush()
        # The gateway's retry, the database back: the same ticket, now located, still one alert.
        again = await ReportIntake(service, desk=desk, locate=planner.locate, clock=clock).receive(report)
        assert again["number"] == result["number"] and again["duplicate"] is True
        assert again["station"] == "east" and again["location_error"] is None
        await desk.alerts.flush()
    finally:
        await desk.stop()
    [alert] = await _alerts(service)
    assert alert.ref == result["number"]
    ticket = await service.get(result["number"])
    assert ticket is not None
    assert {k: ticket.steps[0].detail[k] for k in ("lat", "lon", "address")} == {
        "lat": lat, "lon": lon, "address": "人民大道1号"}  # the place as given stays on the report
    assert [s.step for s in ticket.steps] == [Step.REPORTED, Step.LOCATED]


@pytest.mark.parametrize("field", ["text", "address"])
@pytest.mark.parametrize("bad", [r"\ud800", r"有人\u0000抢劫", r"\u001b[31m"])  # JSON escapes
async def test_text_that_cannot_be_stored_is_refused_before_a_number_is_taken(
    service: TicketService, clock: FakeClock, field: str, bad: str
) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    body = {"ref": "r1", "sender": "13800000000", "text": "门口有人打架", field: json.loads(f'"{bad}"')}
    async with desk_client(service, planner, desk) as client:
        gateway = await login_headers(service.engine, Role.GATEWAY)
        resp = await client.post("/api/reports", data=json.dumps(body), headers={
            **gateway, "Content-Type": "application/json"})
        assert resp.status == 400, await resp.text()
        assert field in (await resp.json())["error"]
    assert await _tickets(service) == 0


def test_what_a_survey_answer_looks_like() -> None:
    for answer in ("5 5", "５，３", "接警5分，民警2分", "4", "5-5", "5星", "满意", "非常满意。", "满意，谢谢",
                   "5 5 谢谢", "好的，谢谢", "投诉：民警一直没到"):
        assert is_survey_answer(answer), answer
        assert parse_reply(answer).intake is not None or not any(c.isdigit() for c in answer), answer
    for writing in ("救命 我在3号楼 有人持刀砍人", "我在5栋楼下，有人抢劫", "10 55", "55", "他又来了", "6 6",
                    "好 有人打我", "满意 但是又有人来砸门"):
        assert not is_survey_answer(writing), writing


async def test_an_mms_without_text_is_a_report_with_its_pictures(service: TicketService, clock: FakeClock) -> None:
    params = {"MessageSid": "MM1", "From": "+8613900000000", "Body": "", "NumMedia": "2",
              "MediaUrl0": "https://api.twilio.example/Media/ME1", "MediaContentType0": "image/jpeg",
              "MediaUrl1": "https://api.twilio.example/Media/ME2", "MediaContentType1": "video/mp4"}
    assert media_attachments(params) == [{"kind": "photo", "url": "https://api.twilio.example/Media/ME1"},
                                         {"kind": "video", "url": "https://api.twilio.example/Media/ME2"}]


async def test_a_text_report_is_handed_over_by_its_pushed_data(service: TicketService, clock: FakeClock) -> None:
    """No call to conference or transfer: the anti-fraud centre and 12345 get the ticket data, stamped as such."""
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    desk = make_desk(service, planner, clock)
    intake = ReportIntake(service, desk=desk, locate=planner.locate, clock=clock)
    lat, lon = point_in(CENTER)
    fraud = await intake.receive(TextReport("app", "f1", "13800000000", "刚被冒充公检法骗了五万", lat=lat, lon=lon))
    hotline = await intake.receive(TextReport("app", "h1", "13800000001", "小区路灯坏了一个月", lat=lat, lon=lon))
    other = await intake.receive(TextReport("app", "u1", "13800000002", "有人打架", lat=lat, lon=lon))
    done = await desk.classify(fraud["number"], "fraud", 1)
    assert done["handover"] == {"done": True, "mode": "push", "push_id": done["push"]} and done["push"]
    step = done["ticket"]["steps"][-1]
    assert step["step"] == "handed_over" and step["detail"]["to"] == "anti_fraud"
    assert step["detail"]["mode"] == "push" and step["detail"]["push_id"] == done["push"]
    assert "fraud_url" not in json.dumps(done["ticket"]) and "127.0.0.1" not in json.dumps(done["ticket"])
    # Asked again (POST …/handover): nothing pushed twice, no second stamp.
    ticket = await service.get(fraud["number"])
    assert ticket is not None
    decision = await desk.current_decision(fraud["number"])
    assert decision is not None
    again, same = await desk.hand_over(ticket, decision)
    assert again["already"] is True and len(same.steps) == len(ticket.steps)
    assert len(await desk.pusher.for_ticket(fraud["number"])) == 1
    assert (await desk.classify(hotline["number"], "public_service", 4))["handover"]["done"] is True
    # A rule that pushes nothing (the local station's, as shipped): a person hands the report over.
    ticket = await service.get(other["number"])
    assert ticket is not None
    decision = RoutingDecision(ticket.number, Target.LOCAL_STATION, Mode.CONFERENCE, "PJSIP/desk-east", None,
                               "east", "jurisdiction unclear", 1)
    outcome, unchanged = await desk.hand_over(ticket, decision)
    assert outcome["done"] is False and "by hand" in outcome["error"] and unchanged is ticket
    pushed = {p.target for n in (fraud["number"], hotline["number"]) for p in await desk.pusher.for_ticket(n)}
    assert pushed == {"anti_fraud", "hotline_12345"}


async def test_nan_coordinates_are_refused_not_a_server_error(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    async with desk_client(service, planner, desk) as client:
        gateway = await login_headers(service.engine, Role.GATEWAY)
        for raw in ('{"ref":"n1","sender":"13800000000","text":"help","lat":NaN,"lon":NaN}',
                    '{"ref":"n2","sender":"13800000000","text":"help","lat":Infinity,"lon":1}'):
            resp = await client.post("/api/reports", data=raw, headers={**gateway, "Content-Type": "application/json"})
            assert resp.status == 400 and (await resp.json())["error_id"] == "body-not-json"
    assert await _tickets(service) == 0
    with pytest.raises(ValueError, match="finite"):
        parse_report({"ref": "n3", "sender": "138", "text": "x", "lat": float("nan"), "lon": 1.0}, channel="app")


async def test_an_sms_is_mended_not_refused(service: TicketService, clock: FakeClock) -> None:
    """Nobody can ask an SMS's sender to resend: what cannot be stored is replaced, bad media left out."""
    app, _survey, _desk = _sms_app(service, clock)
    async with TestClient(TestServer(app)) as client:
        params = _reply("SM" + "7" * 32, "救命 有人抢劫\x0b在3号楼\x00", "+8613900000000")
        params.update({"NumMedia": "2", "MediaUrl0": "javascript:alert(1)", "MediaContentType0": "image/png",
                       "MediaUrl1": "https://api.twilio.example/Media/ME9", "MediaContentType1": "image/jpeg"})
        resp = await client.post("/api/twilio/sms", data=params, headers=_signed(params))
        assert resp.status == 200
    [ticket] = [t for t in await service.list_recent(5) if t.steps[0].step is Step.REPORTED]
    first = ticket.steps[0].detail
    assert first["text"] == "救命 有人抢劫 在3号楼 " and first["keywords"] == ["抢劫"]
    assert first["attachments"] == [{"kind": "photo", "url": "https://api.twilio.example/Media/ME9"}]


async def test_two_deliveries_at_once_make_one_ticket_one_location_one_alert(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    desk = make_desk(service, planner, clock)
    briefings: list[Any] = []
    desk.set_publisher(lambda message, station, badge=None: briefings.append(message))
    intake = ReportIntake(service, desk=desk, locate=planner.locate, clock=clock)
    lat, lon = point_in(CENTER)
    report = TextReport("app", "twice", "13800000000", "有人抢劫", lat=lat, lon=lon)
    await desk.start()
    try:
        first, second = await asyncio.gather(intake.receive(report), intake.receive(report))
    finally:
        await desk.stop()
    assert first["number"] == second["number"] and {first["duplicate"], second["duplicate"]} == {False, True}
    ticket = await service.get(first["number"])
    assert ticket is not None and [s.step for s in ticket.steps] == [Step.REPORTED, Step.LOCATED]
    assert len(await _alerts(service)) == 1
    assert len([b for b in briefings if b.get("type") == "briefing"]) == 2  # the retry pushes it again, on purpose


async def test_sms_reports_come_in_with_the_survey_off(service: TicketService, clock: FakeClock, tmp_path) -> None:
    """Twilio's webhook is the text reports' door as well as the survey's: it is there whenever Twilio is
    configured (token and webhook URL), and with the survey off no survey is ever sent."""
    quality = QualitySettings(twilio_auth_token=TOKEN, twilio_webhook_url=URL, survey_enabled=False)
    supervision = build(service, Settings(db_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"), quality)
    assert supervision.survey is not None
    planner = planner_for(service, clock)
    app = make_app(service, health={}, dispatch=planner, triage=make_desk(service, planner, clock))
    supervision.add_routes(app)
    await _closed_call(service, "1.1", caller="+8613800000000")  # a closed call: no survey goes out
    async with TestClient(TestServer(app)) as client:
        params = _reply("SM" + "7" * 32, "有人抢劫 robbery", "+8613900000000")
        resp = await client.post("/api/twilio/sms", data=params, headers=_signed(params))
        assert resp.status == 200, await resp.text()
    reports = [t for t in await service.list_recent(10) if t.caller_id == "+8613900000000"]
    assert len(reports) == 1 and reports[0].state is State.REPORTED
    async with service.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(OutboxMessage))).scalar_one() == 0


async def test_with_the_survey_off_the_running_assembly_sends_no_survey(
    service: TicketService, clock: FakeClock, tmp_path
) -> None:
    """The webhook is there for text reports, but the survey's own task (which enqueues a survey for every
    recently closed, answered call) does not run: started and stopped, the outbox stays empty."""
    clock.now = time.time()  # the survey looks back over the last week of the wall clock
    await _closed_call(service, "1.1", caller="+8613800000000")
    quality = QualitySettings(twilio_auth_token=TOKEN, twilio_webhook_url=URL, survey_enabled=False)
    supervision = build(service, Settings(db_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"), quality)
    running = supervision.cleanup_ctx(None)
    await anext(running)
    await asyncio.sleep(0.2)
    with pytest.raises(StopAsyncIteration):
        await anext(running)
    async with service.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(OutboxMessage))).scalar_one() == 0
    # the same assembly with the survey on does enqueue it: the check above is not vacuous
    enabled = build(service, Settings(db_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"),
                    QualitySettings(twilio_auth_token=TOKEN, twilio_webhook_url=URL, survey_enabled=True))
    running = enabled.cleanup_ctx(None)
    await anext(running)
    for _ in range(100):
        async with service.engine.connect() as conn:
            if (await conn.execute(select(func.count()).select_from(OutboxMessage))).scalar_one():
                break
        await asyncio.sleep(0.02)
    with pytest.raises(StopAsyncIteration):
        await anext(running)
    async with service.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(OutboxMessage))).scalar_one() == 1
