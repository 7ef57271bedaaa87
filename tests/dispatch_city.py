"""A small synthetic city for dispatch tests: three stations around one centre cell.

Officers are placed by grid ring from the centre so each test says what it
means ("one officer in ring 1") instead of raw coordinates.
"""

from __future__ import annotations

from dataclasses import replace

import h3
from aiohttp import web

from core.calls.events import StepBroadcaster
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService, TicketView
from core.calls.views import add_call_routes
from core.dispatch.officers import (
    City,
    OfficerService,
    OfficerSpec,
    OfficerStatus,
    StationSpec,
)
from core.dispatch.planner import DispatchPlanner
from core.dispatch.views import add_dispatch_routes
from core.web import app as core_web

LAT0, LON0 = 31.2304, 121.4737
RES = 8
CENTER = h3.latlng_to_cell(LAT0, LON0, RES)
T0 = 1_795_951_800.0  # the conftest clock: 2026-11-29 11:30:00 UTC
SHIFT = (T0 - 3600, T0 + 8 * 3600)

EAST = StationSpec(
    id="east", name="东区派出所", bureau="滨江分局",
    duty_desk="PJSIP/desk-east", superior="PJSIP/chief-east", answer_timeout_s=15,
)
WEST = StationSpec(
    id="west", name="西区派出所", bureau="滨江分局",
    duty_desk="PJSIP/desk-west", superior="PJSIP/chief-west", answer_timeout_s=20,
)
SOUTH = StationSpec(
    id="south", name="南区派出所", bureau="南湖分局",
    duty_desk="PJSIP/desk-south", superior="PJSIP/chief-south", answer_timeout_s=25,
    ladder=("officer", "superior"),
)


def ring_cell(k: int, index: int = 0) -> str:
    """A fixed cell k steps from the centre."""
    return sorted(h3.grid_ring(CENTER, k))[index]


def point_in(cell: str, north_m: float = 0.0) -> tuple[float, float]:
    """The cell's centre, moved ``north_m`` metres north (small moves stay inside the cell)."""
    lat, lon = h3.cell_to_latlng(cell)
    return lat + north_m / 111_195.0, lon


def city_cells() -> dict[str, tuple[str, ...]]:
    """Centre and ring 1 to east, ring 2 to west, ring 3 to south."""
    return {
        "east": tuple(sorted(h3.grid_disk(CENTER, 1))),
        "west": tuple(sorted(h3.grid_ring(CENTER, 2))),
        "south": tuple(sorted(h3.grid_ring(CENTER, 3))),
    }


def officer(
    badge: str,
    station: str,
    at: tuple[float, float] | None,
    *,
    shifts: tuple[tuple[float, float], ...] = (SHIFT,),
    status: OfficerStatus = OfficerStatus.AVAILABLE,
) -> OfficerSpec:
    lat, lon = at if at is not None else (None, None)
    return OfficerSpec(
        badge=badge, name=f"警员{badge}", station=station, endpoint=f"PJSIP/{badge}",
        status=status, lat=lat, lon=lon, shifts=shifts,
    )


def city(*officers: OfficerSpec) -> City:
    cells = city_cells()
    stations = tuple(replace(s, cells=cells[s.id]) for s in (EAST, WEST, SOUTH))
    return City(name="test city", resolution=RES, stations=stations, officers=officers, center=(LAT0, LON0))


async def answered_call(service: TicketService, uniqueid: str = "1.1") -> TicketView:
    await service.open_call(uniqueid=uniqueid, caller_id="13800000000", at=T0, source="agi")
    await service.record_step(uniqueid, Step.QUEUED, at=T0 + 1, source="ami")
    return await service.record_step(uniqueid, Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-05")


async def load(officers: OfficerService, *specs: OfficerSpec) -> None:
    await officers.load_city(city(*specs))



def dispatch_app(
    service: TicketService, planner: DispatchPlanner, broadcaster: StepBroadcaster | None = None
) -> web.Application:
    """The dispatch routes alone, behind the API's JSON error middleware."""
    app = web.Application(middlewares=[core_web._errors_as_json])
    add_call_routes(app, service)
    add_dispatch_routes(app, planner=planner, broadcaster=broadcaster)
    return app
