"""HTTP API of operations: seats, the wallboard (with its WebSocket), the heat map, /metrics, the spec, the pages.

Thin views in the manner of ``core.web.app``; the pages are static files from
``core/static`` served by the backend itself (no CDN: the center's network
may have no way out). The wallboard socket sends a snapshot at each change
and every second for the wait clocks; sockets are kept in a registry and
closed when the application shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import select

from core.auth.users import Role
from core.dispatch.heatmap import DEFAULT_COLD_KM, HeatmapQuery, heatmap
from core.calls.metrics import CallMetrics
from core.seats.board import SeatBoard, UnknownSeat, WrongSeatState, check_seat
from core.calls.tickets import TicketService, TicketView
from core.seats.wallboard import Wallboard
from core.web.app import PRINCIPAL, SERVICE, BadRequest, parse_instant, _dumps, _error, _json, _json_body
from core.web.metrics import FunctionCollector, metrics_response, registry_of

log = logging.getLogger(__name__)

SEATS = web.AppKey("seats", SeatBoard)
WALLBOARD = web.AppKey("wallboard", Wallboard)
CALL_METRICS = web.AppKey("call_metrics", CallMetrics)
METRICS = web.AppKey("metrics_registry", CollectorRegistry)
WALLBOARD_SOCKETS = web.AppKey("wallboard_sockets", set[web.WebSocketResponse])

STATIC = Path(__file__).with_name("static")
_PAGES = {"/": "index.html", "/wallboard": "wallboard.html", "/heatmap": "heatmap.html",
          "/supervisor": "supervisor.html"}
_TYPES = {".html": "text/html", ".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
PUSH_EVERY_S = 1.0
HEARTBEAT_S = 30.0
WINDOW_MAX_S = 366 * 24 * 3600

EMPTY_BODY: dict[str, Any] = {"type": "object"}
SEAT_LOGIN_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {"operator": {"type": "string", "minLength": 1, "maxLength": 64}},
}
PAUSE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"}},
}
HEATMAP_QUERY: dict[str, dict[str, Any]] = {
    "from": {"type": "string", "description": "start of the window: epoch seconds or ISO 8601 (default: 24 h ago)"},
    "to": {"type": "string", "description": "end of the window: epoch seconds or ISO 8601 (default: now)"},
    "type": {"type": "string", "description": "only incidents of this type"},
    "cold_km": {"type": "string", "description": "a cell with no available officer this near is cold (default 3)"},
}


# -- pages, spec, metrics ------------------------------------------------------------------


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / _PAGES[request.path], headers={"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    # Only files that exist directly in the folder: no paths, no dot files.
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        return _error(404, "no such file")
    return web.FileResponse(path, headers={"Content-Type": _TYPES[path.suffix], "Cache-Control": "no-cache"})


async def openapi_json(request: web.Request) -> web.Response:
    from core.web.openapi import build_spec

    return _json(build_spec(request.app))


async def metrics_text(request: web.Request) -> web.Response:
    return metrics_response(request.app[METRICS])


def _gauges(app: web.Application) -> Iterable[Metric]:
    waiting, longest = app[WALLBOARD].waiting_figures()
    yield GaugeMetricFamily("jiejing_queue_calls_waiting", "Calls received and not yet answered.", value=waiting)
    yield GaugeMetricFamily("jiejing_queue_longest_wait_seconds", "How long the longest-waiting call has waited.",
                            value=round(longest, 3))
    seats = GaugeMetricFamily("jiejing_seats", "Seats by state.", labels=["state"])
    for state, count in app[SEATS].by_state().items():
        seats.add_metric([state], count)
    yield seats


# -- seats ---------------------------------------------------------------------------------


def _seat(request: web.Request) -> str:
    try:
        return check_seat(request.match_info["seat"])
    except UnknownSeat:
        raise web.HTTPNotFound(reason="no such seat") from None


async def list_seats(request: web.Request) -> web.Response:
    board = request.app[SEATS]
    return _json({"seats": [s.to_json() for s in board.seats()], "by_state": board.by_state(),
                  "wrap_up_s": board.wrap_up_s})


async def _seat_change(request: web.Request, change: Any) -> web.Response:
    try:
        view = await change
    except WrongSeatState as exc:
        return _error(409, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    except Exception as exc:
        # The queue (AMI) refused or is unreachable: nothing changed.
        log.warning("seat change %s failed: %s", request.path, exc)
        return _error(503, f"the queue did not confirm: {type(exc).__name__}")
    return _json(view.to_json())


async def seat_login(request: web.Request) -> web.Response:
    seat = _seat(request)
    body = await _json_body(request)
    operator = body.get("operator") or request[PRINCIPAL].username
    return await _seat_change(request, request.app[SEATS].login(seat, operator))


async def seat_logout(request: web.Request) -> web.Response:
    seat = _seat(request)
    await _json_body(request)
    return await _seat_change(request, request.app[SEATS].logout(seat))


async def seat_pause(request: web.Request) -> web.Response:
    seat = _seat(request)
    body = await _json_body(request)
    return await _seat_change(request, request.app[SEATS].pause(seat, body["reason"], by=request[PRINCIPAL].username))


async def seat_unpause(request: web.Request) -> web.Response:
    seat = _seat(request)
    await _json_body(request)
    return await _seat_change(request, request.app[SEATS].unpause(seat))


async def seat_pauses(request: web.Request) -> web.Response:
    seat = _seat(request)
    return _json({"seat": seat, "pauses": await request.app[SEATS].pauses(seat)})


# -- wallboard -----------------------------------------------------------------------------


async def wallboard_once(request: web.Request) -> web.Response:
    return _json(request.app[WALLBOARD].snapshot())


async def wallboard_ws(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this endpoint is a WebSocket; send an Upgrade request")
    await ws.prepare(request)
    board = request.app[WALLBOARD]
    sockets = request.app[WALLBOARD_SOCKETS]
    changed = board.waiter()
    sockets.add(ws)
    reader = asyncio.create_task(_drain(ws), name="wallboard-read")
    try:
        while not ws.closed and not reader.done():
            changed.clear()
            await ws.send_str(_dumps({"type": "wallboard", **board.snapshot()}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), PUSH_EVERY_S)
    except ConnectionError:
        pass  # the screen went away between two pushes
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        board.forget(changed)
        sockets.discard(ws)
        await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    # Screens have nothing to say; reading lets aiohttp answer pings and see the close.
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            return


# -- heat map ------------------------------------------------------------------------------


def _instant(raw: str | None, default: float, name: str) -> float:
    value = parse_instant(raw, name)
    return default if value is None else value


async def get_heatmap(request: web.Request) -> web.Response:
    from core.dispatch.views import PLANNER

    now = time.time()
    start = _instant(request.query.get("from"), now - 24 * 3600, "from")
    end = _instant(request.query.get("to"), now, "to")
    if not start < end or end - start > WINDOW_MAX_S:
        raise BadRequest('"from" must be before "to", at most a year apart')
    kind = request.query.get("type") or None
    if kind is not None and len(kind) > 500:
        raise BadRequest('"type" is too long')
    try:
        cold_km = float(request.query.get("cold_km", DEFAULT_COLD_KM))
    except ValueError:
        raise BadRequest('"cold_km" must be a number of km') from None
    if not 0 < cold_km <= 100:
        raise BadRequest('"cold_km" must be more than 0 and at most 100')
    principal = request[PRINCIPAL]
    station = principal.station if principal.role is Role.STATION else None
    query = HeatmapQuery(round(start * 1e6), round(end * 1e6), kind, station, cold_km)
    planner = request.app[PLANNER]
    return _json(await heatmap(request.app[SERVICE].engine, planner.officers, query, planner.officers.now()))


# -- station users' tickets ----------------------------------------------------------------


async def station_tickets(service: TicketService, station: str | None, limit: int) -> list[TicketView]:
    """The newest tickets whose incident is in ``station``'s area; none for a station-less user."""
    from core.dispatch.planner import IncidentRow
    from core.calls.tables import Ticket

    if station is None:
        return []
    async with service.engine.connect() as conn:
        numbers = (
            await conn.execute(
                select(Ticket.number)
                .join(IncidentRow, IncidentRow.number == Ticket.number)
                .where(IncidentRow.station_id == station)
                .order_by(Ticket.created_at_us.desc(), Ticket.id.desc())
                .limit(limit)
            )
        ).scalars().all()
    tickets = [await service.get(number) for number in numbers]
    return [t for t in tickets if t is not None]


# -- registration --------------------------------------------------------------------------


def add_ops_routes(
    app: web.Application,
    *,
    seats: SeatBoard | None = None,
    metrics: Iterable[Collector] = (),
    timezone: str = "Asia/Shanghai",
) -> None:
    """Seats, wallboard, heat map, /metrics, the spec and the pages, on an app from ``core.web.make_app``."""
    service = app[SERVICE]
    board = seats if seats is not None else SeatBoard(service.engine)
    wallboard = Wallboard(service.engine, board, tz=timezone)
    calls = CallMetrics()
    app[SEATS] = board
    app[WALLBOARD] = wallboard
    app[CALL_METRICS] = calls
    app[METRICS] = registry_of([calls, FunctionCollector("queue", lambda: _gauges(app)), *metrics])
    app[WALLBOARD_SOCKETS] = set()

    async def ops_ctx(app: web.Application) -> AsyncIterator[None]:
        removers = [service.add_listener(board.on_step), service.add_listener(wallboard.on_step),
                    service.add_listener(calls.on_step)]
        try:
            await wallboard.prime()
        except Exception:
            # A store not ready must not keep the API down; steps fill the board as they come.
            log.exception("could not read today's calls for the wallboard")
        task = asyncio.create_task(wallboard.run(), name="wallboard-alerts")
        yield
        for remove in removers:
            remove()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await board.stop()

    async def close_sockets(app: web.Application) -> None:
        for ws in list(app[WALLBOARD_SOCKETS]):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"server shutting down"), 2.0)

    app.cleanup_ctx.append(ops_ctx)
    app.on_shutdown.append(close_sockets)
    for path in _PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/api/seats", list_seats)
    app.router.add_post("/api/seats/{seat}/login", seat_login)
    app.router.add_post("/api/seats/{seat}/logout", seat_logout)
    app.router.add_post("/api/seats/{seat}/pause", seat_pause)
    app.router.add_post("/api/seats/{seat}/unpause", seat_unpause)
    app.router.add_get("/api/seats/{seat}/pauses", seat_pauses)
    app.router.add_get("/api/wallboard", wallboard_once)
    app.router.add_get("/api/wallboard/ws", wallboard_ws)
    app.router.add_get("/api/heatmap", get_heatmap)
