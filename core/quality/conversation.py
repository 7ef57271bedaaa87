"""A text conversation with a silent caller, bound to his ticket; and the desk's yes/no questions.

A caller who cannot speak may still read and type. From the desk the
call-taker texts him (``send``): the message goes through the outbox (stored
first, sent exactly once) to the ticket's number, and only to a plain phone
number (``core.calls.callback.callback_number``: nothing a carrier let
through as a caller id reaches the SMS provider otherwise). The ticket gets an
``sms_sent`` step with the text.

His replies come through the SMS webhook (``core.quality.survey``): a message
from a number the desk texted within ``window_s``, whose ticket is not closed,
is his answer, not a new text report (``receive``): it becomes an
``sms_received`` step on that ticket, which the desk shows live. The webhook's
retry of the same message (its MessageSid) adds nothing.

``ask`` records a yes/no question the call-taker asks aloud (``question_asked``);
the caller's keys after it are recorded with it (``core.calls.silent``).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from core.calls.callback import callback_number
from core.calls.lifecycle import State, Step, advance
from core.calls.numbering import looks_like_number
from core.calls.silent import QUESTION_MAX
from core.calls.tickets import Source, TicketService, TicketView, UnknownTicket
from core.errors import BadRequest
from core.quality.outbox import Outbox
from core.quality.tables import OutboxMessage
from core.triage.reports import clean_text

log = logging.getLogger(__name__)

__all__ = ["KIND", "SMS_MAX", "Conversations"]

KIND = "silent_sms"  # the outbox's kind of the desk's texts to a caller
SMS_MAX = 480  # three SMS segments of Chinese text
REPLY_MAX = 1600  # what Twilio delivers at most
# A national number texted (13800138000) and the reply's E.164 sender (+8613800138000) are the same phone:
# the shorter is the tail of the longer, and has at least this many digits.
TAIL_MIN = 7
_DIGITS = re.compile(r"\D")


def same_phone(a: str, b: str) -> bool:
    """Whether two phone numbers, as stored and as a provider writes them, name one phone."""
    da, db = _DIGITS.sub("", a), _DIGITS.sub("", b)
    if not da or not db:
        return False
    if da == db:
        return True
    (short, short_raw), (long_, _) = sorted(((da, a), (db, b)), key=lambda pair: len(pair[0]))
    # only a national number (no +) may stand for the tail of an international one
    return len(short) >= TAIL_MIN and not short_raw.strip().startswith("+") and long_.endswith(short)


def _text(value: Any, limit: int, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be text", error_id="invalid-body")
    text = clean_text(value).strip()
    if not text:
        raise BadRequest(f"{what} is empty", error_id="empty-text")
    if len(text) > limit:
        raise BadRequest(f"{what} is longer than {limit} characters", error_id="text-too-long",
                         details={"max": limit, "length": len(text)})
    return text


class Conversations:
    """The desk's questions and texts to a caller, and his SMS replies bound to the ticket."""

    def __init__(self, service: TicketService, outbox: Outbox, *, window_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.outbox = outbox
        self.window_s = window_s
        self.clock = clock
        self._sessions = async_sessionmaker(service.engine, expire_on_commit=False)

    async def _ticket(self, number: str) -> TicketView:
        ticket = await self.service.get(number) if looks_like_number(number) else None
        if ticket is None:
            raise UnknownTicket(f"no ticket {number[:64]!r}", details={"number": number[:64]})
        return ticket

    async def ask(self, number: str, text: Any, *, by: str) -> TicketView:
        """Record a yes/no question asked aloud; IllegalTransition unless the caller is on the line."""
        question = _text(text, QUESTION_MAX, "the question")
        ticket = await self._ticket(number)
        return await self.service.record_step(ticket.uniqueid, Step.QUESTION_ASKED, at=self.clock(),
                                              source=Source.API, by=by, text=question)

    async def send(self, number: str, text: Any, *, by: str) -> dict[str, Any]:
        """Text the ticket's caller through the outbox; the ``sms_sent`` step names the message.

        Refusals: UnknownTicket, IllegalTransition (before the answer, or closed), NoCallbackNumber, BadRequest.
        """
        body = _text(text, SMS_MAX, "the message")
        ticket = await self._ticket(number)
        advance(ticket.state, Step.SMS_SENT)  # refused before anything is stored or sent
        to = callback_number(number, ticket.caller_id)
        key = f"{KIND}:{number}:{secrets.token_hex(8)}"
        message = await self.outbox.enqueue(key=key, kind=KIND, to=to, body=body, ticket_number=number)
        await self.service.record_step(ticket.uniqueid, Step.SMS_SENT, at=self.clock(), source=Source.API, by=by,
                                       to=to, text=body, message=message.key, tag=message.tag)
        return {"number": number, "to": to, "message": message.key, "state": message.state}

    async def receive(self, params: Mapping[str, str]) -> bool:
        """An SMS from the webhook: True if it is a reply in a conversation (recorded on its ticket)."""
        sender, sid = params.get("From") or "", params.get("MessageSid") or ""
        if not sender or not sid:
            return False
        since_us = round((self.clock() - self.window_s) * 1_000_000)
        async with self._sessions() as session:
            rows = (await session.execute(
                select(OutboxMessage.to, OutboxMessage.ticket_number)
                .where(OutboxMessage.kind == KIND, OutboxMessage.created_at_us >= since_us)
                .order_by(OutboxMessage.created_at_us.desc(), OutboxMessage.id.desc())
            )).all()
        for to, number in rows:
            if not number or not same_phone(to, sender):
                continue
            ticket = await self.service.get(number)
            if ticket is None or ticket.state is State.CLOSED:
                continue
            if any(s.step is Step.SMS_RECEIVED and s.detail.get("sid") == sid for s in ticket.steps):
                return True  # the webhook's retry: recorded already
            text = clean_text(params.get("Body", ""))[:REPLY_MAX] or "（空短信 empty message）"
            await self.service.record_step(ticket.uniqueid, Step.SMS_RECEIVED, at=self.clock(), source=Source.SMS,
                                           sender=sender, text=text, sid=sid)
            log.info("SMS %s from %s bound to %s (silent-call conversation)", sid, sender, number)
            return True
        return False
