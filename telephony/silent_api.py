"""`POST /api/tickets/{number}/prompt`: the call-taker plays the silent-call prompt to the caller on the line.

A thin view over ``telephony.silent_calls.SilentCalls`` (core cannot reach
Asterisk): it answers 202 once Asterisk has taken the Originate; the
``prompt_played`` step reaches the ticket, and the desk, when the sound has
played. Refusals are domain errors answered with their ``error_id``:
``not-on-the-line``, ``prompt-busy``, ``prompt-not-played``, ``unknown-ticket``.
"""

from __future__ import annotations

from aiohttp import web

from core.http.replies import actor, json_reply
from core.http.routes import DESK, RouteTable
from core.http.scopes import own_call
from telephony.silent_calls import SilentCalls

SILENT_CALLS = web.AppKey("silent_calls", SilentCalls)

routes = RouteTable("silent-calls")


@routes.post("/api/tickets/{number}/prompt", DESK,
             "Play the silent-call prompt (\"if you cannot speak, press 5 twice\") to the caller on the line",
             scope=own_call)
async def post_prompt(request: web.Request) -> web.Response:
    playing = await request.app[SILENT_CALLS].play_prompt(request.match_info["number"], by=actor(request))
    return json_reply(playing, 202)


def add_routes(app: web.Application, silent_calls: SilentCalls) -> None:
    app[SILENT_CALLS] = silent_calls
    routes.add_to(app)
