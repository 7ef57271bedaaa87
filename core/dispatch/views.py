"""HTTP API of dispatch: incident location, officers' reports, arrival, clearing, preview, and the step stream.

Thin views in the manner of ``core.web.app``: bodies are parsed and bounded here,
domain errors become 400/404/409, and the app-wide middleware answers errors
as JSON. ``POST /api/tickets/{number}/dispatch`` is not here: it rings phones
and belongs with the telephony side, which calls ``DispatchPlanner`` (found
at ``app[PLANNER]``).

``GET /api/events[?station=ID]`` is a WebSocket of ticket steps (see
``core.calls.events``); an officer's socket carries only the tickets his badge
(his username) is held by. Sockets are kept in a registry and closed with
1001 when the application shuts down; a subscriber too slow to keep up is
closed with 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from core.auth.users import Role
from core.dispatch.planner import ADDRESS_MAX, DISPOSITION_MAX, DispatchPlanner, NotLocated
from core.calls.events import StepBroadcaster, Subscription
from core.dispatch.geo import GeoError, check_lat_lon
from core.calls.lifecycle import IllegalTransition
from core.calls.numbering import looks_like_number
from core.dispatch.officers import (
    BADGE_MAX,
    STATION_ID_MAX,
    OfficerBusy,
    OfficerService,
    OfficerStatus,
    UnknownOfficer,
)
from core.calls.tickets import UnknownTicket
from core.web.app import PRINCIPAL, SERVICE, BadRequest, _dumps, _error, _json, _json_body, _text

log = logging.getLogger(__name__)

PLANNER = web.AppKey("dispatch_planner", DispatchPlanner)
BROADCASTER = web.AppKey("step_broadcaster", StepBroadcaster)
SOCKETS = web.AppKey("event_sockets", set[web.WebSocketResponse])

BY_MAX = 255
_STATION = re.compile(rf"[A-Za-z0-9_.:-]{{1,{STATION_ID_MAX}}}")
# A socket that will not take our close frame is cut without one after this long.
CLOSE_TIMEOUT_S = 2.0
HEARTBEAT_S = 30.0


def _point(body: dict[str, Any]) -> tuple[float, float]:
    for name in ("lat", "lon"):
        if name not in body:
            raise BadRequest(f'"{name}" is required')
    try:
        return check_lat_lon(body["lat"], body["lon"])
    except GeoError as exc:
        raise BadRequest(str(exc)) from None


def _number(request: web.Request) -> str:
    number = request.match_info["number"]
    if not looks_like_number(number):
        raise web.HTTPNotFound(reason="no such ticket")
    return number


def _badge(request: web.Request) -> str:
    badge = request.match_info["badge"]
    if not 1 <= len(badge) <= BADGE_MAX:
        raise web.HTTPNotFound(reason="no such officer")
    return badge


def _domain_error(exc: Exception) -> web.Response:
    if isinstance(exc, UnknownOfficer):
        return _error(404, "no such officer")
    if isinstance(exc, UnknownTicket):
        return _error(404, "no such ticket")
    return _error(409, str(exc))


_CONFLICTS = (UnknownTicket, UnknownOfficer, IllegalTransition, NotLocated, OfficerBusy)


# -- tickets -------------------------------------------------------------------------------


async def put_location(request: web.Request) -> web.Response:
    body = await _json_body(request)
    lat, lon = _point(body)
    address = _text(body, "address", ADDRESS_MAX, required=False)
    number = _number(request)
    try:
        ticket, incident = await request.app[PLANNER].locate(number, lat=lat, lon=lon, address=address)
    except _CONFLICTS as exc:
        return _domain_error(exc)
    return _json({"number": ticket.number, "state": str(ticket.state), "incident": incident.to_json()})


async def post_arrived(request: web.Request) -> web.Response:
    body = await _json_body(request)
    badge = _text(body, "badge", BADGE_MAX)
    lat, lon = _point(body)
    number = _number(request)
    try:
        ticket = await request.app[PLANNER].arrived(number, badge=badge or "", lat=lat, lon=lon)
    except _CONFLICTS as exc:
        return _domain_error(exc)
    return _json(ticket.to_json())


async def post_clear(request: web.Request) -> web.Response:
    body = await _json_body(request)
    disposition = _text(body, "disposition", DISPOSITION_MAX)
    by = _text(body, "by", BY_MAX, required=False)
    number = _number(request)
    try:
        ticket = await request.app[PLANNER].clear(number, disposition=disposition or "", by=by)
    except _CONFLICTS as exc:
        return _domain_error(exc)
    return _json(ticket.to_json())


async def get_preview(request: web.Request) -> web.Response:
    number = _number(request)
    try:
        plan = await request.app[PLANNER].preview(number)
    except _CONFLICTS as exc:
        return _domain_error(exc)
    return _json(plan.to_json())


# -- officers ------------------------------------------------------------------------------


def _officers(request: web.Request) -> OfficerService:
    return request.app[PLANNER].officers


async def list_officers(request: web.Request) -> web.Response:
    station = request.query.get("station")
    if station is not None and not _STATION.fullmatch(station):
        raise BadRequest("station must be a station id")
    officers = await _officers(request).list(station=station)
    return _json({"officers": [o.to_json() for o in officers]})


async def post_officer_location(request: web.Request) -> web.Response:
    body = await _json_body(request)
    lat, lon = _point(body)
    badge = _badge(request)
    try:
        officer = await _officers(request).update_location(badge, lat, lon)
    except _CONFLICTS as exc:
        return _domain_error(exc)
    return _json(officer.to_json())


async def post_officer_status(request: web.Request) -> web.Response:
    body = await _json_body(request)
    status = body.get("status")
    allowed = (OfficerStatus.AVAILABLE, OfficerStatus.OFF_DUTY)
    if status not in allowed:
        raise BadRequest(f'"status" must be one of {", ".join(allowed)}')
    badge = _badge(request)
    try:
        officer = await _officers(request).set_status(badge, status)
    except _CONFLICTS as exc:
        return _domain_error(exc)
    return _json(officer.to_json())


# -- the step stream -----------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    station = request.query.get("station")
    if station is not None and not _STATION.fullmatch(station):
        raise BadRequest("station must be a station id")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this endpoint is a WebSocket; send an Upgrade request")
    await ws.prepare(request)
    principal = request.get(PRINCIPAL)
    badge = principal.username if principal is not None and principal.role is Role.OFFICER else None
    broadcaster = request.app[BROADCASTER]
    sockets = request.app[SOCKETS]
    subscription = broadcaster.subscribe(station, badge=badge)
    sockets.add(ws)
    tasks = [
        asyncio.create_task(_pump(ws, subscription), name="events-pump"),
        asyncio.create_task(_drain_incoming(ws), name="events-read"),
        asyncio.create_task(subscription.closed.wait(), name="events-closed"),
    ]
    try:
        await ws.send_str(_dumps({"type": "hello", "station": station, "badge": badge}))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        broadcaster.unsubscribe(subscription)
        sockets.discard(ws)
        await _close(request, ws, subscription)
    return ws


async def _pump(ws: web.WebSocketResponse, subscription: Subscription) -> None:
    while True:
        await ws.send_str(await subscription.next())


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    # Subscribers have nothing to say; reading lets aiohttp answer pings and
    # notice the client's close.
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            return


async def _close(request: web.Request, ws: web.WebSocketResponse, subscription: Subscription) -> None:
    if ws.closed:
        return
    code, reason = {
        "slow": (1013, b"too slow; reconnect and re-read the tickets"),
        "shutdown": (1001, b"server shutting down"),
    }.get(subscription.reason or "", (1000, b""))
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason), CLOSE_TIMEOUT_S)
    except (TimeoutError, ConnectionError):
        # A client that reads nothing never acknowledges; cut it.
        if request.transport is not None:
            request.transport.close()


# -- registration --------------------------------------------------------------------------


def add_dispatch_routes(
    app: web.Application,
    *,
    planner: DispatchPlanner | None = None,
    broadcaster: StepBroadcaster | None = None,
) -> None:
    """Register dispatch routes and the step stream on an app from ``core.web.make_app``.

    Without a planner, one is built on the app's ticket service and its store.
    The stream subscribes to the ticket service when the app starts and closes
    its sockets when it shuts down.
    """
    service = app[SERVICE]
    if planner is None:
        planner = DispatchPlanner(service, OfficerService(service.engine))
    if broadcaster is None:
        broadcaster = StepBroadcaster()
    app[PLANNER] = planner
    app[BROADCASTER] = broadcaster
    app[SOCKETS] = set()

    async def stream_ctx(app: web.Application) -> AsyncIterator[None]:
        remove = service.add_listener(broadcaster.on_step)
        try:
            broadcaster.prime(await planner.open_incident_stations())
        except Exception:
            # A store not ready must not keep the API down; steps prime it as they come.
            log.exception("could not prime the event stream with open incidents")
        try:
            held: dict[str, list[str]] = {}
            for officer in await planner.officers.list():
                if officer.ticket is not None:
                    held.setdefault(officer.ticket, []).append(officer.badge)
            broadcaster.prime_officers(held)
        except Exception:
            # Officers' streams fill again from their tickets' next ringing/joined/arrived steps.
            log.exception("could not prime the event stream with the officers' tickets")
        yield
        remove()
        broadcaster.close_all()

    async def close_sockets(app: web.Application) -> None:
        # Runs before the server waits for open handlers, which an open
        # WebSocket would hold up: each handler closes its socket with 1001
        # once its subscription is closed; wait for them, boundedly.
        broadcaster.close_all()
        deadline = asyncio.get_running_loop().time() + CLOSE_TIMEOUT_S + 1
        while app[SOCKETS] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    app.cleanup_ctx.append(stream_ctx)
    app.on_shutdown.append(close_sockets)
    app.router.add_put("/api/tickets/{number}/location", put_location)
    app.router.add_post("/api/tickets/{number}/arrived", post_arrived)
    app.router.add_post("/api/tickets/{number}/clear", post_clear)
    app.router.add_get("/api/dispatch/preview/{number}", get_preview)
    app.router.add_get("/api/officers", list_officers)
    app.router.add_post("/api/officers/{badge}/location", post_officer_location)
    app.router.add_post("/api/officers/{badge}/status", post_officer_status)
    app.router.add_get("/api/events", events)
