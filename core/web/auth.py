"""Who may call which route: the one route table, the authentication middleware, log-in and the audit log.

``ROUTES`` lists every route of the backend with the roles allowed on it,
its body schema and its query parameters; the OpenAPI spec
(``core.web.openapi``) is built from the same table, so the documentation cannot
drift from what is enforced. A route registered on the application but
missing here is refused (403) to everyone except admins, and a unit test
fails until it is listed.

Every request carries ``Authorization: Bearer <token>`` except on the public
routes (health, metrics, log-in, the spec, the static pages, and Twilio's
webhook, which proves itself with its signature). Browsers cannot set
headers on a WebSocket, so an upgrade request may carry the token as
``?access_token=``. A station user sees its own station's incidents only.
Every mutating request (POST/PUT/PATCH/DELETE) is written to the audit log
with who made it and the status it got, refused ones included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.auth.users import PASSWORD_MAX, AuthService, BadCredentials, Principal, Role, UserExists
from core.calls.numbering import looks_like_number
from core.web.app import BODY_SCHEMA, BODY_SHA256, PRINCIPAL, BadRequest, _error, _json, _json_body

log = logging.getLogger(__name__)

AUTH = web.AppKey("auth", AuthService)
AUDIT_WHO = web.RequestKey("audit_who", str)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALL = frozenset(Role)
DESK = frozenset({Role.CALL_TAKER, Role.SUPERVISOR, Role.ADMIN})
SUPERVISORS = frozenset({Role.SUPERVISOR, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
PUBLIC: frozenset[Role] = frozenset()

# -- body schemas of routes whose handlers live in modules this one does not own -----------

_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
_LAT = {"type": "number", "minimum": -90, "maximum": 90}
_LON = {"type": "number", "minimum": -180, "maximum": 180}
_STATION_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,32}$"}

LOCATION_BODY = {
    "type": "object",
    "required": ["lat", "lon"],
    "properties": {"lat": _LAT, "lon": _LON, "address": {**_TEXT, "type": ["string", "null"], "maxLength": 500}},
}
ARRIVED_BODY = {
    "type": "object",
    "required": ["badge", "lat", "lon"],
    "properties": {"badge": {**_TEXT, "maxLength": 32}, "lat": _LAT, "lon": _LON},
}
CLEAR_BODY = {
    "type": "object",
    "required": ["disposition"],
    "properties": {"disposition": {**_TEXT, "maxLength": 500}, "by": {**_TEXT, "type": ["string", "null"], "maxLength": 255}},
}
OFFICER_LOCATION_BODY = {"type": "object", "required": ["lat", "lon"], "properties": {"lat": _LAT, "lon": _LON}}
OFFICER_STATUS_BODY = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["available", "off_duty"]}},
}
LOGIN_BODY = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {
        "username": {"type": "string", "minLength": 1, "maxLength": 64},
        "password": {"type": "string", "minLength": 1, "maxLength": PASSWORD_MAX},
    },
}
USER_BODY = {
    "type": "object",
    "required": ["username", "password", "role"],
    "properties": {
        "username": {"type": "string", "pattern": r"^[A-Za-z0-9_.@-]{1,64}$"},
        "password": {"type": "string", "minLength": 8, "maxLength": PASSWORD_MAX},
        "role": {"type": "string", "enum": [str(r) for r in Role]},
        "station": {**_STATION_ID, "type": ["string", "null"]},
    },
}
DISABLED_BODY = {"type": "object", "required": ["disabled"], "properties": {"disabled": {"type": "boolean"}}}


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str  # aiohttp's canonical form, e.g. /api/tickets/{number}
    roles: frozenset[Role]  # empty: public
    summary: str
    tag: str
    body: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Extra checks for the station and officer roles, by name (see _SCOPES).
    scope: str | None = None
    websocket: bool = False
    content: str = "application/json"  # what a successful answer is

    @property
    def public(self) -> bool:
        return not self.roles


def _day_query(name: str) -> dict[str, Any]:
    return {"type": "string", "pattern": "^[0-9]{8}$", "description": f"{name} day, YYYYMMDD"}


def _routes() -> tuple[RouteSpec, ...]:
    # Imported here: these modules import core.web.app, which imports this module lazily.
    from core.web import app as core_web
    from core.web import ops as web_ops
    from core.quality import views as web_quality
    from core.triage import report_views as web_reports
    from core.triage import views as web_triage

    r = RouteSpec
    limit_query = {"limit": {"type": "string", "pattern": "^[0-9]{1,7}$", "description": "1-1000, default 50"}}
    return (
        # public
        r("GET", "/healthz", PUBLIC, "Health of the backend and its parts", "operations"),
        r("GET", "/metrics", PUBLIC, "Prometheus metrics", "operations", content="text/plain"),
        r("POST", "/api/login", PUBLIC, "Log in; returns a bearer token", "auth", body=LOGIN_BODY),
        r("GET", "/api/openapi.json", PUBLIC, "This specification", "operations"),
        r("GET", "/", PUBLIC, "The operations start page (log-in)", "pages", content="text/html"),
        r("GET", "/wallboard", PUBLIC, "The wallboard page", "pages", content="text/html"),
        r("GET", "/heatmap", PUBLIC, "The heat map page", "pages", content="text/html"),
        r("GET", "/supervisor", PUBLIC, "The supervisor's page: satisfaction, spot checks, follow-ups, journal",
          "pages", content="text/html"),
        r("GET", "/static/{name}", PUBLIC, "Scripts and styles of the pages", "pages", content="text/plain"),
        r("POST", "/api/twilio/sms", PUBLIC, "Twilio's SMS webhook (authenticated by its signature)", "quality",
          content="text/xml"),
        # auth and administration
        r("POST", "/api/logout", ALL, "Log out: the token stops working", "auth"),
        r("GET", "/api/me", ALL, "The logged-in user", "auth"),
        r("GET", "/api/users", ADMINS, "Every user", "auth"),
        r("POST", "/api/users", ADMINS, "Create a user", "auth", body=USER_BODY),
        r("POST", "/api/users/{username}/disabled", ADMINS, "Disable or re-enable a user", "auth",
          body=DISABLED_BODY),
        r("GET", "/api/audit", ADMINS, "The newest audit-log entries", "auth", query=limit_query),
        # tickets
        r("GET", "/api/tickets", DESK | {Role.STATION},
          "Newest tickets, or a filtered page with any filter (a station's: its own)", "tickets",
          query=web_triage.TICKETS_QUERY),
        r("GET", "/api/tickets/{number}", DESK | {Role.STATION}, "One ticket with its steps", "tickets",
          scope="station_ticket"),
        r("POST", "/api/tickets/{number}/close", DESK, "Close an ended ticket with a disposition", "tickets",
          body=core_web.CLOSE_BODY),
        # triage and routing
        r("POST", "/api/tickets/{number}/classify", DESK, "Classify: incident type and priority; routes it",
          "triage", body=web_triage.CLASSIFY_BODY),
        r("POST", "/api/tickets/{number}/notes", DESK, "Add a note (scanned for major-incident keywords)", "triage",
          body=web_triage.NOTE_BODY),
        r("POST", "/api/tickets/{number}/handover", DESK, "Carry out the routing decision again (after a failure)",
          "triage", body=web_triage.HANDOVER_BODY),
        r("GET", "/api/tickets/{number}/briefing", SUPERVISORS | {Role.OFFICER},
          "The briefing for the officers sent (an officer: his own tickets)", "triage", scope="ticket_officer"),
        r("GET", "/api/tickets/{number}/triage", DESK | {Role.STATION},
          "Classification history, routing decision, links, flags and pushes", "triage", scope="station_ticket"),
        r("POST", "/api/reports", ADMINS | {Role.GATEWAY},
          "A text report from the 110 app's gateway: a ticket at once, major-incident keywords alerted", "reports",
          body=web_reports.REPORT_BODY),
        r("POST", "/api/tickets/{number}/take", DESK, "Take a waiting text report", "reports",
          body=web_reports.TAKE_BODY),
        r("GET", "/api/stats", SUPERVISORS | {Role.STATION}, "Ticket counts by type × station × hour", "triage",
          query=web_triage.STATS_QUERY),
        r("GET", "/api/danger-warnings", DESK | {Role.STATION}, "Danger warnings for a place or a phone", "triage",
          query=web_triage.WARNINGS_QUERY),
        r("POST", "/api/danger-warnings", DESK | {Role.STATION}, "Record a danger warning", "triage",
          body=web_triage.WARNING_BODY),
        r("POST", "/api/danger-warnings/{id}/retire", SUPERVISORS, "Retire a danger warning", "triage",
          body=web_triage.HANDOVER_BODY),
        r("GET", "/api/prank-numbers", SUPERVISORS, "Known prank numbers (flagged, still answered)", "triage"),
        r("POST", "/api/prank-numbers", SUPERVISORS, "Add a known prank number", "triage",
          body=web_triage.PRANK_BODY),
        r("DELETE", "/api/prank-numbers/{phone}", SUPERVISORS, "Remove a prank number", "triage"),
        r("GET", "/api/routing", SUPERVISORS, "Routing rules, keyword lists and surges in force", "triage"),
        r("POST", "/api/routing/reload", ADMINS,
          "Reload routing.toml, keywords.toml and surge.toml (a bad file keeps its running version)", "triage",
          body=web_triage.HANDOVER_BODY),
        # dispatch
        r("PUT", "/api/tickets/{number}/location", DESK, "Set or correct the incident location", "dispatch",
          body=LOCATION_BODY),
        r("POST", "/api/tickets/{number}/dispatch", DESK, "Dispatch an officer to the incident", "dispatch"),
        r("POST", "/api/tickets/{number}/arrived", SUPERVISORS | {Role.OFFICER, Role.STATION},
          "The officer arrived on scene", "dispatch", body=ARRIVED_BODY, scope="station_ticket"),
        r("POST", "/api/tickets/{number}/clear", SUPERVISORS | {Role.OFFICER, Role.STATION},
          "The officer cleared the incident", "dispatch", body=CLEAR_BODY, scope="station_ticket"),
        r("GET", "/api/dispatch/preview/{number}", DESK, "Whom a dispatch would ring", "dispatch"),
        r("GET", "/api/officers", DESK | {Role.STATION}, "Officers (a station's: its own)", "dispatch",
          query={"station": _STATION_ID}, scope="station_query"),
        r("POST", "/api/officers/{badge}/location", SUPERVISORS | {Role.OFFICER}, "An officer's position",
          "dispatch", body=OFFICER_LOCATION_BODY, scope="own_badge"),
        r("POST", "/api/officers/{badge}/status", SUPERVISORS | {Role.OFFICER}, "An officer signs on or off",
          "dispatch", body=OFFICER_STATUS_BODY, scope="own_badge"),
        r("GET", "/api/events", DESK | {Role.STATION, Role.OFFICER},
          "WebSocket of ticket steps (an officer: his own tickets' steps and briefings)", "dispatch",
          query={"station": _STATION_ID}, scope="event_stream", websocket=True),
        # quality and supervision
        r("POST", "/api/quality/draws", SUPERVISORS, "Draw the day's spot-check sample", "quality",
          body=web_quality.DRAW_BODY),
        r("GET", "/api/quality/draws/{day}", SUPERVISORS, "A day's sample", "quality"),
        r("POST", "/api/quality/draws/{day}/scores", SUPERVISORS, "Score a sampled call", "quality",
          body=web_quality.SCORE_BODY),
        r("GET", "/api/quality/reports/{day}", SUPERVISORS, "A day's spot-check report", "quality"),
        r("POST", "/api/quality/reports/{day}/publish", SUPERVISORS, "Publish a day's report", "quality",
          body=web_quality.PUBLISH_BODY),
        r("GET", "/api/survey/rates", SUPERVISORS, "Survey satisfaction rates", "quality",
          query={"from": _day_query("first"), "to": _day_query("last"),
                 "by": {"type": "string", "description": "comma-separated subset of day, station, seat"}}),
        r("GET", "/api/complaints", SUPERVISORS, "Follow-ups of complaints and bad survey answers", "quality",
          query={"state": {"type": "string", "enum": ["all", "open", "overdue", "answered"]}}),
        r("POST", "/api/complaints", DESK, "Open a complaint follow-up", "quality",
          body=web_quality.COMPLAINT_BODY),
        r("POST", "/api/complaints/{id}/answer", SUPERVISORS, "Answer a follow-up", "quality",
          body=web_quality.ANSWER_BODY),
        r("GET", "/api/alerts", DESK, "Open alerts (all with ?all)", "quality",
          query={"all": {"type": "string"}}),
        r("GET", "/api/journal/status", SUPERVISORS,
          "The latest journal verification (files not re-hashed; at most one walk a minute) and retention's last run",
          "quality"),
        # seats, wallboard, heat map
        r("GET", "/api/seats", DESK, "Every seat's state", "seats"),
        r("POST", "/api/seats/{seat}/login", DESK, "Log a call-taker into a seat (joins the queue)", "seats",
          body=web_ops.SEAT_LOGIN_BODY),
        r("POST", "/api/seats/{seat}/logout", DESK, "Log a seat out (leaves the queue)", "seats",
          body=web_ops.EMPTY_BODY),
        r("POST", "/api/seats/{seat}/pause", DESK, "Pause a seat with a reason", "seats",
          body=web_ops.PAUSE_BODY),
        r("POST", "/api/seats/{seat}/unpause", DESK, "End a seat's pause", "seats", body=web_ops.EMPTY_BODY),
        r("GET", "/api/seats/{seat}/pauses", SUPERVISORS, "A seat's pauses with reasons and durations", "seats"),
        r("GET", "/api/wallboard", DESK, "The wallboard figures, once", "wallboard"),
        r("GET", "/api/wallboard/ws", DESK, "WebSocket of wallboard figures (?access_token=)", "wallboard",
          websocket=True),
        r("GET", "/api/heatmap", SUPERVISORS | {Role.STATION}, "Incident counts per cell, officers, cold cells",
          "heatmap", query=web_ops.HEATMAP_QUERY),
    )


_TABLE: dict[tuple[str, str], RouteSpec] | None = None


def routes() -> dict[tuple[str, str], RouteSpec]:
    """``{(method, path): spec}`` of every route the backend may register."""
    global _TABLE
    if _TABLE is None:
        table: dict[tuple[str, str], RouteSpec] = {}
        for spec in _routes():
            if (spec.method, spec.path) in table:
                raise ValueError(f"route {spec.method} {spec.path} listed twice")
            table[(spec.method, spec.path)] = spec
        _TABLE = table
    return _TABLE


def registered(app: web.Application) -> Iterable[tuple[str, str]]:
    """``(method, path)`` of every route on ``app``; HEAD twins of GET routes left out."""
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        yield route.method, route.resource.canonical


def unlisted(app: web.Application) -> list[tuple[str, str]]:
    table = routes()
    return sorted(key for key in registered(app) if key not in table)


# -- the middleware ------------------------------------------------------------------------


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return request.query.get("access_token") or None
    return None


async def _station_ticket(request: web.Request, principal: Principal) -> web.Response | None:
    if principal.role is not Role.STATION:
        return None
    number = request.match_info.get("number", "")
    if not looks_like_number(number) or await ticket_station(request.app, number) != principal.station:
        # Not 403: another station's tickets are not there for this user.
        return _error(404, "no such ticket")
    return None


async def _station_query(request: web.Request, principal: Principal) -> web.Response | None:
    if principal.role is Role.STATION and request.query.get("station") != principal.station:
        return _error(403, f"a station user sees its own station only: add ?station={principal.station}")
    return None


async def _own_badge(request: web.Request, principal: Principal) -> web.Response | None:
    if principal.role is Role.OFFICER and request.match_info.get("badge") != principal.username:
        return _error(403, "an officer reports for himself only")
    return None


async def _event_stream(request: web.Request, principal: Principal) -> web.Response | None:
    # An officer's stream is filtered by his badge (his username), never by a station he names.
    if principal.role is Role.OFFICER and "station" in request.query:
        return _error(403, "an officer's stream carries his own tickets only: leave out ?station")
    return await _station_query(request, principal)


async def _ticket_officer(request: web.Request, principal: Principal) -> web.Response | None:
    if principal.role is not Role.OFFICER:
        return None
    from core.triage.keywords import dispatched_badges
    from core.web.app import SERVICE

    number = request.match_info.get("number", "")
    ticket = await request.app[SERVICE].get(number) if looks_like_number(number) else None
    if ticket is None or principal.username not in dispatched_badges(ticket):
        # Not 403: tickets an officer was not sent to are not there for him.
        return _error(404, "no such ticket")
    return None


_SCOPES: dict[str, Callable[[web.Request, Principal], Awaitable[web.Response | None]]] = {
    "station_ticket": _station_ticket,
    "station_query": _station_query,
    "own_badge": _own_badge,
    "ticket_officer": _ticket_officer,
    "event_stream": _event_stream,
}


async def ticket_station(app: web.Application, number: str) -> str | None:
    """The station answering for the ticket's incident, or None while it has no location."""
    from core.dispatch.views import PLANNER

    planner = app.get(PLANNER)
    if planner is None:
        return None
    incident = await planner.incident(number)
    return None if incident is None else incident.station


async def _admit(request: web.Request) -> web.Response | None:
    """None if the request may go on to its handler, else the refusal."""
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method
    spec = None if resource is None else routes().get((method, resource.canonical))
    request[BODY_SCHEMA] = None if spec is None else spec.body
    if spec is not None and spec.public:
        return None
    token = _token(request)
    principal = None if token is None else await request.app[AUTH].resolve(token)
    if principal is None:
        return _error(401, "log in first: Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    request[PRINCIPAL] = principal
    if resource is None:
        return None  # aiohttp's own 404/405 follows
    if spec is None:
        if principal.role is Role.ADMIN:
            return None
        return _error(403, "this route is not open to any role yet")
    if principal.role not in spec.roles:
        return _error(403, f"not allowed for role {principal.role}")
    if spec.scope is not None:
        return await _SCOPES[spec.scope](request, principal)
    return None


@web.middleware
async def authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method not in MUTATING:
        refusal = await _admit(request)
        return refusal if refusal is not None else await handler(request)
    status = 500
    try:
        refusal = await _admit(request)
        response = refusal if refusal is not None else await handler(request)
        status = response.status
        return response
    except BadRequest:
        status = 400
        raise
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        await _audit(request, status)


async def _audit(request: web.Request, status: int) -> None:
    principal = request.get(PRINCIPAL)
    who = principal.username if principal is not None else request.get(AUDIT_WHO, "-")
    try:
        await request.app[AUTH].audit(
            who=who,
            role=None if principal is None else str(principal.role),
            method=request.method,
            path=request.path,
            status=status,
            body_sha256=request.get(BODY_SHA256),
        )
    except Exception:
        # The request has had its effect; losing its audit row is logged loudly, not turned into an error.
        log.exception("could not write the audit row of %s %s by %s", request.method, request.path, who)


# -- views ---------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    body = await _json_body(request)
    # The password's digest is not audited: it could be tested offline.
    request[BODY_SHA256] = None
    username, password = body["username"], body["password"]
    request[AUDIT_WHO] = username[:64]
    auth = request.app[AUTH]
    try:
        token, expires_us, principal = await auth.login(username, password)
    except BadCredentials:
        return _error(401, "unknown user or wrong password")
    return _json({"token": token, "expires_at_us": expires_us, "expires_in_s": auth.token_ttl_s,
                  **principal.to_json()})


async def logout(request: web.Request) -> web.Response:
    token = _token(request)
    if token is not None:
        await request.app[AUTH].logout(token)
    return _json({"ok": True})


async def me(request: web.Request) -> web.Response:
    return _json(request[PRINCIPAL].to_json())


async def list_users(request: web.Request) -> web.Response:
    return _json({"users": [u.to_json() for u in await request.app[AUTH].users()]})


async def add_user(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        user = await request.app[AUTH].add_user(body["username"], body["password"], body["role"],
                                                body.get("station"))
    except UserExists as exc:
        return _error(409, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(user.to_json(), 201)


async def set_disabled(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        user = await request.app[AUTH].set_disabled(request.match_info["username"], body["disabled"])
    except LookupError:
        return _error(404, "no such user")
    return _json(user.to_json())


_LIMIT = re.compile(r"[0-9]{1,7}")


async def audit_log(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "100")
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000")
    return _json({"entries": [e.to_json() for e in await request.app[AUTH].audit_log(limit=int(raw))]})


def add_auth_routes(app: web.Application, auth: AuthService) -> None:
    app[AUTH] = auth
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/users", list_users)
    app.router.add_post("/api/users", add_user)
    app.router.add_post("/api/users/{username}/disabled", set_disabled)
    app.router.add_get("/api/audit", audit_log)
