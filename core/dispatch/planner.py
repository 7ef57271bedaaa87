"""Flattened dispatch: who to ring for an incident, in which order, and what came of it.

The selection rule (``rank_officers``): officers who are available, signed on
and rostered at the moment of dispatch, with a known location, searched by
grid distance from the incident's cell — the cell itself, then ring 1, ring
2, … up to ``max_k``. Within a ring the nearest to the incident point wins
(great-circle metres, rounded to whole metres because GPS fixes are no finer);
equal distances go to the officer whose status changed longest ago (he has
waited longest), then to the lower badge, so the choice is reproducible.

The ladder (``ladder``) follows the station's configuration: by default the
chosen officer, then his unit's duty desk, then the unit's superior, each
with the station's answer timeout. With no officer found, it is the incident
cell's station's desks only.

``DispatchPlanner`` is what the telephony side calls: ``begin`` chooses,
reserves and records ``dispatch_requested``; ``ringing``, ``no_answer``,
``joined`` and ``exhausted`` record each rung's outcome and keep the
officer's status in step; ``arrived`` and ``clear`` come from the web API.
Reservation is an atomic conditional UPDATE in the store (see
``core.dispatch.officers``), and choices in this process are serialised by a lock, so
two simultaneous dispatches never take the same officer.

Every step's detail carries the incident's ``station``: the event stream
filters on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, String, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import State, Step, advance
from core.calls.tables import Ticket
from core.calls.tickets import Source, TicketService, TicketView, UnknownTicket
from core.dispatch.geo import (
    DEFAULT_DETOUR,
    DEFAULT_SPEED_KMH,
    Grid,
    check_lat_lon,
    eta_s,
    haversine_m,
)
from core.dispatch.officers import (
    STATION_ID_MAX,
    OfficerBusy,
    OfficerService,
    OfficerStatus,
    OfficerView,
    StationView,
    UnknownStation,
)
from core.dispatch.places import Gazetteer
from core.errors import DomainError
from core.store import Base

__all__ = [
    "Candidate",
    "Choice",
    "DispatchPlan",
    "DispatchPlanner",
    "DispatchSettings",
    "Incident",
    "NotLocated",
    "Rung",
    "RungKind",
    "choose_officer",
    "ladder",
    "rank_officers",
]

log = logging.getLogger(__name__)

ADDRESS_MAX = 500
DISPOSITION_MAX = 500
NO_ANSWER_OUTCOMES = frozenset({"no_answer", "busy", "unreachable", "failed"})


class NotLocated(DomainError):
    """The ticket has no incident location yet; dispatch needs one."""

    status = 409
    error_id = "not-located"


# -- the incident location ---------------------------------------------------------------


class IncidentRow(Base):
    """Where a ticket's incident is, and which station answers for it."""

    __tablename__ = "incidents"

    number: Mapped[str] = mapped_column(ForeignKey(Ticket.number), primary_key=True)
    address: Mapped[str | None] = mapped_column(String(ADDRESS_MAX))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    cell: Mapped[str] = mapped_column(String(16))
    station_id: Mapped[str | None] = mapped_column(String(STATION_ID_MAX), index=True)
    located_at_us: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True, slots=True)
class Incident:
    number: str
    address: str | None
    lat: float
    lon: float
    cell: str
    station: str | None
    located_at_us: int

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "address": self.address,
            "lat": self.lat,
            "lon": self.lon,
            "cell": self.cell,
            "station": self.station,
            "located_at_us": self.located_at_us,
        }


def _incident(row: IncidentRow) -> Incident:
    return Incident(row.number, row.address, row.lat, row.lon, row.cell, row.station_id, row.located_at_us)


# -- the choice ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    max_k: int = 3  # rings searched around the incident cell; 3 ≈ 3 km at resolution 8
    speed_kmh: float = DEFAULT_SPEED_KMH
    detour: float = DEFAULT_DETOUR
    # An officer whose last fix is older is not chosen: he may be anywhere. None: no limit.
    max_fix_age_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_k, bool) or not isinstance(self.max_k, int) or not 0 <= self.max_k <= 20:
            raise ValueError(f"max_k must be an integer from 0 to 20, got {self.max_k!r}")
        eta_s(0, speed_kmh=self.speed_kmh, detour=self.detour)  # validates both
        if self.max_fix_age_s is not None and not self.max_fix_age_s > 0:
            raise ValueError(f"max_fix_age_s must be positive or None, got {self.max_fix_age_s!r}")


@dataclass(frozen=True, slots=True)
class Candidate:
    officer: OfficerView
    ring: int
    distance_m: float
    eta_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "badge": self.officer.badge,
            "name": self.officer.name,
            "station": self.officer.station,
            "endpoint": self.officer.endpoint,
            "ring": self.ring,
            "distance_m": round(self.distance_m, 1),
            "eta_s": round(self.eta_s, 1),
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """The officer for an incident (or None), and where the incident is."""

    lat: float
    lon: float
    cell: str
    station: str | None  # the incident cell's station
    candidate: Candidate | None
    others: tuple[Candidate, ...] = ()  # next best, in order, should the first be taken meanwhile

    @property
    def officer(self) -> OfficerView | None:
        return None if self.candidate is None else self.candidate.officer

    def to_json(self) -> dict[str, Any]:
        return {
            "lat": self.lat,
            "lon": self.lon,
            "cell": self.cell,
            "station": self.station,
            "officer": None if self.candidate is None else self.candidate.to_json(),
        }


def rank_officers(
    officers: Sequence[OfficerView],
    *,
    lat: float,
    lon: float,
    cell: str,
    grid: Grid,
    at_us: int,
    settings: DispatchSettings,
) -> list[Candidate]:
    """Eligible officers, best first, by the rule in the module docstring."""
    ranked: list[tuple[tuple[int, int, int, str], Candidate]] = []
    for officer in officers:
        if officer.status is not OfficerStatus.AVAILABLE or not officer.on_roster(at_us):
            continue
        if officer.lat is None or officer.lon is None or officer.cell is None:
            continue
        if settings.max_fix_age_s is not None and (
            officer.located_at_us is None or at_us - officer.located_at_us > settings.max_fix_age_s * 1e6
        ):
            continue
        ring = grid.ring_of(cell, officer.cell)
        if ring is None or ring > settings.max_k:
            continue
        distance = haversine_m(lat, lon, officer.lat, officer.lon)
        key = (ring, round(distance), officer.status_changed_at_us, officer.badge)
        eta = eta_s(distance, speed_kmh=settings.speed_kmh, detour=settings.detour)
        ranked.append((key, Candidate(officer, ring, distance, eta)))
    ranked.sort(key=lambda pair: pair[0])
    return [candidate for _, candidate in ranked]


async def incident_station(officers: OfficerService, cell: str, lat: float, lon: float, max_k: int) -> str | None:
    """The station of ``cell``; for a cell nobody was assigned, the nearest assigned cell's within ``max_k``."""
    grid = officers.grid
    assigned = await officers.stations_of_cells(grid.grid_disk(cell, max_k))
    if cell in assigned:
        return assigned[cell]
    if not assigned:
        return None

    def key(item: tuple[str, str]) -> tuple[int, float, str]:
        other, station = item
        c_lat, c_lon = grid.center_of(other)
        return (grid.ring_of(cell, other) or 0, haversine_m(lat, lon, c_lat, c_lon), station)

    return min(assigned.items(), key=key)[1]


async def choose_officer(
    officers: OfficerService,
    *,
    cell: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    at: float,
    settings: DispatchSettings = DispatchSettings(),
) -> Choice:
    """The nearest available on-duty officer for an incident given by point or by cell.

    Given only a cell, distances are measured from its centre. Nothing is reserved.
    """
    grid = officers.grid
    if lat is not None and lon is not None:
        lat, lon = check_lat_lon(lat, lon)
        point_cell = grid.cell_of(lat, lon)
        if cell is not None and grid.check_cell(cell) != point_cell:
            raise ValueError(f"point {lat},{lon} lies in cell {point_cell}, not {cell}")
        cell = point_cell
    elif cell is not None:
        lat, lon = grid.center_of(cell)
    else:
        raise ValueError("give the incident's lat and lon, or its cell")
    at_us = round(at * 1_000_000)
    pool = await officers.available_in(grid.grid_disk(cell, settings.max_k), at)
    ranked = rank_officers(pool, lat=lat, lon=lon, cell=cell, grid=grid, at_us=at_us, settings=settings)
    station = await incident_station(officers, cell, lat, lon, settings.max_k)
    return Choice(
        lat=lat,
        lon=lon,
        cell=cell,
        station=station,
        candidate=ranked[0] if ranked else None,
        others=tuple(ranked[1:]),
    )


# -- the ladder ----------------------------------------------------------------------------


class RungKind(StrEnum):
    OFFICER = "officer"
    DUTY_DESK = "duty_desk"
    SUPERIOR = "superior"


@dataclass(frozen=True, slots=True)
class Rung:
    kind: RungKind
    endpoint: str  # dial string for Asterisk, e.g. "PJSIP/officer007"
    officer_id: int | None
    badge: str | None
    timeout_s: float
    station: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "endpoint": self.endpoint,
            "badge": self.badge,
            "timeout_s": self.timeout_s,
            "rung_station": self.station,
        }


def ladder(choice: Choice, station: StationView | None) -> list[Rung]:
    """The rungs to ring in order: ``station`` is the chosen officer's unit, or the incident's station."""
    if station is None:
        return []
    rungs: list[Rung] = []
    for kind in station.ladder:
        timeout = station.answer_timeout_s
        if kind == RungKind.OFFICER:
            officer = choice.officer
            if officer is not None:
                rungs.append(Rung(RungKind.OFFICER, officer.endpoint, officer.id, officer.badge, timeout, station.id))
        elif kind == RungKind.DUTY_DESK and station.duty_desk:
            rungs.append(Rung(RungKind.DUTY_DESK, station.duty_desk, None, None, timeout, station.id))
        elif kind == RungKind.SUPERIOR and station.superior:
            rungs.append(Rung(RungKind.SUPERIOR, station.superior, None, None, timeout, station.id))
    return rungs


@dataclass(frozen=True, slots=True)
class DispatchPlan:
    number: str
    incident: Incident
    choice: Choice
    rungs: tuple[Rung, ...]
    reserved: bool  # the officer rung's officer is held (status ringing) for this ticket
    station: StationView | None = field(default=None)  # whose ladder this is

    @property
    def exhausted(self) -> bool:
        """Nobody to ring at all: record ``exhausted`` straight away."""
        return not self.rungs

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "incident": self.incident.to_json(),
            "choice": self.choice.to_json(),
            "ladder": [r.to_json() for r in self.rungs],
            "ladder_station": None if self.station is None else self.station.id,
            "reserved": self.reserved,
        }


# -- the planner ---------------------------------------------------------------------------

ExhaustedHook = Callable[[TicketView, dict[str, Any]], object]
# (ticket number, endpoint, timeout_s) → (answered, outcome): a phone rung alone, by the telephony side.
RingAlone = Callable[[str, str, float], Awaitable[tuple[bool, str]]]


class DispatchPlanner:
    """Choice, reservation and outcome recording of dispatches; the telephony side rings the rungs."""

    def __init__(
        self,
        tickets: TicketService,
        officers: OfficerService,
        *,
        settings: DispatchSettings | None = None,
        clock: Callable[[], float] | None = None,
        on_exhausted: ExhaustedHook | None = None,
    ) -> None:
        self.tickets = tickets
        self.officers = officers
        self.settings = settings or DispatchSettings()
        self._clock = clock or officers.now
        self._sessions = async_sessionmaker(tickets.engine, expire_on_commit=False)
        # Choose-then-reserve must not interleave within this process; the
        # store's conditional UPDATE covers other processes.
        self._choose_lock = asyncio.Lock()
        self._on_exhausted = on_exhausted
        self.places = Gazetteer(tickets.engine, officers.grid)
        # Set by the telephony side (its Dispatcher): how a mobilisation rings each officer's phone alone.
        self.ring_alone: RingAlone | None = None

    # -- location --------------------------------------------------------------

    async def locate(
        self, number: str, *, lat: float | None = None, lon: float | None = None, address: str | None = None,
        at: float | None = None, fix: Mapping[str, Any] | None = None, source: Source | str = Source.API,
    ) -> tuple[TicketView, Incident]:
        """Set or correct the incident location: step ``located``, incident row written.

        Without ``lat``/``lon`` the position is the gazetteer's place named ``address``
        (``AddressNotFound`` otherwise), and the step says ``via: "gazetteer"``. ``fix`` says where a
        position measured by a machine came from (``{"source": "network"}``, ``{"source": "aml", "method":
        "gnss", "radius_m": 8, …}``); a position without one was given by a person (or a reporter's app).
        """
        if address is not None and (not isinstance(address, str) or len(address) > ADDRESS_MAX):
            raise ValueError(f"address must be a string of at most {ADDRESS_MAX} characters")
        ticket = await self._ticket(number)
        advance(ticket.state, Step.LOCATED)  # refuse before anything is written
        via = None
        if lat is None and lon is None:
            if not address:
                raise ValueError("a location needs lat and lon, or an address of the gazetteer")
            place = await self.places.resolve(address)
            lat, lon, address, via = place.lat, place.lon, place.name, "gazetteer"
        lat, lon = check_lat_lon(lat, lon)
        at = self._clock() if at is None else at
        cell = self.officers.grid.cell_of(lat, lon)
        station = await incident_station(self.officers, cell, lat, lon, self.settings.max_k)
        async with self._sessions() as session, session.begin():
            row = await session.get(IncidentRow, number)
            if row is None:
                row = IncidentRow(number=number)
                session.add(row)
            row.address, row.lat, row.lon, row.cell = address, lat, lon, cell
            row.station_id, row.located_at_us = station, round(at * 1_000_000)
            await session.flush()
            incident = _incident(row)
        view = await self.tickets.record_step(
            ticket.uniqueid, Step.LOCATED, at=at, source=source,
            address=address, lat=lat, lon=lon, cell=cell, station=station, **({"via": via} if via else {}),
            **({"fix": dict(fix)} if fix else {}),
        )
        return view, incident

    async def incident(self, number: str) -> Incident | None:
        async with self._sessions() as session:
            row = await session.get(IncidentRow, number)
            return None if row is None else _incident(row)

    async def open_incident_stations(self) -> dict[str, str | None]:
        """``{ticket number: station}`` of tickets not yet closed, to prime the event stream after a restart."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(IncidentRow.number, IncidentRow.station_id)
                .join(Ticket, Ticket.number == IncidentRow.number)
                .where(Ticket.state != State.CLOSED)
            )
            return {key: value for key, value in rows}

    # -- planning --------------------------------------------------------------

    async def preview(self, number: str, *, at: float | None = None) -> DispatchPlan:
        """Who would be rung, in which order, without ringing or reserving anyone."""
        incident = await self._located(number)
        choice = await self._choose(incident, self._clock() if at is None else at)
        station = await self._ladder_station(choice)
        return DispatchPlan(number, incident, choice, tuple(ladder(choice, station)), False, station)

    async def begin(
        self, number: str, *, at: float | None = None, by: str | None = None, source: Source | str = Source.API
    ) -> DispatchPlan:
        """Choose and reserve the officer, build the ladder, record ``dispatch_requested``.

        Raises ``UnknownTicket``, ``NotLocated``, or ``IllegalTransition`` when
        the ticket is not an answered call; nothing stays reserved then.
        """
        ticket = await self._ticket(number)
        advance(ticket.state, Step.DISPATCH_REQUESTED)
        incident = await self._located(number)
        at = self._clock() if at is None else at
        async with self._choose_lock:
            choice = await self._choose(incident, at)
            choice, reserved = await self._reserve(number, choice)
        station = await self._ladder_station(choice)
        rungs = tuple(ladder(choice, station))
        plan = DispatchPlan(number, incident, choice, rungs, reserved, station)
        detail: dict[str, Any] = {
            "station": incident.station,
            "cell": incident.cell,
            "officer": None if choice.candidate is None else choice.candidate.to_json(),
            "ladder": [r.to_json() for r in rungs],
        }
        if by is not None:
            detail["by"] = by
        try:
            await self.tickets.record_step(ticket.uniqueid, Step.DISPATCH_REQUESTED, at=at, source=source, **detail)
        except BaseException:
            if reserved and choice.officer is not None:
                await self.officers.release(choice.officer.badge, number)
            raise
        return plan

    async def ringing(
        self, number: str, rung: Rung, *, at: float | None = None, source: Source | str = Source.AMI
    ) -> TicketView:
        """The rung's phone is ringing (the telephony side originated the call)."""
        return await self._record(number, Step.OFFICER_RINGING, at, source, **rung.to_json())

    async def no_answer(
        self,
        number: str,
        rung: Rung,
        *,
        outcome: str = "no_answer",
        at: float | None = None,
        source: Source | str = Source.AMI,
    ) -> TicketView:
        """The rung did not answer in time, was busy, unreachable, or the origination failed."""
        if outcome not in NO_ANSWER_OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(NO_ANSWER_OUTCOMES)}, got {outcome!r}")
        if rung.kind is RungKind.OFFICER and rung.badge is not None:
            await self.officers.release(rung.badge, number)
        return await self._record(number, Step.OFFICER_NO_ANSWER, at, source, outcome=outcome, **rung.to_json())

    async def joined(
        self, number: str, rung: Rung, *, at: float | None = None, source: Source | str = Source.AMI
    ) -> TicketView:
        """The rung answered and is in the conference with the caller and the call-taker."""
        if rung.kind is RungKind.OFFICER and rung.badge is not None:
            if not await self.officers.mark_dispatched(rung.badge, number):
                log.warning("%s: officer %s joined but was not held for this ticket", number, rung.badge)
        return await self._record(number, Step.OFFICER_JOINED, at, source, **rung.to_json())

    async def exhausted(
        self, number: str, *, reason: str = "no_answer", at: float | None = None, source: Source | str = Source.AMI
    ) -> TicketView:
        """Nobody answered (or the ladder could not be run): the call-taker keeps the caller.

        Officers still ringing for this ticket are released; supervisors are
        told through the hook and, like everyone, through the event stream.
        """
        released = await self.officers.free_ticket(number, only=(OfficerStatus.RINGING,))
        view = await self._record(number, Step.LADDER_EXHAUSTED, at, source, reason=reason, released=released)
        if self._on_exhausted is not None:
            try:
                self._on_exhausted(view, dict(view.steps[-1].detail))
            except Exception:
                log.exception("%s: the ladder-exhausted hook failed", number)
        return view

    async def arrived(
        self, number: str, *, badge: str, lat: float, lon: float, at: float | None = None
    ) -> TicketView:
        """The officer reports arrival with his position; his status becomes ``on_scene``."""
        lat, lon = check_lat_lon(lat, lon)
        ticket = await self._ticket(number)
        advance(ticket.state, Step.ARRIVED)
        at = self._clock() if at is None else at
        await self.officers.update_location(badge, lat, lon, at=at)
        if not await self.officers.mark_on_scene(badge, number):
            officer = await self.officers.get(badge)
            raise OfficerBusy(f"officer {badge} is {officer.status} for ticket {officer.ticket}")
        incident = await self.incident(number)
        detail: dict[str, Any] = {"badge": badge, "lat": lat, "lon": lon}
        if incident is not None:
            detail["distance_m"] = round(haversine_m(lat, lon, incident.lat, incident.lon), 1)
        return await self._record(number, Step.ARRIVED, at, Source.API, ticket=ticket, **detail)

    async def clear(
        self, number: str, *, disposition: str, by: str | None = None, at: float | None = None
    ) -> TicketView:
        """The incident is dealt with: step ``cleared``, its officers available again."""
        if not isinstance(disposition, str) or not disposition.strip() or len(disposition) > DISPOSITION_MAX:
            raise ValueError(f"disposition must be a non-empty string of at most {DISPOSITION_MAX} characters")
        ticket = await self._ticket(number)
        advance(ticket.state, Step.CLEARED)
        detail: dict[str, Any] = {"disposition": disposition}
        if by is not None:
            detail["by"] = by
        view = await self._record(number, Step.CLEARED, at, Source.API, ticket=ticket, **detail)
        await self.officers.free_ticket(number)
        return view

    # -- helpers ---------------------------------------------------------------

    async def _ticket(self, number: str) -> TicketView:
        ticket = await self.tickets.get(number)
        if ticket is None:
            raise UnknownTicket(f"no ticket {number!r}")
        return ticket

    async def _located(self, number: str) -> Incident:
        incident = await self.incident(number)
        if incident is None:
            if await self.tickets.get(number) is None:
                raise UnknownTicket(f"no ticket {number!r}")
            raise NotLocated(f"ticket {number} has no incident location; set it first")
        return incident

    async def _choose(self, incident: Incident, at: float) -> Choice:
        choice = await choose_officer(self.officers, lat=incident.lat, lon=incident.lon, at=at, settings=self.settings)
        # The station stored with the incident wins: it is what the call-taker saw.
        if choice.station != incident.station:
            choice = Choice(choice.lat, choice.lon, choice.cell, incident.station, choice.candidate, choice.others)
        return choice

    async def _reserve(self, number: str, choice: Choice) -> tuple[Choice, bool]:
        queue = [c for c in (choice.candidate, *choice.others) if c is not None]
        for i, candidate in enumerate(queue):
            if await self.officers.reserve(candidate.officer.badge, number):
                rest = tuple(queue[i + 1 :])
                return Choice(choice.lat, choice.lon, choice.cell, choice.station, candidate, rest), True
            log.info("%s: officer %s was taken meanwhile; trying the next", number, candidate.officer.badge)
        return Choice(choice.lat, choice.lon, choice.cell, choice.station, None, ()), False

    async def _ladder_station(self, choice: Choice) -> StationView | None:
        station_id = choice.officer.station if choice.officer is not None else choice.station
        if station_id is None:
            return None
        try:
            return await self.officers.station(station_id)
        except UnknownStation:
            log.warning("station %s is not configured; no desks to ring", station_id)
            return None

    async def _record(
        self,
        number: str,
        step: Step,
        at: float | None,
        source: Source | str,
        *,
        ticket: TicketView | None = None,
        **detail: Any,
    ) -> TicketView:
        ticket = ticket or await self._ticket(number)
        incident = await self.incident(number)
        detail.setdefault("station", None if incident is None else incident.station)
        at = self._clock() if at is None else at
        return await self.tickets.record_step(ticket.uniqueid, step, at=at, source=source, **detail)
