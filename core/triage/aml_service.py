"""Handset location (AML): a caller's own position bound to the ticket of that number, every message kept.

``AmlService.receive`` takes a fix read by ``core.triage.aml`` and finds its ticket: the live ticket of that
number, else its most recent open ticket opened within ``ticket_window_s``, else its most recent one (closed:
refused). It refuses a fix positioned more than ``max_age_s`` before it arrived — stale: the handset's last
position, not where the caller is; a fix that old before the call began is older still, as a call begins before
its AML arrives — or more than ``future_skew_s`` after it arrived (the handset's clock is wrong).

What stands. A good fix becomes the incident location (``located``, ``source`` ``aml``, its detail's ``fix``
saying channel, method, radius, confidence and time of positioning) when the ticket has no location yet, or
its location is the network's (PIDF-LO: a cell, hundreds of metres), or an earlier AML fix whose radius is no
smaller. Otherwise the location stands and the fix is kept as a step of its own (``handset_located``, with the
reason), shown on the desk for the call-taker to judge: a position a call-taker (or a station, or the reporter's
app) gave is never overwritten by a machine, nor a sharper fix by a blurrier one, nor the incident moved once the
officer is on scene. The same fix sent twice — Android sends it by SMS and by HTTPS — is recorded once.

Every message, read or not, bound or not, is a row of ``aml_messages`` with its verdict and reason: an
unmatched or garbled message has no ticket to be a step of, and the audit must show a refused prank or a
carrier's broken relay as well as a good fix. Bound messages are also steps of their ticket, so the ticket's
own record and its journal are complete without the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Float, String, insert, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import (
    CALL_LIVE_STATES,
    TRANSITIONS,
    IllegalTransition,
    State,
    Step,
)
from core.calls.tables import Ticket
from core.calls.tickets import Source, TicketService, TicketView, iso_utc
from core.dispatch.geo import haversine_m
from core.dispatch.planner import DispatchPlanner
from core.errors import DomainError
from core.store import Base, _Id
from core.triage.aml import (
    RAW_MAX,
    AmlError,
    AmlFix,
    form_text,
    number_forms,
    parse_https,
    parse_sms,
)

__all__ = ["AmlMessageRow", "AmlOutcome", "AmlRefused", "AmlService", "AmlSettings", "Verdict"]

log = logging.getLogger(__name__)

MSISDN_MAX = 32
REASON_MAX = 32
ERROR_MAX = 500
# The network's position of a call (telephony/call_events.py) before its steps said so in ``fix``.
NETWORK_ADDRESS = "network position (PIDF-LO)"
# The same fix by SMS and HTTPS: the SMS's time has whole seconds, its degrees five decimals (about 1 m).
SAME_FIX_S = 1.0
SAME_FIX_M = 2.0
TICKETS_LOOKED_AT = 20


class Verdict(StrEnum):
    LOCATED = "located"  # the fix is the incident location now
    RECORDED = "recorded"  # bound to the ticket, kept beside a location that stands
    DUPLICATE = "duplicate"  # the same fix again (by the other channel, or resent): nothing new
    REFUSED = "refused"  # unreadable, stale, or no ticket to bind it to: kept here only


class AmlMessageRow(Base):
    """Every AML message that came in, with what became of it."""

    __tablename__ = "aml_messages"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    received_at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    channel: Mapped[str] = mapped_column(String(8))  # sms / https
    msisdn: Mapped[str | None] = mapped_column(String(MSISDN_MAX))
    raw: Mapped[str] = mapped_column(String(RAW_MAX))
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(REASON_MAX))  # why refused or kept aside
    error: Mapped[str | None] = mapped_column(String(ERROR_MAX))  # the same, for people
    ticket_number: Mapped[str | None] = mapped_column(String(32), index=True)  # not a key: retention
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    radius_m: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str | None] = mapped_column(String(16))
    positioned_at_us: Mapped[int | None] = mapped_column(BigInteger)


_INSERT_MESSAGE = insert(AmlMessageRow)


@dataclass(frozen=True, slots=True)
class AmlSettings:
    ticket_window_s: float = 3600.0  # a fix binds to the number's ticket opened within this long
    max_age_s: float = 1800.0  # older than this before it arrived, or before the call began: stale
    future_skew_s: float = 60.0  # a handset's clock may run this far ahead

    def __post_init__(self) -> None:
        for name in ("ticket_window_s", "max_age_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 7 * 86400:
                raise ValueError(f"{name} must be seconds, more than 0 and at most a week, got {value!r}")
        skew = self.future_skew_s
        if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not 0 <= skew <= 3600:
            raise ValueError(f"future_skew_s must be 0 to 3600 seconds, got {self.future_skew_s!r}")


class AmlRefused(DomainError):
    """A readable fix that binds to no ticket, or may not: too old, from the future, the ticket closed."""

    status = 422
    error_id = "aml-refused"

    def __init__(self, reason: str, message: str, *, ticket: str | None = None) -> None:
        details: dict[str, Any] = {"reason": reason}
        if ticket is not None:
            details["ticket"] = ticket
        super().__init__(message, details=details, error_id=f"aml-{reason}")
        self.reason = reason
        self.ticket = ticket


@dataclass(frozen=True, slots=True)
class AmlOutcome:
    verdict: Verdict
    ticket: str
    message_id: int
    reason: str | None = None  # why a recorded fix did not move the incident
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "ticket": self.ticket, "message_id": self.message_id,
                "applied": self.verdict is Verdict.LOCATED, "reason": self.reason, "note": self.note}


def fix_origin(detail: Mapping[str, Any]) -> str:
    """Who gave a ``located`` step's position: ``aml``, ``network``, or ``person`` (call-taker, station, app)."""
    fix = detail.get("fix")
    if isinstance(fix, Mapping) and fix.get("source") in ("aml", "network"):
        return str(fix["source"])
    if detail.get("address") == NETWORK_ADDRESS:
        return "network"
    return "person"


def stands(ticket: TicketView, fix: AmlFix) -> tuple[str, str] | None:
    """Why the ticket's location stands against ``fix`` (reason, sentence), or None: the fix may move it."""
    if (ticket.state, Step.LOCATED) not in TRANSITIONS:
        return "not-locatable", f"the ticket is {ticket.state}: its incident is no longer moved"
    last = next((s for s in reversed(ticket.steps) if s.step is Step.LOCATED), None)
    if last is None:
        return None
    origin = fix_origin(last.detail)
    if origin == "network":
        return None
    if origin == "aml":
        radius = last.detail["fix"].get("radius_m")
        if not isinstance(radius, (int, float)) or fix.radius_m <= radius:
            return None
        return "less-precise", f"an earlier AML fix is more precise (±{radius:g} m against ±{fix.radius_m:g} m)"
    return "person-stands", "the position a person gave stands"


class AmlService:
    """Binds AML fixes to tickets, locates or records them, and keeps every message."""

    def __init__(
        self, tickets: TicketService, planner: DispatchPlanner, *, settings: AmlSettings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._tickets = tickets
        self._planner = planner
        self.settings = settings or AmlSettings()
        self._clock = clock or tickets.clock
        self._sessions = async_sessionmaker(tickets.engine, expire_on_commit=False)
        # One message per caller at a time (callers' messages go on side by side): what stands is read and the
        # fix applied without another fix of that caller in between, and the SMS and HTTPS copies of one fix,
        # arriving together, are seen as one.
        self._locks: dict[tuple[str, ...], tuple[asyncio.Lock, int]] = {}

    # -- the two doors ----------------------------------------------------------------

    async def receive_sms(self, text: str, *, sender: str | None, received_at: float | None = None) -> AmlOutcome:
        """An AML SMS from ``sender``; ``AmlError``/``AmlRefused`` (already kept) when it is not used."""
        at = self._clock() if received_at is None else received_at
        try:
            fix = parse_sms(text, sender=sender)
        except AmlError as exc:
            await self._keep("sms", sender, str(text), at, Verdict.REFUSED, exc.reason, str(exc))
            raise
        return await self.receive(fix, received_at=at)

    async def receive_https(self, form: Mapping[str, str], *, received_at: float | None = None) -> AmlOutcome:
        """An AML HTTPS message's form fields; ``AmlError``/``AmlRefused`` (already kept) when it is not used."""
        at = self._clock() if received_at is None else received_at
        try:
            fix = parse_https(form)
        except AmlError as exc:
            number = form.get("device_number") if isinstance(form, Mapping) else None
            await self._keep("https", number if isinstance(number, str) else None, form_text(form), at,
                             Verdict.REFUSED, exc.reason, str(exc))
            raise
        return await self.receive(fix, received_at=at)

    async def refuse(self, channel: str, raw: str, error: AmlError, *, received_at: float | None = None) -> None:
        """Keep a message refused before it could be read (not a form, too large)."""
        at = self._clock() if received_at is None else received_at
        await self._keep(channel, None, raw, at, Verdict.REFUSED, error.reason, str(error))

    # -- binding ----------------------------------------------------------------------

    async def receive(self, fix: AmlFix, *, received_at: float | None = None) -> AmlOutcome:
        """Bind ``fix`` to its ticket and locate or record it; refusals raise ``AmlRefused`` once kept."""
        at = self._clock() if received_at is None else received_at
        async with self._caller(fix.msisdn):
            try:
                return await self._bind(fix, at)
            except AmlRefused as exc:
                await self._keep(fix.channel, fix.msisdn, fix.raw, at, Verdict.REFUSED, exc.reason, str(exc),
                                 fix=fix, ticket=exc.ticket)
                log.info("AML %s from %s refused: %s", fix.channel, fix.msisdn, exc)
                raise

    @contextlib.asynccontextmanager
    async def _caller(self, msisdn: str | None) -> AsyncIterator[None]:
        """The lock of one caller, however the number is spelt; dropped when nobody holds or awaits it."""
        key = () if msisdn is None else number_forms(msisdn)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _bind(self, fix: AmlFix, at: float) -> AmlOutcome:
        settings = self.settings
        if fix.msisdn is None:
            raise AmlRefused("no-number", "the message names no caller number")
        if fix.positioned_at - at > settings.future_skew_s:
            raise AmlRefused("future", f"positioned {fix.positioned_at - at:.0f} s after it arrived: "
                                       "the handset's clock is wrong")
        if at - fix.positioned_at > settings.max_age_s:
            raise AmlRefused("stale", f"positioned {(at - fix.positioned_at) / 60:.0f} min before it arrived "
                                      f"(at most {settings.max_age_s / 60:g} min)")
        ticket = await self._ticket_of(fix.msisdn, at)
        if ticket is None:
            raise AmlRefused("no-ticket", f"no ticket of {fix.msisdn} in the last "
                                          f"{settings.ticket_window_s / 60:g} min")
        if ticket.state is State.CLOSED:
            raise AmlRefused("ticket-closed", f"ticket {ticket.number} of {fix.msisdn} is closed",
                             ticket=ticket.number)
        if await self._seen(ticket.number, fix):
            message_id = await self._keep(fix.channel, fix.msisdn, fix.raw, at, Verdict.DUPLICATE, "duplicate",
                                          "the same fix was already received", fix=fix, ticket=ticket.number)
            return AmlOutcome(Verdict.DUPLICATE, ticket.number, message_id, "duplicate")
        standing = stands(ticket, fix)
        if standing is None:
            try:
                await self._planner.locate(ticket.number, lat=fix.lat, lon=fix.lon, at=at, fix=fix.to_json(),
                                           source=Source.AML)
            except IllegalTransition:  # moved on since it was read (an officer arrived meanwhile)
                standing = ("not-locatable", "the ticket moved on: its incident is no longer moved")
            else:
                message_id = await self._keep(fix.channel, fix.msisdn, fix.raw, at, Verdict.LOCATED, None, None,
                                              fix=fix, ticket=ticket.number)
                return AmlOutcome(Verdict.LOCATED, ticket.number, message_id)
        reason, why = standing
        incident = await self._planner.incident(ticket.number)
        try:
            await self._tickets.record_step(
                ticket.uniqueid, Step.HANDSET_LOCATED, at=at, source=Source.AML, lat=fix.lat, lon=fix.lon,
                fix=fix.to_json(), kept_aside=why, station=None if incident is None else incident.station,
            )
        except IllegalTransition:
            raise AmlRefused("ticket-closed", f"ticket {ticket.number} was closed meanwhile",
                             ticket=ticket.number) from None
        message_id = await self._keep(fix.channel, fix.msisdn, fix.raw, at, Verdict.RECORDED, reason, why,
                                      fix=fix, ticket=ticket.number)
        return AmlOutcome(Verdict.RECORDED, ticket.number, message_id, reason, why)

    async def _ticket_of(self, msisdn: str, at: float) -> TicketView | None:
        """The number's live ticket, else its newest open one in the window, else its newest one in the window."""
        since_us = round((at - self.settings.ticket_window_s) * 1_000_000)
        live = [str(s) for s in CALL_LIVE_STATES]
        async with self._tickets.engine.connect() as conn:
            rows = (await conn.execute(
                select(Ticket.number, Ticket.state, Ticket.uniqueid)
                .where(Ticket.caller_id.in_(number_forms(msisdn)),
                       (Ticket.created_at_us >= since_us) | Ticket.state.in_(live))
                .order_by(Ticket.created_at_us.desc(), Ticket.id.desc())
                .limit(TICKETS_LOOKED_AT)
            )).all()
        if not rows:
            return None
        calling = next((uid for _, s, uid in rows if s in live), None)
        if calling is not None:
            return await self._tickets.find_by_uniqueid(calling)  # a live call's view is in memory
        return await self._tickets.get(next((n for n, s, _ in rows if s != State.CLOSED), rows[0][0]))

    async def _seen(self, number: str, fix: AmlFix) -> bool:
        at_us = round(fix.positioned_at * 1_000_000)
        slack_us = round(SAME_FIX_S * 1_000_000)
        async with self._tickets.engine.connect() as conn:
            rows = (await conn.execute(
                select(AmlMessageRow.lat, AmlMessageRow.lon).where(
                    AmlMessageRow.ticket_number == number,
                    AmlMessageRow.verdict.in_([str(Verdict.LOCATED), str(Verdict.RECORDED)]),
                    AmlMessageRow.positioned_at_us.between(at_us - slack_us, at_us + slack_us),
                )
            )).all()
        return any(lat is not None and lon is not None and haversine_m(lat, lon, fix.lat, fix.lon) <= SAME_FIX_M
                   for lat, lon in rows)

    async def _keep(
        self, channel: str, msisdn: str | None, raw: str, at: float, verdict: Verdict, reason: str | None,
        error: str | None, *, fix: AmlFix | None = None, ticket: str | None = None,
    ) -> int:
        values: dict[str, Any] = {
            "received_at_us": round(at * 1_000_000), "channel": channel,
            "msisdn": None if msisdn is None else msisdn[:MSISDN_MAX], "raw": raw[:RAW_MAX], "verdict": str(verdict),
            "reason": None if reason is None else reason[:REASON_MAX],
            "error": None if error is None else error[:ERROR_MAX], "ticket_number": ticket,
        }
        if fix is not None:
            values.update(lat=fix.lat, lon=fix.lon, radius_m=fix.radius_m, method=str(fix.method),
                          positioned_at_us=round(fix.positioned_at * 1_000_000))
        # Core statements, as the ticket service writes: this sits on the path of every fix.
        async with self._tickets.engine.begin() as conn:
            return (await conn.execute(_INSERT_MESSAGE, values)).inserted_primary_key[0]

    # -- the audit ----------------------------------------------------------------------

    async def messages(self, *, limit: int = 100, ticket: str | None = None) -> list[dict[str, Any]]:
        """The newest messages first (of one ticket, if given), as the audit shows them."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError(f"limit must be 1 to 1000, got {limit!r}")
        query = select(AmlMessageRow).order_by(AmlMessageRow.id.desc()).limit(limit)
        if ticket is not None:
            query = query.where(AmlMessageRow.ticket_number == ticket)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [_message_json(r) for r in rows]


def _message_json(r: AmlMessageRow) -> dict[str, Any]:
    return {
        "id": r.id, "received_at": iso_utc(r.received_at_us), "channel": r.channel, "msisdn": r.msisdn,
        "verdict": r.verdict, "reason": r.reason, "error": r.error, "ticket": r.ticket_number,
        "lat": r.lat, "lon": r.lon, "radius_m": r.radius_m, "method": r.method,
        "positioned_at": None if r.positioned_at_us is None else iso_utc(r.positioned_at_us), "raw": r.raw,
    }
