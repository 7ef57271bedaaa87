"""HTTP API of calls: one ticket with its steps, and closing it.

A ticket's JSON is the ticket's own view plus what capabilities above add to it
(triage adds its ``triage`` block) through ``TICKET_EXTRAS``; a station user's
scope needs the station answering for a ticket, which dispatch provides through
``TICKET_STATION``. Calls know neither capability: both are hooks the
capabilities fill when they are mounted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.auth.users import Role
from core.calls.numbering import looks_like_number
from core.calls.tickets import Source, TicketService, TicketView, UnknownTicket
from core.http.replies import actor, error_reply, json_body, json_reply
from core.http.routes import DESK, RouteTable
from core.http.scopes import own_call

if TYPE_CHECKING:
    from core.auth.users import Principal

SERVICE = web.AppKey("service", TicketService)
TicketExtras = Callable[[web.Application, list[TicketView]], Awaitable[dict[str, dict[str, Any]]]]
# Each returns {number: {key: value}} merged into the tickets' JSON.
TICKET_EXTRAS = web.AppKey("ticket_extras", list[TicketExtras])
# The station answering for a ticket's incident, or None while it has no location.
TICKET_STATION = web.AppKey("ticket_station", Callable[[str], Awaitable["str | None"]])

routes = RouteTable("tickets")

CLOSE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["disposition"],
    "properties": {
        "disposition": {"type": "string", "minLength": 1, "pattern": r"\S"},
        # Ignored: the ticket is closed in the logged-in user's name (kept so older clients are not refused).
        "by": {"type": "string", "minLength": 1, "pattern": r"\S"},
    },
}


def ticket_number(request: web.Request) -> str:
    """The ``{number}`` of the path; a malformed number cannot exist (404 without a database round trip)."""
    number = request.match_info["number"]
    if not looks_like_number(number):
        raise UnknownTicket("no such ticket", details={"number": number[:64]})
    return number


async def ticket_json(app: web.Application, tickets: list[TicketView]) -> list[dict[str, Any]]:
    """Tickets as the API answers them: each ticket's view plus what mounted capabilities add."""
    merged: dict[str, dict[str, Any]] = {}
    for extras in app.get(TICKET_EXTRAS, ()):
        for number, block in (await extras(app, tickets)).items():
            merged.setdefault(number, {}).update(block)
    return [{**t.to_json(), **merged.get(t.number, {})} for t in tickets]


async def ticket_station(app: web.Application, number: str) -> str | None:
    """The station answering for the ticket's incident; None without a location (or without dispatch)."""
    lookup = app.get(TICKET_STATION)
    return None if lookup is None else await lookup(number)


async def station_ticket(request: web.Request, principal: Principal) -> web.Response | None:
    """Scope: a station user reaches only tickets whose incident is in its own area."""
    if principal.role is not Role.STATION:
        return None
    number = request.match_info.get("number", "")
    if not looks_like_number(number) or await ticket_station(request.app, number) != principal.station:
        # Not 403: another station's tickets are not there for this user.
        return error_reply(404, "no such ticket", error_id=UnknownTicket.error_id)
    return None


async def closing(request: web.Request, principal: Principal) -> web.Response | None:
    """Scope of closing: a call-taker's own calls and reports (``own_call``); a station user's the incidents its
    station entered itself (``POST /api/incidents``), wherever they are."""
    if principal.role is not Role.STATION:
        return await own_call(request, principal)
    number = request.match_info.get("number", "")
    ticket = await request.app[SERVICE].get(number) if looks_like_number(number) else None
    first = ticket.steps[0] if ticket is not None and ticket.steps else None
    if (first is None or principal.station is None or first.source != Source.STATION
            or first.detail.get("entered_by_station") != principal.station):
        return error_reply(404, "no such ticket", error_id=UnknownTicket.error_id)
    return None


@routes.get("/api/tickets/{number}", DESK | {Role.STATION}, "One ticket with its steps", scope=station_ticket)
async def get_ticket(request: web.Request) -> web.Response:
    number = ticket_number(request)
    ticket = await request.app[SERVICE].get(number)
    if ticket is None:
        raise UnknownTicket("no such ticket", details={"number": number})
    return json_reply((await ticket_json(request.app, [ticket]))[0])


@routes.post("/api/tickets/{number}/close", DESK | {Role.STATION}, "Close an ended ticket with a disposition",
             body=CLOSE_BODY, scope=closing)
async def close_ticket(request: web.Request) -> web.Response:
    body = await json_body(request)
    number = ticket_number(request)
    ticket = await request.app[SERVICE].close(number, disposition=body["disposition"], by=actor(request))
    return json_reply((await ticket_json(request.app, [ticket]))[0])


def add_call_routes(app: web.Application, service: TicketService) -> None:
    app[SERVICE] = service
    app[TICKET_EXTRAS] = []
    routes.add_to(app)
