"""The supervisor's page in headless Chromium: survey rates, the day's sample, follow-ups, the journal; score a call."""

from __future__ import annotations

import json
import math
import struct
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

from core.alerts.board import Alert, AlertBoard
from core.auth.users import AuthService, Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.quality import views as web_quality
from core.quality.complaints import Complaints
from core.quality.journal import KIND_ACCESS, JournalEntry, Journaler, verify
from core.quality.journal_status import JournalWatch
from core.quality.outbox import Outbox
from core.quality.retention import RetentionSchedule
from core.quality.spot_checks import SpotChecks
from core.quality.survey import Survey
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.web_login import PASSWORD, TEST_SCRYPT_N

TZ = "Asia/Shanghai"
TOKEN = "webhook-token"
URL = "https://jiejing.example.gov.cn/api/twilio/sms"
SEATS = [f"seat-{n:02d}" for n in range(1, 7)]
# Replies cycle through these: mostly satisfied, some not, one complaint.
REPLIES = ["5 5", "4 5", "5 4", "5 3", "2 4", "5 5", "4 4", "投诉：民警迟到 3 1", "5 5", "3 5"]


def engine_dir(engine: AsyncEngine) -> Path:
    """The folder of the test's SQLite store (the browser tests' engine fixture puts it in tmp_path)."""
    return Path(engine.url.database).parent


class _Clock:
    """The ticket service's clock: a call's creation time is the time it was made."""

    def __init__(self) -> None:
        self.now: float | None = None

    def __call__(self) -> float:
        return time.time() if self.now is None else self.now


@dataclass
class Center:
    server: TestServer
    spot_checks: SpotChecks
    complaints: Complaints
    day: str
    overdue_ticket: str
    overdue_id: int
    engine: AsyncEngine


async def _calls(service: TicketService, clock: _Clock, survey: Survey) -> tuple[str, list[str]]:
    """Answered, closed calls today and on the four days before, each rated by SMS; today's day and numbers."""
    tz = ZoneInfo(TZ)
    now = time.time()
    midnight = datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    today: list[str] = []
    replies = 0
    for back in range(4, -1, -1):
        start = (midnight - timedelta(days=back)).timestamp()
        span = (now - start - 120) if back == 0 else 20 * 3600
        count = 12 if back == 0 else 6 + back
        for i in range(count):
            # Just after midnight the day has no room yet: a call a few minutes ahead harms nothing here.
            at = start + 60 + (i + 0.5) * max(span, 600) / count
            uid = f"1700{back}.{i}"
            clock.now = at
            ticket = await service.open_call(uniqueid=uid, caller_id=f"139{back:02d}{i:06d}", at=at, source="ami")
            await service.record_step(uid, Step.QUEUED, at=at + 1, source="ami", queue="emergency-110")
            await service.record_step(uid, Step.ANSWERED, at=at + 3, source="ami", seat=SEATS[(i + back) % 6])
            await service.record_step(uid, Step.HUNG_UP, at=at + 90, source="ami")
            clock.now = None
            await service.close(ticket.number, disposition=["盗窃", "纠纷", "求助"][i % 3], by=SEATS[(i + back) % 6])
            if back == 0:
                today.append(ticket.number)
    await survey.catch_up()
    validator = RequestValidator(TOKEN)
    for back in range(4, -1, -1):
        for i in range(12 if back == 0 else 6 + back):
            if back == 0 and i % 4 == 3:
                continue  # not everyone answers
            params = {"MessageSid": f"SM{back}{i:030d}", "From": f"+86139{back:02d}{i:06d}", "To": "+8610000110",
                      "Body": REPLIES[replies % len(REPLIES)], "NumMedia": "0"}
            replies += 1
            verdict = await survey.receive(URL, params, validator.compute_signature(URL, params))
            assert verdict == "accepted", params
    return midnight.strftime("%Y%m%d"), today


@pytest.fixture
async def center(engine: AsyncEngine) -> AsyncIterator[Center]:
    clock = _Clock()
    service = TicketService(engine, clock=clock)
    outbox = Outbox(engine, None)  # no Twilio here: messages stay pending, replies are matched all the same
    complaints = Complaints(engine)
    survey = Survey(engine, outbox, complaints, auth_token=TOKEN, webhook_url=URL)
    spot_checks = SpotChecks(engine, tz=TZ)
    day, numbers = await _calls(service, clock, survey)
    await spot_checks.draw(day, by="zhang", size=8, seed=110)
    sample = await spot_checks.sample(day)
    for call, scores in zip(sample["calls"], ({"speed": 5, "attitude": 5, "classification": 4, "dispatch": 5,
                                               "script": 4}, {"speed": 3, "attitude": 4, "classification": 5,
                                                              "dispatch": 4, "script": 3}), strict=False):
        await spot_checks.score(day, call["ticket"], scores=scores, by="zhang", comment="开场白规范，核实地址及时")
    # Opened four days ago by the desk: past its 72-hour deadline.
    late = Complaints(engine, clock=lambda: time.time() - 80 * 3600)
    overdue = await late.open(numbers[1], origin="complaint", reason="报警人称民警四十分钟未到场，要求答复",
                              station="南京东路派出所")
    # One recorded call per ticket of the day (the same short file): the supervisor plays one to score it.
    wav = engine_dir(engine) / "recordings" / "call.wav"
    wav.parent.mkdir(exist_ok=True)
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8000 * 2 * math.pi * 440)))
                               for i in range(8000)))
    for number in numbers:
        await service.bind_recording(number, str(wav))
    alerts = AlertBoard(engine)
    await alerts.start()
    alerts.raise_alert("major_incident", numbers[2], f"重大警情 major incident {numbers[2]}: 持刀, 抢劫")
    alerts.raise_alert("dispatch_exhausted", numbers[3], f"{numbers[3]}: 派出所值班台及所长均未接听 nobody answered")
    await alerts.stop()
    journaler = Journaler(engine)
    await journaler.catch_up()
    retention = RetentionSchedule(engine, journaler, days=180)
    await retention.run_due()
    app = make_app(service, health={})
    web_quality.add_routes(app, spot_checks=spot_checks, survey=survey, complaints=complaints,
                           journal=JournalWatch(engine, retention=retention), recordings_dir=str(wav.parent))
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("zhang", PASSWORD, Role.SUPERVISOR)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield Center(server, spot_checks, complaints, day, numbers[1], overdue.id, engine)


async def _count(browser: Browser, selector: str) -> int:
    return int(await browser.evaluate(f"document.querySelectorAll({selector!r}).length"))


async def test_supervisor_sees_rates_sample_and_follow_ups_and_scores_a_call(
    center: Center, screenshots: Path
) -> None:
    async with Browser(width=1500, height=1000) as browser:
        # The page's "today" is the center's day, whatever zone this machine is in.
        await browser.send("Emulation.setTimezoneOverride", timezoneId=TZ)
        await browser.goto(str(center.server.make_url("/supervisor")))
        await browser.wait_for("!document.getElementById('login').hidden")
        await browser.type_into("#login input[name=username]", "zhang")
        await browser.type_into("#login input[name=password]", PASSWORD)
        await browser.click("#login button[type=submit]")
        await browser.wait_for("document.body.dataset.loaded === '1'")

        # (a) satisfaction per day, station and seat
        assert await _count(browser, "#rates-day tr[data-group]") == 5
        assert await _count(browser, "#rates-seat tr[data-group]") == 6
        station = await browser.evaluate("document.querySelector('#rates-station tr').textContent")
        assert station.startswith("未关联")  # the survey has no station until dispatch records one
        intake = await browser.evaluate("document.getElementById('intake-rate').textContent")
        assert intake.endswith("%") and 50 < float(intake[:-1]) < 100
        assert await browser.evaluate("document.getElementById('dispatch-rate').textContent") != "–"
        # (b) the day's sample with the scores so far, (c) the report
        assert await _count(browser, "#sample-list tr[data-ticket]") == 8
        assert await _count(browser, "#sample-list tr.scored") == 2
        assert await _count(browser, "#report-seats tr[data-group]") >= 1
        assert "2 / 8" in await browser.evaluate("document.getElementById('scored-count').textContent")
        # (d) follow-ups: the overdue complaint is highlighted, survey complaints are listed
        overdue = await browser.evaluate("[...document.querySelectorAll('#follow-up-list tr.overdue')].map(r => r.dataset.id)")
        assert overdue == [str(center.overdue_id)]
        assert await _count(browser, "#follow-up-list tr.open") >= 3
        # (e) the journal
        assert "完整" in await browser.evaluate("document.getElementById('journal-state').textContent")
        assert "180 天" in await browser.evaluate("document.getElementById('journal-detail').textContent")

        # Score an unscored call through the form.
        ticket = await browser.evaluate("document.querySelector('#sample-list tr.unscored').dataset.ticket")
        await browser.click(f"#sample-list tr[data-ticket='{ticket}'] td")
        assert await browser.evaluate("document.querySelector('#score-form select[name=ticket]').value") == ticket
        for name, value in (("speed", 4), ("attitude", 5), ("classification", 3), ("dispatch", 4), ("script", 5)):
            await browser.evaluate(f"document.querySelector('#score-form select[name={name}]').value = '{value}'")
        await browser.type_into("#score-form textarea[name=comment]", "分类有误：纠纷应为盗窃")
        await browser.click("#score-form button[type=submit]")
        await browser.wait_for("document.querySelector('#score-form .done').textContent.includes('4.20')")
        await browser.wait_for(f"document.querySelector('#sample-list tr[data-ticket=\"{ticket}\"]').className === 'scored'")
        assert await _count(browser, "#sample-list tr.scored") == 3
        stored = next(c for c in (await center.spot_checks.sample(center.day))["calls"] if c["ticket"] == ticket)
        assert stored["scores"] == {"speed": 4, "attitude": 5, "classification": 3, "dispatch": 4, "script": 5}
        assert (stored["scored_by"], stored["comment"]) == ("zhang", "分类有误：纠纷应为盗窃")

        # Play the call being scored: fetched with the log-in, played, and journaled with who played it.
        playing = await browser.evaluate("document.querySelector('#score-form select[name=ticket]').value")
        await browser.click("#play")
        await browser.wait_for(f"document.getElementById('player').dataset.ticket === '{playing}' && "
                               "document.getElementById('play-status').textContent.includes('journaled')")
        await browser.wait_for("document.getElementById('player').readyState >= 1")
        assert round(await browser.evaluate("document.getElementById('player').duration")) == 1
        async with center.engine.connect() as conn:
            access = (await conn.execute(select(JournalEntry.payload).where(JournalEntry.kind == KIND_ACCESS))).scalars()
            played = [json.loads(payload) for payload in access]
        assert [(p["ticket"], p["by"], p["what"]) for p in played] == [(playing, "zhang", "recording_played")]
        assert (await verify(center.engine)).ok

        # Export its dossier for a complaint: downloaded as a file, the export journaled too.
        await browser.click("#dossier")
        await browser.wait_for("document.getElementById('play-status').textContent.includes('dossier exported')")
        assert await browser.evaluate("document.getElementById('play-status').dataset.dossier") == playing
        async with center.engine.connect() as conn:
            access = (await conn.execute(select(JournalEntry.payload).where(JournalEntry.kind == KIND_ACCESS)
                                         .order_by(JournalEntry.seq))).scalars()
            assert [json.loads(p)["what"] for p in access] == ["recording_played", "dossier_exported"]

        # Alerts: acknowledge one; resolve the other, which needs a word on what was done.
        assert await _count(browser, "#alert-list tr.new") == 2
        first, second = await browser.evaluate("[...document.querySelectorAll('#alert-list tr')].map(r => r.dataset.id)")
        await browser.click(f"#alert-list tr[data-id='{first}'] .ack")
        await browser.wait_for(f"document.querySelector('#alert-list tr[data-id=\"{first}\"]').className === 'acknowledged'")
        await browser.click(f"#alert-list tr[data-id='{second}'] .resolve")
        await browser.wait_for(f"document.querySelector('#alert-list tr[data-id=\"{second}\"] .error').textContent !== ''")
        await browser.type_into(f"#alert-list tr[data-id='{second}'] .resolution", "已联系分局指挥室改派巡逻组")
        await browser.click(f"#alert-list tr[data-id='{second}'] .resolve")
        await browser.wait_for(f"document.querySelector('#alert-list tr[data-id=\"{second}\"]') === null")
        async with center.engine.connect() as conn:
            rows = {r.id: r for r in (await conn.execute(select(Alert))).all()}
        assert (rows[int(first)].acknowledged_by, rows[int(first)].resolved_at_us) == ("zhang", None)
        assert (rows[int(second)].resolved_by, rows[int(second)].resolution) == ("zhang", "已联系分局指挥室改派巡逻组")

        height = await browser.evaluate("document.documentElement.scrollHeight")
        await browser.send("Emulation.setDeviceMetricsOverride", width=1500, height=int(height), deviceScaleFactor=1,
                           mobile=False)
        shot = await browser.screenshot(screenshots / "supervisor.png")
        assert shot.stat().st_size > 20_000

        # Answer the overdue follow-up through its form.
        await browser.click(f"#follow-up-list tr[data-id='{center.overdue_id}'] td")
        await browser.type_into("#answer-form textarea[name=answer]", "已电话回访报警人，说明当日警力调度情况并致歉")
        await browser.click("#answer-form button[type=submit]")
        await browser.wait_for("document.querySelector('#follow-up-list tr.overdue') === null")
        answered = await center.complaints.get(center.overdue_id)
        assert answered.answered_by == "zhang" and answered.answer is not None
        assert not [line for line in browser.console if line.startswith("exception")]
