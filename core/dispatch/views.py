"""HTTP API of dispatch: incident location, officers' reports, arrival, clearing, preview, support mobilised for
a major incident, and the step stream.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from core.auth.users import Role
from core.calls.events import StepBroadcaster, Subscription
from core.calls.views import SERVICE, TICKET_STATION, station_ticket, ticket_number
from core.dispatch.geo import check_lat_lon
from core.dispatch.heatmap import DEFAULT_COLD_KM, HeatmapQuery, heatmap
from core.dispatch.mobilise import MOBILISE_MAX, UNITS_MAX, Mobiliser, SupportRequest
from core.dispatch.officers import (
    BADGE_MAX,
    STATION_ID_MAX,
    OfficerService,
    OfficerStatus,
    UnknownOfficer,
)
from core.dispatch.places import PLACE_NAME_MAX, SEARCH_MAX
from core.dispatch.planner import ADDRESS_MAX, DISPOSITION_MAX, DispatchPlanner
from core.errors import BadRequest
from core.http.replies import (
    PRINCIPAL,
    WS_PROTOCOLS,
    actor,
    dumps,
    error_reply,
    json_body,
    json_reply,
    parse_instant,
    text_field,
)
from core.http.routes import DESK, SUPERVISORS, RouteTable
from core.http.scopes import own_call

if TYPE_CHECKING:
    from core.auth.users import Principal

log = logging.getLogger(__name__)

PLANNER = web.AppKey("dispatch_planner", DispatchPlanner)
MOBILISER = web.AppKey("mobiliser", Mobiliser)
BROADCASTER = web.AppKey("step_broadcaster", StepBroadcaster)
SOCKETS = web.AppKey("event_sockets", set[web.WebSocketResponse])

BY_MAX = 255
STATION_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{STATION_ID_MAX}}}")
# A socket that will not take our close frame is cut without one after this long.
CLOSE_TIMEOUT_S = 2.0
HEARTBEAT_S = 30.0
WINDOW_MAX_S = 366 * 24 * 3600

routes = RouteTable("dispatch")

# -- body schemas ----------------------------------------------------------------------------

_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
_LAT = {"type": "number", "minimum": -90, "maximum": 90}
_LON = {"type": "number", "minimum": -180, "maximum": 180}
_STATION_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,32}$"}
LOCATION_BODY: dict[str, Any] = {
    "type": "object",
    "description": "lat and lon (with an optional address text), or an address alone: the gazetteer's place of "
                   "that name",
    "properties": {"lat": _LAT, "lon": _LON, "address": {**_TEXT, "type": ["string", "null"], "maxLength": 500}},
}
PLACES_QUERY: dict[str, dict[str, Any]] = {
    "q": {"type": "string", "description": "part of a place's name (at least one character)"},
    "limit": {"type": "string", "description": f"at most this many places (1..{SEARCH_MAX}, default 8)"},
}
ARRIVED_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["badge", "lat", "lon"],
    "properties": {"badge": {**_TEXT, "maxLength": 32}, "lat": _LAT, "lon": _LON},
}
CLEAR_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["disposition"],
    # "by" is ignored: the step names the logged-in user who cleared.
    "properties": {"disposition": {**_TEXT, "maxLength": 500}, "by": {**_TEXT, "type": ["string", "null"], "maxLength": 255}},
}
OFFICER_LOCATION_BODY: dict[str, Any] = {
    "type": "object", "required": ["lat", "lon"],
    "properties": {"lat": _LAT, "lon": _LON,
                   "accuracy_m": {"type": "number", "minimum": 0, "maximum": 100000,
                                  "description": "the fix's accuracy (the phone's, in metres): kept with it"}},
}
OFFICER_STATUS_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["available", "off_duty"]}},
}
HEATMAP_QUERY: dict[str, dict[str, Any]] = {
    "from": {"type": "string", "description": "start of the window: epoch seconds or ISO 8601 (default: 24 h ago)"},
    "to": {"type": "string", "description": "end of the window: epoch seconds or ISO 8601 (default: now)"},
    "type": {"type": "string", "description": "only incidents of this type"},
    "cold_km": {"type": "string", "description": "a cell with no available officer this near is cold (default 3)"},
}


# -- scopes: what a station user and an officer may reach ------------------------------------


async def station_query(request: web.Request, principal: Principal) -> web.Response | None:
    if principal.role is Role.STATION and request.query.get("station") != principal.station:
        return error_reply(403, f"a station user sees its own station only: add ?station={principal.station}",
                           error_id="own-station-only")
    return None


async def own_badge(request: web.Request, principal: Principal) -> web.Response | None:
    if principal.role is Role.OFFICER and request.match_info.get("badge") != principal.username:
        return error_reply(403, "an officer reports for himself only", error_id="own-badge-only")
    return None


async def report_refusal(
    request: web.Request, principal: Principal, number: str, badge: str | None
) -> web.Response | None:
    """An officer reports arrival or clearing for himself, on the ticket he is dispatched to; a station user for
    its own officers or those this ticket holds (``station_ticket`` has already kept it to its own incidents).

    ``badge`` is the officer the report names (None for clearing, which frees every officer of the ticket).
    Supervisors and admins report for anyone.
    """
    if principal.role is Role.OFFICER:
        if badge is not None and badge != principal.username:
            return error_reply(403, "an officer reports for himself only", error_id="own-badge-only",
                               details={"badge": badge})
        own = await _officers(request).get(principal.username)
        if own.ticket != number or own.status not in (OfficerStatus.DISPATCHED, OfficerStatus.ON_SCENE):
            return error_reply(403, f"you are not dispatched to ticket {number}", error_id="not-your-ticket",
                               details={"number": number, "yours": own.ticket})
    elif principal.role is Role.STATION and badge is not None:
        named = await _officers(request).get(badge)
        if named.station != principal.station and named.ticket != number:
            return error_reply(403, f"officer {badge} is neither of station {principal.station} nor held by "
                               f"ticket {number}", error_id="not-your-officer", details={"badge": badge})
    return None


async def event_stream(request: web.Request, principal: Principal) -> web.Response | None:
    # An officer's stream is filtered by his badge (his username), never by a station he names.
    if principal.role is Role.OFFICER and "station" in request.query:
        return error_reply(403, "an officer's stream carries his own tickets only: leave out ?station",
                           error_id="own-tickets-only")
    return await station_query(request, principal)



def _point(body: dict[str, Any]) -> tuple[float, float]:
    for name in ("lat", "lon"):
        if name not in body:
            raise BadRequest(f'"{name}" is required', error_id="invalid-body", details={"field": name})
    return check_lat_lon(body["lat"], body["lon"])


def _badge(request: web.Request) -> str:
    badge = request.match_info["badge"]
    if not 1 <= len(badge) <= BADGE_MAX:
        raise UnknownOfficer("no such officer", details={"badge": badge[:64]})
    return badge


# -- tickets -------------------------------------------------------------------------------


@routes.put("/api/tickets/{number}/location", DESK, "Set or correct the incident location", body=LOCATION_BODY,
            scope=own_call)
async def put_location(request: web.Request) -> web.Response:
    body = await json_body(request)
    address = text_field(body, "address", ADDRESS_MAX, required=False)
    # An address alone is looked up in the gazetteer (422 address-not-found, with candidates).
    lat, lon = _point(body) if "lat" in body or "lon" in body or not address else (None, None)
    number = ticket_number(request)
    ticket, incident = await request.app[PLANNER].locate(number, lat=lat, lon=lon, address=address)
    return json_reply({"number": ticket.number, "state": str(ticket.state), "incident": incident.to_json()})


@routes.post("/api/tickets/{number}/arrived", SUPERVISORS | {Role.OFFICER, Role.STATION}, "The officer arrived on scene",
             body=ARRIVED_BODY, scope=station_ticket)
async def post_arrived(request: web.Request) -> web.Response:
    body = await json_body(request)
    badge = text_field(body, "badge", BADGE_MAX) or ""
    lat, lon = _point(body)
    number = ticket_number(request)
    principal = request.get(PRINCIPAL)
    if principal is not None and (refusal := await report_refusal(request, principal, number, badge)):
        return refusal
    ticket = await request.app[PLANNER].arrived(number, badge=badge, lat=lat, lon=lon)
    return json_reply(ticket.to_json())


@routes.post("/api/tickets/{number}/clear", SUPERVISORS | {Role.OFFICER, Role.STATION},
             "The officer cleared the incident", body=CLEAR_BODY, scope=station_ticket)
async def post_clear(request: web.Request) -> web.Response:
    body = await json_body(request)
    disposition = text_field(body, "disposition", DISPOSITION_MAX)
    number = ticket_number(request)
    principal = request.get(PRINCIPAL)
    if principal is not None and (refusal := await report_refusal(request, principal, number, None)):
        return refusal
    ticket = await request.app[PLANNER].clear(number, disposition=disposition or "", by=actor(request))
    return json_reply(ticket.to_json())


@routes.get("/api/dispatch/preview/{number}", DESK, "Whom a dispatch would ring", scope=own_call)
async def get_preview(request: web.Request) -> web.Response:
    number = ticket_number(request)
    plan = await request.app[PLANNER].preview(number)
    return json_reply(plan.to_json())


# -- officers ------------------------------------------------------------------------------


def _officers(request: web.Request) -> OfficerService:
    return request.app[PLANNER].officers


@routes.get("/api/officers", DESK | {Role.STATION}, "Officers (a station's: its own)", query={"station": _STATION_ID},
            scope=station_query)
async def list_officers(request: web.Request) -> web.Response:
    station = request.query.get("station")
    if station is not None and not STATION_ID.fullmatch(station):
        raise BadRequest("station must be a station id", error_id="invalid-station")
    officers = await _officers(request).list(station=station)
    return json_reply({"officers": [o.to_json() for o in officers]})


@routes.get("/api/officers/{badge}", SUPERVISORS | {Role.OFFICER}, "One officer: status, ticket, position (an officer: "
            "himself; his page catches up with it)", scope=own_badge)
async def get_officer(request: web.Request) -> web.Response:
    officer = await _officers(request).get(_badge(request))
    return json_reply(officer.to_json())


@routes.post("/api/officers/{badge}/location", SUPERVISORS | {Role.OFFICER}, "An officer's position",
             body=OFFICER_LOCATION_BODY, scope=own_badge)
async def post_officer_location(request: web.Request) -> web.Response:
    body = await json_body(request)
    lat, lon = _point(body)
    accuracy = body.get("accuracy_m")
    if accuracy is not None and (isinstance(accuracy, bool) or not isinstance(accuracy, (int, float))
                                 or not 0 <= accuracy <= 100000):
        raise BadRequest('"accuracy_m" must be a number of metres, 0..100000', error_id="invalid-body",
                         details={"field": "accuracy_m"})
    badge = _badge(request)
    officer = await _officers(request).update_location(badge, lat, lon, accuracy_m=accuracy)
    return json_reply(officer.to_json())


@routes.post("/api/officers/{badge}/status", SUPERVISORS | {Role.OFFICER}, "An officer signs on or off",
             body=OFFICER_STATUS_BODY, scope=own_badge)
async def post_officer_status(request: web.Request) -> web.Response:
    body = await json_body(request)
    status = body.get("status")
    allowed = (OfficerStatus.AVAILABLE, OfficerStatus.OFF_DUTY)
    if status not in allowed:
        raise BadRequest(f'"status" must be one of {", ".join(allowed)}', error_id="invalid-body", details={"field": "status"})
    badge = _badge(request)
    officer = await _officers(request).set_status(badge, status)
    return json_reply(officer.to_json())


# -- the step stream -----------------------------------------------------------------------


@routes.get("/api/events", DESK | {Role.STATION, Role.OFFICER},
            "WebSocket of ticket steps (an officer: his own tickets' steps and briefings)",
            query={"station": _STATION_ID}, scope=event_stream, websocket=True)
async def events(request: web.Request) -> web.StreamResponse:
    station = request.query.get("station")
    if station is not None and not STATION_ID.fullmatch(station):
        raise BadRequest("station must be a station id", error_id="invalid-station")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, protocols=WS_PROTOCOLS)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this endpoint is a WebSocket; send an Upgrade request", error_id="websocket-only")
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
        await ws.send_str(dumps({"type": "hello", "station": station, "badge": badge}))
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


# -- heat map ------------------------------------------------------------------------------


def _instant(raw: str | None, default: float, name: str) -> float:
    value = parse_instant(raw, name)
    return default if value is None else value


@routes.get("/api/heatmap", DESK | {Role.STATION}, "Incident counts per cell, officers, cold cells (the desk's map)",
            tag="heatmap", query=HEATMAP_QUERY)
async def get_heatmap(request: web.Request) -> web.Response:
    now = time.time()
    start = _instant(request.query.get("from"), now - 24 * 3600, "from")
    end = _instant(request.query.get("to"), now, "to")
    if not start < end or end - start > WINDOW_MAX_S:
        raise BadRequest('"from" must be before "to", at most a year apart', error_id="invalid-heatmap-query")
    kind = request.query.get("type") or None
    if kind is not None and len(kind) > 500:
        raise BadRequest('"type" is too long', error_id="invalid-heatmap-query")
    try:
        cold_km = float(request.query.get("cold_km", DEFAULT_COLD_KM))
    except ValueError:
        raise BadRequest('"cold_km" must be a number of km', error_id="invalid-heatmap-query") from None
    if not 0 < cold_km <= 100:
        raise BadRequest('"cold_km" must be more than 0 and at most 100', error_id="invalid-heatmap-query")
    principal = request[PRINCIPAL]
    station = principal.station if principal.role is Role.STATION else None
    query = HeatmapQuery(round(start * 1e6), round(end * 1e6), kind, station, cold_km)
    planner = request.app[PLANNER]
    return json_reply(await heatmap(request.app[SERVICE].engine, planner.officers, query, planner.officers.now()))


@routes.get("/api/places", DESK, "Places of the city's gazetteer whose name contains q (the desk's address field)",
            tag="heatmap", query=PLACES_QUERY)
async def get_places(request: web.Request) -> web.Response:
    query = request.query.get("q", "")
    if len(query) > PLACE_NAME_MAX:
        raise BadRequest(f'"q" is longer than {PLACE_NAME_MAX} characters', error_id="invalid-places-query")
    try:
        limit = int(request.query.get("limit", "8"))
    except ValueError:
        raise BadRequest('"limit" must be a whole number', error_id="invalid-places-query") from None
    if not 1 <= limit <= SEARCH_MAX:
        raise BadRequest(f'"limit" must be 1..{SEARCH_MAX}', error_id="invalid-places-query")
    found = await request.app[PLANNER].places.search(query, limit=limit)
    return json_reply({"places": [p.to_json() for p in found]})


# -- support mobilised for a major incident (core.dispatch.mobilise) -------------------------

MOBILISE_BODY: dict[str, Any] = {
    "type": "object",
    "description": f"officers from the tiers around the incident (its station, bordering stations, its county), "
                   f"and/or officers of named units; 1..{MOBILISE_MAX} in all",
    "properties": {
        "officers": {"type": "integer", "minimum": 0, "maximum": MOBILISE_MAX},
        "units": {
            "type": "array", "maxItems": UNITS_MAX,
            "items": {"type": "object", "required": ["station", "officers"],
                      "properties": {"station": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,32}$"},
                                     "officers": {"type": "integer", "minimum": 1, "maximum": MOBILISE_MAX}}},
        },
    },
}


def _request(body: dict[str, Any]) -> SupportRequest:
    units: dict[str, int] = {}
    for unit in body.get("units") or ():
        station = unit["station"]
        if station in units:
            raise BadRequest(f"unit {station!r} named twice", error_id="invalid-body", details={"field": "units"})
        units[station] = unit["officers"]
    try:
        return SupportRequest(officers=body.get("officers") or 0, units=units).checked()
    except ValueError as exc:
        raise BadRequest(str(exc), error_id="invalid-body", details={"field": "officers"}) from None


@routes.post("/api/tickets/{number}/mobilise", SUPERVISORS, "Mobilise support for a major incident: several officers "
             "at once, each rung on his unit's ladder", body=MOBILISE_BODY)
async def post_mobilise(request: web.Request) -> web.Response:
    support = _request(await json_body(request))
    plan = await request.app[MOBILISER].mobilise(ticket_number(request), support, by=actor(request))
    return json_reply(plan.to_json(), 202)


@routes.get("/api/tickets/{number}/mobilisation", DESK | {Role.STATION}, "Support mobilised for a ticket: every "
            "pick, rung, joined, escalated or unanswered", scope=station_ticket)
async def get_mobilisation(request: web.Request) -> web.Response:
    return json_reply(await request.app[MOBILISER].status(ticket_number(request)))


@routes.post("/api/tickets/{number}/stand-down", SUPERVISORS, "Release the officers mobilised for a ticket")
async def post_stand_down(request: web.Request) -> web.Response:
    ticket = await request.app[MOBILISER].stand_down(ticket_number(request), by=actor(request))
    return json_reply({"number": ticket.number, "released": ticket.steps[-1].detail.get("released", [])})


# -- registration --------------------------------------------------------------------------


def planner_station(planner: DispatchPlanner) -> Callable[[str], Awaitable[str | None]]:
    async def station(number: str) -> str | None:
        incident = await planner.incident(number)
        return None if incident is None else incident.station

    return station


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
    app[TICKET_STATION] = planner_station(planner)
    # Support for a major incident; its phones are rung by the telephony side through planner.ring_alone.
    mobiliser = Mobiliser(planner)
    app[MOBILISER] = mobiliser

    async def stop_mobilising(app: web.Application) -> None:
        await mobiliser.stop()

    app.on_shutdown.append(stop_mobilising)
    routes.add_to(app)
