"""Complaints and unsatisfied ratings: follow-ups for the local bureau, with a deadline and an alert when overdue.

A follow-up is answered once; the answer is what the caller is told, and is
also sent to the caller by SMS through the outbox when the caller's number is
known. A follow-up past its deadline raises one ``follow_up_overdue`` alert,
resolved by the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.alerts.board import Alert
from core.calls.tickets import iso_utc
from core.errors import DomainError
from core.quality.outbox import Outbox
from core.quality.tables import FollowUp
from core.tasks import every, stop_task

log = logging.getLogger(__name__)

ORIGINS = ("survey", "complaint")
OVERDUE = "follow_up_overdue"
_HOUR_US = 3_600_000_000


class UnknownFollowUp(DomainError, LookupError):
    status = 404
    error_id = "unknown-follow-up"


class AlreadyAnswered(DomainError):
    status = 409
    error_id = "already-answered"


@dataclass(frozen=True, slots=True)
class FollowUpView:
    id: int
    ticket_number: str
    origin: str
    reason: str
    station: str | None
    created_at_us: int
    deadline_us: int
    answer: str | None
    answered_by: str | None
    answered_at_us: int | None

    def state(self, now_us: int) -> str:
        if self.answered_at_us is not None:
            return "answered"
        return "overdue" if now_us > self.deadline_us else "open"

    def to_json(self, now_us: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "ticket": self.ticket_number,
            "origin": self.origin,
            "reason": self.reason,
            "station": self.station,
            "state": self.state(now_us),
            "created_at": iso_utc(self.created_at_us),
            "deadline": iso_utc(self.deadline_us),
            "answer": self.answer,
            "answered_by": self.answered_by,
            "answered_at": None if self.answered_at_us is None else iso_utc(self.answered_at_us),
        }

    @classmethod
    def of(cls, row: FollowUp) -> FollowUpView:
        return cls(row.id, row.ticket_number, row.origin, row.reason, row.station, row.created_at_us,
                   row.deadline_us, row.answer, row.answered_by, row.answered_at_us)


class Complaints:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        deadline_hours: int = 72,
        outbox: Outbox | None = None,
        check_interval_s: float = 300.0,
    ) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self.deadline_hours = deadline_hours
        self._outbox = outbox
        self._interval_s = check_interval_s
        self._task: asyncio.Task[None] | None = None

    def now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    async def open(
        self, ticket_number: str, *, origin: str, reason: str, station: str | None = None
    ) -> FollowUpView:
        """A new follow-up; a survey opens at most one per ticket (a repeated reply adds none)."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}")
        if not reason.strip():
            raise ValueError("a follow-up needs a reason")
        now = self.now_us()
        async with self._sessions() as session, session.begin():
            if origin == "survey":
                existing = await session.scalar(
                    select(FollowUp).where(FollowUp.ticket_number == ticket_number, FollowUp.origin == origin)
                )
                if existing is not None:
                    return FollowUpView.of(existing)
            row = FollowUp(ticket_number=ticket_number, origin=origin, reason=reason[:2000], station=station,
                           created_at_us=now, deadline_us=now + self.deadline_hours * _HOUR_US)
            session.add(row)
            await session.flush()
            return FollowUpView.of(row)

    async def get(self, follow_up_id: int) -> FollowUpView:
        async with self._sessions() as session:
            row = await session.get(FollowUp, follow_up_id)
            if row is None:
                raise UnknownFollowUp(f"no follow-up {follow_up_id}")
            return FollowUpView.of(row)

    async def list(self, *, state: str = "all", limit: int = 200) -> list[FollowUpView]:
        now = self.now_us()
        query = select(FollowUp).order_by(FollowUp.deadline_us).limit(limit)
        if state == "answered":
            query = query.where(FollowUp.answered_at_us.is_not(None))
        elif state == "open":
            query = query.where(FollowUp.answered_at_us.is_(None))
        elif state == "overdue":
            query = query.where(FollowUp.answered_at_us.is_(None), FollowUp.deadline_us < now)
        elif state != "all":
            raise ValueError("state must be all, open, overdue or answered")
        async with self._sessions() as session:
            return [FollowUpView.of(r) for r in await session.scalars(query)]

    async def answer(
        self, follow_up_id: int, *, answer: str, by: str, caller: str | None = None
    ) -> FollowUpView:
        """Record what the caller was told; resolves the overdue alert; texts the caller if ``caller`` is given."""
        if not answer.strip() or not by.strip():
            raise ValueError("answer and by must be non-empty")
        now = self.now_us()
        async with self._sessions() as session, session.begin():
            row = await session.get(FollowUp, follow_up_id)
            if row is None:
                raise UnknownFollowUp(f"no follow-up {follow_up_id}")
            if row.answered_at_us is not None:
                raise AlreadyAnswered(f"follow-up {follow_up_id} was answered already")
            row.answer, row.answered_by, row.answered_at_us = answer[:2000], by, now
            await session.execute(
                update(Alert).where(Alert.kind == OVERDUE, Alert.ref == str(follow_up_id),
                                    Alert.resolved_at_us.is_(None))
                .values(resolved_at_us=now, resolved_by=by[:64], resolution="the follow-up was answered")
            )
            view = FollowUpView.of(row)
        if caller and self._outbox is not None:
            await self._outbox.enqueue(key=f"answer:{follow_up_id}", kind="complaint_answer", to=caller,
                                       body=f"【110接警中心】关于警单{view.ticket_number}：{answer}",
                                       ticket_number=view.ticket_number)
        return view

    async def check_overdue(self) -> list[Alert]:
        """Raise one alert for each unanswered follow-up past its deadline; returns the new ones."""
        now = self.now_us()
        raised: list[Alert] = []
        async with self._sessions() as session:
            overdue = (
                await session.scalars(
                    select(FollowUp).where(FollowUp.answered_at_us.is_(None), FollowUp.deadline_us < now)
                )
            ).all()
            known = set(await session.scalars(select(Alert.ref).where(Alert.kind == OVERDUE)))
        for row in overdue:
            if str(row.id) in known:
                continue
            alert = Alert(kind=OVERDUE, ref=str(row.id), created_at_us=now,
                          message=f"follow-up {row.id} of ticket {row.ticket_number} ({row.station or 'no station'}) "
                                  f"passed its deadline {iso_utc(row.deadline_us)} unanswered")
            try:
                async with self._sessions() as session, session.begin():
                    session.add(alert)
            except IntegrityError:
                continue  # another process raised it first
            log.warning("%s", alert.message)
            raised.append(alert)
        return raised

    async def alerts(self, *, open_only: bool = True) -> list[Alert]:
        query = select(Alert).order_by(Alert.id)
        if open_only:
            query = query.where(Alert.resolved_at_us.is_(None))
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="follow-up-deadlines")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        await every(self._interval_s, self.check_overdue, what="overdue check", log=log)
