"""Ticket pushes: the ticket handed to another desk's system (anti-fraud center, 12345 hotline) over HTTP.

A push is a row before it is a request, so an outage of the other side loses
nothing: ``enqueue`` stores it and wakes the worker, one owned task, which
POSTs the JSON and retries with growing pauses until the other side takes
it. Delivery is at least once; every attempt carries the same
``Idempotency-Key`` (the push's id and ticket number) so the receiver can
drop a repeat. A 4xx answer other than 408/429 means the payload is refused
as it is, and retrying would not change that: the push is marked failed and
the operations log says why. The ticket keeps the trace: its pushes and
their states are read back with ``for_ticket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.store import TEXT_MAX, Base, _Id
from core.tasks import stop_task

__all__ = ["PushFailed", "PushRow", "Poster", "TicketPusher"]

log = logging.getLogger(__name__)

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
MAX_ATTEMPTS = 30
BACKOFF_MAX_S = 60.0
URL_MAX = 1000


class PushRow(Base):
    __tablename__ = "ticket_pushes"
    __table_args__ = (Index("ix_ticket_pushes_state_next", "state", "next_at_us"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(URL_MAX))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at_us: Mapped[int] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    sent_at_us: Mapped[int | None] = mapped_column(BigInteger)
    answer: Mapped[str | None] = mapped_column(String(TEXT_MAX))  # the receiver's reference, if it gave one


class PushFailed(Exception):
    """The receiver did not take the push; ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Poster(Protocol):
    """Sends one JSON document; returns the receiver's reference (or "") or raises ``PushFailed``."""

    async def post(self, url: str, payload: dict[str, Any], *, idempotency_key: str) -> str: ...


@dataclass(frozen=True, slots=True)
class PushView:
    id: int
    number: str
    target: str
    state: str
    attempts: int
    last_error: str | None
    created_at_us: int
    sent_at_us: int | None
    answer: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "target": self.target, "state": self.state, "attempts": self.attempts,
            "last_error": self.last_error, "created_at_us": self.created_at_us, "sent_at_us": self.sent_at_us,
            "answer": self.answer,
        }


def _view(row: PushRow) -> PushView:
    return PushView(row.id, row.number, row.target, row.state, row.attempts, row.last_error, row.created_at_us,
                    row.sent_at_us, row.answer)


class TicketPusher:
    """Stores pushes and delivers them from one owned task."""

    def __init__(
        self, engine: AsyncEngine, poster: Poster | None, *, clock: Callable[[], float] = time.time,
        backoff_s: float = 1.0, max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._poster = poster
        self._clock = clock
        self._backoff_s = backoff_s
        self._max_attempts = max_attempts
        self._wake = asyncio.Event()
        # One delivery round at a time: a round started by hand (a retry from
        # the API, a test) must not post the rows the worker is posting.
        self._round = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    async def start(self) -> None:
        if self._poster is None:
            log.info("no poster configured: ticket pushes are stored, not sent")
            return
        self._task = asyncio.create_task(self._run(), name="ticket-pushes")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        close = getattr(self._poster, "close", None)
        if close is not None:
            await close()  # the HTTP poster's client session

    async def enqueue(self, number: str, target: str, url: str, payload: dict[str, Any]) -> int:
        # Fail here, with the cause, rather than in the worker.
        json.dumps(payload, allow_nan=False)
        now = self._now_us()
        async with self._sessions() as session, session.begin():
            row = PushRow(number=number, target=target, url=url[:URL_MAX], payload=payload, state=PENDING,
                          attempts=0, next_at_us=now, created_at_us=now)
            session.add(row)
            await session.flush()
            push_id = row.id
        self._wake.set()
        return push_id

    async def for_ticket(self, number: str) -> list[PushView]:
        async with self._sessions() as session:
            rows = await session.scalars(select(PushRow).where(PushRow.number == number).order_by(PushRow.id))
            return [_view(r) for r in rows]

    async def deliver_due(self) -> int:
        """Try every push that is due once; returns how many were tried (the worker's one round)."""
        assert self._poster is not None
        async with self._round:
            now = self._now_us()
            async with self._sessions() as session:
                due = list(await session.scalars(
                    select(PushRow).where(PushRow.state == PENDING, PushRow.next_at_us <= now).order_by(PushRow.id)
                    .limit(100)
                ))
            for row in due:
                await self._attempt(row)
            return len(due)

    async def _attempt(self, row: PushRow) -> None:
        assert self._poster is not None
        key = f"jiejing-push-{row.id}-{row.number}"
        error: str | None = None
        permanent = False
        answer = ""
        try:
            answer = await self._poster.post(row.url, row.payload, idempotency_key=key)
        except PushFailed as exc:
            error, permanent = str(exc), exc.permanent
        except Exception as exc:  # noqa: BLE001 - any failure of the other side is retried
            error = f"{type(exc).__name__}: {exc}"
        attempts = row.attempts + 1
        async with self._sessions() as session, session.begin():
            stored = await session.get(PushRow, row.id)
            if stored is None:
                return
            stored.attempts = attempts
            if error is None:
                stored.state, stored.sent_at_us, stored.answer = SENT, self._now_us(), (answer or None)
                stored.last_error = None
                log.info("ticket %s pushed to %s", row.number, row.target)
                return
            stored.last_error = error[:2000]
            if permanent or attempts >= self._max_attempts:
                stored.state = FAILED
                log.error("ticket %s push to %s failed for good after %d attempts: %s", row.number, row.target,
                          attempts, error)
            else:
                pause = min(BACKOFF_MAX_S, self._backoff_s * 2 ** (attempts - 1))
                stored.next_at_us = self._now_us() + round(pause * 1_000_000)
                log.warning("ticket %s push to %s failed (attempt %d), retrying in %.0f s: %s", row.number,
                            row.target, attempts, pause, error)

    async def _next_due_in(self) -> float | None:
        async with self._sessions() as session:
            at = await session.scalar(
                select(PushRow.next_at_us).where(PushRow.state == PENDING).order_by(PushRow.next_at_us).limit(1)
            )
        return None if at is None else max(0.0, (at - self._now_us()) / 1_000_000)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
                wait = await self._next_due_in()
            except Exception:
                log.exception("ticket push round failed; trying again shortly")
                wait = self._backoff_s
            if wait is not None and wait <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait if wait is not None else 30.0)
