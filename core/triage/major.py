"""A declared major incident: the fire or explosion that hundreds of callers are ringing about.

A supervisor declares it (a place — an address, a position or both — and a
type) and ends it; at most one is declared at a time. It lives on a ticket of
its own, the incident's ticket: an existing ticket named in the declaration
(the first call about the fire, say), or one opened for it (a report ticket,
channel ``major``, taken by the supervisor). Everything that happens to it is
a step on that ticket (``major_incident_declared``, ``…_message``,
``…_ended``, ``…_caller``), and the declaration itself is a row of
``major_incidents``, so the declared incident is restored when the backend
starts again (``MajorIncidents.restore``).

While it is declared, new 110 callers hear its message while they wait (the
dialplan, ``dialplan/extensions.conf``: a music-on-hold class that never
holds the queue up); a caller who presses 1 is queued behind other
emergencies and linked to the incident (``link_caller``): a
``major_incident_linked`` step on his ticket naming the incident's ticket and a
``major_incident_caller`` step on the incident's ticket naming his.

The message is a recording a supervisor makes (there is no speech synthesis:
the place and type are spoken by a person); ``check_message`` reads it
strictly (WAV, PCM 16-bit, mono, 8 kHz, 1–30 s) and ``MessageFiles`` keeps it
where Asterisk plays it from, followed by a ring-back cadence so the caller
hears a ringing line between two playings. Until one is recorded, callers
hear the generic message of ``dialplan/musiconhold.conf``.

API for other capabilities (mobilising support for the incident, the desk):
``MajorIncidents.current`` (a ``MajorIncident`` or ``None``), ``get(id)``,
``add_listener(fn)`` (called with the incident after each declare, message
and end), and the incident's ticket number, ``MajorIncident.ticket``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import CHAR, BigInteger, Float, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import State, Step
from core.calls.tickets import Source, TicketService, TicketView, UnknownTicket
from core.dispatch.geo import GeoError, check_lat_lon
from core.errors import DomainError
from core.store import TEXT_MAX, Base, _Id

__all__ = [
    "ADDRESS_MAX", "CHANNEL", "GENERIC_CLASS", "Kind", "MESSAGE_CLASS", "MajorIncident", "MajorIncidentDeclared",
    "MajorIncidentRow", "MajorIncidents", "MessageFiles", "MessageInfo", "NoMajorIncident", "BadMajorIncident",
    "BadMessage", "check_message",
]

log = logging.getLogger(__name__)

CHANNEL = "major"  # the report channel of an incident ticket opened for a declaration
ADDRESS_MAX = 200
REASON_MAX = 200
# Music-on-hold classes of dialplan/musiconhold.conf: the incident's recorded message, or the generic one.
MESSAGE_CLASS = "jiejing-major"
GENERIC_CLASS = "jiejing-major-generic"
# The recorded message, as Asterisk plays it: 8 kHz 16-bit mono PCM (format_wav's .wav).
RATE = 8000
MESSAGE_MIN_S = 1.0
MESSAGE_MAX_S = 30.0
MESSAGE_BYTES_MAX = 44 + int(MESSAGE_MAX_S * RATE * 2) + 4096
MESSAGE_FILE = "major-incident"  # + .wav; the name musiconhold.conf's entry gives (without extension)
RINGBACK_FILE = "ringback"  # + .wav: China's ring-back (450 Hz, 1 s on, 4 s off), played after the message


class Kind(StrEnum):
    """What kind of major incident; the label is what screens show (the message itself is recorded)."""

    FIRE = "fire"
    EXPLOSION = "explosion"
    COLLAPSE = "collapse"
    CHEMICAL = "chemical"
    FLOOD = "flood"
    TRAFFIC = "traffic"
    CROWD = "crowd"
    OTHER = "other"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Kind.FIRE: "火灾 fire", Kind.EXPLOSION: "爆炸 explosion", Kind.COLLAPSE: "坍塌 collapse",
    Kind.CHEMICAL: "危化品泄漏 chemical leak", Kind.FLOOD: "洪涝 flood", Kind.TRAFFIC: "重大交通事故 major crash",
    Kind.CROWD: "人群拥挤踩踏 crowd crush", Kind.OTHER: "重大事件 major incident",
}


class BadMajorIncident(DomainError):
    """A declaration that cannot be used: no place, an unknown type, a bad position or ticket."""

    status = 400
    error_id = "invalid-major-incident"


class MajorIncidentDeclared(DomainError):
    """Another major incident is declared; end it first (one message, one key, one incident)."""

    status = 409
    error_id = "major-incident-declared"


class NoMajorIncident(DomainError):
    """No major incident is declared (nothing to end, nothing to record a message for)."""

    status = 409
    error_id = "no-major-incident"


class BadMessage(DomainError):
    """A recorded message that Asterisk could not play as it is; ``str()`` says what to change."""

    status = 400
    error_id = "invalid-major-message"


class MajorIncidentRow(Base):
    __tablename__ = "major_incidents"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    ticket_number: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(TEXT_MAX))
    declared_by: Mapped[str] = mapped_column(String(64))
    declared_at_us: Mapped[int] = mapped_column(BigInteger)
    message_sha256: Mapped[str | None] = mapped_column(CHAR(64))
    ended_by: Mapped[str | None] = mapped_column(String(64))
    ended_at_us: Mapped[int | None] = mapped_column(BigInteger, index=True)
    end_reason: Mapped[str | None] = mapped_column(String(TEXT_MAX))


@dataclass(frozen=True, slots=True)
class MajorIncident:
    """One declared major incident; ``ended_at`` is ``None`` while it is declared."""

    id: int
    ticket: str  # the incident's ticket number
    kind: Kind
    address: str | None
    lat: float | None
    lon: float | None
    reason: str
    declared_by: str
    declared_at: float
    message_sha256: str | None = None  # the recorded message callers hear; None: the generic one
    ended_by: str | None = None
    ended_at: float | None = None
    end_reason: str | None = None

    @property
    def declared(self) -> bool:
        return self.ended_at is None

    @property
    def place(self) -> str:
        if self.address:
            return self.address
        return f"{self.lat:.5f}, {self.lon:.5f}"

    @property
    def title(self) -> str:
        """What screens show: the type and the place."""
        return f"{self.kind.label} — {self.place}"

    @property
    def moh_class(self) -> str:
        """The music-on-hold class new callers hear: the recorded message, or the generic one."""
        return MESSAGE_CLASS if self.message_sha256 else GENERIC_CLASS

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ticket": self.ticket, "kind": self.kind.value, "kind_label": self.kind.label,
                "address": self.address, "lat": self.lat, "lon": self.lon, "place": self.place, "title": self.title,
                "reason": self.reason, "declared_by": self.declared_by, "declared_at": self.declared_at,
                "message": {"recorded": self.message_sha256 is not None, "sha256": self.message_sha256,
                            "class": self.moh_class},
                "declared": self.declared, "ended_by": self.ended_by, "ended_at": self.ended_at,
                "end_reason": self.end_reason}


def _incident(row: MajorIncidentRow) -> MajorIncident:
    return MajorIncident(
        id=row.id, ticket=row.ticket_number, kind=Kind(row.kind), address=row.address, lat=row.lat, lon=row.lon,
        reason=row.reason, declared_by=row.declared_by, declared_at=row.declared_at_us / 1e6,
        message_sha256=row.message_sha256, ended_by=row.ended_by,
        ended_at=None if row.ended_at_us is None else row.ended_at_us / 1e6, end_reason=row.end_reason)


def _text(value: Any, name: str, limit: int, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise BadMajorIncident(f"{name} is required", details={"field": name})
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise BadMajorIncident(f"{name} must be printable text of 1 to {limit} characters",
                               details={"field": name})
    return value.strip()


Listener = Callable[[MajorIncident], object]
Locate = Callable[..., Awaitable[object]]


class MajorIncidents:
    """The declared major incident (at most one), its record and its callers.

    ``locate`` (the dispatch planner's) sets the incident ticket's location from the declared position, so the
    heat map and a dispatch see it; without it only the declaration holds the place.
    """

    def __init__(self, service: TicketService, *, locate: Locate | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._service = service
        self._engine = service.engine
        self._locate = locate
        self._clock = clock
        self._current: MajorIncident | None = None
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []

    @property
    def current(self) -> MajorIncident | None:
        """The declared major incident, or ``None``."""
        return self._current

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """``listener(incident)`` after each declaration, message and end; returns its remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, incident: MajorIncident) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(incident)
            except Exception:
                log.exception("major incident listener %r failed", listener)

    async def restore(self) -> MajorIncident | None:
        """At start: the incident declared before the restart, if it was not ended; listeners hear of it."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                select(MajorIncidentRow).where(MajorIncidentRow.ended_at_us.is_(None))
                .order_by(MajorIncidentRow.id.desc()).limit(1))).first()
        if row is None:
            return None
        self._current = _incident(MajorIncidentRow(**row._mapping))
        log.warning("major incident %d restored: %s (ticket %s)", self._current.id, self._current.title,
                    self._current.ticket)
        self._notify(self._current)
        return self._current

    async def get(self, incident_id: int) -> MajorIncident | None:
        if self._current is not None and self._current.id == incident_id:
            return self._current
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(MajorIncidentRow).where(MajorIncidentRow.id == incident_id))).first()
        return None if row is None else _incident(MajorIncidentRow(**row._mapping))

    async def recent(self, limit: int = 20) -> list[MajorIncident]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(MajorIncidentRow).order_by(MajorIncidentRow.id.desc()).limit(limit))).all()
        return [_incident(MajorIncidentRow(**r._mapping)) for r in rows]

    async def declare(self, *, kind: str, by: str, address: str | None = None, lat: float | None = None,
                      lon: float | None = None, ticket: str | None = None, reason: str | None = None,
                      ) -> MajorIncident:
        """Declare a major incident; everything is checked before anything is written.

        The place is an address, a position (``lat``, ``lon``) or both. ``ticket`` names an existing ticket (not
        closed) that becomes the incident's; without it a ticket is opened for the incident.
        """
        try:
            kind = Kind(kind)
        except ValueError:
            raise BadMajorIncident(f"type must be one of {', '.join(k.value for k in Kind)}",
                                   details={"field": "kind"}) from None
        address = _text(address, "address", ADDRESS_MAX, required=False)
        reason = _text(reason, "reason", REASON_MAX, required=False) or f"{kind.label} declared"
        if (lat is None) != (lon is None):
            raise BadMajorIncident("a position needs both lat and lon", details={"field": "lat" if lat is None else "lon"})
        if lat is not None:
            try:
                lat, lon = check_lat_lon(lat, lon)
            except GeoError as exc:
                raise BadMajorIncident(str(exc), details={"field": "position"}) from None
        if address is None and lat is None:
            raise BadMajorIncident("name the place: an address, a position (lat, lon) or both",
                                   details={"field": "address"})
        async with self._lock:
            if self._current is not None:
                raise MajorIncidentDeclared(
                    f"major incident {self._current.id} ({self._current.title}) is declared; end it first",
                    details={"id": self._current.id, "ticket": self._current.ticket})
            now = self._clock()
            view = await self._incident_ticket(ticket, by=by, kind=kind, address=address, at=now)
            if lat is not None and self._locate is not None:
                try:
                    await self._locate(view.number, lat=lat, lon=lon, address=address, at=now)
                except Exception:
                    # The declaration stands without it: the place is in the declaration itself.
                    log.exception("%s: the major incident's position was not set as its location", view.number)
            row = MajorIncidentRow(ticket_number=view.number, kind=kind.value, address=address, lat=lat, lon=lon,
                                   reason=reason, declared_by=by, declared_at_us=round(now * 1e6))
            async with self._engine.begin() as conn:
                inserted = await conn.execute(MajorIncidentRow.__table__.insert().values(
                    **{c: getattr(row, c) for c in ("ticket_number", "kind", "address", "lat", "lon", "reason",
                                                    "declared_by", "declared_at_us")}))
                incident_id = inserted.inserted_primary_key[0]
            incident = MajorIncident(id=incident_id, ticket=view.number, kind=kind, address=address, lat=lat,
                                     lon=lon, reason=reason, declared_by=by, declared_at=row.declared_at_us / 1e6)
            await self._step(incident, Step.MAJOR_INCIDENT_DECLARED, at=now, source=Source.API, id=incident_id,
                             kind=kind.value, address=address, lat=lat, lon=lon, by=by, reason=reason)
            self._current = incident
        log.warning("major incident %d declared by %s: %s (ticket %s)", incident.id, by, incident.title,
                    incident.ticket)
        self._notify(incident)
        return incident

    async def _incident_ticket(self, number: str | None, *, by: str, kind: Kind, address: str | None,
                               at: float) -> TicketView:
        if number is not None:
            view = await self._service.get(number) if isinstance(number, str) else None
            if view is None:
                raise BadMajorIncident(f"no ticket {number!r}", details={"field": "ticket"},
                                       error_id=UnknownTicket.error_id, status=404)
            if view.state is State.CLOSED:
                raise BadMajorIncident(f"ticket {number} is closed; name an open ticket or none",
                                       details={"field": "ticket", "state": view.state.value})
            return view
        view = await self._service.open_report(channel=CHANNEL, ref=uuid.uuid4().hex, sender=by, at=at,
                                               source=Source.API, text=f"{kind.label}: {address or ''}".strip(),
                                               by=by)
        return await self._service.take(view.number, by=by, at=at)

    async def _step(self, incident: MajorIncident, step: Step, *, at: float, source: Source, **detail: Any) -> None:
        view = await self._service.get(incident.ticket)
        if view is None or view.state is State.CLOSED:
            log.warning("major incident %d: its ticket %s is %s; %s not recorded there", incident.id,
                        incident.ticket, "gone" if view is None else "closed", step.value)
            return
        await self._service.record_step(view.uniqueid, step, at=at, source=source, **detail)

    async def set_message(self, info: MessageInfo, *, by: str) -> MajorIncident:
        """The declared incident's recorded message is now ``info`` (already kept by ``MessageFiles``)."""
        async with self._lock:
            current = self.require()
            async with self._engine.begin() as conn:
                await conn.execute(update(MajorIncidentRow).where(MajorIncidentRow.id == current.id)
                                   .values(message_sha256=info.sha256))
            incident = replace(current, message_sha256=info.sha256)
            await self._step(incident, Step.MAJOR_INCIDENT_MESSAGE, at=self._clock(), source=Source.API,
                             id=incident.id, sha256=info.sha256, seconds=round(info.seconds, 2), by=by)
            self._current = incident
        self._notify(incident)
        return incident

    def require(self) -> MajorIncident:
        """The declared incident; ``NoMajorIncident`` when there is none."""
        if self._current is None:
            raise NoMajorIncident("no major incident is declared")
        return self._current

    async def end(self, *, by: str, reason: str | None = None) -> MajorIncident:
        """End the declared incident: new callers are no longer offered it; its ticket goes on."""
        reason = _text(reason, "reason", REASON_MAX, required=False) or "ended"
        async with self._lock:
            current = self.require()
            now = self._clock()
            async with self._engine.begin() as conn:
                await conn.execute(update(MajorIncidentRow).where(MajorIncidentRow.id == current.id)
                                   .values(ended_by=by, ended_at_us=round(now * 1e6), end_reason=reason))
            incident = replace(current, ended_by=by, ended_at=now, end_reason=reason)
            self._current = None
            try:
                await self._step(incident, Step.MAJOR_INCIDENT_ENDED, at=now, source=Source.API, id=incident.id,
                                 by=by, reason=reason)
            except Exception:
                log.exception("major incident %d ended; its ticket's step was not written", incident.id)
        log.warning("major incident %d ended by %s: %s", incident.id, by, reason)
        self._notify(incident)
        return incident

    async def link_caller(self, uniqueid: str, incident_id: int, *, at: float,
                          source: Source | str = Source.CEL) -> TicketView | None:
        """The caller of ``uniqueid`` pressed 1 for incident ``incident_id``: a step on both tickets.

        Idempotent (a call replayed from Asterisk's log is linked once). ``None`` when there is nothing to link:
        no such incident, or no ticket for the call yet.
        """
        incident = await self.get(incident_id)
        if incident is None:
            log.warning("call %s pressed 1 for major incident %s, which is not known", uniqueid, incident_id)
            return None
        caller = await self._service.find_by_uniqueid(uniqueid)
        if caller is None:
            return None
        if any(s.step is Step.MAJOR_INCIDENT_LINKED for s in caller.steps):
            return caller
        if caller.number == incident.ticket:
            return caller
        if caller.state is not State.CLOSED:
            caller = await self._service.record_step(uniqueid, Step.MAJOR_INCIDENT_LINKED, at=at, source=source,
                                                     id=incident.id, ticket=incident.ticket)
        await self._step(incident, Step.MAJOR_INCIDENT_CALLER, at=at, source=Source(source), id=incident.id,
                         ticket=caller.number, caller=caller.caller_id)
        return caller


# -- the recorded message ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageInfo:
    sha256: str
    seconds: float
    size: int


def check_message(data: bytes) -> tuple[MessageInfo, bytes]:
    """A supervisor's recording: RIFF/WAVE, PCM 16-bit, mono, 8 kHz, 1–30 s. Its info and its samples."""
    how = "record or convert it as WAV, PCM 16-bit, mono, 8000 Hz (e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav)"
    if not isinstance(data, bytes | bytearray) or len(data) < 44:
        raise BadMessage(f"not a WAV file; {how}", details={"reason": "not-wav"})
    if len(data) > MESSAGE_BYTES_MAX:
        raise BadMessage(f"the message is longer than {MESSAGE_MAX_S:g} s; keep it short",
                         details={"reason": "too-long"})
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise BadMessage(f"not a WAV file; {how}", details={"reason": "not-wav"})
    fmt = samples = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        if chunk == b"fmt ":
            fmt = body
        elif chunk == b"data":
            samples = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16 or samples is None:
        raise BadMessage(f"a WAV file without its format or data chunk; {how}", details={"reason": "not-wav"})
    audio_format, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if (audio_format, channels, rate, bits) != (1, 1, RATE, 16):
        raise BadMessage(f"the WAV file is format {audio_format}, {channels} channel(s), {rate} Hz, {bits}-bit; "
                         f"{how}", details={"reason": "format", "format": audio_format, "channels": channels,
                                            "rate": rate, "bits": bits})
    samples = bytes(samples[:len(samples) - len(samples) % 2])
    seconds = len(samples) / 2 / RATE
    if not MESSAGE_MIN_S <= seconds <= MESSAGE_MAX_S:
        raise BadMessage(f"the message lasts {seconds:.1f} s; it must last {MESSAGE_MIN_S:g} to {MESSAGE_MAX_S:g} s",
                         details={"reason": "length", "seconds": round(seconds, 2)})
    if not any(samples[i:i + 2] != b"\x00\x00" for i in range(0, len(samples), 2)):
        raise BadMessage("the message is silent: nothing was recorded", details={"reason": "silent"})
    return MessageInfo(hashlib.sha256(bytes(data)).hexdigest(), seconds, len(data)), samples


def wav(samples: bytes) -> bytes:
    """8 kHz 16-bit mono PCM samples as a WAV file."""
    return (b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16) + b"data" + struct.pack("<I", len(samples))
            + samples)


def ringback(cycles: int = 1, *, hz: float = 450.0, on_s: float = 1.0, off_s: float = 4.0) -> bytes:
    """China's ring-back cadence (450 Hz, 1 s on, 4 s off) as samples, made here (no sound file shipped)."""
    on = b"".join(struct.pack("<h", round(8000 * math.sin(2 * math.pi * hz * i / RATE)))
                  for i in range(int(on_s * RATE)))
    return (on + b"\x00\x00" * int(off_s * RATE)) * cycles


class MessageFiles:
    """The folder Asterisk plays the major-incident message from (``musiconhold.conf`` names its files).

    ``keep`` writes the recording followed by a short gap, atomically (a caller starting the message meanwhile
    gets the old or the new file, never half of one); ``prepare`` writes the ring-back the generic class plays.
    """

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = Path(folder) if folder else None

    def prepare(self) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(RINGBACK_FILE, wav(ringback()))

    def keep(self, samples: bytes) -> None:
        if self.folder is None:
            raise BadMessage("no folder for the message is configured (JIEJING_MAJOR_MESSAGE_DIR)",
                             details={"reason": "not-configured"}, status=503)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(MESSAGE_FILE, wav(samples + b"\x00\x00" * (RATE // 2)))

    def _write(self, name: str, data: bytes) -> None:
        assert self.folder is not None
        target = self.folder / f"{name}.wav"
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
