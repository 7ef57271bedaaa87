"""Police stations, their patrol cells, officers, and the duty roster.

What dispatch needs to know about the force: which station answers for each
grid cell, how each station escalates an unanswered dispatch (its ladder),
which officers are rostered now, where they last reported themselves and
whether they are free. Officers' apps report location and status through the
web API; the lab city comes from ``sip-lab/city.json`` (see ``load_city_file``).

An officer's ``status`` is also the dispatch reservation: the planner takes an
officer with one conditional UPDATE (``available`` → ``ringing``) so two
dispatches — in this process or another — can never ring the same officer.
Officers carry the ticket they are ringing or working for, so a late outcome
of one ticket can never release an officer another ticket has since taken.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
    and_,
    delete,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import JSON

from core.dispatch.geo import DEFAULT_RESOLUTION, GeoError, Grid, check_lat_lon
from core.dispatch.places import Place, check_place
from core.errors import DomainError
from core.store import TEXT_MAX, Base, _Id

__all__ = [
    "BUSY_STATUSES",
    "LADDER_KINDS",
    "City",
    "CityError",
    "OfficerBusy",
    "OfficerService",
    "OfficerSpec",
    "OfficerStatus",
    "OfficerView",
    "StationSpec",
    "StationView",
    "UnknownOfficer",
    "UnknownStation",
    "load_city_file",
    "parse_city",
]

BADGE_MAX = 32
STATION_ID_MAX = 32
ENDPOINT_MAX = 128  # "PJSIP/officer007", "Local/8001@duty-desks", …
TIMEOUT_MIN_S = 5  # shorter than a phone takes to ring twice
TIMEOUT_MAX_S = 120
DEFAULT_ANSWER_TIMEOUT_S = 15
DEFAULT_LADDER = ("officer", "duty_desk", "superior")
LADDER_KINDS = frozenset(DEFAULT_LADDER)


class OfficerStatus(StrEnum):
    OFF_DUTY = "off_duty"  # the officer signed off in the app
    AVAILABLE = "available"  # free for a dispatch
    RINGING = "ringing"  # reserved: a dispatch is ringing his phone
    DISPATCHED = "dispatched"  # joined a dispatch conference, on his way
    ON_SCENE = "on_scene"  # reported arrival


BUSY_STATUSES = frozenset({OfficerStatus.RINGING, OfficerStatus.DISPATCHED, OfficerStatus.ON_SCENE})


class UnknownOfficer(DomainError, LookupError):
    status = 404
    error_id = "unknown-officer"


class UnknownStation(DomainError, LookupError):
    status = 404
    error_id = "unknown-station"


class OfficerBusy(DomainError):
    """The officer is held by a dispatch; the change asked for would undo it."""

    status = 409
    error_id = "officer-busy"


class CityError(ValueError):
    """A city description (file or API input) that cannot be loaded; the message names the item."""


# -- tables ------------------------------------------------------------------------------


class StationRow(Base):
    __tablename__ = "stations"

    id: Mapped[str] = mapped_column(String(STATION_ID_MAX), primary_key=True)
    name: Mapped[str] = mapped_column(String(TEXT_MAX))
    bureau: Mapped[str] = mapped_column(String(TEXT_MAX))  # the county bureau it reports to
    duty_desk: Mapped[str | None] = mapped_column(String(ENDPOINT_MAX))
    superior: Mapped[str | None] = mapped_column(String(ENDPOINT_MAX))
    answer_timeout_s: Mapped[float] = mapped_column(Float)
    ladder: Mapped[list[str]] = mapped_column(JSON)  # rung kinds in order, e.g. ["officer", "duty_desk"]


class CellStationRow(Base):
    """Which station answers for a grid cell: one station per cell."""

    __tablename__ = "cell_stations"

    cell: Mapped[str] = mapped_column(String(16), primary_key=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), index=True)


class OfficerRow(Base):
    __tablename__ = "officers"
    # Dispatch asks "who is available in these cells": one index answers it.
    __table_args__ = (Index("ix_officers_status_cell", "status", "cell"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    badge: Mapped[str] = mapped_column(String(BADGE_MAX), unique=True)
    name: Mapped[str] = mapped_column(String(TEXT_MAX))
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), index=True)
    endpoint: Mapped[str] = mapped_column(String(ENDPOINT_MAX))
    status: Mapped[str] = mapped_column(String(16))
    status_changed_at_us: Mapped[int] = mapped_column(BigInteger)
    ticket: Mapped[str | None] = mapped_column(String(32), index=True)  # ringing for / working on
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    cell: Mapped[str | None] = mapped_column(String(16))
    located_at_us: Mapped[int | None] = mapped_column(BigInteger)
    accuracy_m: Mapped[float | None] = mapped_column(Float)  # the phone's own estimate of the fix


class RosterShiftRow(Base):
    __tablename__ = "roster_shifts"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    officer_id: Mapped[int] = mapped_column(ForeignKey("officers.id"), index=True)
    start_us: Mapped[int] = mapped_column(BigInteger)
    end_us: Mapped[int] = mapped_column(BigInteger)  # exclusive


# -- values ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StationSpec:
    id: str
    name: str
    bureau: str
    duty_desk: str | None = None
    superior: str | None = None
    answer_timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S
    ladder: tuple[str, ...] = DEFAULT_LADDER
    cells: tuple[str, ...] = ()

    def checked(self) -> StationSpec:
        where = f"station {self.id!r}"
        _text(self.id, "station id", STATION_ID_MAX)
        _text(self.name, f"{where} name", TEXT_MAX)
        _text(self.bureau, f"{where} bureau", TEXT_MAX)
        for name in ("duty_desk", "superior"):
            if getattr(self, name) is not None:
                _text(getattr(self, name), f"{where} {name}", ENDPOINT_MAX)
        t = self.answer_timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not TIMEOUT_MIN_S <= t <= TIMEOUT_MAX_S:
            raise CityError(f"{where}: answer_timeout_s must be {TIMEOUT_MIN_S}-{TIMEOUT_MAX_S} s, got {t!r}")
        ladder = tuple(self.ladder)
        if not ladder or not set(ladder) <= LADDER_KINDS or len(set(ladder)) != len(ladder):
            raise CityError(
                f"{where}: ladder must list distinct rungs of {sorted(LADDER_KINDS)}, got {list(ladder)!r}"
            )
        # A ladder may not name a phone the station does not have.
        for kind in ("duty_desk", "superior"):
            if kind in ladder and getattr(self, kind) is None:
                raise CityError(f"{where}: ladder has {kind} but the station has no {kind} endpoint")
        return self


@dataclass(frozen=True, slots=True)
class OfficerSpec:
    badge: str
    name: str
    station: str
    endpoint: str
    status: OfficerStatus = OfficerStatus.AVAILABLE
    lat: float | None = None
    lon: float | None = None
    shifts: tuple[tuple[float, float], ...] = ()  # (start, end) epoch seconds, end exclusive

    def checked(self) -> OfficerSpec:
        _text(self.badge, "badge", BADGE_MAX)
        where = f"officer {self.badge!r}"
        _text(self.name, f"{where} name", TEXT_MAX)
        _text(self.station, f"{where} station", STATION_ID_MAX)
        _text(self.endpoint, f"{where} endpoint", ENDPOINT_MAX)
        if self.status not in (OfficerStatus.AVAILABLE, OfficerStatus.OFF_DUTY):
            raise CityError(f"{where}: configured status must be available or off_duty, got {self.status!r}")
        if (self.lat is None) != (self.lon is None):
            raise CityError(f"{where}: give both lat and lon, or neither")
        if self.lat is not None:
            try:
                check_lat_lon(self.lat, self.lon)  # type: ignore[arg-type]
            except GeoError as exc:
                raise CityError(f"{where}: {exc}") from None
        for start, end in self.shifts:
            if not (math.isfinite(start) and math.isfinite(end) and start < end):
                raise CityError(f"{where}: a shift must end after it starts, got {start!r}..{end!r}")
        return self


@dataclass(frozen=True, slots=True)
class City:
    name: str
    resolution: int
    stations: tuple[StationSpec, ...]
    officers: tuple[OfficerSpec, ...]
    center: tuple[float, float] | None = None
    places: tuple[Place, ...] = ()  # the gazetteer (core.dispatch.places)


@dataclass(frozen=True, slots=True)
class StationView:
    id: str
    name: str
    bureau: str
    duty_desk: str | None
    superior: str | None
    answer_timeout_s: float
    ladder: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "bureau": self.bureau,
            "duty_desk": self.duty_desk,
            "superior": self.superior,
            "answer_timeout_s": self.answer_timeout_s,
            "ladder": list(self.ladder),
        }


@dataclass(frozen=True, slots=True)
class OfficerView:
    id: int
    badge: str
    name: str
    station: str
    endpoint: str
    status: OfficerStatus
    status_changed_at_us: int
    ticket: str | None
    lat: float | None
    lon: float | None
    cell: str | None
    located_at_us: int | None
    shifts: tuple[tuple[int, int], ...] = field(default=())  # (start_us, end_us)
    accuracy_m: float | None = None

    def on_roster(self, at_us: int) -> bool:
        return any(start <= at_us < end for start, end in self.shifts)

    def to_json(self) -> dict[str, Any]:
        return {
            "badge": self.badge,
            "name": self.name,
            "station": self.station,
            "endpoint": self.endpoint,
            "status": str(self.status),
            "status_changed_at_us": self.status_changed_at_us,
            "ticket": self.ticket,
            "lat": self.lat,
            "lon": self.lon,
            "cell": self.cell,
            "located_at_us": self.located_at_us,
            "accuracy_m": self.accuracy_m,
            "shifts": [{"start_us": s, "end_us": e} for s, e in self.shifts],
        }


def _station_view(row: StationRow) -> StationView:
    return StationView(
        id=row.id,
        name=row.name,
        bureau=row.bureau,
        duty_desk=row.duty_desk,
        superior=row.superior,
        answer_timeout_s=row.answer_timeout_s,
        ladder=tuple(row.ladder),
    )


def _officer_view(row: OfficerRow, shifts: Iterable[tuple[int, int]] = ()) -> OfficerView:
    return OfficerView(
        id=row.id,
        badge=row.badge,
        name=row.name,
        station=row.station_id,
        endpoint=row.endpoint,
        status=OfficerStatus(row.status),
        status_changed_at_us=row.status_changed_at_us,
        ticket=row.ticket,
        lat=row.lat,
        lon=row.lon,
        cell=row.cell,
        located_at_us=row.located_at_us,
        shifts=tuple(sorted(shifts)),
        accuracy_m=row.accuracy_m,
    )


def _us(at: float) -> int:
    return round(at * 1_000_000)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise CityError(f"{what} must be a non-empty string of at most {limit} characters, got {value!r}")
    return value


# -- the service -------------------------------------------------------------------------


class OfficerService:
    """Reads and writes stations, cells, officers and the roster."""

    def __init__(
        self, engine: AsyncEngine, clock: Callable[[], float] = time.time, *, grid: Grid | None = None
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self.grid = grid or Grid(DEFAULT_RESOLUTION)
        # One writer at a time: SQLite has a single writer, and the reservation
        # must read-then-write without another task's write in between.
        self._write_lock = asyncio.Lock()
        self._location_listeners: list[Callable[[OfficerView], None]] = []

    def now(self) -> float:
        return self._clock()

    # -- configuration ---------------------------------------------------------

    async def upsert_station(self, spec: StationSpec) -> StationView:
        async with self._write_lock, self._sessions() as session, session.begin():
            return await self._upsert_station(session, spec.checked())

    async def assign_cells(self, station_id: str, cells: Iterable[str]) -> int:
        """Put ``cells`` under ``station_id`` (moving them from any other station); returns how many."""
        checked = [self._cell(c) for c in cells]
        async with self._write_lock, self._sessions() as session, session.begin():
            if await session.get(StationRow, station_id) is None:
                raise UnknownStation(f"no station {station_id!r}")
            await self._assign(session, station_id, checked)
        return len(checked)

    async def upsert_officer(self, spec: OfficerSpec) -> OfficerView:
        """Create or update an officer; given shifts replace his roster, none keep it."""
        spec = spec.checked()
        async with self._write_lock, self._sessions() as session, session.begin():
            row = await self._upsert_officer(session, spec)
            return await self._view(session, row)

    async def set_roster(self, badge: str, shifts: Sequence[tuple[float, float]]) -> OfficerView:
        for start, end in shifts:
            if not (math.isfinite(start) and math.isfinite(end) and start < end):
                raise ValueError(f"a shift must end after it starts, got {start!r}..{end!r}")
        async with self._write_lock, self._sessions() as session, session.begin():
            row = await self._officer(session, badge)
            await self._replace_roster(session, row.id, shifts)
            return await self._view(session, row)

    async def load_city(self, city: City) -> dict[str, int]:
        """Load stations, cells, officers and roster in one transaction; returns counts."""
        if city.resolution != self.grid.resolution:
            raise CityError(f"city grid is at resolution {city.resolution}, dispatch at {self.grid.resolution}")
        stations = [s.checked() for s in city.stations]
        officers = [o.checked() for o in city.officers]
        ids = {s.id for s in stations}
        seen: dict[str, str] = {}
        for station in stations:
            for cell in station.cells:
                self._cell(cell)
                if cell in seen:
                    raise CityError(f"cell {cell} is assigned to both {seen[cell]!r} and {station.id!r}")
                seen[cell] = station.id
        for officer in officers:
            if officer.station not in ids:
                raise CityError(f"officer {officer.badge!r}: unknown station {officer.station!r}")
        if len({o.badge for o in officers}) != len(officers):
            raise CityError("officer badges must be unique")
        async with self._write_lock, self._sessions() as session, session.begin():
            for station in stations:
                await self._upsert_station(session, station)
            for station in stations:
                await self._assign(session, station.id, station.cells)
            for officer in officers:
                await self._upsert_officer(session, officer)
        return {"stations": len(stations), "cells": len(seen), "officers": len(officers)}

    # -- what an officer's app reports -----------------------------------------

    async def update_location(self, badge: str, lat: float, lon: float, *, at: float | None = None,
                              accuracy_m: float | None = None) -> OfficerView:
        lat, lon = check_lat_lon(lat, lon)
        at_us = _us(self._clock() if at is None else at)
        async with self._write_lock, self._sessions() as session, session.begin():
            row = await self._officer(session, badge)
            # Fixes can arrive out of order over mobile networks; keep the newest.
            if row.located_at_us is None or at_us >= row.located_at_us:
                row.lat, row.lon = lat, lon
                row.cell = self.grid.cell_of(lat, lon)
                row.located_at_us = at_us
                row.accuracy_m = None if accuracy_m is None else float(accuracy_m)
            view = await self._view(session, row)
        for listener in list(self._location_listeners):
            listener(view)
        return view

    def on_location(self, listener: Callable[[OfficerView], None]) -> Callable[[], None]:
        """Call ``listener`` with the officer after each position stored (the reporters' live pages); returns
        the function that removes it. Listeners must not block: they run in the writer's task."""
        self._location_listeners.append(listener)
        return lambda: self._location_listeners.remove(listener)

    async def set_status(self, badge: str, status: OfficerStatus | str) -> OfficerView:
        """Sign on (``available``) or off (``off_duty``), as the officer's app does.

        Refused while the officer is ringing, dispatched or on scene: those end
        through the dispatch itself (no answer, clear), or the reservation would
        be undone behind the dispatch's back.
        """
        status = OfficerStatus(status)
        if status not in (OfficerStatus.AVAILABLE, OfficerStatus.OFF_DUTY):
            raise ValueError("an officer can only set himself available or off_duty")
        async with self._write_lock, self._sessions() as session, session.begin():
            row = await self._officer(session, badge)
            if OfficerStatus(row.status) in BUSY_STATUSES:
                raise OfficerBusy(f"officer {badge} is {row.status} for ticket {row.ticket}")
            if row.status != status:
                row.status = status
                row.status_changed_at_us = _us(self._clock())
            return await self._view(session, row)

    # -- reads -----------------------------------------------------------------

    async def get(self, badge: str) -> OfficerView:
        async with self._sessions() as session:
            return await self._view(session, await self._officer(session, badge))

    async def list(self, *, station: str | None = None) -> list[OfficerView]:
        async with self._sessions() as session:
            query = select(OfficerRow).order_by(OfficerRow.badge)
            if station is not None:
                query = query.where(OfficerRow.station_id == station)
            rows = list(await session.scalars(query))
            return await self._views(session, rows)

    async def on_duty(self, badge: str, at: float | None = None) -> bool:
        """Signed on and rostered at ``at`` (now by default), whatever his dispatch status."""
        officer = await self.get(badge)
        at_us = _us(self._clock() if at is None else at)
        return officer.status is not OfficerStatus.OFF_DUTY and officer.on_roster(at_us)

    async def station(self, station_id: str) -> StationView:
        async with self._sessions() as session:
            row = await session.get(StationRow, station_id)
            if row is None:
                raise UnknownStation(f"no station {station_id!r}")
            return _station_view(row)

    async def stations(self) -> list[StationView]:
        async with self._sessions() as session:
            return [_station_view(r) for r in await session.scalars(select(StationRow).order_by(StationRow.id))]

    async def stations_of_cells(self, cells: Iterable[str]) -> dict[str, str]:
        """``{cell: station id}`` for the cells that are assigned."""
        cells = list(cells)
        async with self._sessions() as session:
            rows = await session.execute(
                select(CellStationRow.cell, CellStationRow.station_id).where(CellStationRow.cell.in_(cells))
            )
            return {key: value for key, value in rows}

    async def available_in(self, cells: Iterable[str], at: float) -> list[OfficerView]:
        """Available officers located in ``cells`` and rostered at ``at``."""
        at_us = _us(at)
        cells = list(cells)
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(OfficerRow).where(
                        OfficerRow.status == OfficerStatus.AVAILABLE,
                        OfficerRow.cell.in_(cells),
                        OfficerRow.id.in_(
                            select(RosterShiftRow.officer_id).where(
                                and_(RosterShiftRow.start_us <= at_us, RosterShiftRow.end_us > at_us)
                            )
                        ),
                    )
                )
            )
            return await self._views(session, rows)

    # -- dispatch reservations (used by the dispatch planner) -------------------

    async def reserve(self, badge: str, ticket: str) -> bool:
        """Take an available officer for ``ticket`` (status ``ringing``); False if someone was faster."""
        return await self._move(badge, OfficerStatus.RINGING, ticket, only_from=(OfficerStatus.AVAILABLE,))

    async def release(self, badge: str, ticket: str) -> bool:
        """Give back an officer that ``ticket`` rang without result."""
        return await self._move(
            badge, OfficerStatus.AVAILABLE, None, only_from=(OfficerStatus.RINGING,), held_for=ticket
        )

    async def mark_dispatched(self, badge: str, ticket: str) -> bool:
        return await self._move(
            badge, OfficerStatus.DISPATCHED, ticket, only_from=(OfficerStatus.RINGING,), held_for=ticket
        )

    async def stand_down(self, badge: str, ticket: str) -> bool:
        """An officer sent to ``ticket`` (on his way or on scene) is released by a supervisor: available again."""
        return await self._move(
            badge, OfficerStatus.AVAILABLE, None, only_from=(OfficerStatus.DISPATCHED, OfficerStatus.ON_SCENE),
            held_for=ticket,
        )

    async def mark_on_scene(self, badge: str, ticket: str) -> bool:
        """Arrival: from dispatched for this ticket, or from available (sent by radio by a duty desk)."""
        async with self._write_lock, self._sessions() as session, session.begin():
            row = await self._officer(session, badge)
            status = OfficerStatus(row.status)
            if status is OfficerStatus.ON_SCENE and row.ticket == ticket:
                return True
            if status in BUSY_STATUSES and row.ticket != ticket:
                return False
            row.status, row.ticket = OfficerStatus.ON_SCENE, ticket
            row.status_changed_at_us = _us(self._clock())
            return True

    async def free_ticket(self, ticket: str, *, only: Iterable[OfficerStatus] | None = None) -> list[str]:
        """Officers held by ``ticket`` (in the ``only`` statuses, if given) become available; returns badges."""
        query = select(OfficerRow).where(OfficerRow.ticket == ticket)
        if only is not None:
            query = query.where(OfficerRow.status.in_([str(s) for s in only]))
        async with self._write_lock, self._sessions() as session, session.begin():
            rows = list(await session.scalars(query))
            now_us = _us(self._clock())
            for row in rows:
                row.status, row.ticket, row.status_changed_at_us = OfficerStatus.AVAILABLE, None, now_us
            return sorted(r.badge for r in rows)

    async def _move(
        self,
        badge: str,
        status: OfficerStatus,
        ticket: str | None,
        *,
        only_from: tuple[OfficerStatus, ...],
        held_for: str | None = None,
    ) -> bool:
        # One conditional UPDATE: the check and the write cannot be separated
        # by another process's reservation.
        conditions = [OfficerRow.badge == badge, OfficerRow.status.in_([str(s) for s in only_from])]
        if held_for is not None:
            conditions.append(OfficerRow.ticket == held_for)
        async with self._write_lock, self._sessions() as session, session.begin():
            result = await session.execute(
                update(OfficerRow)
                .where(*conditions)
                .values(status=status, ticket=ticket, status_changed_at_us=_us(self._clock()))
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
            if await session.scalar(select(OfficerRow.id).where(OfficerRow.badge == badge)) is None:
                raise UnknownOfficer(f"no officer {badge!r}")
            return False

    # -- helpers ---------------------------------------------------------------

    def _cell(self, cell: str) -> str:
        try:
            return self.grid.check_cell(cell)
        except GeoError as exc:
            raise CityError(str(exc)) from None

    @staticmethod
    async def _upsert_station(session: AsyncSession, spec: StationSpec) -> StationView:
        row = await session.get(StationRow, spec.id)
        if row is None:
            row = StationRow(id=spec.id)
            session.add(row)
        row.name, row.bureau = spec.name, spec.bureau
        row.duty_desk, row.superior = spec.duty_desk, spec.superior
        row.answer_timeout_s = float(spec.answer_timeout_s)
        row.ladder = list(spec.ladder)
        await session.flush()
        return _station_view(row)

    @staticmethod
    async def _assign(session: AsyncSession, station_id: str, cells: Iterable[str]) -> None:
        for cell in cells:
            row = await session.get(CellStationRow, cell)
            if row is None:
                session.add(CellStationRow(cell=cell, station_id=station_id))
            else:
                row.station_id = station_id
        await session.flush()

    async def _upsert_officer(self, session: AsyncSession, spec: OfficerSpec) -> OfficerRow:
        if await session.get(StationRow, spec.station) is None:
            raise UnknownStation(f"officer {spec.badge!r}: no station {spec.station!r}")
        now_us = _us(self._clock())
        row = await session.scalar(select(OfficerRow).where(OfficerRow.badge == spec.badge))
        if row is None:
            row = OfficerRow(badge=spec.badge, status=spec.status, status_changed_at_us=now_us, ticket=None)
            session.add(row)
        elif OfficerStatus(row.status) not in BUSY_STATUSES and row.status != spec.status:
            # Reloading the city must not undo a dispatch in progress.
            row.status, row.status_changed_at_us = spec.status, now_us
        row.name, row.station_id, row.endpoint = spec.name, spec.station, spec.endpoint
        if spec.lat is not None and spec.lon is not None:
            row.lat, row.lon = float(spec.lat), float(spec.lon)
            row.cell = self.grid.cell_of(spec.lat, spec.lon)
            row.located_at_us = now_us
        await session.flush()
        if spec.shifts:
            await self._replace_roster(session, row.id, spec.shifts)
        return row

    @staticmethod
    async def _replace_roster(session: AsyncSession, officer_id: int, shifts: Iterable[tuple[float, float]]) -> None:
        await session.execute(delete(RosterShiftRow).where(RosterShiftRow.officer_id == officer_id))
        for start, end in shifts:
            session.add(RosterShiftRow(officer_id=officer_id, start_us=_us(start), end_us=_us(end)))
        await session.flush()

    @staticmethod
    async def _officer(session: AsyncSession, badge: str) -> OfficerRow:
        row = await session.scalar(select(OfficerRow).where(OfficerRow.badge == badge))
        if row is None:
            raise UnknownOfficer(f"no officer {badge!r}")
        return row

    async def _view(self, session: AsyncSession, row: OfficerRow) -> OfficerView:
        return (await self._views(session, [row]))[0]

    @staticmethod
    async def _views(session: AsyncSession, rows: Sequence[OfficerRow]) -> list[OfficerView]:
        shifts: dict[int, list[tuple[int, int]]] = {}
        if rows:
            found = await session.execute(
                select(RosterShiftRow.officer_id, RosterShiftRow.start_us, RosterShiftRow.end_us).where(
                    RosterShiftRow.officer_id.in_([r.id for r in rows])
                )
            )
            for officer_id, start, end in found:
                shifts.setdefault(officer_id, []).append((start, end))
        return [_officer_view(r, shifts.get(r.id, ())) for r in rows]


# -- the city file -----------------------------------------------------------------------


def load_city_file(path: str | Path) -> City:
    """Read a city description from JSON (``.json``) or TOML (``.toml``)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8")) if path.suffix == ".toml" else json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CityError(f"{path}: {exc}") from None
    return parse_city(data)


def parse_city(data: Mapping[str, Any]) -> City:
    """A ``City`` from its JSON/TOML form; times are ISO-8601 with an offset.

    ``{"name", "resolution", "center": {"lat", "lon"},
       "stations": [{"id", "name", "bureau", "duty_desk", "superior", "answer_timeout_s", "ladder", "cells"}],
       "officers": [{"badge", "name", "station", "endpoint", "status", "lat", "lon",
                     "shifts": [{"start", "end"}]}],
       "places": [{"name", "lat", "lon"}]}``
    """
    if not isinstance(data, Mapping):
        raise CityError("a city must be an object")
    try:
        stations = tuple(
            StationSpec(
                id=s["id"],
                name=s["name"],
                bureau=s["bureau"],
                duty_desk=s.get("duty_desk"),
                superior=s.get("superior"),
                answer_timeout_s=s.get("answer_timeout_s", DEFAULT_ANSWER_TIMEOUT_S),
                ladder=tuple(s.get("ladder", DEFAULT_LADDER)),
                cells=tuple(s.get("cells", ())),
            ).checked()
            for s in data.get("stations", ())
        )
        officers = tuple(
            OfficerSpec(
                badge=o["badge"],
                name=o["name"],
                station=o["station"],
                endpoint=o["endpoint"],
                status=OfficerStatus(o.get("status", OfficerStatus.AVAILABLE)),
                lat=o.get("lat"),
                lon=o.get("lon"),
                shifts=tuple((_epoch(sh["start"]), _epoch(sh["end"])) for sh in o.get("shifts", ())),
            ).checked()
            for o in data.get("officers", ())
        )
        places = tuple(check_place(p["name"], p["lat"], p["lon"]) for p in data.get("places", ()))
        center = data.get("center")
        return City(
            name=str(data.get("name", "")),
            resolution=int(data.get("resolution", DEFAULT_RESOLUTION)),
            stations=stations,
            officers=officers,
            center=None if center is None else check_lat_lon(center["lat"], center["lon"]),
            places=places,
        )
    except KeyError as exc:
        raise CityError(f"missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CityError):
            raise
        raise CityError(str(exc)) from None


def _epoch(text: Any) -> float:
    if not isinstance(text, str):
        raise CityError(f"shift times must be ISO-8601 strings, got {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise CityError(f"shift time {text!r} needs a UTC offset, e.g. +08:00")
    return moment.timestamp()
