"""Routing through the lab Asterisk: fraud → anti-fraud desk conferenced in; public service → 12345 transfer."""

from __future__ import annotations

import asyncio
import io
import random

import aiohttp
import pytest
from sqlalchemy import select

from core.alerts.board import Alert
from siplab import storm
from tests.web_login import login_headers

from .test_dispatch import answered_ticket, dispatch_backend, steps_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.lab


def _number() -> str:
    return f"134{random.randrange(10**8):08d}"


async def classify(running, number: str, incident_type: str) -> dict:
    # a supervisor: the lab seat that answered is held by no logged-in call-taker
    headers = await login_headers(running.service.engine, "supervisor")
    url = f"http://127.0.0.1:{running.settings.http_port}/api/tickets/{number}/classify"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(url, json={"type": incident_type, "priority": 2}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return body


async def test_fraud_report_conferences_the_anti_fraud_desk_with_the_caller(backend, calls):
    queue = backend.backend.ami.subscribe()
    caller = _number()
    call = asyncio.create_task(calls.place([(caller, "Fraud victim")], talk_s=9, patience_s=10))
    ticket = await answered_ticket(backend, caller)
    await classify(backend, ticket.number, "fraud")
    t = await steps_until(backend, ticket.number, "handed_over", 10)
    handed = next(s for s in t.steps if s.step == "handed_over")
    assert handed.detail["to"] == "anti_fraud" and handed.detail["mode"] == "conference"
    assert handed.detail["endpoint"] == "PJSIP/antifraud-desk"
    stats = await call
    assert stats.get("SuccessfulCall(C)") == "1", stats
    await backend.settle()
    joins = []
    while not queue.empty():
        e = queue.get_nowait()
        if e.name == "ConfbridgeJoin" and e.get("Conference") == ticket.uniqueid:
            joins.append(e.get("Channel").split("/")[1].rsplit("-", 1)[0])
    assert joins[:2] in (["carrier", t.seat], [t.seat, "carrier"]) and joins[2] == "antifraud-desk", joins
    t = await backend.service.get(ticket.number)
    assert [s.step for s in t.steps][:5] == ["received", "queued", "seat_ringing", "answered", "classified"]
    assert t.steps[-1].step == "hung_up"
    assert len(t.recordings) == 1 and 9.0 <= t.recordings[0].duration_s <= 11.0  # the whole call, one file


async def test_public_service_request_is_transferred_to_12345_and_stays_traceable(backend, calls, lab_paths):
    caller = _number()
    call = asyncio.create_task(calls.place([(caller, "Noise complaint")], talk_s=9, patience_s=10))
    ticket = await answered_ticket(backend, caller)
    await classify(backend, ticket.number, "public_service")
    t = await steps_until(backend, ticket.number, "handed_over", 10)
    handed = next(s for s in t.steps if s.step == "handed_over")
    assert handed.detail["to"] == "hotline_12345" and handed.detail["mode"] == "transfer"
    stats = await call
    assert stats.get("SuccessfulCall(C)") == "1", stats
    await backend.settle()
    t = await backend.service.get(ticket.number)
    assert t.steps[-1].step == "hung_up" and t.state == "ended"
    assert len(t.recordings) == 1 and 9.0 <= t.recordings[0].duration_s <= 11.0
    log = (lab_paths.root / "var/log/asterisk/full").read_text(errors="replace")
    assert f"hand-over of {ticket.number} to PJSIP/hotline-12345" in log
    # the caller's channel went on to dial the hotline (other channels' lines may come in between)
    noop, after = log.rsplit(f"hand-over of {ticket.number}", 1)  # this run's: numbers restart per store
    channel = noop.rsplit('NoOp("', 1)[1].split('"', 1)[0]
    dial = next(line for line in after.splitlines() if "[transfer@handover:2]" in line and channel in line)
    assert "Dial(" in dial and "PJSIP/hotline-12345" in dial


async def test_a_day_s_mix_through_the_lab(dispatch_backend, lab_paths):
    """`jiejing lab storm --dispatch --mix`, small: calls classified over the API, fraud and 12345 handed over,
    the rest dispatched, and app text reports posted (each twice), taken and closed — all with no API error."""
    backend = dispatch_backend  # the lab city: officers to dispatch
    opts = storm.StormOptions(calls=16, rate=1, talk_s=10, dispatch=True, mix=True, settings=backend.settings,
                              paths=lab_paths)
    opts.out = io.StringIO()
    report = await storm.run_async(opts)
    assert (report["answered"], report["failed"], report["tickets"], report["recordings"]) == (16, 0, 16, 16)
    triage, reports = report["triage"], report["triage"]["text_reports"]
    assert triage["errors"] == [] and report["dispatch"]["errors"] == []
    assert sum(triage["classified"].values()) == 16
    handed = triage["handed_over"]
    assert handed.get("anti_fraud", 0) == triage["classified"].get("fraud", 0)
    assert handed.get("hotline_12345", 0) == triage["classified"].get("public_service", 0)
    assert report["dispatch"]["officer_joined"] == 16 - handed.get("anti_fraud", 0) - handed.get("hotline_12345", 0)
    # 16 calls: two app reports, the first naming a robbery; each posted twice (the gateway's retry).
    assert (reports["posted"], reports["tickets"], reports["duplicates"]) == (4, 2, 2)
    assert (reports["keyword_alerts"], reports["taken"], reports["closed"]) == (1, 2, 2)
    async with backend.service.engine.connect() as conn:
        rows = (await conn.execute(select(Alert.message).where(Alert.kind == "major_incident"))).scalars().all()
    assert len(rows) == 1 and "app report" in rows[0] and "抢劫" in rows[0]
