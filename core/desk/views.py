"""HTTP API of the call-taker's desk: what the desk shows at start, its WebSocket, and the note scanner.

``GET /api/desk`` is what a desk reads when it opens (or is reloaded in the
middle of a call): the user, the seat they hold, the call on that seat with
everything the screen pop carries. ``GET /api/desk/ws`` then pushes the seat's
changes, the pop of every call that rings or is answered on it and the steps
of the tickets the desk works on (``core.desk.hub``). ``POST /api/desk/scan``
marks the major-incident keywords of a note being typed and suggests a
classification with the routing rule it would trigger.

The desk also fills ``TICKET_HOLDER``, so every route that acts on a ticket
refuses a call-taker's action on a call that is not theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web
from sqlalchemy import select

from core.auth.users import Role
from core.calls.numbering import looks_like_number
from core.calls.tables import Ticket
from core.calls.tickets import TicketView, iso_utc
from core.calls.views import SERVICE, ticket_json
from core.desk.hub import DeskHub, DeskSubscription
from core.desk.suggest import highlights, suggest
from core.errors import BadRequest, DomainError
from core.http.replies import PRINCIPAL, WS_PROTOCOLS, dumps, json_body, json_reply
from core.http.routes import DESK, RouteTable
from core.http.scopes import SEAT_HOLDER, TICKET_HOLDER
from core.seats.views import SEATS
from core.triage.classify import (
    Classification,
    IncidentType,
    Priority,
    current_classification,
)
from core.triage.keywords import dispatched_badges
from core.triage.repeat import normalise_phone
from core.triage.views import TRIAGE_DESK

log = logging.getLogger(__name__)

DESK_HUB = web.AppKey("desk_hub", DeskHub)
DESK_SOCKETS = web.AppKey("desk_sockets", set[web.WebSocketResponse])

HEARTBEAT_S = 20.0
CLOSE_TIMEOUT_S = 2.0
EARLIER_MAX = 5
SCAN_MAX = 4000

routes = RouteTable("desk")

SCAN_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "maxLength": SCAN_MAX},
        "number": {"type": "string", "maxLength": 64},
        "type": {"type": "string", "enum": [str(t) for t in IncidentType]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 4},
    },
}


# -- what a desk shows of a ticket -----------------------------------------------------------


async def desk_ticket(app: web.Application, ticket: TicketView) -> dict[str, Any]:
    """The ticket as the desk shows it: the API's JSON, the incident's place, danger warnings for the
    place and the caller, and the caller's earlier tickets."""
    data = (await ticket_json(app, [ticket]))[0]
    triage = app[TRIAGE_DESK]
    incident = await triage.incident(ticket.number)
    async with app[SERVICE].engine.connect() as conn:
        earlier = (
            await conn.execute(
                select(Ticket.number, Ticket.state, Ticket.created_at_us)
                .where(Ticket.caller_id == ticket.caller_id, Ticket.number != ticket.number,
                       Ticket.created_at_us <= ticket.created_at_us)
                .order_by(Ticket.created_at_us.desc())
                .limit(EARLIER_MAX)
            )
        ).all() if ticket.caller_id else []
    try:
        phone = normalise_phone(ticket.caller_id) if ticket.caller_id else None
    except ValueError:
        phone = None  # a caller id that is no phone number (anonymous, hostile) has no warnings
    warnings = await triage.warnings.matching(
        cell=None if incident is None else incident.cell,
        address=None if incident is None or not incident.address else incident.address,
        phone=phone,
    ) if (incident is not None or phone) else []
    data["incident"] = None if incident is None else incident.to_json()
    data["warnings"] = [w.to_json() for w in warnings]
    data["earlier"] = [{"number": n, "state": s, "created_at": iso_utc(at)} for n, s, at in earlier]
    data["officers"] = dispatched_badges(ticket)
    return data


def _principal_json(request: web.Request) -> dict[str, Any]:
    principal = request[PRINCIPAL]
    return {"username": principal.username, "role": str(principal.role)}


# -- routes ----------------------------------------------------------------------------------


@routes.get("/api/desk", DESK, "The desk at start: the user, the seat they hold, the call on it")
async def get_desk(request: web.Request) -> web.Response:
    hub = request.app[DESK_HUB]
    username = request[PRINCIPAL].username
    seat = hub.seat_of(username)
    call = None
    if seat is not None and seat.ticket:
        ticket = await request.app[SERVICE].get(seat.ticket)
        if ticket is not None:
            call = await desk_ticket(request.app, ticket)
    return json_reply({
        "user": _principal_json(request),
        "seat": None if seat is None else seat.to_json(),
        "call": call,
        "wrap_up_s": request.app[SEATS].wrap_up_s,
        "types": [{"type": str(t), "label": t.label} for t in IncidentType],
        "priorities": [{"priority": int(p), "label": p.label} for p in Priority],
        "handovers": sorted({str(r.target) for r in request.app[TRIAGE_DESK].rules.rules}),
    })


@routes.post("/api/desk/scan", DESK, "Keywords in a note being typed, and the classification it suggests",
             body=SCAN_BODY)
async def post_scan(request: web.Request) -> web.Response:
    body = await json_body(request)
    triage = request.app[TRIAGE_DESK]
    keywords = triage.watch.keywords
    text = body["text"]
    suggestion = suggest(keywords, text)
    answer: dict[str, Any] = {
        "keywords": highlights(keywords, text),
        "suggestion": None if suggestion is None else suggestion.to_json(),
        "routing": None,
    }
    number = body.get("number")
    if number is not None:
        # The rule the chosen (or else the suggested) classification would trigger on this ticket.
        ticket = await request.app[SERVICE].get(number) if looks_like_number(number) else None
        if ticket is None:
            raise BadRequest("no such ticket", error_id="unknown-ticket", details={"number": number[:64]})
        held = request.app[TICKET_HOLDER]
        principal = request[PRINCIPAL]
        if principal.role is Role.CALL_TAKER and not await held(principal.username, number):
            raise DomainError(f"ticket {number} is not a call of your seat nor a report you took",
                              error_id="not-your-call", status=403, details={"number": number})
        chosen = current_classification(ticket)
        kind = body.get("type") or (suggestion.type if suggestion else chosen.type if chosen else None)
        priority = body.get("priority") or (suggestion.priority if suggestion else chosen.priority if chosen else 3)
        if kind is not None:
            classification = Classification(IncidentType(kind), Priority(priority), None, 0)
            decision, _ = await triage.decide(ticket, classification)
            answer["routing"] = None if decision is None else decision.to_json()
    return json_reply(answer)


@routes.get("/api/desk/ws", DESK, "WebSocket of the desk: its seat, screen pops, its tickets' steps (token: subprotocol jiejing.bearer.<token>)",
            websocket=True)
async def desk_ws(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, protocols=WS_PROTOCOLS)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this endpoint is a WebSocket; send an Upgrade request", error_id="websocket-only")
    await ws.prepare(request)
    hub = request.app[DESK_HUB]
    username = request[PRINCIPAL].username
    sub = hub.subscribe(username)
    sockets = request.app[DESK_SOCKETS]
    sockets.add(ws)
    seat = hub.seat_of(username)
    tasks = [
        asyncio.create_task(_pump(ws, sub), name="desk-pump"),
        asyncio.create_task(_read(request.app, ws, hub, sub), name="desk-read"),
    ]
    try:
        await ws.send_str(dumps({"type": "hello", "seat": None if seat is None else seat.to_json()}))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except ConnectionError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reason = sub.closed
        hub.unsubscribe(sub)
        sockets.discard(ws)
        if not ws.closed:
            code, message = (1013, b"too far behind; reload") if reason == "too far behind" else (1000, b"")
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
    return ws


async def _pump(ws: web.WebSocketResponse, sub: DeskSubscription) -> None:
    while (message := await sub.next()) is not None:
        await ws.send_str(dumps(message))


async def _read(app: web.Application, ws: web.WebSocketResponse, hub: DeskHub, sub: DeskSubscription) -> None:
    """The desk asks to follow a ticket it opened (a report it took): ``{"watch": "<number>"}``."""
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            return
        if message.type is not WSMsgType.TEXT:
            continue
        try:
            number = json.loads(message.data).get("watch")
        except (ValueError, AttributeError):
            number = None
        if not isinstance(number, str) or not looks_like_number(number):
            sub.offer({"type": "error", "error_id": "invalid-message",
                       "error": 'send {"watch": "<ticket number>"}'})
            continue
        ticket = await app[SERVICE].get(number)
        ok = ticket is not None and hub.watch(sub, ticket)
        sub.offer({"type": "watching", "number": number, "ok": ok})


# -- registration ----------------------------------------------------------------------------


def add_desk_routes(app: web.Application) -> None:
    """The desk over the app's seat board, tickets and triage desk (mounted before it)."""
    service = app[SERVICE]
    board = app[SEATS]

    async def render(ticket: TicketView) -> dict[str, Any]:
        return await desk_ticket(app, ticket)

    hub = DeskHub(board, service, render)
    app[DESK_HUB] = hub
    app[DESK_SOCKETS] = set()

    async def holder(username: str, number: str) -> bool | None:
        ticket = await service.get(number) if looks_like_number(number) else None
        return None if ticket is None else hub.owns(username, ticket)

    app[TICKET_HOLDER] = holder

    def seat_holder(username: str) -> str | None:
        seat = hub.seat_of(username)
        return None if seat is None else seat.seat

    app[SEAT_HOLDER] = seat_holder

    async def desk_ctx(app: web.Application) -> AsyncIterator[None]:
        removers = [board.add_listener(hub.on_seat), service.add_listener(hub.on_step)]
        yield
        for remove in removers:
            remove()
        await hub.stop()

    async def close_sockets(app: web.Application) -> None:
        hub.close_all()

    app.cleanup_ctx.append(desk_ctx)
    app.on_shutdown.append(close_sockets)
    routes.add_to(app)
