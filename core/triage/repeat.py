"""Repeat callers and known prank numbers: flags for the call-taker, never a reason not to answer.

A caller who rings again within ``window_s`` (10 minutes) of an earlier call
that is not closed is most often calling about the same thing — to ask where
the car is, or because the line dropped. The new ticket gets a
``repeat_linked`` step pointing at the earlier one and a row in
``ticket_links``, so the call-taker sees the open ticket at once. Anonymous
and withheld numbers are never linked: they all look alike.

A number on the prank list is flagged on its tickets, and nothing else: the
call is queued and answered like any other, since the one real emergency
from a known prank number must not wait.

``on_step`` is a ``TicketService`` listener (synchronous: it only queues the
new ticket's number); one owned task does the look-up and writes the step.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import IllegalTransition, State, Step
from core.calls.tables import Ticket
from core.calls.tickets import Source, StepView, TicketService, TicketView, iso_utc
from core.store import TEXT_MAX, Base
from core.tasks import WORK_MAX, Overflow, stop_task

__all__ = ["PHONE", "PrankNumber", "RepeatCallers", "TicketLinkRow", "PrankNumberRow", "normalise_phone"]

log = logging.getLogger(__name__)

WINDOW_S = 600.0
PHONE_MAX = 32
REASON_MAX = 500
PHONE = re.compile(r"\+?[0-9]{3,20}")  # a phone number as the API takes it

# Repeat look-ups go by caller and time; the tickets table has no such index of its own.
TICKETS_CALLER_INDEX = Index("ix_tickets_caller_created", Ticket.caller_id, Ticket.created_at_us)


class TicketLinkRow(Base):
    """A ticket opened by a caller who rang about an earlier, still open, ticket."""

    __tablename__ = "ticket_links"

    number: Mapped[str] = mapped_column(ForeignKey(Ticket.number), primary_key=True)
    linked_to: Mapped[str] = mapped_column(String(32), index=True)
    linked_at_us: Mapped[int] = mapped_column(BigInteger)


class PrankNumberRow(Base):
    __tablename__ = "prank_numbers"

    phone: Mapped[str] = mapped_column(String(PHONE_MAX), primary_key=True)
    reason: Mapped[str] = mapped_column(String(REASON_MAX))
    added_by: Mapped[str] = mapped_column(String(TEXT_MAX))
    added_at_us: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True, slots=True)
class PrankNumber:
    phone: str
    reason: str
    added_by: str
    added_at_us: int

    def to_json(self) -> dict[str, Any]:
        return {"phone": self.phone, "reason": self.reason, "added_by": self.added_by,
                "added_at": iso_utc(self.added_at_us), "added_at_us": self.added_at_us}


def normalise_phone(phone: str) -> str:
    """Digits with an optional leading +; ``ValueError`` for anything that is not a phone number."""
    if not isinstance(phone, str):
        raise ValueError("phone must be a string")
    compact = re.sub(r"[\s().-]", "", phone)
    if not PHONE.fullmatch(compact):
        raise ValueError(f"not a phone number: {phone!r}")
    return compact


def _linkable(caller_id: str) -> bool:
    # Withheld, "anonymous", "unknown" or empty caller ids would link strangers.
    return bool(caller_id) and PHONE.fullmatch(caller_id) is not None


class RepeatCallers:
    """Links repeat calls to the caller's open ticket; keeps the prank list."""

    def __init__(
        self, tickets: TicketService, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.time,
        publish: Callable[[dict[str, Any], str | None], object] | None = None,
    ) -> None:
        self._tickets = tickets
        self._sessions = async_sessionmaker(tickets.engine, expire_on_commit=False)
        self._window_us = round(window_s * 1_000_000)
        self._clock = clock
        self._publish = publish
        self._pending: asyncio.Queue[str] = asyncio.Queue(WORK_MAX)
        self.overflow = Overflow("repeat-caller checks", self._pending, log=log)
        self._task: asyncio.Task[None] | None = None

    # -- the listener and its worker -------------------------------------------

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        """``TicketService`` listener: queue each new ticket for the look-up (bounded: see ``repair``)."""
        if step.step is Step.RECEIVED:
            self.overflow.put(ticket.number, ticket.created_at_us)

    def health(self) -> dict[str, Any]:
        return self.overflow.health()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="repeat-callers")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def flush(self) -> None:
        await self._pending.join()

    async def _run(self) -> None:
        while True:
            number = await self._pending.get()
            try:
                await self.check(number)
            except Exception:
                log.exception("repeat-caller check of %s failed", number)
            finally:
                self._pending.task_done()
            await self.overflow.after_item(self.repair)

    async def repair(self, since_us: int) -> int:
        """Check every ticket received since ``since_us`` (the queue was full then); a linked one is left as is."""
        async with self._sessions() as session:
            numbers = list(await session.scalars(
                select(Ticket.number).where(Ticket.created_at_us >= since_us).order_by(Ticket.created_at_us)))
        for number in numbers:
            await self.check(number)
        return len(numbers)

    async def check(self, number: str) -> str | None:
        """Link ``number`` to the caller's open ticket of the last ``window_s``; returns the earlier number."""
        ticket = await self._tickets.get(number)
        if ticket is None or not _linkable(ticket.caller_id):
            return None
        prank = await self.is_prank(ticket.caller_id)
        async with self._sessions() as session:
            if await session.get(TicketLinkRow, number) is not None:
                return None  # already linked (a restart re-queued it)
            earlier = await session.scalar(
                select(Ticket.number)
                .where(
                    Ticket.caller_id == ticket.caller_id,
                    Ticket.created_at_us >= ticket.created_at_us - self._window_us,
                    Ticket.created_at_us <= ticket.created_at_us,
                    Ticket.number != number,
                    Ticket.state != State.CLOSED.value,
                )
                .order_by(Ticket.created_at_us.desc(), Ticket.id.desc())
                .limit(1)
            )
        if earlier is None:
            if prank:
                self._flag(ticket, None, prank=True)
            return None
        try:
            await self._tickets.record_step(ticket.uniqueid, Step.REPEAT_LINKED, at=self._clock(), source=Source.API,
                                            to=earlier, prank=prank)
        except IllegalTransition:
            return None  # closed meanwhile: nothing to tell a call-taker any more
        async with self._sessions() as session, session.begin():
            if await session.get(TicketLinkRow, number) is None:
                session.add(TicketLinkRow(number=number, linked_to=earlier,
                                          linked_at_us=round(self._clock() * 1_000_000)))
        self._flag(ticket, earlier, prank=prank)
        return earlier

    def _flag(self, ticket: TicketView, earlier: str | None, *, prank: bool) -> None:
        if self._publish is None:
            return
        try:
            self._publish({"type": "flag", "number": ticket.number, "caller_id": ticket.caller_id,
                           "repeat_of": earlier, "prank": prank}, None)
        except Exception:
            log.exception("%s: the repeat/prank flag could not be published", ticket.number)

    # -- reads -----------------------------------------------------------------

    async def flags(self, tickets: Iterable[TicketView]) -> dict[str, dict[str, Any]]:
        """``{number: {"repeat_of": earlier or None, "prank": bool}}`` for the ticket JSON."""
        tickets = list(tickets)
        numbers = [t.number for t in tickets]
        phones = sorted({t.caller_id for t in tickets if _linkable(t.caller_id)})
        links: dict[str, str] = {}
        pranks: set[str] = set()
        async with self._sessions() as session:
            for start in range(0, len(numbers), 500):
                rows = await session.execute(select(TicketLinkRow.number, TicketLinkRow.linked_to)
                                             .where(TicketLinkRow.number.in_(numbers[start : start + 500])))
                links.update({n: t for n, t in rows})
            for start in range(0, len(phones), 500):
                pranks.update(await session.scalars(select(PrankNumberRow.phone)
                                                    .where(PrankNumberRow.phone.in_(phones[start : start + 500]))))
        return {t.number: {"repeat_of": links.get(t.number), "prank": t.caller_id in pranks} for t in tickets}

    # -- the prank list --------------------------------------------------------

    async def is_prank(self, phone: str) -> bool:
        async with self._sessions() as session:
            return await session.get(PrankNumberRow, phone) is not None

    async def add_prank(self, phone: str, *, reason: str, by: str) -> PrankNumber:
        phone = normalise_phone(phone)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX:
            raise ValueError(f"reason must be a non-empty string of at most {REASON_MAX} characters")
        async with self._sessions() as session, session.begin():
            row = await session.get(PrankNumberRow, phone)
            if row is None:
                row = PrankNumberRow(phone=phone)
                session.add(row)
            row.reason, row.added_by, row.added_at_us = reason, by[:TEXT_MAX], round(self._clock() * 1_000_000)
            return PrankNumber(row.phone, row.reason, row.added_by, row.added_at_us)

    async def remove_prank(self, phone: str) -> bool:
        phone = normalise_phone(phone)
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(PrankNumberRow).where(PrankNumberRow.phone == phone))
            return bool(result.rowcount)

    async def prank_numbers(self) -> list[PrankNumber]:
        async with self._sessions() as session:
            rows = await session.scalars(select(PrankNumberRow).order_by(PrankNumberRow.phone))
            return [PrankNumber(r.phone, r.reason, r.added_by, r.added_at_us) for r in rows]
