"""The satisfaction survey: SMS on closing, the signed webhook (valid, forged, replayed), ratings and rates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from twilio.request_validator import RequestValidator

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.quality import views as web_quality
from core.quality.complaints import Complaints
from core.quality.outbox import Outbox
from core.quality.survey import Survey, parse_reply, to_e164
from core.quality.tables import FollowUp, OutboxMessage, SurveyResponse, WebhookReceipt
from core.web.app import make_app
from tests.web_login import login_headers

T0 = 1_795_951_800.0
TOKEN = "webhook-token"
URL = "https://jiejing.example.gov.cn/api/twilio/sms"


async def _closed_call(service: TicketService, uid: str, caller: str = "13800000000", seat: str = "seat-05") -> str:
    ticket = await service.open_call(uniqueid=uid, caller_id=caller, at=T0, source="agi")
    await service.record_step(uid, Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step(uid, Step.ANSWERED, at=T0 + 2, source="ami", seat=seat)
    await service.record_step(uid, Step.HUNG_UP, at=T0 + 60, source="ami")
    await service.close(ticket.number, disposition="求助", by=seat)
    return ticket.number


@pytest.fixture
def parts(engine: AsyncEngine, clock: Any) -> tuple[Outbox, Complaints, Survey]:
    outbox = Outbox(engine, None, clock=clock)
    complaints = Complaints(engine, clock=clock)
    survey = Survey(engine, outbox, complaints, auth_token=TOKEN, webhook_url=URL, clock=clock)
    return outbox, complaints, survey


@asynccontextmanager
async def serve(service: TicketService, survey: Survey, complaints: Complaints) -> AsyncIterator[TestClient]:
    app = make_app(service, health={})
    web_quality.add_routes(app, survey=survey, complaints=complaints)
    async with TestClient(TestServer(app), headers=await login_headers(service.engine, Role.SUPERVISOR)) as client:
        yield client


def _signed(params: dict[str, str], url: str = URL, token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def _reply(sid: str, body: str, sender: str = "+8613800000000") -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": sender,
            "To": "+8610000110", "Body": body, "NumMedia": "0"}


async def _count(engine: AsyncEngine, model: type) -> int:
    async with async_sessionmaker(engine)() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


@pytest.mark.parametrize(
    ("body", "intake", "officer", "complaint"),
    [
        ("5 4", 5, 4, False),
        ("５，３", 5, 3, False),  # full-width digits
        ("接警5分，民警2分", 5, 2, False),
        ("满意", None, None, False),
        ("投诉：民警一直没到 1", 1, None, True),
        ("10 55", None, None, False),  # not ratings
    ],
)
def test_parse_reply(body: str, intake: int | None, officer: int | None, complaint: bool) -> None:
    ratings = parse_reply(body)
    assert (ratings.intake, ratings.officer, ratings.complaint) == (intake, officer, complaint)


def test_only_mobile_numbers_get_an_sms() -> None:
    assert to_e164("13800000000") == "+8613800000000"
    assert to_e164("008613800000000") == "+8613800000000"
    assert to_e164("+8613800000000") == "+8613800000000"
    assert to_e164("01088886666") is None  # a landline
    assert to_e164("") is None


async def test_closing_a_ticket_enqueues_one_survey(
    service: TicketService, engine: AsyncEngine, parts: tuple[Outbox, Complaints, Survey]
) -> None:
    outbox, _complaints, survey = parts
    remove = survey.attach(service)
    await survey.start()
    try:
        number = await _closed_call(service, "1.1")
        await _closed_call(service, "1.2", caller="01088886666")  # landline: no SMS
        for _ in range(200):
            if await outbox.get(f"survey:{number}") is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        remove()
        await survey.stop()
    message = await outbox.get(f"survey:{number}")
    assert message is not None and message.to == "+8613800000000" and number in message.body
    assert await survey.catch_up() == 0  # never twice
    assert await _count(engine, OutboxMessage) == 1


async def test_webhook_valid_forged_and_replayed(
    service: TicketService, engine: AsyncEngine, parts: tuple[Outbox, Complaints, Survey],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _outbox, _complaints, survey = parts
    number = await _closed_call(service, "1.1")
    await survey.catch_up()
    params = _reply("SM" + "a" * 32, "5 4")
    async with serve(service, survey, _complaints) as client:
        resp = await client.post("/api/twilio/sms", data=params, headers=_signed(params))
        assert resp.status == 200
        assert "<Response>" in await resp.text()

        with caplog.at_level(logging.WARNING, logger="core.quality.survey"):
            replay = await client.post("/api/twilio/sms", data=params, headers=_signed(params))
            assert replay.status == 409
            tampered = dict(params, Body="1 1")  # signature of the original body
            forged = await client.post("/api/twilio/sms", data=tampered, headers=_signed(params))
            assert forged.status == 403
            other_url = await client.post(
                "/api/twilio/sms", data=_reply("SM" + "b" * 32, "1 1"),
                headers=_signed(_reply("SM" + "b" * 32, "1 1"), url="https://evil.example/api/twilio/sms"),
            )
            assert other_url.status == 403
            unsigned = await client.post("/api/twilio/sms", data=_reply("SM" + "c" * 32, "1 1"))
            assert unsigned.status == 403
            wrong_key = _reply("SM" + "d" * 32, "1 1")
            assert (await client.post("/api/twilio/sms", data=wrong_key,
                                      headers=_signed(wrong_key, token="guess"))).status == 403
    messages = [r.getMessage() for r in caplog.records]
    assert sum("replay" in m for m in messages) == 1
    assert sum("bad signature" in m for m in messages) == 4
    async with async_sessionmaker(engine)() as session:
        responses = (await session.scalars(select(SurveyResponse))).all()
    assert [(r.ticket_number, r.intake_rating, r.officer_rating, r.seat, r.day) for r in responses] == [
        (number, 5, 4, "seat-05", "20261129")
    ]
    assert await _count(engine, WebhookReceipt) == 1  # forged requests leave no trace that could block a real one
    assert await _count(engine, FollowUp) == 0


async def test_unsatisfied_rating_opens_a_follow_up_and_rates_are_computed(
    service: TicketService, engine: AsyncEngine, parts: tuple[Outbox, Complaints, Survey]
) -> None:
    _outbox, complaints, survey = parts
    await _closed_call(service, "1.1", caller="13800000001", seat="seat-01")
    low = await _closed_call(service, "1.2", caller="13800000002", seat="seat-01")
    await _closed_call(service, "1.3", caller="13800000003", seat="seat-02")
    await survey.catch_up()
    async with serve(service, survey, complaints) as client:
        for n, (sender, body) in enumerate(
            [("+8613800000001", "5 5"), ("+8613800000002", "4 1"), ("+8613800000003", "2 4"),
             ("+8613800000009", "5 5")]  # no survey was sent to this number
        ):
            params = _reply(f"SM{n:032d}", body, sender)
            resp = await client.post("/api/twilio/sms", data=params, headers=_signed(params))
            assert resp.status == 200
        resp = await client.get("/api/survey/rates", params={"from": "20261129", "by": "day,seat"})
        assert resp.status == 200
        body = await resp.json()
        bad = await client.get("/api/survey/rates", params={"from": "20261129", "by": "weather"})
        assert bad.status == 400
        follow_ups = await (await client.get("/api/complaints", params={"state": "open"})).json()
    assert body["rates"] == [
        {"day": "20261129", "seat": "seat-01", "responses": 2, "complaints": 0,
         "intake": {"rated": 2, "satisfied": 2, "rate": 1.0}, "dispatch": {"rated": 2, "satisfied": 1, "rate": 0.5}},
        {"day": "20261129", "seat": "seat-02", "responses": 1, "complaints": 0,
         "intake": {"rated": 1, "satisfied": 0, "rate": 0.0}, "dispatch": {"rated": 1, "satisfied": 1, "rate": 1.0}},
    ]
    assert sorted(f["ticket"] for f in follow_ups["follow_ups"]) == sorted([low, (await _numbers(engine))[2]])
    assert all(f["origin"] == "survey" and f["state"] == "open" for f in follow_ups["follow_ups"])


async def _numbers(engine: AsyncEngine) -> list[str]:
    from core.calls.tables import Ticket

    async with async_sessionmaker(engine)() as session:
        return list((await session.scalars(select(Ticket.number).order_by(Ticket.id))).all())
