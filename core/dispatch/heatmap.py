"""The incident heat map over officer coverage ("ice map"), as data for an SVG drawing.

Incidents are counted per H3 cell of the patrol grid (the cell stored with
each incident location) for a time window and, optionally, an incident
type. The type of an incident is what the call-taker or officer recorded at
the end: the ``type`` of its ``closed``/``cleared`` step when given, else
that step's disposition; incidents not yet closed have no type and count
only when no type is asked for.

The map covers the cells assigned to stations and every cell with an
incident. A covered cell is cold when no available officer, on duty now, is
within the given distance of its centre: there a call would wait for a car
from far away. Each cell comes with its boundary so the page can draw it
without a tile server.

Support mobilised for a major incident leaves its own stations thinner: a
cell is ``left_by_support`` when it is cold now but would not be if the
officers mobilised (held by a ticket through its ``support_ringing`` or
``support_joined`` steps) were still available where they last reported.
That is the coverage they left behind, drawn apart on the map so a
supervisor sees what the mobilisation costs the rest of the city.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h3
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.lifecycle import Step
from core.calls.tables import Ticket, TicketStep
from core.dispatch.geo import haversine_m
from core.dispatch.officers import (
    BUSY_STATUSES,
    CellStationRow,
    OfficerService,
    OfficerStatus,
    OfficerView,
)
from core.dispatch.planner import IncidentRow

DEFAULT_COLD_KM = 3.0
AREA_MAX = 20_000  # cells; a city at resolution 8 is a few thousand


@dataclass(frozen=True, slots=True)
class HeatmapQuery:
    from_us: int
    to_us: int
    type: str | None = None
    station: str | None = None  # only this station's incidents, officers and cells
    cold_km: float = DEFAULT_COLD_KM


def _boundary(cell: str) -> list[list[float]]:
    return [[round(lat, 6), round(lon, 6)] for lat, lon in h3.cell_to_boundary(cell)]


async def incident_counts(engine: AsyncEngine, query: HeatmapQuery) -> tuple[dict[str, int], list[str]]:
    """``{cell: incidents}`` in the window (and type), and every type seen in the window."""
    where = [Ticket.created_at_us >= query.from_us, Ticket.created_at_us < query.to_us]
    if query.station is not None:
        where.append(IncidentRow.station_id == query.station)
    async with engine.connect() as conn:
        incidents = (
            await conn.execute(
                select(Ticket.id, IncidentRow.cell).join(IncidentRow, IncidentRow.number == Ticket.number).where(*where)
            )
        ).all()
        types: dict[int, str] = {}
        ids = [i.id for i in incidents]
        for start in range(0, len(ids), 500):
            rows = await conn.execute(
                select(TicketStep.ticket_id, TicketStep.detail)
                .where(
                    TicketStep.ticket_id.in_(ids[start : start + 500]),
                    TicketStep.step.in_([Step.CLOSED.value, Step.CLEARED.value]),
                )
                .order_by(TicketStep.seq)
            )
            for row in rows:
                detail = row.detail or {}
                kind = detail.get("type") or detail.get("disposition")
                if isinstance(kind, str) and kind:
                    types[row.ticket_id] = kind
    counts: dict[str, int] = {}
    for incident in incidents:
        if query.type is None or types.get(incident.id) == query.type:
            counts[incident.cell] = counts.get(incident.cell, 0) + 1
    return counts, sorted(set(types.values()))


async def covered_cells(engine: AsyncEngine, station: str | None) -> set[str]:
    select_cells = select(CellStationRow.cell)
    if station is not None:
        select_cells = select_cells.where(CellStationRow.station_id == station)
    async with engine.connect() as conn:
        return set((await conn.execute(select_cells.limit(AREA_MAX))).scalars())


def on_duty(officers: list[OfficerView], at_us: int) -> list[OfficerView]:
    return [o for o in officers if o.status is not OfficerStatus.OFF_DUTY and o.on_roster(at_us) and o.lat is not None]


def nearest_m(lat: float, lon: float, officers: list[OfficerView]) -> float | None:
    best = None
    for officer in officers:
        assert officer.lat is not None and officer.lon is not None
        d = haversine_m(lat, lon, officer.lat, officer.lon)
        if best is None or d < best:
            best = d
    return best


async def mobilised_badges(engine: AsyncEngine, officers: list[OfficerView]) -> set[str]:
    """The officers held by a ticket that mobilised them as support (not those sent by its ordinary dispatch)."""
    held = {o.badge: o.ticket for o in officers if o.ticket is not None and o.status in BUSY_STATUSES}
    if not held:
        return set()
    found: set[str] = set()
    numbers = sorted({n for n in held.values() if n is not None})
    async with engine.connect() as conn:
        for start in range(0, len(numbers), 500):
            rows = await conn.execute(
                select(Ticket.number, TicketStep.detail)
                .join(TicketStep, TicketStep.ticket_id == Ticket.id)
                .where(Ticket.number.in_(numbers[start : start + 500]),
                       TicketStep.step.in_([Step.SUPPORT_RINGING.value, Step.SUPPORT_JOINED.value]))
            )
            for number, detail in rows:
                badge = (detail or {}).get("badge")
                if isinstance(badge, str) and held.get(badge) == number:
                    found.add(badge)
    return found


async def heatmap(engine: AsyncEngine, officers: OfficerService, query: HeatmapQuery, now: float) -> dict[str, Any]:
    counts, types = await incident_counts(engine, query)
    area = await covered_cells(engine, query.station) | set(counts)
    duty = on_duty(await officers.list(station=query.station), round(now * 1_000_000))
    available = [o for o in duty if o.status is OfficerStatus.AVAILABLE]
    mobilised = await mobilised_badges(engine, duty)
    before = available + [o for o in duty if o.badge in mobilised]  # had the mobilised officers stayed
    cold_m = query.cold_km * 1000
    cells = []
    for cell in sorted(area)[:AREA_MAX]:
        lat, lon = h3.cell_to_latlng(cell)
        nearest = nearest_m(lat, lon, available)
        cold = nearest is None or nearest > cold_m
        had = nearest_m(lat, lon, before) if cold and mobilised else None
        cells.append({
            "cell": cell,
            "count": counts.get(cell, 0),
            "boundary": _boundary(cell),
            "nearest_available_km": None if nearest is None else round(nearest / 1000, 2),
            "cold": cold,
            "left_by_support": had is not None and had <= cold_m,
        })
    return {
        "from_us": query.from_us,
        "to_us": query.to_us,
        "type": query.type,
        "types": types,
        "station": query.station,
        "cold_km": query.cold_km,
        "max_count": max(counts.values(), default=0),
        "incidents": sum(counts.values()),
        "cells": cells,
        "cold_cells": sum(1 for c in cells if c["cold"]),
        "left_by_support": sum(1 for c in cells if c["left_by_support"]),
        "mobilised": sorted(mobilised),
        "officers": [
            {"badge": o.badge, "name": o.name, "station": o.station, "status": str(o.status), "lat": o.lat,
             "lon": o.lon, "mobilised": o.badge in mobilised}
            for o in duty
        ],
    }
