"""The ticket service: the one way tickets are opened, advanced, closed and read.

The telephony side calls it from the FastAGI intake route (``open_call``) and
from the AMI event adapter (``record_step``), both keyed by the caller
channel's Asterisk uniqueid; the web API reads and closes tickets by number.
Each write is one short transaction, serialised by one lock: SQLite has a
single writer, and the lock keeps "database is locked" out of the call path.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from core.lifecycle import CALL_LIVE_STATES, IllegalTransition, State, Step, advance
from core.numbering import TicketNumbering
from core.recordings import RecordingInfo, inspect_recording
from core.store import TEXT_MAX, UNIQUEID_MAX, Recording, Ticket, TicketStep

__all__ = [
    "IllegalTransition",
    "RecordingView",
    "Source",
    "StepView",
    "TicketService",
    "TicketView",
    "UnknownCall",
    "UnknownTicket",
    "iso_utc",
]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Another process may take the same day's first number or uniqueid between our
# read and our insert; one retry of the whole transaction settles it.
_INSERT_ATTEMPTS = 3


class Source(StrEnum):
    """Which path reported a step."""

    AGI = "agi"  # FastAGI intake route
    AMI = "ami"  # AMI event adapter
    API = "api"  # web API (call-taker action)
    RESYNC = "resync"  # reconciliation after a restart or AMI reconnect


class UnknownTicket(LookupError):
    """No ticket with that number (or uniqueid)."""


class UnknownCall(UnknownTicket):
    """No ticket for that Asterisk uniqueid."""


def iso_utc(at_us: int) -> str:
    """Epoch microseconds as ISO-8601 UTC with milliseconds: ``2026-11-29T11:30:00.123Z``."""
    # Integer arithmetic: a float round trip could move the millisecond.
    moment = _EPOCH + timedelta(microseconds=at_us)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _to_us(at: float) -> int:
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise ValueError(f"time must be finite epoch seconds, got {at!r}")
    # Epoch seconds as a double resolve ~0.2 µs today, so rounding gives the
    # microsecond the caller wrote.
    return round(at * 1_000_000)


def _clip(text: str | None) -> str | None:
    # A call must never be refused because a carrier sent an oversized caller name.
    return None if text is None else text[:TEXT_MAX]


@dataclass(frozen=True, slots=True)
class StepView:
    seq: int
    step: Step
    state_after: State
    at_us: int
    source: str
    detail: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "step": str(self.step),
            "state_after": str(self.state_after),
            "at": iso_utc(self.at_us),
            "at_us": self.at_us,
            "source": self.source,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class RecordingView:
    path: str
    duration_s: float | None
    size_bytes: int
    sha256: str
    bound_at_us: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "duration_s": self.duration_s,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "bound_at": iso_utc(self.bound_at_us),
            "bound_at_us": self.bound_at_us,
        }


@dataclass(frozen=True, slots=True)
class TicketView:
    number: str
    uniqueid: str
    caller_id: str
    caller_name: str | None
    state: State
    queue: str | None
    priority: int | None
    seat: str | None
    created_at_us: int
    updated_at_us: int
    steps: tuple[StepView, ...]  # in order, seq 1..n
    recordings: tuple[RecordingView, ...]

    @property
    def call_live(self) -> bool:
        """Whether the caller's channel should still be up."""
        return self.state in CALL_LIVE_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "uniqueid": self.uniqueid,
            "caller_id": self.caller_id,
            "caller_name": self.caller_name,
            "state": str(self.state),
            "queue": self.queue,
            "priority": self.priority,
            "seat": self.seat,
            "created_at": iso_utc(self.created_at_us),
            "created_at_us": self.created_at_us,
            "updated_at": iso_utc(self.updated_at_us),
            "updated_at_us": self.updated_at_us,
            "steps": [s.to_json() for s in self.steps],
            "recordings": [r.to_json() for r in self.recordings],
        }


def _step_view(row: TicketStep) -> StepView:
    return StepView(
        seq=row.seq,
        step=Step(row.step),
        state_after=State(row.state_after),
        at_us=row.at_us,
        source=row.source,
        detail=MappingProxyType(dict(row.detail or {})),
    )


def _recording_view(row: Recording) -> RecordingView:
    return RecordingView(
        path=row.path,
        duration_s=row.duration_s,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        bound_at_us=row.bound_at_us,
    )


def _ticket_view(row: Ticket) -> TicketView:
    return TicketView(
        number=row.number,
        uniqueid=row.uniqueid,
        caller_id=row.caller_id,
        caller_name=row.caller_name,
        state=State(row.state),
        queue=row.queue,
        priority=row.priority,
        seat=row.seat,
        created_at_us=row.created_at_us,
        updated_at_us=row.updated_at_us,
        steps=tuple(_step_view(s) for s in row.steps),
        recordings=tuple(_recording_view(r) for r in row.recordings),
    )


Listener = Callable[[TicketView, StepView], object]


class TicketService:
    """Opens, advances, closes and reads tickets; tells listeners of every new step."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        tz: str = "Asia/Shanghai",
        prefix: str = "110",
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._numbering = TicketNumbering(tz=tz, prefix=prefix)
        self._write_lock = asyncio.Lock()
        # uniqueid -> ticket id, for tickets whose call is live. Filled as calls
        # come in or are looked up, so after a restart it rebuilds itself.
        self._live: dict[str, int] = {}
        # uniqueid -> latest view of a live call's ticket, so that the intake
        # route's open_call for a call the AMI path already opened costs no
        # database round trip and no wait for the writer lock (it sits on the
        # caller's path to a seat).
        self._live_views: dict[str, TicketView] = {}
        self._listeners: list[Listener] = []

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # -- listeners -----------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(ticket, step)`` after each committed step; returns a remover.

        Listeners run synchronously on the event loop, in the order steps were
        committed: they must be quick (put the event on a queue, no I/O).
        """
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _notify(self, ticket: TicketView, step: StepView) -> None:
        for listener in tuple(self._listeners):
            try:
                result = listener(ticket, step)
                if inspect.isawaitable(result):
                    # Awaiting here would hold up the call path; refuse loudly.
                    if inspect.iscoroutine(result):
                        result.close()
                    log.error(
                        "ticket listener %r returned an awaitable; listeners must be synchronous", listener
                    )
            except Exception:
                log.exception("ticket listener %r failed on %s step %s", listener, ticket.number, step.step)

    # -- writes ----------------------------------------------------------------

    async def open_call(
        self,
        *,
        uniqueid: str,
        caller_id: str,
        caller_name: str | None = None,
        at: float,
        source: Source | str,
        queue: str | None = None,
        priority: int | None = None,
    ) -> TicketView:
        """The ticket for this call, created with its number and a ``received`` step if new.

        Idempotent by uniqueid: for a known call the existing ticket is returned
        unchanged, whichever path (AGI, AMI, resync) got there first.
        """
        _check_uniqueid(uniqueid)
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        known = self._live_views.get(uniqueid)
        if known is not None:
            return known
        source = Source(source)
        at_us = _to_us(at)
        state = advance(None, Step.RECEIVED)
        async with self._write_lock:
            for attempt in range(1, _INSERT_ATTEMPTS + 1):
                try:
                    async with self._sessions() as session, session.begin():
                        existing = await self._load_by_uniqueid(session, uniqueid)
                        if existing is not None:
                            view = _ticket_view(existing)
                            self._remember(existing.id, view)
                            return view
                        now_us = _to_us(self._clock())
                        ticket = Ticket(
                            number=await self._numbering.next_number(session, at),
                            uniqueid=uniqueid,
                            caller_id=_clip(caller_id) or "",
                            caller_name=_clip(caller_name),
                            state=state,
                            queue=_clip(queue),
                            priority=priority,
                            seat=None,
                            created_at_us=now_us,
                            updated_at_us=now_us,
                            steps=[],
                            recordings=[],
                        )
                        ticket.steps.append(
                            TicketStep(
                                seq=1,
                                step=Step.RECEIVED,
                                state_after=state,
                                at_us=at_us,
                                source=source,
                                detail={},
                            )
                        )
                        session.add(ticket)
                        await session.flush()
                        view = _ticket_view(ticket)
                        ticket_id = ticket.id
                except IntegrityError:
                    if attempt == _INSERT_ATTEMPTS:
                        raise
                    log.warning("ticket insert for %s collided with another writer; retrying", uniqueid)
                    continue
                break
            self._remember(ticket_id, view)
            self._notify(view, view.steps[-1])
            return view

    async def record_step(
        self, uniqueid: str, step: Step | str, *, at: float, source: Source | str, **detail: Any
    ) -> TicketView:
        """Append ``step`` to the call's ticket and advance its state.

        ``answered`` records ``detail['seat']`` as the answering seat; ``queued``
        records ``detail['queue']``. Raises ``UnknownCall`` for an unknown
        uniqueid and ``IllegalTransition`` (nothing written) for a step the
        lifecycle does not allow.
        """
        step = Step(step)
        source = Source(source)
        at_us = _to_us(at)
        detail = _checked_detail(detail)
        async with self._write_lock:
            async with self._sessions() as session, session.begin():
                ticket = await self._load_by_uniqueid(session, uniqueid, for_update=True)
                if ticket is None:
                    raise UnknownCall(f"no ticket for uniqueid {uniqueid!r}")
                if step is Step.ANSWERED and isinstance(detail.get("seat"), str):
                    ticket.seat = _clip(detail["seat"])
                if step is Step.QUEUED and isinstance(detail.get("queue"), str):
                    ticket.queue = _clip(detail["queue"])
                view, step_view = await self._append(session, ticket, step, at_us, source, detail)
                ticket_id = ticket.id
            self._remember(ticket_id, view)
            self._notify(view, step_view)
            return view

    async def close(self, number: str, *, disposition: str, by: str, at: float | None = None) -> TicketView:
        """Close an ended or abandoned ticket with the call-taker's disposition."""
        if not isinstance(disposition, str) or not disposition:
            raise ValueError("disposition must be a non-empty string")
        if not isinstance(by, str) or not by:
            raise ValueError("by must be a non-empty string")
        at_us = _to_us(self._clock() if at is None else at)
        async with self._write_lock:
            async with self._sessions() as session, session.begin():
                ticket = await self._load(session, Ticket.number == number, for_update=True)
                if ticket is None:
                    raise UnknownTicket(f"no ticket {number!r}")
                detail = {"disposition": disposition, "by": by}
                view, step_view = await self._append(session, ticket, Step.CLOSED, at_us, Source.API, detail)
                ticket_id = ticket.id
            self._remember(ticket_id, view)
            self._notify(view, step_view)
            return view

    async def bind_recording(self, uniqueid_or_number: str, path: str) -> RecordingView:
        """Attach a recording file to a ticket with its duration, size and SHA-256.

        Binding the same path again refreshes the measurements (the file may
        have still been growing) and keeps one row.
        """
        info: RecordingInfo = await asyncio.to_thread(inspect_recording, path)
        async with self._write_lock:
            async with self._sessions() as session, session.begin():
                key = uniqueid_or_number
                ticket = await self._load(session, or_(Ticket.number == key, Ticket.uniqueid == key))
                if ticket is None:
                    raise UnknownTicket(f"no ticket for {key!r}")
                row = next((r for r in ticket.recordings if r.path == info.path), None)
                if row is None:
                    row = Recording(path=info.path, bound_at_us=_to_us(self._clock()))
                    ticket.recordings.append(row)
                row.duration_s = info.duration_s
                row.size_bytes = info.size_bytes
                row.sha256 = info.sha256
                ticket.updated_at_us = _to_us(self._clock())
                await session.flush()
                return _recording_view(row)

    async def _append(
        self,
        session: AsyncSession,
        ticket: Ticket,
        step: Step,
        at_us: int,
        source: Source,
        detail: dict[str, Any],
    ) -> tuple[TicketView, StepView]:
        new_state = advance(State(ticket.state), step)  # raises before anything is written
        row = TicketStep(
            seq=len(ticket.steps) + 1,
            step=step,
            state_after=new_state,
            at_us=at_us,
            source=source,
            detail=detail,
        )
        ticket.steps.append(row)
        ticket.state = new_state
        ticket.updated_at_us = _to_us(self._clock())
        await session.flush()
        view = _ticket_view(ticket)
        return view, view.steps[-1]

    def _remember(self, ticket_id: int, view: TicketView) -> None:
        if view.call_live:
            self._live[view.uniqueid] = ticket_id
            self._live_views[view.uniqueid] = view
        else:
            self._live.pop(view.uniqueid, None)
            self._live_views.pop(view.uniqueid, None)

    # -- reads -----------------------------------------------------------------

    async def get(self, number: str) -> TicketView | None:
        async with self._sessions() as session:
            ticket = await self._load(session, Ticket.number == number)
            return None if ticket is None else _ticket_view(ticket)

    async def find_by_uniqueid(self, uniqueid: str) -> TicketView | None:
        async with self._sessions() as session:
            ticket = await self._load_by_uniqueid(session, uniqueid)
            return None if ticket is None else _ticket_view(ticket)

    async def list_recent(self, limit: int = 50) -> list[TicketView]:
        """The newest tickets first, with their steps and recordings."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        async with self._sessions() as session:
            rows = await session.scalars(
                _with_children(select(Ticket))
                .order_by(Ticket.created_at_us.desc(), Ticket.id.desc())
                .limit(limit)
            )
            return [_ticket_view(t) for t in rows]

    async def open_uniqueids(self) -> set[str]:
        """Uniqueids of tickets whose call should be live, for reconciliation with Asterisk."""
        async with self._write_lock:  # a consistent rebuild of the map, no write in between
            async with self._sessions() as session:
                rows = (
                    await session.execute(
                        select(Ticket.uniqueid, Ticket.id).where(
                            Ticket.state.in_([str(s) for s in CALL_LIVE_STATES])
                        )
                    )
                ).all()
            self._live = {uniqueid: ticket_id for uniqueid, ticket_id in rows}
            self._live_views = {u: v for u, v in self._live_views.items() if u in self._live}
            return set(self._live)

    async def _load_by_uniqueid(
        self, session: AsyncSession, uniqueid: str, *, for_update: bool = False
    ) -> Ticket | None:
        ticket_id = self._live.get(uniqueid)
        if ticket_id is not None:
            ticket = await self._load(session, Ticket.id == ticket_id, for_update=for_update)
            if ticket is not None and ticket.uniqueid == uniqueid:
                return ticket
            self._live.pop(uniqueid, None)  # stale: fall back to the indexed column
            self._live_views.pop(uniqueid, None)
        return await self._load(session, Ticket.uniqueid == uniqueid, for_update=for_update)

    @staticmethod
    async def _load(
        session: AsyncSession, where: ColumnElement[bool], *, for_update: bool = False
    ) -> Ticket | None:
        query = _with_children(select(Ticket)).where(where)
        if for_update:
            # Row lock on PostgreSQL so a second process cannot interleave seq
            # numbers; SQLite ignores it (its writer lock already covers that).
            query = query.with_for_update(of=Ticket)
        return (await session.scalars(query)).one_or_none()


def _with_children(query: Any) -> Any:
    return query.options(selectinload(Ticket.steps), selectinload(Ticket.recordings))


def _check_uniqueid(uniqueid: str) -> None:
    if not isinstance(uniqueid, str) or not uniqueid or len(uniqueid) > UNIQUEID_MAX:
        raise ValueError(f"uniqueid must be a non-empty string of at most {UNIQUEID_MAX} characters")


def _checked_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    # Fail before the transaction, with the offending value named, rather than
    # inside the flush; NaN is refused because PostgreSQL's JSON refuses it.
    try:
        json.dumps(detail, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"step detail must be JSON-serialisable: {exc}") from None
    return dict(detail)
