"""The reporter's live status: when an officer is sent, the reporter gets an SMS with a link to the ticket's status.

When a ticket's first officer joins (a call's conference) or is sent (a text report), the reporter — the
caller's number, or the report's sender — gets an SMS through the outbox (exactly once: its key is the ticket)
with a short link. The link's token is 128 random bits; only its sha256 is stored, so the table cannot be read
back into working links. The link shows the ticket's status and, for each officer on the way, the distance and
the expected arrival from his shared position and the dispatch's travel model (``core.dispatch.geo.eta_s``),
and "arrived" once he reports it. It names no officer: his badge number and unit only, as a bureau allows. It
stops working (410) when the ticket is cleared or closed. Status changes (a new position of one of the ticket's
officers, a step of the ticket) wake the watchers of that ticket at once: the page is pushed, not polled.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.lifecycle import State, Step
from core.calls.tickets import TicketService, TicketView, iso_utc
from core.dispatch.geo import eta_s, haversine_m
from core.dispatch.officers import OfficerRow, OfficerStatus, OfficerView, StationRow
from core.dispatch.planner import DispatchSettings, IncidentRow
from core.errors import DomainError
from core.quality.outbox import Outbox
from core.quality.survey import to_e164
from core.quality.tables import StatusLinkRow
from core.tasks import stop_task

log = logging.getLogger(__name__)

KIND = "status_link"
TOKEN_BYTES = 16
TOKEN_CHARS = 22  # token_urlsafe(16)
SMS_TEXT = "【110】已派民警处置您的报警（{number}）。民警位置和预计到达时间：{url}"
# Steps that put an officer on the way: the first of them sends the link.
SENDING_STEPS = frozenset({Step.OFFICER_JOINED})
ENDED = frozenset({State.CLEARED, State.CLOSED})


class UnknownLink(DomainError):
    status = 404
    error_id = "unknown-link"


class LinkEnded(DomainError):
    """The ticket was cleared or closed: the link shows nothing any more."""

    status = 410
    error_id = "link-ended"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def well_formed(token: str) -> bool:
    return len(token) == TOKEN_CHARS and all(c.isascii() and (c.isalnum() or c in "-_") for c in token)


class ReporterLinks:
    def __init__(
        self,
        engine: AsyncEngine,
        service: TicketService,
        outbox: Outbox,
        *,
        public_url: str,
        travel: DispatchSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._service = service
        self._outbox = outbox
        self.public_url = public_url.rstrip("/")
        self._travel = travel or DispatchSettings()
        self._clock = clock
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._removers: list[Callable[[], None]] = []

    # -- sending ------------------------------------------------------------------------

    def attach(self, service: TicketService, officers: Any) -> None:
        """Send the link at the first officer's step; wake a ticket's watchers on its steps and its officers'
        positions."""

        def on_step(ticket: TicketView, step: Any) -> None:
            self._wake(ticket.number)
            if step.step in SENDING_STEPS and self.public_url:
                task = asyncio.get_running_loop().create_task(self._send_logged(ticket))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        def on_location(officer: OfficerView) -> None:
            if officer.ticket is not None:
                self._wake(officer.ticket)

        self._removers += [service.add_listener(on_step), officers.on_location(on_location)]

    async def stop(self) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
        for task in list(self._tasks):
            await stop_task(task)

    async def _send_logged(self, ticket: TicketView) -> None:
        try:
            await self.send(ticket)
        except Exception:
            log.exception("status link for %s not sent", ticket.number)

    async def send(self, ticket: TicketView) -> str | None:
        """Make the ticket's link and queue its SMS; the token, or None when there is nobody to send it to or
        the ticket has its link already (one per ticket: the SMS's key is the ticket)."""
        phone = to_e164(ticket.caller_id or "")
        if phone is None:
            return None
        token = secrets.token_urlsafe(TOKEN_BYTES)
        async with self._sessions() as session:
            session.add(StatusLinkRow(token_sha256=digest(token), number=ticket.number, phone=phone,
                                      created_at_us=round(self._clock() * 1_000_000)))
            try:
                await session.commit()
            except IntegrityError:
                return None  # sent before
        await self._outbox.enqueue(key=f"status:{ticket.number}", kind=KIND, to=phone, ticket_number=ticket.number,
                                   body=SMS_TEXT.format(number=ticket.number, url=f"{self.public_url}/s/{token}"))
        return token

    # -- the status -----------------------------------------------------------------------

    async def number_of(self, token: str) -> str:
        if not well_formed(token):
            raise UnknownLink("no such link")
        async with self._sessions() as session:
            number = await session.scalar(select(StatusLinkRow.number).where(
                StatusLinkRow.token_sha256 == digest(token)))
        if number is None:
            raise UnknownLink("no such link")
        return number

    async def status(self, token: str) -> dict[str, Any]:
        """What the reporter may see of the ticket behind ``token``."""
        number = await self.number_of(token)
        ticket = await self._service.get(number)
        if ticket is None or ticket.state in ENDED:
            raise LinkEnded("this incident has been handled; the link has ended")
        async with self._sessions() as session:
            incident = await session.get(IncidentRow, number)
            rows = (await session.execute(
                select(OfficerRow, StationRow.name).join(StationRow, StationRow.id == OfficerRow.station_id)
                .where(OfficerRow.ticket == number).order_by(OfficerRow.badge))).all()
        arrived_steps = {s.detail.get("badge") for s in ticket.steps if s.step is Step.ARRIVED}
        officers = []
        for row, unit in rows:
            status = OfficerStatus(row.status)
            if status not in (OfficerStatus.DISPATCHED, OfficerStatus.ON_SCENE):
                continue  # rung, not yet on the way
            arrived = status is OfficerStatus.ON_SCENE or row.badge in arrived_steps
            entry: dict[str, Any] = {"badge": row.badge, "unit": unit, "arrived": arrived,
                                     "distance_m": None, "eta_s": None, "located_at": None}
            if not arrived and incident is not None and row.lat is not None and row.lon is not None:
                distance = haversine_m(row.lat, row.lon, incident.lat, incident.lon)
                entry["distance_m"] = round(distance)
                entry["eta_s"] = round(eta_s(distance, speed_kmh=self._travel.speed_kmh,
                                             detour=self._travel.detour))
                entry["located_at"] = iso_utc(row.located_at_us) if row.located_at_us else None
            officers.append(entry)
        if any(o["arrived"] for o in officers):
            phase, message = "arrived", "民警已到达现场"
        elif officers:
            phase, message = "on_the_way", "民警正在赶往现场"
        else:
            phase, message = "dispatching", "正在调派民警"
        return {"number": number, "phase": phase, "message": message, "officers": officers,
                "updated_at": iso_utc(round(self._clock() * 1_000_000))}

    # -- watching -----------------------------------------------------------------------

    def watch(self, number: str) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers.setdefault(number, set()).add(event)
        return event

    def unwatch(self, number: str, event: asyncio.Event) -> None:
        events = self._watchers.get(number)
        if events is not None:
            events.discard(event)
            if not events:
                del self._watchers[number]

    def _wake(self, number: str) -> None:
        for event in self._watchers.get(number, ()):
            event.set()
