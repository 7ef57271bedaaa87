"""HTTP API of situation assessment: the day's report (JSON), the printable daily report (HTML), a refit.

Supervisors and admins see the city or any station (``?station=ID``); a station user sees its own station
only and must name it (the heat map's rule, ``core.dispatch.views.station_query``). The forecast itself is
made by ``SituationService``'s own task; ``POST /api/situation/refresh`` makes today's again now (after
importing history, say), still in a worker thread.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.auth.users import Role
from core.dispatch.views import PLANNER, station_query
from core.errors import BadRequest
from core.http.replies import json_reply
from core.http.routes import SUPERVISORS, RouteTable
from core.situation.render import daily_report_html
from core.situation.report import DEFAULT_COLD_KM, situation_report
from core.situation.service import SituationService

__all__ = ["SITUATION", "add_situation_routes", "routes"]

SITUATION = web.AppKey("situation_service", SituationService)

routes = RouteTable("situation")

_STATION_ID = {"type": "string", "description": "one station's report (a station user: its own, required)"}
REPORT_QUERY: dict[str, dict[str, Any]] = {
    "station": _STATION_ID,
    "cold_km": {"type": "string", "description": "a cell with no available officer this near is cold (default 3)"},
}


def _cold_km(request: web.Request) -> float:
    raw = request.query.get("cold_km")
    if raw is None:
        return DEFAULT_COLD_KM
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest('"cold_km" must be a number of km', error_id="invalid-situation-query") from None
    if not 0 < value <= 100:
        raise BadRequest('"cold_km" must be more than 0 and at most 100', error_id="invalid-situation-query")
    return value


async def _report(request: web.Request) -> dict[str, Any]:
    station = request.query.get("station") or None
    if station is not None and len(station) > 32:
        raise BadRequest('"station" is at most 32 characters', error_id="invalid-situation-query")
    return await situation_report(request.app[SITUATION], request.app[PLANNER].officers, station=station,
                                  cold_km=_cold_km(request))


@routes.get("/api/situation", SUPERVISORS | {Role.STATION}, "Today's situation against the hot-spot forecast: "
            "trends by type and station, anomalies and surges, forecast hot cells over officer coverage, and how "
            "the last days' forecasts did", query=REPORT_QUERY, scope=station_query)
async def get_situation(request: web.Request) -> web.Response:
    return json_reply(await _report(request))


@routes.get("/api/situation/report", SUPERVISORS | {Role.STATION}, "The printable daily situation report (HTML with "
            "SVG charts)", query=REPORT_QUERY, scope=station_query, content="text/html")
async def get_daily_report(request: web.Request) -> web.Response:
    html = daily_report_html(await _report(request))
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


@routes.post("/api/situation/refresh", SUPERVISORS, "Make today's hot-spot forecast again now")
async def post_refresh(request: web.Request) -> web.Response:
    made = await request.app[SITUATION].refresh()
    if made is None:
        return json_reply({"ready": False, "message": "no cells and no located incidents: nothing to forecast"})
    return json_reply({"ready": True, "day": made.day, "events": made.events, "params": made.params})


def add_situation_routes(app: web.Application, service: SituationService) -> None:
    app[SITUATION] = service
    routes.add_to(app)

    async def forecast_ctx(_app: web.Application):
        await service.start()
        yield
        await service.stop()

    app.cleanup_ctx.append(forecast_ctx)
