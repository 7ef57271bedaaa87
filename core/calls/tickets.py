"""The ticket service: the one way tickets are opened, advanced, closed and read.

The telephony side calls it from the FastAGI intake route (``open_call``) and
from the AMI event adapter (``record_step``), both keyed by the caller
channel's Asterisk uniqueid; the web API reads and closes tickets by number.
Each write is one short transaction, serialised by one lock: SQLite has a
single writer, and the lock keeps "database is locked" out of the call path.

The service runs on the event loop that also answers Asterisk's FastAGI
requests, so every millisecond of Python it spends there delays a caller.
Writes therefore use plain Core statements built once at import, and live
calls are served from an in-memory view: a step of a live call is one
conditional UPDATE of the ticket plus one INSERT, and its new view is the
cached one with the step appended. The UPDATE only matches if the ticket
still has the state and ``updated_at_us`` this process last saw, and the
step's seq is unique per ticket: a write by another process on the same
PostgreSQL is noticed, the ticket re-read under a row lock, and the step
written once more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, cast

from sqlalchemy import Executable, Row, Table, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.calls.lifecycle import (
    CALL_LIVE_STATES,
    TRANSITIONS,
    IllegalTransition,
    State,
    Step,
    advance,
)
from core.calls.numbering import TicketNumbering
from core.calls.recordings import RecordingInfo, inspect_recording
from core.calls.tables import Recording, Ticket, TicketStep
from core.errors import DomainError
from core.store import TEXT_MAX, UNIQUEID_MAX

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
# A step written from a view another process has since changed is refused by
# the database; the second attempt re-reads the ticket under a row lock.
_APPEND_ATTEMPTS = 2

# Statements are built once, here: each compiles once per engine into
# SQLAlchemy's statement cache, and a call only binds its values.
_TICKETS = cast(Table, Ticket.__table__)
_STEPS = cast(Table, TicketStep.__table__)
_RECORDINGS = cast(Table, Recording.__table__)

_TICKET_ID_BY_UNIQUEID = select(_TICKETS.c.id).where(_TICKETS.c.uniqueid == bindparam("key"))
_TICKET_BY_ID = select(_TICKETS).where(_TICKETS.c.id == bindparam("key"))
_TICKET_BY_UNIQUEID = select(_TICKETS).where(_TICKETS.c.uniqueid == bindparam("key"))
_TICKET_BY_NUMBER = select(_TICKETS).where(_TICKETS.c.number == bindparam("key"))
# Row lock on PostgreSQL so a second process waits instead of interleaving seq
# numbers; SQLite renders no FOR UPDATE (its single writer already covers that).
_TICKET_BY_UNIQUEID_LOCKED = _TICKET_BY_UNIQUEID.with_for_update()
_TICKET_BY_NUMBER_LOCKED = _TICKET_BY_NUMBER.with_for_update()
_TICKET_KEY = select(_TICKETS.c.id, _TICKETS.c.uniqueid).where(
    or_(_TICKETS.c.number == bindparam("key"), _TICKETS.c.uniqueid == bindparam("key"))
)
_STEPS_OF = select(_STEPS).where(_STEPS.c.ticket_id == bindparam("ticket_id")).order_by(_STEPS.c.seq)
_RECORDINGS_OF = (
    select(_RECORDINGS).where(_RECORDINGS.c.ticket_id == bindparam("ticket_id")).order_by(_RECORDINGS.c.id)
)
_RECENT = select(_TICKETS).order_by(_TICKETS.c.created_at_us.desc(), _TICKETS.c.id.desc()).limit(
    bindparam("limit")
)
# Children of the tickets just read, by their ids (not by re-running the
# newest-first query, which a ticket opened in between would shift).
_STEPS_OF_MANY = (
    select(_STEPS)
    .where(_STEPS.c.ticket_id.in_(bindparam("ticket_ids", expanding=True)))
    .order_by(_STEPS.c.ticket_id, _STEPS.c.seq)
)
_RECORDINGS_OF_MANY = (
    select(_RECORDINGS)
    .where(_RECORDINGS.c.ticket_id.in_(bindparam("ticket_ids", expanding=True)))
    .order_by(_RECORDINGS.c.ticket_id, _RECORDINGS.c.id)
)
# Ids per IN list: far below SQLite's limit on bound parameters.
_IDS_PER_QUERY = 500
_LIVE_IDS = select(_TICKETS.c.uniqueid, _TICKETS.c.id).where(
    _TICKETS.c.state.in_([str(s) for s in CALL_LIVE_STATES])
)
_INSERT_TICKET = insert(_TICKETS)
_INSERT_STEP = insert(_STEPS)
# Matches only if the ticket is still as this process last saw it; a ticket
# another process moved on leaves rowcount 0. On PostgreSQL the UPDATE also
# takes the row lock, and a waiting writer re-checks the WHERE once it may go.
_ADVANCE = (
    update(_TICKETS)
    .where(
        _TICKETS.c.id == bindparam("ticket_id"),
        _TICKETS.c.uniqueid == bindparam("seen_uniqueid"),
        _TICKETS.c.state == bindparam("seen_state"),
        _TICKETS.c.updated_at_us == bindparam("seen_updated_at_us"),
    )
    .values(
        state=bindparam("new_state"),
        seat=bindparam("new_seat"),
        queue=bindparam("new_queue"),
        updated_at_us=bindparam("now_us"),
    )
)
_TOUCH_TICKET = (
    update(_TICKETS).where(_TICKETS.c.id == bindparam("ticket_id")).values(updated_at_us=bindparam("now_us"))
)
_RECORDING_BY_PATH = select(_RECORDINGS.c.id, _RECORDINGS.c.bound_at_us).where(
    _RECORDINGS.c.ticket_id == bindparam("ticket_id"), _RECORDINGS.c.path == bindparam("recording_path")
)
_INSERT_RECORDING = insert(_RECORDINGS)
_REMEASURE_RECORDING = (
    update(_RECORDINGS)
    .where(_RECORDINGS.c.id == bindparam("recording_id"))
    .values(
        duration_s=bindparam("new_duration_s"),
        size_bytes=bindparam("new_size_bytes"),
        sha256=bindparam("new_sha256"),
    )
)


class Source(StrEnum):
    """Which path reported a step."""

    AGI = "agi"  # FastAGI intake route (releases before the HTTP intake)
    INTAKE = "intake"  # the dialplan's intake request (CURL from Asterisk)
    AMI = "ami"  # AMI event adapter
    API = "api"  # web API (call-taker action)
    RESYNC = "resync"  # reconciliation after a restart or AMI reconnect (channel snapshot)
    CEL = "cel"  # Asterisk's channel event log, replayed after a gap
    SMS = "sms"  # inbound SMS webhook (text report)
    APP = "app"  # the 110 app's report API (text report)
    WECHAT = "wechat"  # a WeChat official account's message callback (text report)
    STATION = "station"  # a station's own entry: reported at its counter, found on patrol, a tip
    AML = "aml"  # a handset's Advanced Mobile Location message (SMS or HTTPS): its own position


class UnknownTicket(DomainError, LookupError):
    """No ticket with that number (or uniqueid)."""

    status = 404
    error_id = "unknown-ticket"


class UnknownCall(UnknownTicket):
    """No ticket for that Asterisk uniqueid."""

    status = 404
    error_id = "unknown-call"


class _StaleView(RuntimeError):
    """The ticket changed since this process last saw it (another process wrote it)."""


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


def _step_view(row: Row[Any]) -> StepView:
    return StepView(
        seq=row.seq,
        step=Step(row.step),
        state_after=State(row.state_after),
        at_us=row.at_us,
        source=row.source,
        detail=MappingProxyType(dict(row.detail or {})),
    )


def _recording_view(row: Row[Any]) -> RecordingView:
    return RecordingView(
        path=row.path,
        duration_s=row.duration_s,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        bound_at_us=row.bound_at_us,
    )


def _ticket_view(row: Row[Any], steps: Iterable[Row[Any]], recordings: Iterable[Row[Any]]) -> TicketView:
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
        steps=tuple(_step_view(s) for s in steps),
        recordings=tuple(_recording_view(r) for r in recordings),
    )


async def _read_ticket(
    conn: AsyncConnection, query: Executable, key: object
) -> tuple[int, TicketView] | None:
    """One ticket with its steps and recordings: the id and the view, or None."""
    row = (await conn.execute(query, {"key": key})).one_or_none()
    if row is None:
        return None
    params = {"ticket_id": row.id}
    steps = (await conn.execute(_STEPS_OF, params)).all()
    recordings = (await conn.execute(_RECORDINGS_OF, params)).all()
    return row.id, _ticket_view(row, steps, recordings)


async def _store_recording(conn: AsyncConnection, ticket_id: int, info: RecordingInfo, now_us: int) -> int:
    """Insert or re-measure the ticket's row for ``info.path``; returns its bound-at time."""
    row = (
        await conn.execute(_RECORDING_BY_PATH, {"ticket_id": ticket_id, "recording_path": info.path})
    ).one_or_none()
    if row is None:
        bound_at_us = now_us
        await conn.execute(
            _INSERT_RECORDING,
            {
                "ticket_id": ticket_id,
                "path": info.path,
                "duration_s": info.duration_s,
                "size_bytes": info.size_bytes,
                "sha256": info.sha256,
                "bound_at_us": bound_at_us,
            },
        )
    else:
        bound_at_us = row.bound_at_us
        await conn.execute(
            _REMEASURE_RECORDING,
            {
                "recording_id": row.id,
                "new_duration_s": info.duration_s,
                "new_size_bytes": info.size_bytes,
                "new_sha256": info.sha256,
            },
        )
    await conn.execute(_TOUCH_TICKET, {"ticket_id": ticket_id, "now_us": now_us})
    return bound_at_us


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
        self._clock = clock
        self._numbering = TicketNumbering(tz=tz, prefix=prefix)
        self._write_lock = asyncio.Lock()
        # uniqueid -> ticket id, for tickets whose call is live. Filled by every
        # write (and by open_uniqueids), so after a restart it rebuilds itself.
        self._live: dict[str, int] = {}
        # uniqueid -> latest view of a live call's ticket. The intake route's
        # open_call for a call the AMI path already opened costs no database
        # round trip and no wait for the writer lock (it sits on the caller's
        # path to a seat); record_step appends to it instead of re-reading the
        # ticket; the AMI adapter's find_by_uniqueid is answered from it.
        self._live_views: dict[str, TicketView] = {}
        self._listeners: list[Listener] = []

    @property
    def clock(self) -> Callable[[], float]:
        """The wall clock the service stamps its own times with (the API's steps, creation times)."""
        return self._clock

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
        return await self._open(Step.RECEIVED, uniqueid=uniqueid, caller_id=caller_id, caller_name=caller_name,
                                at=at, source=source, queue=queue, priority=priority, detail={})

    async def open_report(
        self, *, channel: str, ref: str, sender: str, at: float, source: Source | str, **detail: Any
    ) -> TicketView:
        """The ticket for a text report (SMS, app), created with its number and a ``reported`` step if new.

        Idempotent by (channel, ref) — the message's id at its gateway — so a
        webhook delivered twice makes one ticket. ``detail`` (the text, …) is
        kept on the ``reported`` step.
        """
        if not isinstance(channel, str) or not channel.isalnum():
            raise ValueError("channel must be a short name in letters and digits")
        if not isinstance(ref, str) or not ref or not ref.isprintable():
            raise ValueError("ref must be the message's id at its gateway")
        return await self._open(Step.REPORTED, uniqueid=f"{channel}:{ref}", caller_id=sender, caller_name=None,
                                at=at, source=source, queue=None, priority=None,
                                detail=_checked_detail({"channel": channel, **detail}))

    async def _open(
        self, first_step: Step, *, uniqueid: str, caller_id: str, caller_name: str | None, at: float,
        source: Source | str, queue: str | None, priority: int | None, detail: dict[str, Any],
    ) -> TicketView:
        _check_uniqueid(uniqueid)
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        known = self._live_views.get(uniqueid)
        if known is not None:
            return known
        source = Source(source)
        at_us = _to_us(at)
        state = advance(None, first_step)
        caller_id = _clip(caller_id) or ""
        caller_name = _clip(caller_name)
        queue = _clip(queue)
        async with self._write_lock:
            # The other path may have opened the call while this one waited.
            known = self._live_views.get(uniqueid)
            if known is not None:
                return known
            for attempt in range(1, _INSERT_ATTEMPTS + 1):
                try:
                    async with self._engine.begin() as conn:
                        existing_id = (
                            await conn.execute(_TICKET_ID_BY_UNIQUEID, {"key": uniqueid})
                        ).scalar_one_or_none()
                        if existing_id is not None:
                            # Opened before a restart, or by another process.
                            loaded = await _read_ticket(conn, _TICKET_BY_ID, existing_id)
                            if loaded is not None:
                                self._remember(*loaded)
                                return loaded[1]
                        number = await self._numbering.next_number(conn, at)
                        now_us = _to_us(self._clock())
                        inserted = await conn.execute(
                            _INSERT_TICKET,
                            {
                                "number": number,
                                "uniqueid": uniqueid,
                                "caller_id": caller_id,
                                "caller_name": caller_name,
                                "state": state.value,
                                "queue": queue,
                                "priority": priority,
                                "seat": None,
                                "created_at_us": now_us,
                                "updated_at_us": now_us,
                            },
                        )
                        ticket_id = inserted.inserted_primary_key[0]
                        await conn.execute(
                            _INSERT_STEP,
                            {
                                "ticket_id": ticket_id,
                                "seq": 1,
                                "step": first_step.value,
                                "state_after": state.value,
                                "at_us": at_us,
                                "source": source.value,
                                "detail": detail,
                            },
                        )
                except IntegrityError:
                    if attempt == _INSERT_ATTEMPTS:
                        raise
                    log.warning("ticket insert for %s collided with another writer; retrying", uniqueid)
                    continue
                break
            first = StepView(
                seq=1,
                step=first_step,
                state_after=state,
                at_us=at_us,
                source=source.value,
                detail=MappingProxyType(detail),
            )
            view = TicketView(
                number=number,
                uniqueid=uniqueid,
                caller_id=caller_id,
                caller_name=caller_name,
                state=state,
                queue=queue,
                priority=priority,
                seat=None,
                created_at_us=now_us,
                updated_at_us=now_us,
                steps=(first,),
                recordings=(),
            )
            self._remember(ticket_id, view)
            self._notify(view, first)
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
            appended = await self._append(
                self._cached(uniqueid), _TICKET_BY_UNIQUEID_LOCKED, uniqueid, step, at_us, source, detail
            )
            if appended is None:
                raise UnknownCall(f"no ticket for uniqueid {uniqueid!r}")
            ticket_id, view, step_view = appended
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
        detail = {"disposition": disposition, "by": by}
        async with self._write_lock:
            # Closed tickets are never live, so never cached: always read under the row lock.
            appended = await self._append(
                None, _TICKET_BY_NUMBER_LOCKED, number, Step.CLOSED, at_us, Source.API, detail
            )
            if appended is None:
                raise UnknownTicket(f"no ticket {number!r}")
            ticket_id, view, step_view = appended
            self._remember(ticket_id, view)
            self._notify(view, step_view)
            return view

    async def take(self, number: str, *, by: str, seat: str | None = None, at: float | None = None) -> TicketView:
        """A call-taker takes a waiting text report (``taken``); the first one to ask gets it."""
        if not isinstance(by, str) or not by:
            raise ValueError("by must be a non-empty string")
        at_us = _to_us(self._clock() if at is None else at)
        async with self._write_lock:
            # Reports are never live, so never cached: read under the row lock, so two seats cannot both take it.
            detail = {"by": by} if seat is None else {"by": by, "seat": seat}
            appended = await self._append(None, _TICKET_BY_NUMBER_LOCKED, number, Step.TAKEN, at_us, Source.API,
                                          detail)
            if appended is None:
                raise UnknownTicket(f"no ticket {number!r}")
            ticket_id, view, step_view = appended
            self._remember(ticket_id, view)
            self._notify(view, step_view)
            return view

    async def bind_recording(self, uniqueid_or_number: str, path: str) -> RecordingView:
        """Attach a recording file to a ticket with its duration, size and SHA-256.

        Binding the same path again refreshes the measurements (the file may
        have still been growing) and keeps one row.
        """
        info: RecordingInfo = await asyncio.to_thread(inspect_recording, path)
        key = uniqueid_or_number
        async with self._write_lock:
            async with self._engine.begin() as conn:
                ticket = (await conn.execute(_TICKET_KEY, {"key": key})).one_or_none()
                if ticket is None:
                    raise UnknownTicket(f"no ticket for {key!r}")
                # A live call's cached view lacks this recording. Dropped before
                # the write, as a cancelled commit may still have landed: the
                # next write re-reads the ticket.
                self._live_views.pop(ticket.uniqueid, None)
                bound_at_us = await _store_recording(conn, ticket.id, info, _to_us(self._clock()))
            return RecordingView(
                path=info.path,
                duration_s=info.duration_s,
                size_bytes=info.size_bytes,
                sha256=info.sha256,
                bound_at_us=bound_at_us,
            )

    async def _append(
        self,
        cached: tuple[int, TicketView] | None,
        locked_query: Executable,
        key: str,
        step: Step,
        at_us: int,
        source: Source,
        detail: dict[str, Any],
    ) -> tuple[int, TicketView, StepView] | None:
        """Write ``step`` to a ticket; None if ``locked_query`` finds no ticket by ``key``.

        With ``cached`` (a live call's id and view) nothing is read; without it,
        or when the database refuses the cached view as stale, the ticket is
        read under a row lock first. The caller holds the write lock.
        """
        if cached is not None and (cached[1].state, step) not in TRANSITIONS:
            # Refuse only on the stored state: another process may have moved the ticket on.
            cached = None
        current: TicketView | None = None
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                async with self._engine.begin() as conn:
                    if cached is None:
                        cached = await _read_ticket(conn, locked_query, key)
                        if cached is None:
                            return None
                    ticket_id, current = cached
                    new_state = advance(current.state, step)  # raises before anything is written
                    seat, queue = current.seat, current.queue
                    if step in (Step.ANSWERED, Step.TAKEN) and isinstance(detail.get("seat"), str):
                        seat = _clip(detail["seat"])
                    if step is Step.QUEUED and isinstance(detail.get("queue"), str):
                        queue = _clip(detail["queue"])
                    now_us = _to_us(self._clock())
                    advanced = await conn.execute(
                        _ADVANCE,
                        {
                            "ticket_id": ticket_id,
                            "seen_uniqueid": current.uniqueid,
                            "seen_state": current.state.value,
                            "seen_updated_at_us": current.updated_at_us,
                            "new_state": new_state.value,
                            "new_seat": seat,
                            "new_queue": queue,
                            "now_us": now_us,
                        },
                    )
                    if advanced.rowcount != 1:
                        raise _StaleView(f"ticket {current.number} changed since it was read")
                    seq = len(current.steps) + 1
                    # The unique (ticket_id, seq) index refuses a step another
                    # process appended from the same view.
                    await conn.execute(
                        _INSERT_STEP,
                        {
                            "ticket_id": ticket_id,
                            "seq": seq,
                            "step": step.value,
                            "state_after": new_state.value,
                            "at_us": at_us,
                            "source": source.value,
                            "detail": detail,
                        },
                    )
            except (_StaleView, IntegrityError):
                # Nothing was written; the view this attempt started from is out of date.
                assert current is not None  # both are raised only after the ticket was found
                self._live_views.pop(current.uniqueid, None)
                if attempt == _APPEND_ATTEMPTS:
                    raise
                log.warning("ticket %s was changed by another writer; re-reading it", current.number)
                cached = None
                continue
            except IllegalTransition:
                raise
            except BaseException:
                # Cancelled or failed mid-write: whether the commit landed is
                # unknown, so the next write re-reads the ticket.
                if current is not None:
                    self._live_views.pop(current.uniqueid, None)
                raise
            break
        assert current is not None
        step_view = StepView(
            seq=seq,
            step=step,
            state_after=new_state,
            at_us=at_us,
            source=source.value,
            detail=MappingProxyType(detail),
        )
        view = dataclasses.replace(
            current,
            state=new_state,
            seat=seat,
            queue=queue,
            updated_at_us=now_us,
            steps=(*current.steps, step_view),
        )
        return ticket_id, view, step_view

    def _cached(self, uniqueid: str) -> tuple[int, TicketView] | None:
        ticket_id = self._live.get(uniqueid)
        view = self._live_views.get(uniqueid)
        return None if ticket_id is None or view is None else (ticket_id, view)

    def _remember(self, ticket_id: int, view: TicketView) -> None:
        if view.call_live:
            self._live[view.uniqueid] = ticket_id
            self._live_views[view.uniqueid] = view
        else:
            self._live.pop(view.uniqueid, None)
            self._live_views.pop(view.uniqueid, None)

    # -- reads -----------------------------------------------------------------

    async def get(self, number: str) -> TicketView | None:
        async with self._engine.connect() as conn:
            loaded = await _read_ticket(conn, _TICKET_BY_NUMBER, number)
            return None if loaded is None else loaded[1]

    async def find_by_uniqueid(self, uniqueid: str) -> TicketView | None:
        """The call's ticket; a live call's from memory, as this process last wrote it.

        Every write of a live call's ticket goes through this service and
        leaves its view here, so the AMI adapter's look-up on each Hangup needs
        no database round trip. A write by another process is not seen here
        until this process's next write to the ticket re-reads it.
        """
        known = self._live_views.get(uniqueid)
        if known is not None:
            return known
        async with self._engine.connect() as conn:
            loaded = await _read_ticket(conn, _TICKET_BY_UNIQUEID, uniqueid)
            return None if loaded is None else loaded[1]

    async def list_recent(self, limit: int = 50) -> list[TicketView]:
        """The newest tickets first, with their steps and recordings."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_RECENT, {"limit": limit})).all()
            steps: dict[int, list[Row[Any]]] = {}
            recordings: dict[int, list[Row[Any]]] = {}
            for start in range(0, len(rows), _IDS_PER_QUERY):
                params = {"ticket_ids": [t.id for t in rows[start : start + _IDS_PER_QUERY]]}
                for step in await conn.execute(_STEPS_OF_MANY, params):
                    steps.setdefault(step.ticket_id, []).append(step)
                for recording in await conn.execute(_RECORDINGS_OF_MANY, params):
                    recordings.setdefault(recording.ticket_id, []).append(recording)
        return [_ticket_view(t, steps.get(t.id, ()), recordings.get(t.id, ())) for t in rows]

    async def open_uniqueids(self) -> set[str]:
        """Uniqueids of tickets whose call should be live, for reconciliation with Asterisk."""
        async with self._write_lock:  # a consistent rebuild of the map, no write in between
            async with self._engine.connect() as conn:
                rows = (await conn.execute(_LIVE_IDS)).all()
            self._live = {uniqueid: ticket_id for uniqueid, ticket_id in rows}
            self._live_views = {u: v for u, v in self._live_views.items() if u in self._live}
            return set(self._live)


def _check_uniqueid(uniqueid: str) -> None:
    if not isinstance(uniqueid, str) or not uniqueid or len(uniqueid) > UNIQUEID_MAX:
        raise ValueError(f"uniqueid must be a non-empty string of at most {UNIQUEID_MAX} characters")


def _checked_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    # Fail before the transaction, with the offending value named, rather than
    # inside the flush; NaN is refused because PostgreSQL's JSON refuses it.
    # The value kept is the JSON round trip, so a cached view holds what a read
    # from the database would give (lists for tuples, string keys).
    try:
        text = json.dumps(detail, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"step detail must be JSON-serialisable: {exc}") from None
    return cast(dict[str, Any], json.loads(text))
