"""HTTP API of triage: classification, notes, hand-overs, danger warnings, prank numbers, queries, stats.

Thin views in the manner of ``core.web.app`` over ``core.triage_desk.TriageDesk``
(found at ``app[TRIAGE_DESK]``). Filtered ticket lists (``GET /api/tickets`` with
any filter) are answered here too; ``core.web.app`` hands them over. A station
user's lists and stats are limited to its own station whatever it asks for.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from aiohttp import web
from sqlalchemy import select

from core.auth.users import Role
from core.calls.lifecycle import State
from core.calls.tables import Ticket
from core.calls.tickets import TicketService, TicketView
from core.calls.views import (
    SERVICE,
    TICKET_EXTRAS,
    station_ticket,
    ticket_json,
    ticket_number,
)
from core.dispatch.planner import IncidentRow
from core.dispatch.views import BROADCASTER, PLANNER, STATION_ID
from core.errors import BadRequest
from core.http.replies import (
    PRINCIPAL,
    actor,
    error_reply,
    json_body,
    json_reply,
    parse_instant,
)
from core.http.routes import ADMINS, DESK, SUPERVISORS, RouteTable
from core.http.scopes import own_call
from core.triage.classify import NOTE_MAX, IncidentType
from core.triage.desk import TriageDesk
from core.triage.keywords import WARNING_TEXT_MAX, WarningKind
from core.triage.queries import (
    HOUR_US,
    LIMIT_MAX,
    PAGE_MAX,
    STATS_HOURS_MAX,
    UNCLASSIFIED,
    TicketQuery,
    hourly_series,
    search,
)
from core.triage.repeat import PHONE, REASON_MAX, normalise_phone
from core.triage.routing import Target

log = logging.getLogger(__name__)

TRIAGE_DESK = web.AppKey("triage_desk", TriageDesk)

routes = RouteTable("triage")

_CELL = re.compile(r"[0-9a-f]{15}")
_DIGITS = re.compile(r"[0-9]{1,7}")

# -- body and query schemas ----------------------------------------------------------------------

CLASSIFY_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["type", "priority"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": [str(t) for t in IncidentType]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 4},
    },
}
NOTE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": NOTE_MAX, "pattern": r"\S"},
        "source": {"type": "string", "enum": ["note", "text_report"]},
    },
}
HANDOVER_BODY: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}
HANDOVER_TARGET_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"target": {"type": "string", "enum": [str(t) for t in Target]}},
}
WARNING_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "text"],
    "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": [str(k) for k in WarningKind]},
        "text": {"type": "string", "minLength": 1, "maxLength": WARNING_TEXT_MAX, "pattern": r"\S"},
        "cell": {"type": ["string", "null"], "pattern": "^[0-9a-f]{15}$"},
        "address": {"type": ["string", "null"], "minLength": 1, "maxLength": 500, "pattern": r"\S"},
        "phone": {"type": ["string", "null"], "pattern": f"^{PHONE.pattern}$"},
    },
}
PRANK_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["phone", "reason"],
    "additionalProperties": False,
    "properties": {
        "phone": {"type": "string", "pattern": f"^{PHONE.pattern}$"},
        "reason": {"type": "string", "minLength": 1, "maxLength": REASON_MAX, "pattern": r"\S"},
    },
}
_TIME = {"type": "string", "description": "epoch seconds or ISO 8601 with a time zone"}
TICKETS_QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "string", "pattern": "^[0-9]{1,7}$", "description": f"1-{LIMIT_MAX}, default 50"},
    "from": {**_TIME, "description": "created at or after: epoch seconds or ISO 8601 with a time zone"},
    "to": {**_TIME, "description": "created before: epoch seconds or ISO 8601 with a time zone"},
    "station": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,32}$"},
    "cell": {"type": "string", "pattern": "^[0-9a-f]{15}$", "description": "H3 cell of the incident"},
    "type": {"type": "string", "enum": [*(str(t) for t in IncidentType), UNCLASSIFIED]},
    "priority": {"type": "string", "enum": ["1", "2", "3", "4"]},
    "status": {"type": "string", "description": "ticket state, or several separated by commas"},
    "page": {"type": "string", "pattern": "^[0-9]{1,4}$", "description": f"1-{PAGE_MAX}, offset paging"},
    "cursor": {"type": "string", "maxLength": 64, "description": "next_cursor of the previous page"},
    "order": {"type": "string", "enum": ["newest", "oldest"],
              "description": "newest first (default), or oldest first: waiting text reports"},
}
STATS_QUERY: dict[str, dict[str, Any]] = {
    "from": {**_TIME, "description": "start (default: 24 h before to)"},
    "to": {**_TIME, "description": "end, exclusive (default: now)"},
    "station": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,32}$"},
}
WARNINGS_QUERY: dict[str, dict[str, Any]] = {
    "cell": {"type": "string", "pattern": "^[0-9a-f]{15}$"},
    "address": {"type": "string", "maxLength": 500},
    "phone": {"type": "string", "pattern": f"^{PHONE.pattern}$"},
}
# Query parameters that turn GET /api/tickets into a filtered search.
FILTERS = frozenset(TICKETS_QUERY) - {"limit"}
LIST_DEFAULT = 50


def _own_station(request: web.Request) -> str | None | bool:
    principal = request.get(PRINCIPAL)
    if principal is None or principal.role is not Role.STATION:
        return False
    return principal.station


def instant(raw: str | None, name: str) -> int | None:
    """Epoch seconds or ISO 8601 (with a zone) as epoch microseconds; None if absent."""
    value = parse_instant(raw, name)
    return None if value is None else round(value * 1_000_000)


# -- ticket lists ------------------------------------------------------------------------------


async def station_tickets(service: TicketService, station: str | None, limit: int) -> list[TicketView]:
    """The newest tickets whose incident is in ``station``'s area; none for a station-less user."""
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


@routes.get("/api/tickets", DESK | {Role.STATION},
            "Newest tickets, or a filtered page with any filter (a station's: its own)", tag="tickets",
            query=TICKETS_QUERY)
async def list_tickets(request: web.Request) -> web.Response:
    if FILTERS.intersection(request.query):
        # Filtered searches over the whole history page by cursor and answer summaries.
        return await search_tickets(request)
    raw = request.query.get("limit")
    if raw is None:
        limit = LIST_DEFAULT
    else:
        if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= LIMIT_MAX:
            raise BadRequest(f"limit must be an integer from 1 to {LIMIT_MAX}", error_id="invalid-limit")
        limit = int(raw)
    station = _own_station(request)
    if station is False:
        tickets = await request.app[SERVICE].list_recent(limit)
    else:
        tickets = await station_tickets(request.app[SERVICE], station, limit)
    return json_reply({"tickets": await ticket_json(request.app, tickets)})


# -- classification, notes, hand-overs ------------------------------------------------------


@routes.route("POST", "/api/tickets/{number}/classify", DESK, "Classify: incident type and priority; routes it", tag="triage", body=CLASSIFY_BODY, scope=own_call)
async def post_classify(request: web.Request) -> web.Response:
    body = await json_body(request)
    number = ticket_number(request)
    try:
        result = await request.app[TRIAGE_DESK].classify(number, body["type"], body["priority"], by=actor(request))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return json_reply(result)


@routes.route("POST", "/api/tickets/{number}/notes", DESK, "Add a note (scanned for major-incident keywords)", tag="triage", body=NOTE_BODY, scope=own_call)
async def post_note(request: web.Request) -> web.Response:
    body = await json_body(request)
    number = ticket_number(request)
    try:
        result = await request.app[TRIAGE_DESK].add_note(number, body["text"], by=actor(request),
                                                  source=body.get("source", "note"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return json_reply(result, 201)


@routes.route("POST", "/api/tickets/{number}/handover", DESK, "Hand over: to a target by hand, or by the routing decision again (after a failure)", tag="triage", body=HANDOVER_TARGET_BODY, scope=own_call)
async def post_handover(request: web.Request) -> web.Response:
    body = await json_body(request, optional=True)
    number = ticket_number(request)
    desk = request.app[TRIAGE_DESK]
    if body.get("target"):
        decision = await desk.decision_for(number, body["target"])
    else:
        decision = await desk.current_decision(number)
    if decision is None:
        return error_reply(409, "no routing rule applies to this ticket's classification", error_id="no-routing-rule")
    ticket = await desk.triage.ticket(number)
    outcome, ticket = await desk.hand_over(ticket, decision)
    if outcome.get("by_hand"):
        status = 409  # nothing the system can do: a person hands it over
    else:
        status = 200 if outcome["done"] else 502 if desk.port is not None else 503
    return json_reply({"decision": decision.to_json(), "handover": outcome, "ticket": ticket.to_json()}, status)


@routes.route("GET", "/api/tickets/{number}/triage", DESK | {Role.STATION}, "Classification history, routing decision, links, flags and pushes", tag="triage", scope=station_ticket)
async def get_ticket_triage(request: web.Request) -> web.Response:
    number = ticket_number(request)
    desk = request.app[TRIAGE_DESK]
    ticket = await desk.triage.ticket(number)
    decision = await desk.current_decision(number)
    annotation = (await desk.annotate([ticket]))[number]
    pushes = await desk.pusher.for_ticket(number)
    return json_reply({
        "number": number,
        **annotation,
        "history": [s.to_json() for s in ticket.steps if s.step.value in
                    ("classified", "note_added", "handed_over", "repeat_linked")],
        "decision": None if decision is None else decision.to_json(),
        "pushes": [p.to_json() for p in pushes],
    })


# -- danger warnings and prank numbers ------------------------------------------------------


@routes.route("GET", "/api/danger-warnings", DESK | {Role.STATION}, "Danger warnings for a place or a phone", tag="triage", query=WARNINGS_QUERY)
async def list_warnings(request: web.Request) -> web.Response:
    query = request.query
    cell, address, phone = query.get("cell"), query.get("address"), query.get("phone")
    if cell is not None and not _CELL.fullmatch(cell):
        raise BadRequest("cell must be an H3 cell id")
    if address is not None and len(address) > 500:
        raise BadRequest("address is too long")
    if phone is not None:
        try:
            phone = normalise_phone(phone)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    found = await request.app[TRIAGE_DESK].warnings.matching(cell=cell, address=address, phone=phone)
    return json_reply({"warnings": [w.to_json() for w in found]})


@routes.route("POST", "/api/danger-warnings", DESK | {Role.STATION}, "Record a danger warning", tag="triage", body=WARNING_BODY)
async def add_warning(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        warning = await request.app[TRIAGE_DESK].warnings.add(
            body["kind"], body["text"], by=actor(request), cell=body.get("cell"),
            address=body.get("address"), phone=body.get("phone"),
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return json_reply(warning.to_json(), 201)


@routes.route("POST", "/api/danger-warnings/{id}/retire", SUPERVISORS, "Retire a danger warning", tag="triage", body=HANDOVER_BODY)
async def retire_warning(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not re.fullmatch(r"[0-9]{1,12}", raw):
        return error_reply(404, "no such warning", error_id="unknown-warning")
    try:
        warning = await request.app[TRIAGE_DESK].warnings.retire(int(raw))
    except LookupError:
        return error_reply(404, "no such warning", error_id="unknown-warning")
    return json_reply(warning.to_json())


@routes.route("GET", "/api/prank-numbers", SUPERVISORS, "Known prank numbers (flagged, still answered)", tag="triage")
async def list_pranks(request: web.Request) -> web.Response:
    return json_reply({"numbers": [p.to_json() for p in await request.app[TRIAGE_DESK].repeat.prank_numbers()]})


@routes.route("POST", "/api/prank-numbers", SUPERVISORS, "Add a known prank number", tag="triage", body=PRANK_BODY)
async def add_prank(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        entry = await request.app[TRIAGE_DESK].repeat.add_prank(body["phone"], reason=body["reason"],
                                                          by=actor(request))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return json_reply(entry.to_json(), 201)


@routes.route("DELETE", "/api/prank-numbers/{phone}", SUPERVISORS, "Remove a prank number", tag="triage")
async def remove_prank(request: web.Request) -> web.Response:
    try:
        removed = await request.app[TRIAGE_DESK].repeat.remove_prank(request.match_info["phone"])
    except ValueError:
        return error_reply(404, "no such number on the list", error_id="unknown-prank-number")
    return json_reply({"removed": True}) if removed else error_reply(404, "no such number on the list", error_id="unknown-prank-number")


# -- rules -------------------------------------------------------------------------------------


@routes.route("GET", "/api/routing", SUPERVISORS, "Routing rules, keyword lists and surges in force", tag="triage")
async def get_routing(request: web.Request) -> web.Response:
    return json_reply(request.app[TRIAGE_DESK].config_json())


@routes.route("POST", "/api/routing/reload", ADMINS, "Reload routing.toml, keywords.toml and surge.toml (a bad file keeps its running version)", tag="triage", body=HANDOVER_BODY)
async def reload_routing(request: web.Request) -> web.Response:
    await json_body(request)
    result = request.app[TRIAGE_DESK].reload()
    return json_reply({**result, **request.app[TRIAGE_DESK].config_json()}, 200 if result["ok"] else 422)


# -- queries -----------------------------------------------------------------------------------


def ticket_query(request: web.Request) -> TicketQuery:
    q = request.query
    for name in q:
        if name not in TICKETS_QUERY:
            raise BadRequest(f'unknown query parameter "{name}"')
    limit = 50
    if "limit" in q:
        if not _DIGITS.fullmatch(q["limit"]) or not 1 <= int(q["limit"]) <= LIMIT_MAX:
            raise BadRequest(f"limit must be an integer from 1 to {LIMIT_MAX}")
        limit = int(q["limit"])
    page = 1
    if "page" in q:
        if not _DIGITS.fullmatch(q["page"]) or not 1 <= int(q["page"]) <= PAGE_MAX:
            raise BadRequest(f"page must be an integer from 1 to {PAGE_MAX}; use cursor beyond")
        page = int(q["page"])
    from_us, to_us = instant(q.get("from"), "from"), instant(q.get("to"), "to")
    if from_us is not None and to_us is not None and not from_us < to_us:
        raise BadRequest('"from" must be before "to"')
    station = q.get("station")
    if station is not None and not STATION_ID.fullmatch(station):
        raise BadRequest("station must be a station id")
    own = _own_station(request)
    if own is not False:
        station = own or "-"  # a station user without a station sees nothing
    cell = q.get("cell")
    if cell is not None and not _CELL.fullmatch(cell):
        raise BadRequest("cell must be an H3 cell id (15 hex digits)")
    kind = q.get("type")
    if kind is not None and kind != UNCLASSIFIED and kind not in {str(t) for t in IncidentType}:
        raise BadRequest(f"type must be one of {', '.join(IncidentType)}, or {UNCLASSIFIED}")
    priority = None
    if "priority" in q:
        if q["priority"] not in ("1", "2", "3", "4"):
            raise BadRequest("priority must be 1, 2, 3 or 4")
        priority = int(q["priority"])
    states: tuple[str, ...] = ()
    if "status" in q:
        states = tuple(s.strip() for s in q["status"].split(","))
        known = {str(s) for s in State}
        bad = [s for s in states if s not in known]
        if bad or not states:
            raise BadRequest(f"status must be one or more of {', '.join(sorted(known))}, separated by commas")
    cursor = q.get("cursor")
    if cursor is not None and (len(cursor) > 64 or "page" in q):
        raise BadRequest("give either a cursor or a page, and a cursor as handed out")
    order = q.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise BadRequest('order must be "newest" or "oldest"')
    return TicketQuery(from_us, to_us, station, cell, kind, priority, states, limit, cursor, page, order == "oldest")


async def search_tickets(request: web.Request) -> web.Response:
    """``GET /api/tickets`` with filters (``core.web.list_tickets`` hands these over)."""
    query = ticket_query(request)
    result = await search(request.app[SERVICE].engine, query)
    return json_reply(result)


EXPORT_MAX = 100_000  # rows of one CSV export; past it the file says it was cut and where
EXPORT_PAGE = 1000  # rows read from the store at a time
_EXPORT_QUERY = {k: v for k, v in TICKETS_QUERY.items() if k not in ("limit", "page", "cursor")}
_CSV_COLUMNS = ("number", "created_at", "state", "type", "priority", "station", "cell", "seat", "caller_id")


def csv_cell(value: Any) -> str:
    """A value safe to open in a spreadsheet: a leading = + - @ (a caller id can be anything) is not a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@routes.route("GET", "/api/tickets.csv", SUPERVISORS | {Role.STATION},
              "Every ticket matching the filters of GET /api/tickets as CSV (UTF-8), oldest first or newest first",
              tag="tickets", query=_EXPORT_QUERY, content="text/csv")
async def export_tickets(request: web.Request) -> web.StreamResponse:
    if {"limit", "page", "cursor"} & set(request.query):
        raise BadRequest("an export has no pages or limit: narrow it with from/to and the filters")
    query = replace(ticket_query(request), limit=EXPORT_PAGE)
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="tickets-{time.strftime("%Y%m%d-%H%M%S")}.csv"'})
    await response.prepare(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    out.write("\ufeff")  # spreadsheets then read the Chinese text as UTF-8
    writer.writerow(_CSV_COLUMNS)
    written = 0
    while True:
        page = await search(request.app[SERVICE].engine, query)
        for t in page["tickets"]:
            writer.writerow([csv_cell(t[c]) for c in _CSV_COLUMNS])
            written += 1
            if written >= EXPORT_MAX:
                break
        await response.write(out.getvalue().encode("utf-8"))
        out.seek(0)
        out.truncate()
        if written >= EXPORT_MAX and page["next_cursor"]:
            writer.writerow([f"cut at {EXPORT_MAX} rows: narrow the time range"])
            await response.write(out.getvalue().encode("utf-8"))
            break
        if not page["next_cursor"]:
            break
        query = replace(query, cursor=page["next_cursor"], page=1)
    await response.write_eof()
    return response


@routes.route("GET", "/api/stats", SUPERVISORS | {Role.STATION}, "Ticket counts by type × station × hour", tag="triage", query=STATS_QUERY)
async def get_stats(request: web.Request) -> web.Response:
    q = request.query
    to_us = instant(q.get("to"), "to") or round(time.time() * 1_000_000)
    from_us = instant(q.get("from"), "from")
    if from_us is None:
        from_us = to_us - 24 * 3600 * 1_000_000
    if not from_us < to_us or to_us - from_us > STATS_HOURS_MAX * HOUR_US:
        raise BadRequest(f'"from" must be before "to", at most {STATS_HOURS_MAX // 24} days apart')
    station = q.get("station")
    if station is not None and not STATION_ID.fullmatch(station):
        raise BadRequest("station must be a station id")
    own = _own_station(request)
    if own is not False:
        station = own or "-"
    series = await hourly_series(request.app[SERVICE].engine, from_us, to_us, station=station)
    return json_reply({"from_us": from_us, "to_us": to_us, "station": station, **series.to_json()})


# -- registration ------------------------------------------------------------------------------


async def annotate(app: web.Application, tickets: list[TicketView]) -> dict[str, dict[str, Any]]:
    """The ``triage`` block of each ticket's JSON (classification, repeat link, prank flag)."""
    desk = app.get(TRIAGE_DESK)
    if desk is None or not tickets:
        return {}
    return {number: {"triage": block} for number, block in (await desk.annotate(tickets)).items()}


def add_triage_routes(app: web.Application, *, desk: TriageDesk | None = None) -> None:
    """Register the triage routes and text reports on an app from ``core.web.make_app``; the desk starts and stops with it.

    Without a desk, one is built on the app's ticket service with the
    dispatch planner's officers, its own alert board, the dialplan's rule
    files and no push transport (pushes are stored, not sent).
    """
    from core.alerts.board import AlertBoard
    from core.triage.report_views import add_report_routes
    from core.triage.reports import ReportIntake
    from core.triage.station_incidents import StationIncidents

    service = app[SERVICE]
    if desk is None:
        desk = TriageDesk(service, app[PLANNER].officers, AlertBoard(service.engine), owns_alerts=True)
    app[TRIAGE_DESK] = desk
    app[TICKET_EXTRAS].append(annotate)
    broadcaster = app.get(BROADCASTER)
    if broadcaster is not None:
        desk.set_publisher(broadcaster.publish)

    async def desk_ctx(app: web.Application) -> AsyncIterator[None]:
        await desk.start()
        yield
        await desk.stop()

    app.cleanup_ctx.append(desk_ctx)
    # Text reports share the desk's keyword watch and the planner's locating; stations' own incidents the intake.
    intake = ReportIntake(service, desk=desk, locate=app[PLANNER].locate, clock=service.clock)
    add_report_routes(app, intake, StationIncidents(intake, desk, app[PLANNER]))
    routes.add_to(app)
