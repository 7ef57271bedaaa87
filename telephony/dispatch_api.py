"""`POST /api/tickets/{number}/dispatch`: the call-taker asks for flattened dispatch.

A thin view over the telephony Dispatcher (core cannot reach Asterisk): it
starts the dispatch task and answers 202 at once with who will be rung; the
steps of the ladder reach the ticket and the event stream as they happen. A
refusal (``DispatchError``: not answered, no location, already dispatching)
is answered 409 by the error middleware with its ``error_id``.
"""

from __future__ import annotations

from aiohttp import web

from core.http.replies import actor, json_reply
from core.http.routes import DESK, RouteTable
from core.http.scopes import own_call
from telephony.dispatcher import Dispatcher

DISPATCHER = web.AppKey("dispatcher", Dispatcher)

routes = RouteTable("dispatch")


@routes.post("/api/tickets/{number}/dispatch", DESK, "Dispatch an officer to the incident", scope=own_call)
async def dispatch(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    await request.app[DISPATCHER].dispatch(number, by=actor(request))
    return json_reply({"number": number, "status": "dispatching"}, 202)


def add_routes(app: web.Application, dispatcher: Dispatcher) -> None:
    app[DISPATCHER] = dispatcher
    routes.add_to(app)
