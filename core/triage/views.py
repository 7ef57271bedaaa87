"""HTTP API of triage: classification, notes, hand-overs, briefings, danger warnings, prank numbers, queries, stats.

Thin views in the manner of ``core.web.app`` over ``core.triage_desk.TriageDesk``
(found at ``app[DESK]``). Filtered ticket lists (``GET /api/tickets`` with
any filter) are answered here too; ``core.web.app`` hands them over. A station
user's lists and stats are limited to its own station whatever it asks for.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core.auth.users import Role
from core.triage.keywords import WARNING_TEXT_MAX, WarningKind
from core.calls.lifecycle import IllegalTransition, State
from core.calls.numbering import looks_like_number
from core.triage.queries import (
    HOUR_US,
    LIMIT_MAX,
    PAGE_MAX,
    STATS_HOURS_MAX,
    UNCLASSIFIED,
    BadCursor,
    TicketQuery,
    hourly_series,
    search,
)
from core.triage.repeat import PHONE, REASON_MAX, normalise_phone
from core.calls.tickets import TicketView, UnknownTicket
from core.triage.classify import NOTE_MAX, IncidentType
from core.triage.desk import TriageDesk
from core.web.app import PRINCIPAL, SERVICE, BadRequest, parse_instant, _error, _json, _json_body

log = logging.getLogger(__name__)

DESK = web.AppKey("triage_desk", TriageDesk)

_STATION = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
_CELL = re.compile(r"[0-9a-f]{15}")
_DIGITS = re.compile(r"[0-9]{1,7}")

# -- body and query schemas (listed in core.web.auth's route table) ---------------------------

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


def _number(request: web.Request) -> str:
    number = request.match_info["number"]
    if not looks_like_number(number):
        raise web.HTTPNotFound(reason="no such ticket")
    return number


def _who(request: web.Request) -> str | None:
    principal = request.get(PRINCIPAL)
    return None if principal is None else principal.username


def _own_station(request: web.Request) -> str | None | bool:
    principal = request.get(PRINCIPAL)
    if principal is None or principal.role is not Role.STATION:
        return False
    return principal.station


def instant(raw: str | None, name: str) -> int | None:
    """Epoch seconds or ISO 8601 (with a zone) as epoch microseconds; None if absent."""
    value = parse_instant(raw, name)
    return None if value is None else round(value * 1_000_000)


# -- classification, notes, hand-overs ------------------------------------------------------


async def post_classify(request: web.Request) -> web.Response:
    body = await _json_body(request)
    number = _number(request)
    try:
        result = await request.app[DESK].classify(number, body["type"], body["priority"], by=_who(request))
    except UnknownTicket:
        return _error(404, "no such ticket")
    except IllegalTransition as exc:
        return _error(409, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(result)


async def post_note(request: web.Request) -> web.Response:
    body = await _json_body(request)
    number = _number(request)
    try:
        result = await request.app[DESK].add_note(number, body["text"], by=_who(request),
                                                  source=body.get("source", "note"))
    except UnknownTicket:
        return _error(404, "no such ticket")
    except IllegalTransition as exc:
        return _error(409, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(result, 201)


async def post_handover(request: web.Request) -> web.Response:
    await _json_body(request)
    number = _number(request)
    desk = request.app[DESK]
    try:
        decision = await desk.current_decision(number)
        if decision is None:
            return _error(409, "no routing rule applies to this ticket's classification")
        ticket = await desk.triage.ticket(number)
        outcome, ticket = await desk.hand_over(ticket, decision)
    except UnknownTicket:
        return _error(404, "no such ticket")
    except IllegalTransition as exc:
        return _error(409, str(exc))
    if outcome.get("by_hand"):
        status = 409  # nothing the system can do: a person hands it over
    else:
        status = 200 if outcome["done"] else 502 if desk.port is not None else 503
    return _json({"decision": decision.to_json(), "handover": outcome, "ticket": ticket.to_json()}, status)


async def get_briefing(request: web.Request) -> web.Response:
    number = _number(request)
    try:
        return _json(await request.app[DESK].briefing(number))
    except UnknownTicket:
        return _error(404, "no such ticket")


async def get_ticket_triage(request: web.Request) -> web.Response:
    number = _number(request)
    desk = request.app[DESK]
    try:
        ticket = await desk.triage.ticket(number)
        decision = await desk.current_decision(number)
    except UnknownTicket:
        return _error(404, "no such ticket")
    annotation = (await desk.annotate([ticket]))[number]
    pushes = await desk.pusher.for_ticket(number)
    return _json({
        "number": number,
        **annotation,
        "history": [s.to_json() for s in ticket.steps if s.step.value in
                    ("classified", "note_added", "handed_over", "repeat_linked")],
        "decision": None if decision is None else decision.to_json(),
        "pushes": [p.to_json() for p in pushes],
    })


# -- danger warnings and prank numbers ------------------------------------------------------


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
    found = await request.app[DESK].warnings.matching(cell=cell, address=address, phone=phone)
    return _json({"warnings": [w.to_json() for w in found]})


async def add_warning(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        warning = await request.app[DESK].warnings.add(
            body["kind"], body["text"], by=_who(request) or "-", cell=body.get("cell"),
            address=body.get("address"), phone=body.get("phone"),
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(warning.to_json(), 201)


async def retire_warning(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not re.fullmatch(r"[0-9]{1,12}", raw):
        return _error(404, "no such warning")
    try:
        warning = await request.app[DESK].warnings.retire(int(raw))
    except LookupError:
        return _error(404, "no such warning")
    return _json(warning.to_json())


async def list_pranks(request: web.Request) -> web.Response:
    return _json({"numbers": [p.to_json() for p in await request.app[DESK].repeat.prank_numbers()]})


async def add_prank(request: web.Request) -> web.Response:
    body = await _json_body(request)
    try:
        entry = await request.app[DESK].repeat.add_prank(body["phone"], reason=body["reason"],
                                                          by=_who(request) or "-")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(entry.to_json(), 201)


async def remove_prank(request: web.Request) -> web.Response:
    try:
        removed = await request.app[DESK].repeat.remove_prank(request.match_info["phone"])
    except ValueError:
        return _error(404, "no such number on the list")
    return _json({"removed": True}) if removed else _error(404, "no such number on the list")


# -- rules -------------------------------------------------------------------------------------


async def get_routing(request: web.Request) -> web.Response:
    return _json(request.app[DESK].config_json())


async def reload_routing(request: web.Request) -> web.Response:
    await _json_body(request)
    result = request.app[DESK].reload()
    return _json({**result, **request.app[DESK].config_json()}, 200 if result["ok"] else 422)


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
    if station is not None and not _STATION.fullmatch(station):
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
    try:
        result = await search(request.app[SERVICE].engine, query)
    except BadCursor as exc:
        raise BadRequest(str(exc)) from None
    return _json(result)


async def get_stats(request: web.Request) -> web.Response:
    q = request.query
    to_us = instant(q.get("to"), "to") or round(time.time() * 1_000_000)
    from_us = instant(q.get("from"), "from")
    if from_us is None:
        from_us = to_us - 24 * 3600 * 1_000_000
    if not from_us < to_us or to_us - from_us > STATS_HOURS_MAX * HOUR_US:
        raise BadRequest(f'"from" must be before "to", at most {STATS_HOURS_MAX // 24} days apart')
    station = q.get("station")
    if station is not None and not _STATION.fullmatch(station):
        raise BadRequest("station must be a station id")
    own = _own_station(request)
    if own is not False:
        station = own or "-"
    series = await hourly_series(request.app[SERVICE].engine, from_us, to_us, station=station)
    return _json({"from_us": from_us, "to_us": to_us, "station": station, **series.to_json()})


# -- registration ------------------------------------------------------------------------------


async def annotate(app: web.Application, tickets: list[TicketView]) -> dict[str, dict[str, Any]]:
    """The triage block of each ticket's JSON (``core.web.app`` merges it in)."""
    desk = app.get(DESK)
    if desk is None or not tickets:
        return {}
    return await desk.annotate(tickets)


def add_triage_routes(app: web.Application, *, desk: TriageDesk | None = None) -> None:
    """Register the triage routes on an app from ``core.web.make_app``; the desk starts and stops with the app.

    Without a desk, one is built on the app's ticket service with the
    dispatch planner's officers, its own alert board, the dialplan's rule
    files and no push transport (pushes are stored, not sent).
    """
    from core.dispatch.views import BROADCASTER, PLANNER

    if desk is None:
        from core.alerts.board import AlertBoard

        service = app[SERVICE]
        desk = TriageDesk(service, app[PLANNER].officers, AlertBoard(service.engine), owns_alerts=True)
    app[DESK] = desk
    broadcaster = app.get(BROADCASTER)
    if broadcaster is not None:
        desk.set_publisher(broadcaster.publish)

    async def desk_ctx(app: web.Application) -> AsyncIterator[None]:
        await desk.start()
        yield
        await desk.stop()

    app.cleanup_ctx.append(desk_ctx)
    # Text reports share the desk's keyword watch and the planner's locating.
    from core.triage.reports import ReportIntake
    from core.triage.report_views import add_report_routes

    add_report_routes(app, ReportIntake(app[SERVICE], desk=desk, locate=app[PLANNER].locate,
                                        clock=app[SERVICE].clock))
    app.router.add_post("/api/tickets/{number}/classify", post_classify)
    app.router.add_post("/api/tickets/{number}/notes", post_note)
    app.router.add_post("/api/tickets/{number}/handover", post_handover)
    app.router.add_get("/api/tickets/{number}/briefing", get_briefing)
    app.router.add_get("/api/tickets/{number}/triage", get_ticket_triage)
    app.router.add_get("/api/stats", get_stats)
    app.router.add_get("/api/danger-warnings", list_warnings)
    app.router.add_post("/api/danger-warnings", add_warning)
    app.router.add_post("/api/danger-warnings/{id}/retire", retire_warning)
    app.router.add_get("/api/prank-numbers", list_pranks)
    app.router.add_post("/api/prank-numbers", add_prank)
    app.router.add_delete("/api/prank-numbers/{phone}", remove_prank)
    app.router.add_get("/api/routing", get_routing)
    app.router.add_post("/api/routing/reload", reload_routing)
