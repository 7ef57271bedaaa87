"""Incidents that never came through 110: reported at a station's counter, found on patrol, sent in as a tip.

Station staff enter them (``POST /api/incidents``) and they become tickets
like any call's, so that the incident store, the heat map, the stats and the
journal hold every incident of the city. An entry goes through the text
reports' intake (``core.triage.reports``: channel and source ``station``), so
it is numbered, opens with a ``reported`` step (how it came, the text, who
entered it and for which station, when it happened) and its text is scanned
for major-incident keywords, which alert supervisors as a report's do. It is
then taken at once by whoever entered it (who did is on record), located (a
position, or a place of the gazetteer; the cell gives the station that
answers for it, whichever station entered it) and classified by the triage
desk, so the rollup counts it by type and station. The routing rules hand
none of them over (``core.triage.desk.entered_by_station``): there is no
caller to conference or transfer, and a station already has it.

One entry is one ticket: the ticket is keyed by the entering station (or,
for a supervisor entering for no station, the user) and the client's
``ref``, so a form sent twice finds the ticket it made and finishes what the
first sending may have left undone (taking, locating, classifying). Without
a ``ref`` every entry is a new ticket. Everything is checked before anything
is stored: a bad entry leaves no trace.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.calls.lifecycle import State, Step
from core.calls.tickets import TicketView, iso_utc
from core.dispatch.geo import GeoError, check_lat_lon
from core.dispatch.officers import STATION_ID_MAX, UnknownStation
from core.dispatch.planner import ADDRESS_MAX, DispatchPlanner
from core.errors import DomainError
from core.triage.classify import IncidentType, Priority, current_classification
from core.triage.desk import TriageDesk
from core.triage.repeat import PHONE
from core.triage.reports import (
    REF,
    REPORT_TEXT_MAX,
    ReportIntake,
    TextReport,
    _check_characters,
)

__all__ = ["HOW", "OCCURRED_DAYS_MAX", "InvalidIncident", "NotOwnStation", "StationEntry", "StationIncidents",
           "parse_entry"]

log = logging.getLogger(__name__)

CHANNEL = "station"
HOW = ("counter", "patrol", "tip")  # reported at the counter, found on patrol, sent in as a tip
OCCURRED_DAYS_MAX = 30  # older incidents are the records office's, not the intake's
FUTURE_SLACK_S = 60.0  # a station PC's clock may run a little ahead of the center's
STATION = re.compile(rf"[A-Za-z0-9_.:-]{{1,{STATION_ID_MAX}}}")


class InvalidIncident(DomainError, ValueError):
    """An entry the center refuses as it stands; ``details.field`` names what is wrong."""

    status = 400
    error_id = "invalid-incident"


class NotOwnStation(DomainError):
    """A station user entering an incident in another station's name."""

    status = 403
    error_id = "own-station-only"


@dataclass(frozen=True, slots=True)
class StationEntry:
    how: str  # one of HOW
    text: str
    type: IncidentType
    priority: Priority
    by: str  # the user who entered it
    station: str | None  # the station that entered it (None: a supervisor entering for none)
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    reporter: str | None = None  # the reporter's phone, if one was given
    ref: str | None = None  # the client's id of the entry
    occurred_at: float | None = None  # epoch seconds, when it happened (if not just now)


def _fail(message: str, field: str) -> InvalidIncident:
    return InvalidIncident(message, details={"field": field})


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _fail(f"{name} must be a non-empty text of at most {limit} characters", name)
    try:
        _check_characters(value, name)
    except ValueError as exc:
        raise _fail(str(exc), name) from None
    return value


def occurred_time(value: Any, now: float) -> float:
    """``occurred_at`` (ISO 8601 with a zone, or epoch seconds) as epoch seconds, in the last 30 days."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail("occurred_at must be an ISO 8601 time with a zone or epoch seconds", "occurred_at")
    at: float
    if isinstance(value, str):
        try:
            at = float(value)
        except OverflowError:
            raise _fail("occurred_at is out of range", "occurred_at") from None
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise _fail("occurred_at must be an ISO 8601 time with a zone or epoch seconds",
                            "occurred_at") from None
            if parsed.tzinfo is None:
                raise _fail("occurred_at needs a time zone, e.g. +08:00", "occurred_at") from None
            try:
                at = parsed.timestamp()
            except (OverflowError, ValueError):
                raise _fail("occurred_at is out of range", "occurred_at") from None
    else:
        try:
            at = float(value)
        except OverflowError:  # an integer JSON number of 400 digits
            raise _fail("occurred_at is out of range", "occurred_at") from None
    if not math.isfinite(at):
        raise _fail("occurred_at must be a finite time", "occurred_at")
    if at > now + FUTURE_SLACK_S:
        raise _fail("occurred_at is in the future", "occurred_at")
    if at < now - OCCURRED_DAYS_MAX * 86400:
        raise _fail(f"occurred_at is more than {OCCURRED_DAYS_MAX} days ago", "occurred_at")
    return at


def parse_entry(body: Mapping[str, Any], *, by: str, own_station: str | None, now: float) -> StationEntry:
    """A ``StationEntry`` from a JSON body; ``InvalidIncident`` names what is wrong, ``NotOwnStation`` a forgery.

    ``own_station`` is the station of a station user (its entries are its
    station's whatever the body says, and naming another is refused); for
    supervisors and admins it is None and the body's ``station`` (optional)
    says for which station they enter it.
    """
    named = body.get("station")
    if named is not None and (not isinstance(named, str) or not STATION.fullmatch(named)):
        raise _fail("station must be a station id", "station")
    if own_station is not None and named is not None and named != own_station:
        raise NotOwnStation(f"a station user enters incidents for its own station {own_station} only",
                            details={"station": named, "yours": own_station})
    how = body.get("how")
    if how not in HOW:
        raise _fail(f"how must be one of {', '.join(HOW)}", "how")
    text = _text(body.get("text"), "text", REPORT_TEXT_MAX)
    try:
        kind = IncidentType(body.get("type"))
    except ValueError:
        raise _fail(f"type must be one of {', '.join(IncidentType)}", "type") from None
    priority = body.get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= len(Priority):
        raise _fail("priority must be 1 (most urgent) to 4", "priority")
    level = Priority(priority)
    lat, lon = body.get("lat"), body.get("lon")
    if (lat is None) != (lon is None):
        raise _fail("give both lat and lon, or neither", "lat" if lat is None else "lon")
    if lat is not None:
        try:
            lat, lon = check_lat_lon(lat, lon)
        except GeoError as exc:
            raise _fail(str(exc), "lat") from None
    address = body.get("address")
    if address is not None:
        address = _text(address, "address", ADDRESS_MAX)
    if lat is None and address is None:
        raise _fail("an incident needs its place: lat and lon, or an address of the gazetteer", "address")
    reporter = body.get("reporter")
    if reporter is not None and (not isinstance(reporter, str) or not PHONE.fullmatch(reporter)):
        raise _fail("reporter must be a phone number: 3-20 digits, optionally after +", "reporter")
    ref = body.get("ref")
    if ref is not None and (not isinstance(ref, str) or not REF.fullmatch(ref)):
        raise _fail("ref must be the entry's id at the client: 1-64 letters, digits or _ . : -", "ref")
    occurred = body.get("occurred_at")
    return StationEntry(
        how=how, text=text, type=kind, priority=level, by=by, station=own_station or named,
        lat=lat, lon=lon, address=address, reporter=reporter, ref=ref,
        occurred_at=None if occurred is None else occurred_time(occurred, now),
    )


class StationIncidents:
    """Enters station incidents: the report intake's ticket, taken, located and classified, in one go."""

    def __init__(self, intake: ReportIntake, desk: TriageDesk, planner: DispatchPlanner) -> None:
        self._intake = intake
        self._desk = desk
        self._planner = planner
        # One entry at a time (a city's stations enter a few hundred a day): a form sent twice at once
        # is one ticket, taken and classified once.
        self._lock = asyncio.Lock()

    async def enter(self, entry: StationEntry) -> dict[str, Any]:
        """The entry's ticket (new, or the one the same ``ref`` made) and what was done: see ``_answer``.

        Raises ``InvalidIncident`` for a station nobody configured and the
        gazetteer's ``AddressNotFound`` for an unknown address, before
        anything is stored.
        """
        async with self._lock:
            return await self._enter(entry)

    async def _enter(self, entry: StationEntry) -> dict[str, Any]:
        if entry.station is not None:
            try:
                await self._planner.officers.station(entry.station)
            except UnknownStation:
                raise InvalidIncident(f"no station {entry.station!r} is configured", error_id="unknown-station",
                                      details={"field": "station", "station": entry.station}) from None
        if entry.lat is None:
            assert entry.address is not None  # parse_entry asks for one or the other
            await self._planner.places.resolve(entry.address)  # refused here, before the ticket is numbered
        extra: dict[str, Any] = {"how": entry.how, "entered_by": entry.by, "entered_by_station": entry.station}
        if entry.occurred_at is not None:
            extra["occurred_at"] = iso_utc(round(entry.occurred_at * 1_000_000))
        ref = f"{entry.station or entry.by}:{entry.ref or uuid.uuid4().hex}"
        report = TextReport(CHANNEL, ref, entry.reporter or "", entry.text, entry.lat, entry.lon, entry.address,
                            extra=extra)
        received = await self._intake.receive(report)
        number = received["number"]
        ticket = await self._desk.tickets.get(number)
        assert ticket is not None  # the intake has just stored or found it
        location_error = received["location_error"]
        if entry.lat is None and not _located(ticket):
            try:
                ticket, _ = await self._planner.locate(number, address=entry.address)
            except Exception:  # the entry stands with its address on the reported step; the station can set it
                location_error = "the address could not be stored as the incident location; it is on the entry"
                log.exception("station incident %s: location not stored", number)
        if ticket.state is State.REPORTED:
            ticket = await self._desk.tickets.take(number, by=entry.by)
        if current_classification(ticket) is None:
            # The desk's classification, as a call-taker's: the rollup counts it; no rule hands it over.
            await self._desk.classify(number, entry.type, entry.priority, by=entry.by)
            ticket = await self._desk.triage.ticket(number)
        if not received["duplicate"]:
            log.info("station incident %s entered by %s for %s (%s)", number, entry.by, entry.station or "no station",
                     entry.how)
        return _answer(ticket, received, location_error)


def _located(ticket: TicketView) -> bool:
    return any(s.step is Step.LOCATED for s in ticket.steps)


def _answer(ticket: TicketView, received: Mapping[str, Any], location_error: str | None) -> dict[str, Any]:
    located = next((s.detail for s in reversed(ticket.steps) if s.step is Step.LOCATED), None)
    classification = current_classification(ticket)
    return {
        "number": ticket.number,
        "state": str(ticket.state),
        "duplicate": received["duplicate"],
        "station": None if located is None else located.get("station"),
        "cell": None if located is None else located.get("cell"),
        "entered_by_station": ticket.steps[0].detail.get("entered_by_station"),
        "type": None if classification is None else str(classification.type),
        "priority": None if classification is None else int(classification.priority),
        "keywords": received["keywords"],
        "major_incident": received["major_incident"],
        "location_error": location_error,
    }
