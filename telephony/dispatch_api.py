"""`POST /api/tickets/{number}/dispatch`: the call-taker asks for flattened dispatch.

A thin view over the telephony Dispatcher (core cannot reach Asterisk): it
starts the dispatch task and answers 202 at once with who will be rung; the
steps of the ladder reach the ticket and the event stream as they happen.
"""

from __future__ import annotations

from aiohttp import web

from telephony.dispatcher import Dispatcher, DispatchError

DISPATCHER = web.AppKey("dispatcher", Dispatcher)


async def dispatch(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    dispatcher = request.app[DISPATCHER]
    user = request.get("user")
    by = getattr(user, "username", None) or "api"
    try:
        await dispatcher.dispatch(number, by=by)
    except DispatchError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    return web.json_response({"number": number, "status": "dispatching"}, status=202)


def add_routes(app: web.Application, dispatcher: Dispatcher) -> None:
    app[DISPATCHER] = dispatcher
    app.router.add_post("/api/tickets/{number}/dispatch", dispatch)
