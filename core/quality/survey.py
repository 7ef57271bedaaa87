"""The satisfaction survey: an SMS when a ticket closes, the caller's reply, and the satisfaction rates.

Closing a ticket wakes the survey's own task, which enqueues one message per
closed, answered ticket in the outbox (keyed ``survey:<number>``, so never
twice) — also for tickets closed while the process was down. Replies come in
on Twilio's webhook: the signature is checked with twilio's
``RequestValidator`` against the public URL Twilio was given, and each
``MessageSid`` is accepted once, so a captured request replayed later is refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from twilio.request_validator import RequestValidator

from core.calls.lifecycle import State, Step
from core.calls.tables import Ticket
from core.quality.complaints import Complaints
from core.quality.outbox import Outbox
from core.quality.tables import OutboxMessage, SurveyResponse, WebhookReceipt
from core.tasks import stop_task
from core.triage.aml import looks_like_aml

log = logging.getLogger(__name__)

SURVEY_KIND = "survey"
SATISFIED_MIN = 4  # 4 and 5 count as satisfied
UNSATISFIED_MAX = 2  # 1 and 2 open a follow-up
# Tickets closed longer ago than this get no survey (and replies no longer match).
SURVEY_WINDOW_S = 7 * 86400
_RATING = re.compile(r"(?<![0-9])[1-5](?![0-9])")
_MOBILE_CN = re.compile(r"1[3-9][0-9]{9}")
_DAY = re.compile(r"-([0-9]{8})-")

SURVEY_TEXT = (
    "【110接警中心】您好，您的报警（警单{number}）已办结。请回复两个数字评价："
    "第一个评价接警服务，第二个评价民警处置，5为非常满意，1为非常不满意（例如：5 5）。"
    "如需投诉，请回复“投诉”及内容。"
)


def to_e164(caller_id: str) -> str | None:
    """The number an SMS can reach: E.164 as given, or a mainland mobile number; else None (landlines)."""
    digits = caller_id.strip()
    if re.fullmatch(r"\+[1-9][0-9]{6,14}", digits):
        return digits
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return "+86" + digits if _MOBILE_CN.fullmatch(digits) else None


@dataclass(frozen=True, slots=True)
class Ratings:
    intake: int | None
    officer: int | None
    complaint: bool


def parse_reply(body: str) -> Ratings:
    """Ratings from a reply such as ``5 4``, ``５，４``, ``接警5分 民警3分`` or ``投诉：…``."""
    text = unicodedata.normalize("NFKC", body)  # full-width digits become ASCII
    found = [int(d) for d in _RATING.findall(text)]
    intake = found[0] if found else None
    officer = found[1] if len(found) > 1 else None
    return Ratings(intake, officer, "投诉" in text)


# What an answer to the survey looks like: ratings ("5 4", "５，３", "接警5分，民警3分", "5-5", "5星"),
# words of (dis)satisfaction or thanks around them ("满意，谢谢", "5 5 谢谢"), or a complaint ("投诉：…").
# Anything else, even from a surveyed number, is somebody writing to 110 — "我在3号楼，有人持刀" holds a
# digit but is no rating, "满意 但是又有人来砸门" is more than thanks.
_ANSWER = re.compile(
    r"(?:接警)?\s*[1-5]\s*[分星]?(?:(?:\s*[,、;/.\-]\s*|\s+|(?<=[分星])\s*)(?:民警)?\s*[1-5]\s*[分星]?)?"
)
_WORDS = ("非常满意", "很满意", "基本满意", "非常不满意", "很不满意", "不满意", "满意", "一般", "谢谢你们",
          "谢谢", "感谢", "好的", "好")


def is_survey_answer(body: str) -> bool:
    """Whether a reply reads as an answer to the survey: ratings and courtesy words, or a complaint."""
    text = unicodedata.normalize("NFKC", body).strip()
    if text.startswith("投诉"):
        return True
    # Ratings and words of (dis)satisfaction or thanks, before or after, and nothing else.
    for word in _WORDS:
        text = text.replace(word, " ")
    text = text.strip(" ,、;.。!！~～")
    return not text or bool(_ANSWER.fullmatch(text))


class WebhookVerdict(StrEnum):
    ACCEPTED = "accepted"
    FORGED = "forged"
    REPLAYED = "replayed"
    UNMATCHED = "unmatched"  # genuine, but no survey of ours awaits a reply from that number
    REPORTED = "reported"  # genuine, not a survey answer: handed over as a text report
    MALFORMED = "malformed"
    AML = "aml"  # genuine, a handset's AML location message: handed to the AML service, nothing else
    CONVERSATION = "conversation"  # genuine, a silent caller's reply to the desk: on his ticket


class Survey:
    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Outbox,
        complaints: Complaints,
        *,
        auth_token: str,
        webhook_url: str,
        clock: Callable[[], float] = time.time,
        tz: str = "Asia/Shanghai",
        interval_s: float = 60.0,
        sends: bool = True,
    ) -> None:
        # ``sends=False``: only the webhook (text reports come in through it), no survey is ever enqueued.
        self.sends = sends
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._outbox = outbox
        self._complaints = complaints
        self._validator = RequestValidator(auth_token)
        self.webhook_url = webhook_url
        self._clock = clock
        self._tz = ZoneInfo(tz)
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    # -- sending ----------------------------------------------------------------------

    def attach(self, service: Any) -> Callable[[], None]:
        if not self.sends:
            return lambda: None

        def on_step(_ticket: Any, step: Any) -> None:
            if step.step is Step.CLOSED:
                self._wake.set()

        return service.add_listener(on_step)

    async def start(self) -> None:
        if self._task is None and self.sends:
            self._task = asyncio.create_task(self._run(), name="survey")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while True:
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("survey catch-up failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def catch_up(self) -> int:
        """Enqueue the survey of every recently closed, answered ticket that has none; returns how many."""
        since = self._now_us() - SURVEY_WINDOW_S * 1_000_000
        key = literal("survey:") + Ticket.number
        has_survey = select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key).exists()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(Ticket.number, Ticket.caller_id).where(
                        Ticket.state == str(State.CLOSED),
                        Ticket.seat.is_not(None),  # abandoned calls had no service to rate
                        Ticket.updated_at_us >= since,
                        ~has_survey,
                    ).order_by(Ticket.id)
                )
            ).all()
        added = 0
        for number, caller_id in rows:
            to = to_e164(caller_id or "")
            if to is None:
                continue  # no mobile number; it stays unsurveyed and is skipped again, cheaply
            await self._outbox.enqueue(key=f"survey:{number}", kind=SURVEY_KIND, to=to,
                                       body=SURVEY_TEXT.format(number=number), ticket_number=number)
            added += 1
        return added

    # -- replies --------------------------------------------------------------------------

    async def receive(
        self, url: str, params: Mapping[str, str], signature: str | None,
        *, report: Callable[[Mapping[str, str]], Awaitable[object]] | None = None,
        urgent: Callable[[str], bool] | None = None,
        aml: Callable[[Mapping[str, str]], Awaitable[object]] | None = None,
        conversation: Callable[[Mapping[str, str]], Awaitable[bool]] | None = None,
    ) -> WebhookVerdict:
        """Check and store one webhook request; every refusal is logged with its reason.

        With ``report`` given, every genuine message that is not an answer to
        a survey awaiting one from that number (``is_survey_answer``), and
        every answer that ``urgent`` finds alarming (major-incident keywords),
        is somebody writing to 110: it is handed over as ``report(params)`` — a
        text report — before its receipt is stored, so a
        crash in between ends in Twilio's retry, which the report's own key
        answers without a second ticket. Without ``report`` every reply from
        a surveyed number is taken as its answer.

        An AML message (``A"ML=…``, a handset's position sent with its
        emergency call) is recognised first, whoever sent it: it is handed to
        ``aml(params)`` and is never a survey answer nor a text report.

        Then ``conversation(params)`` (``core.quality.conversation``) takes a
        reply from a number the desk texted about a live ticket; what it takes
        is neither a survey answer nor a text report.
        """
        if not signature or not self._validator.validate(url, dict(params), signature):
            log.warning("SMS webhook: refused a request with a bad signature (MessageSid %r, From %r)",
                        params.get("MessageSid"), params.get("From"))
            return WebhookVerdict.FORGED
        sid, sender, body = params.get("MessageSid"), params.get("From"), params.get("Body", "")
        if not sid or not sender or len(sid) > 64:
            log.warning("SMS webhook: signed request without MessageSid/From refused")
            return WebhookVerdict.MALFORMED
        now = self._now_us()
        async with self._sessions() as session:
            if await session.get(WebhookReceipt, sid) is not None:
                log.warning("SMS webhook: refused a replay of MessageSid %s from %s", sid, sender)
                return WebhookVerdict.REPLAYED
        if looks_like_aml(body):
            if aml is None:
                log.warning("SMS webhook: AML message %s from %s, but no AML service here; kept as a receipt only",
                            sid, sender)
            else:
                await aml(params)  # kept there, good or refused; a failure answers 500 before the receipt
            return WebhookVerdict.AML if await self._receipt(sid, sender, now) else WebhookVerdict.REPLAYED
        if conversation is not None and await conversation(params):
            return WebhookVerdict.CONVERSATION if await self._receipt(sid, sender, now) else WebhookVerdict.REPLAYED
        number, seat = await self._match(sender, now)
        response = None
        answer = number is not None and (report is None or is_survey_answer(body))
        if report is not None and (not answer or (urgent is not None and urgent(body))):
            await report(params)
        if answer:
            assert number is not None
            ratings = parse_reply(body)
            day_match = _DAY.search(number)
            day = day_match.group(1) if day_match else datetime.fromtimestamp(now / 1e6, self._tz).strftime("%Y%m%d")
            response = SurveyResponse(
                ticket_number=number, message_sid=sid, day=day, seat=seat, station=None,
                intake_rating=ratings.intake, officer_rating=ratings.officer, complaint=ratings.complaint,
                body=body[:1600], received_at_us=now,
            )
        try:
            # The receipt and the answer commit together: a retry after a crash is not refused as a replay.
            async with self._sessions() as session, session.begin():
                session.add(WebhookReceipt(message_sid=sid, received_at_us=now))
                if response is not None:
                    session.add(response)
        except IntegrityError:
            log.warning("SMS webhook: refused a replay of MessageSid %s from %s", sid, sender)
            return WebhookVerdict.REPLAYED
        if response is None:
            if report is not None:
                return WebhookVerdict.REPORTED
            log.info("SMS webhook: reply %s from %s matches no open survey", sid, sender)
            return WebhookVerdict.UNMATCHED
        low = [r for r in (response.intake_rating, response.officer_rating) if r is not None and r <= UNSATISFIED_MAX]
        if response.complaint or low:
            await self._complaints.open(number, origin="survey", reason=f"短信回复：{body[:500]}", station=None)
        return WebhookVerdict.ACCEPTED

    async def _receipt(self, sid: str, sender: str, now: int) -> bool:
        """Keep the message's receipt; False when it was kept before (a replay: nothing more is done with it)."""
        try:
            async with self._sessions() as session, session.begin():
                session.add(WebhookReceipt(message_sid=sid, received_at_us=now))
        except IntegrityError:
            log.warning("SMS webhook: refused a replay of MessageSid %s from %s", sid, sender)
            return False
        return True

    async def _match(self, sender: str, now: int) -> tuple[str | None, str | None]:
        """The newest survey sent to ``sender`` that has no answer yet, and the seat that took the call."""
        since = now - SURVEY_WINDOW_S * 1_000_000
        answered = select(SurveyResponse.id).where(SurveyResponse.ticket_number == OutboxMessage.ticket_number)
        async with self._sessions() as session:
            number = await session.scalar(
                select(OutboxMessage.ticket_number)
                .where(OutboxMessage.kind == SURVEY_KIND, OutboxMessage.to == sender,
                       OutboxMessage.created_at_us >= since, ~answered.exists())
                .order_by(OutboxMessage.created_at_us.desc(), OutboxMessage.id.desc())
                .limit(1)
            )
            if number is None:
                return None, None
            return number, await session.scalar(select(Ticket.seat).where(Ticket.number == number))

    # -- rates ------------------------------------------------------------------------------

    async def rates(self, day_from: str, day_to: str, *, by: tuple[str, ...] = ("day",)) -> list[dict[str, Any]]:
        """Intake and dispatch satisfaction per group (any of day, station, seat), from day_from to day_to."""
        columns = {"day": SurveyResponse.day, "station": SurveyResponse.station, "seat": SurveyResponse.seat}
        if not by or any(b not in columns for b in by):
            raise ValueError("group by day, station and/or seat")
        keys = [columns[b] for b in by]

        def counts(column: Any) -> tuple[Any, Any]:
            return func.count(column), func.sum(case((column >= SATISFIED_MIN, 1), else_=0))

        query = (
            select(*keys, *counts(SurveyResponse.intake_rating), *counts(SurveyResponse.officer_rating),
                   func.count(), func.sum(case((SurveyResponse.complaint, 1), else_=0)))
            .where(SurveyResponse.day >= day_from, SurveyResponse.day <= day_to)
            .group_by(*keys)
            .order_by(*keys)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        result = []
        for row in rows:
            group = dict(zip(by, row[: len(by)], strict=True))
            intake_n, intake_ok, officer_n, officer_ok, responses, complaints = row[len(by):]
            result.append({
                **group,
                "responses": responses,
                "complaints": int(complaints or 0),
                "intake": _rate(intake_n, intake_ok),
                "dispatch": _rate(officer_n, officer_ok),
            })
        return result


def _rate(rated: int, satisfied: int | None) -> dict[str, Any]:
    satisfied = int(satisfied or 0)
    return {"rated": rated, "satisfied": satisfied, "rate": round(satisfied / rated, 4) if rated else None}

