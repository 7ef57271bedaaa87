"""`POST /api/tickets/{number}/callback`: the call-taker calls the reporter back from his seat.

A thin view over the telephony Callbacks (core cannot reach Asterisk): it
answers 202 with the seat and the number rung once Asterisk has taken the
Originate; the call-back's steps reach the ticket as the call goes on.
Refusals are domain errors answered by the error middleware with their
``error_id``: ``no-callback-number``, ``callback-busy``,
``seat-not-reachable``, ``callback-not-placed``, ``illegal-transition``,
``unknown-ticket``, ``unknown-seat``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.http.replies import PRINCIPAL, actor, json_body, json_reply
from core.http.routes import DESK, RouteTable
from core.http.scopes import own_call, seat_refusal
from core.seats.board import SEAT_ID
from telephony.callback import Callbacks

CALLBACKS = web.AppKey("callbacks", Callbacks)

routes = RouteTable("callback")

CALLBACK_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["seat"],
    "additionalProperties": False,
    "properties": {"seat": {"type": "string", "pattern": f"^{SEAT_ID.pattern}$",
                            "description": "the seat whose phone rings first"}},
}


@routes.post("/api/tickets/{number}/callback", DESK, "Call the reporter back from a seat (a call-taker: their own)",
             body=CALLBACK_BODY, scope=own_call)
async def post_callback(request: web.Request) -> web.Response:
    body = await json_body(request)
    refused = seat_refusal(request, request[PRINCIPAL], body["seat"])
    if refused is not None:
        return refused
    placed = await request.app[CALLBACKS].call_back(request.match_info["number"], seat=body["seat"],
                                                    by=actor(request))
    return json_reply(placed, 202)


def add_routes(app: web.Application, callbacks: Callbacks) -> None:
    app[CALLBACKS] = callbacks
    routes.add_to(app)
