"""Call-taker seats: log-in, pauses with reasons, wrap-up after each call, and the state of every seat.

A seat is one position in the room (its member name in the queue, e.g.
``seat-05``). Its state follows two sources: what the call-taker does in the
web (log in or out, pause, unpause) and what the calls do (a seat rings,
answers, the call ends), read from ticket steps. After a call ends the seat
is in wrap-up for a configured time, paused in the queue so no call rings
while the call-taker finishes the ticket, then available again by itself.
In a surge (``core.seats.posture``) wrap-up is suspended: seats in wrap-up
are released at once and a seat whose call ends is available straight away.

Queue membership follows through a ``QueuePort``: the telephony side
implements it with AMI QueueAdd/QueueRemove/QueuePause
(``telephony.seat_control``). A port error leaves the seat as it was, so the
board never shows a state the queue does not have.

Pauses are stored with their reason and start and end, so their durations
can be reported. The live state is held in memory: after a restart seats
reappear as their calls ring, or when their call-takers log in again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import BigInteger, Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import Step
from core.calls.tickets import StepView, TicketView
from core.errors import DomainError
from core.store import Base

__all__ = ["NoQueue", "QueuePort", "SeatBoard", "SeatState", "SeatView", "UnknownSeat", "WrongSeatState"]

log = logging.getLogger(__name__)

SEAT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REASON_MAX = 100
DEFAULT_WRAP_UP_S = 10.0
WRAP_UP_REASON = "wrap-up"


class SeatState(StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


class UnknownSeat(DomainError, LookupError):
    status = 404
    error_id = "unknown-seat"


class WrongSeatState(DomainError):
    """The seat is not in a state that allows what was asked (e.g. pausing a logged-out seat)."""

    status = 409
    error_id = "wrong-seat-state"


class QueueControlError(DomainError):
    """The queue refused or did not confirm a membership change."""

    status = 503
    error_id = "queue-not-confirmed"


class QueuePort(Protocol):
    """Queue membership of seats; ``interface`` is the seat's channel, e.g. ``PJSIP/seat-05``."""

    async def add(self, interface: str, member_name: str) -> None: ...

    async def remove(self, interface: str) -> None: ...

    async def pause(self, interface: str, reason: str) -> None: ...

    async def unpause(self, interface: str) -> None: ...


class NoQueue:
    """A port that changes nothing: for a backend without AMI, and for tests."""

    async def add(self, interface: str, member_name: str) -> None:
        return None

    async def remove(self, interface: str) -> None:
        return None

    async def pause(self, interface: str, reason: str) -> None:
        return None

    async def unpause(self, interface: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member of the seats' queue as Asterisk reports it (AMI ``QueueStatus``)."""

    seat: str
    paused: bool = False
    reason: str | None = None  # of the pause
    in_call: bool = False  # on a call (InCall, or the device in use, busy or on hold)
    ringing: bool = False  # the device rings


class SeatPauseRow(Base):
    __tablename__ = "seat_pauses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seat: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(REASON_MAX))
    by: Mapped[str | None] = mapped_column(String(64))
    started_at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    ended_at_us: Mapped[int | None] = mapped_column(BigInteger)


@dataclass(frozen=True, slots=True)
class SeatView:
    seat: str
    state: SeatState
    since_us: int
    operator: str | None = None  # who is logged in
    reason: str | None = None  # of the pause
    ticket: str | None = None  # the call it rings for or is on

    def to_json(self) -> dict[str, Any]:
        return {"seat": self.seat, "state": str(self.state), "since_us": self.since_us, "operator": self.operator,
                "reason": self.reason, "ticket": self.ticket}


def check_seat(seat: Any) -> str:
    if not isinstance(seat, str) or not SEAT_ID.fullmatch(seat):
        raise UnknownSeat(f"not a seat name: {seat!r}")
    return seat


class SeatBoard:
    """The state of every seat; tells listeners of each change."""

    def __init__(
        self,
        engine: AsyncEngine,
        queue: QueuePort | None = None,
        *,
        wrap_up_s: float = DEFAULT_WRAP_UP_S,
        interface_of: Callable[[str], str] = lambda seat: f"PJSIP/{seat}",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not wrap_up_s >= 0:
            raise ValueError("wrap-up time must be zero or more seconds")
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._queue: QueuePort = queue if queue is not None else NoQueue()
        self.wrap_up_s = wrap_up_s
        self._interface_of = interface_of
        self._clock = clock
        self._seats: dict[str, SeatView] = {}
        self._wrap_ups: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[Callable[[SeatView], object]] = []
        self.wrap_up_suspended = False

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    def add_listener(self, listener: Callable[[SeatView], object]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _set(self, view: SeatView) -> SeatView:
        self._seats[view.seat] = view
        for listener in tuple(self._listeners):
            try:
                listener(view)
            except Exception:
                log.exception("seat listener %r failed", listener)
        return view

    def _lock(self, seat: str) -> asyncio.Lock:
        return self._locks.setdefault(seat, asyncio.Lock())

    # -- reads -------------------------------------------------------------------

    def seats(self) -> list[SeatView]:
        return [self._seats[s] for s in sorted(self._seats)]

    def get(self, seat: str) -> SeatView:
        return self._seats.get(seat) or SeatView(check_seat(seat), SeatState.LOGGED_OUT, 0)

    def by_state(self) -> dict[str, int]:
        counts = {str(s): 0 for s in SeatState}
        for view in self._seats.values():
            counts[str(view.state)] += 1
        return counts

    async def pauses(self, seat: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """The seat's pauses, newest first, with reason and duration (ongoing ones up to now)."""
        check_seat(seat)
        now_us = self._now_us()
        async with self._sessions() as session:
            rows = await session.scalars(
                select(SeatPauseRow).where(SeatPauseRow.seat == seat).order_by(SeatPauseRow.id.desc()).limit(limit)
            )
            return [
                {"reason": r.reason, "by": r.by, "started_at_us": r.started_at_us, "ended_at_us": r.ended_at_us,
                 "duration_s": round(((r.ended_at_us or now_us) - r.started_at_us) / 1e6, 3),
                 "ongoing": r.ended_at_us is None}
                for r in rows
            ]

    # -- what the call-taker does -----------------------------------------------

    async def login(self, seat: str, operator: str) -> SeatView:
        """Join the queue; a seat Asterisk has in its queue with nobody holding it here is claimed as it is."""
        check_seat(seat)
        async with self._lock(seat):
            current = self.get(seat)
            if current.state is not SeatState.LOGGED_OUT and current.operator is not None:
                raise WrongSeatState(f"seat {seat} is already logged in ({current.state})")
            await self._queue.add(self._interface_of(seat), seat)
            if current.state is SeatState.LOGGED_OUT:
                return self._set(SeatView(seat, SeatState.AVAILABLE, self._now_us(), operator=operator))
            return self._set(replace(current, operator=operator))

    # -- what Asterisk says --------------------------------------------------------

    async def reconcile(self, members: list[MemberStatus]) -> dict[str, int]:
        """Make the board what Asterisk's queue is, after a restart of either side or a lost connection.

        A seat not in the queue is logged out; a member is on a call, ringing, in wrap-up (paused for
        it: the wrap-up starts again, its timer was lost), paused with its reason, or available. Who
        holds a seat stays as this board knew it (nobody, after a restart of the backend), and so does
        the ticket of a call the board already followed. Returns the count of seats whose state changed.
        """
        now = self._now_us()
        by_seat = {m.seat: m for m in members}
        changed = 0
        for seat in sorted(set(by_seat) | set(self._seats)):
            async with self._lock(seat):
                current = self.get(seat)
                member = by_seat.get(seat)
                if member is None:
                    wanted, reason = SeatState.LOGGED_OUT, None
                elif member.in_call:
                    wanted, reason = SeatState.ON_CALL, None
                elif member.ringing:
                    wanted, reason = SeatState.RINGING, None
                elif member.paused and member.reason == WRAP_UP_REASON:
                    wanted, reason = SeatState.WRAP_UP, None
                elif member.paused:
                    wanted, reason = SeatState.PAUSED, member.reason
                else:
                    wanted, reason = SeatState.AVAILABLE, None
                if current.state is wanted and current.reason == reason and (seat in self._seats or member is None):
                    continue
                keep_ticket = wanted in (SeatState.ON_CALL, SeatState.RINGING) and current.state is wanted
                view = SeatView(seat, wanted, now, None if wanted is SeatState.LOGGED_OUT else current.operator,
                                reason, current.ticket if keep_ticket else None)
                if wanted is SeatState.WRAP_UP:
                    self._start_wrap_up(view, paused=True)
                else:
                    self._cancel_wrap_up(seat)
                    self._set(view)
                changed += 1
        return {"members": len(by_seat), "changed": changed}

    def on_member_pause(self, member: MemberStatus) -> None:
        """A pause or unpause Asterisk reports (AMI ``QueueMemberPause``), this board's own or anyone's.

        A pause with another reason than wrap-up (a supervisor at the console, a tool) pauses the seat
        here too and ends a wrap-up, whose timer would otherwise unpause it; an unpause ends a pause.
        The board's own wrap-up is left to its timer, and a seat ringing or on a call stays so.
        """
        current = self._seats.get(member.seat)
        if current is None or current.state in (SeatState.LOGGED_OUT, SeatState.RINGING, SeatState.ON_CALL):
            return
        if member.paused:
            if member.reason == WRAP_UP_REASON or (current.state is SeatState.PAUSED
                                                   and current.reason == member.reason):
                return
            self._cancel_wrap_up(member.seat)
            self._set(replace(current, state=SeatState.PAUSED, since_us=self._now_us(), reason=member.reason))
        elif current.state is SeatState.PAUSED:
            self._set(replace(current, state=SeatState.AVAILABLE, since_us=self._now_us(), reason=None))

    async def logout(self, seat: str) -> SeatView:
        check_seat(seat)
        async with self._lock(seat):
            current = self.get(seat)
            if current.state is SeatState.LOGGED_OUT:
                raise WrongSeatState(f"seat {seat} is not logged in")
            if current.state in (SeatState.RINGING, SeatState.ON_CALL):
                raise WrongSeatState(f"seat {seat} is {current.state}; log out after the call")
            await self._queue.remove(self._interface_of(seat))
            self._cancel_wrap_up(seat)
            await self._end_pause(seat)
            return self._set(SeatView(seat, SeatState.LOGGED_OUT, self._now_us()))

    async def pause(self, seat: str, reason: str, *, by: str | None = None) -> SeatView:
        check_seat(seat)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX:
            raise ValueError(f"a pause needs a reason of 1-{REASON_MAX} characters")
        async with self._lock(seat):
            current = self.get(seat)
            if current.state not in (SeatState.AVAILABLE, SeatState.WRAP_UP):
                raise WrongSeatState(f"seat {seat} is {current.state}; only an available seat or one in wrap-up pauses")
            await self._queue.pause(self._interface_of(seat), reason)
            self._cancel_wrap_up(seat)
            now_us = self._now_us()
            async with self._sessions.begin() as session:
                session.add(SeatPauseRow(seat=seat, reason=reason, by=by, started_at_us=now_us))
            return self._set(replace(current, state=SeatState.PAUSED, since_us=now_us, reason=reason, ticket=None))

    async def unpause(self, seat: str) -> SeatView:
        check_seat(seat)
        async with self._lock(seat):
            current = self.get(seat)
            # Unpausing in wrap-up ends it early: the call-taker is ready sooner.
            if current.state not in (SeatState.PAUSED, SeatState.WRAP_UP):
                raise WrongSeatState(f"seat {seat} is not paused")
            await self._queue.unpause(self._interface_of(seat))
            self._cancel_wrap_up(seat)
            await self._end_pause(seat)
            return self._set(replace(current, state=SeatState.AVAILABLE, since_us=self._now_us(), reason=None))

    async def _end_pause(self, seat: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(SeatPauseRow)
                .where(SeatPauseRow.seat == seat, SeatPauseRow.ended_at_us.is_(None))
                .values(ended_at_us=self._now_us())
            )

    # -- what the calls do ---------------------------------------------------------

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        """Ticket listener (``TicketService.add_listener``): seats ring, answer, hang up."""
        if step.step is Step.HUNG_UP:
            seat = ticket.seat
        elif step.step is Step.CLOSED:  # a call-back still on a seat when its ticket is closed
            seat = next((v.seat for v in self._seats.values()
                         if v.state is SeatState.ON_CALL and v.ticket == ticket.number), None)
        else:
            seat = step.detail.get("seat")
        if not isinstance(seat, str) or not SEAT_ID.fullmatch(seat):
            return
        current = self._seats.get(seat)
        at_us = step.at_us
        if step.step is Step.SEAT_RINGING:
            if current is None or current.state in (SeatState.AVAILABLE, SeatState.LOGGED_OUT):
                self._set(SeatView(seat, SeatState.RINGING, at_us, current and current.operator, None, ticket.number))
        elif step.step is Step.SEAT_NO_ANSWER:
            if current is not None and current.state is SeatState.RINGING and current.ticket == ticket.number:
                self._set(replace(current, state=SeatState.AVAILABLE, since_us=at_us, ticket=None))
        elif step.step in (Step.ANSWERED, Step.AUTO_CALLBACK_CONNECTED):  # a called-back caller is a call too
            self._cancel_wrap_up(seat)
            operator = current.operator if current is not None else None
            self._set(SeatView(seat, SeatState.ON_CALL, at_us, operator, None, ticket.number))
        elif step.step is Step.HUNG_UP:
            if current is not None and current.state is SeatState.ON_CALL and current.ticket == ticket.number:
                self._start_wrap_up(replace(current, state=SeatState.WRAP_UP, since_us=at_us))
        # A call-back is a call of the seat's own: on the seat from the request (its phone rings at once)
        # until it fails or ends; a ticket closed meanwhile ends it on the board (the phones are Asterisk's).
        elif step.step is Step.CALLBACK_REQUESTED:
            if current is not None and current.state in (SeatState.AVAILABLE, SeatState.WRAP_UP):
                self._cancel_wrap_up(seat)
                self._set(replace(current, state=SeatState.ON_CALL, since_us=at_us, reason=None,
                                  ticket=ticket.number))
        elif step.step in (Step.CALLBACK_FAILED, Step.CALLBACK_ENDED, Step.AUTO_CALLBACK_ENDED, Step.CLOSED):
            if current is not None and current.state is SeatState.ON_CALL and current.ticket == ticket.number:
                self._start_wrap_up(replace(current, state=SeatState.WRAP_UP, since_us=at_us))

    async def suspend_wrap_up(self, on: bool) -> int:
        """Suspend wrap-up (``on``): every seat in wrap-up is released now, and the next calls end on an available
        seat; or resume it for the calls that end from now. Returns the count of seats released."""
        self.wrap_up_suspended = on
        if not on:
            return 0
        released = 0
        for seat in [v.seat for v in self._seats.values() if v.state is SeatState.WRAP_UP]:
            async with self._lock(seat):
                current = self._seats.get(seat)
                if current is None or current.state is not SeatState.WRAP_UP:
                    continue
                self._cancel_wrap_up(seat)
                try:
                    await self._queue.unpause(self._interface_of(seat))
                except Exception:
                    log.exception("seat %s: could not unpause to end its wrap-up", seat)
                    self._start_wrap_up(current, paused=True)  # its task tries the unpause again
                    continue
                self._set(replace(current, state=SeatState.AVAILABLE, since_us=self._now_us(), ticket=None))
                released += 1
        log.info("wrap-up suspended: %d seats released", released)
        return released

    def _start_wrap_up(self, view: SeatView, *, paused: bool = False) -> None:
        """``paused``: the queue has the member paused for wrap-up already (found so after a restart)."""
        self._cancel_wrap_up(view.seat)
        if self.wrap_up_suspended and not paused:
            self._set(replace(view, state=SeatState.AVAILABLE, ticket=None))
            return
        self._set(view)
        self._wrap_ups[view.seat] = asyncio.get_running_loop().create_task(
            self._wrap_up(view), name=f"wrap-up {view.seat}"
        )

    async def _wrap_up(self, view: SeatView) -> None:
        interface = self._interface_of(view.seat)
        if not self.wrap_up_suspended:
            try:
                await self._queue.pause(interface, WRAP_UP_REASON)
            except Exception:
                log.exception("seat %s: could not pause for wrap-up; the next call may ring at once", view.seat)
            await asyncio.sleep(self.wrap_up_s)
        async with self._lock(view.seat):
            current = self._seats.get(view.seat)
            if current is None or current.state is not SeatState.WRAP_UP:
                return
            # From here the task is finishing; a cancel would only interrupt the unpause.
            self._wrap_ups.pop(view.seat, None)
            try:
                await self._queue.unpause(interface)
            except Exception:
                log.exception("seat %s: could not unpause after wrap-up", view.seat)
                return
            self._set(replace(current, state=SeatState.AVAILABLE, since_us=self._now_us(), ticket=None))

    def _cancel_wrap_up(self, seat: str) -> None:
        task = self._wrap_ups.pop(seat, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._wrap_ups.values())
        self._wrap_ups.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
