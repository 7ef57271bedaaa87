"""A city with a history of located incidents in the store, for the situation API and page tests.

61 cells (ring 4 of the test centre) split among four stations by quarter; eight weeks of incidents
simulated with near-repeats (``core.situation.synthetic``) in three types, written as the center writes them
(ticket, incident location, closing step with the type) in bulk; officers crowd the centre and leave the
west edge thin. Today, in one western cell, a burst the forecast could not know of, with the surge alert the
surge watch would have raised there.
"""

from __future__ import annotations

import h3
import numpy as np
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from core.alerts.board import Alert
from core.calls.tables import Ticket, TicketStep
from core.dispatch.officers import City, OfficerService, OfficerSpec, StationSpec
from core.dispatch.planner import IncidentRow
from core.situation.grid import AreaGrid
from core.situation.incidents import DAY_S
from core.situation.synthetic import Truth, simulate

TZ = "Asia/Shanghai"
LAT0, LON0 = 31.2304, 121.4737
CENTRE = h3.latlng_to_cell(LAT0, LON0, 8)
DAY0 = 1_795_968_000.0  # 2026-11-30 00:00 in Shanghai (a Monday): "today"
NOW = DAY0 + 15 * 3600  # 15:00
HISTORY_DAYS = 56
TYPES = (("property", Truth(mu=6.0, theta=0.4, omega=0.7, sigma_m=250.0, hotspots=2)),
         ("dispute", Truth(mu=4.0, theta=0.2, omega=1.5, sigma_m=150.0, hotspots=2)),
         ("traffic", Truth(mu=4.0, theta=0.0, omega=1.0, sigma_m=100.0, hotspots=2)))
BURST = 8  # incidents today in the burst cell


def quarters() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {"north": [], "south": [], "east": [], "west": []}
    for cell in sorted(h3.grid_disk(CENTRE, 4)):
        lat, lon = h3.cell_to_latlng(cell)
        key = ("north" if lat > LAT0 else "south") if abs(lat - LAT0) > abs(lon - LON0) * 0.85 else (
            "east" if lon > LON0 else "west")
        out[key].append(cell)
    return {k: tuple(v) for k, v in out.items()}


def burst_cell() -> str:
    west = quarters()["west"]
    return min(west, key=lambda c: h3.cell_to_latlng(c)[1])  # the westernmost: far from every officer


async def build(engine: AsyncEngine) -> dict[str, object]:
    """Stations, officers, eight weeks of incidents, today's burst and its surge alert."""
    parts = quarters()
    stations = tuple(StationSpec(id=k, name=f"{k}派出所", bureau="黄浦分局", duty_desk=f"PJSIP/desk-{k}",
                                 superior=f"PJSIP/chief-{k}", cells=v) for k, v in parts.items())
    rng = np.random.default_rng(16)
    shift = ((NOW - 6 * 3600, NOW + 6 * 3600),)
    specs = []
    for i in range(10):
        cell = sorted(h3.grid_disk(CENTRE, 1))[i % 7] if i < 7 else parts["east"][i]
        lat, lon = h3.cell_to_latlng(cell)
        station = next(s.id for s in stations if cell in s.cells)
        specs.append(OfficerSpec(badge=f"{2001 + i}", name=f"警员{i + 1}", station=station, endpoint=f"PJSIP/o{i}",
                                 lat=lat + rng.uniform(-0.001, 0.001), lon=lon, shifts=shift))
    await OfficerService(engine).load_city(City(name="测试市", resolution=8, stations=stations, officers=tuple(specs)))
    station_of = {c: s.id for s in stations for c in s.cells}
    grid = AreaGrid.of(station_of)
    start = DAY0 - HISTORY_DAYS * DAY_S
    rows: list[tuple[float, float, float, str, str]] = []
    for k, (kind, truth) in enumerate(TYPES):
        history = simulate(grid, truth, start_s=start, days=HISTORY_DAYS + 15 / 24, tz=TZ, seed=100 + k, kind=kind)
        lat, lon = grid.unproject(history.xy)
        for t, a, b, c in zip(history.t, lat, lon, history.cell, strict=True):
            if t < NOW - 60:
                rows.append((float(t), float(a), float(b), grid.cells[c], kind))
    burst = burst_cell()
    blat, blon = h3.cell_to_latlng(burst)
    for n in range(BURST):
        rows.append((NOW - 3 * 3600 + n * 600, blat + 0.0005 * (n % 3 - 1), blon, burst, "dispute"))
    rows.sort()
    await _write(engine, rows, station_of)
    async with engine.begin() as conn:
        await conn.execute(insert(Alert).values(
            kind="surge", ref=f"cell:{burst}", created_at_us=round((NOW - 2 * 3600) * 1e6),
            message=f"警情激增 surge at cell:{burst}: {BURST} incidents in 15 min"))
    return {"incidents": len(rows), "station_of": station_of, "burst": burst}


async def _write(engine: AsyncEngine, rows: list[tuple[float, float, float, str, str]],
                 station_of: dict[str, str]) -> None:
    tickets, incidents, steps = [], [], []
    for n, (t, lat, lon, cell, kind) in enumerate(rows, start=1):
        at_us = round(t * 1e6)
        number = f"110-test-{n:06d}"
        tickets.append({"id": n, "number": number, "uniqueid": f"1790000000.{n}", "caller_id": "13800000000",
                        "state": "closed", "created_at_us": at_us, "updated_at_us": at_us + 600_000_000})
        incidents.append({"number": number, "lat": lat, "lon": lon, "cell": cell, "station_id": station_of[cell],
                          "located_at_us": at_us + 30_000_000, "address": None})
        steps.append({"ticket_id": n, "seq": 1, "step": "closed", "state_after": "closed",
                      "at_us": at_us + 600_000_000, "source": "api", "detail": {"type": kind, "by": "seat-01"}})
    async with engine.begin() as conn:
        for table, values in ((Ticket, tickets), (IncidentRow, incidents), (TicketStep, steps)):
            for start in range(0, len(values), 2000):
                await conn.execute(insert(table), values[start:start + 2000])
