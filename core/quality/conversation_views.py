"""HTTP API of the silent-call conversation: the desk's yes/no questions and its texts to the caller.

``POST /api/tickets/{number}/questions`` records a question the call-taker asks
aloud (the caller's keys after it are recorded with it); ``POST
/api/tickets/{number}/sms`` texts the caller through the outbox. Both act on
the call-taker's own calls only (``own_call``). The prompt, which needs
Asterisk, is ``telephony/silent_api.py``; the caller's replies arrive through
the SMS webhook (``core.quality.views``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.calls.silent import QUESTION_MAX
from core.calls.views import ticket_json
from core.http.replies import actor, json_body, json_reply
from core.http.routes import DESK, RouteTable
from core.http.scopes import own_call
from core.quality.conversation import SMS_MAX, Conversations

CONVERSATIONS = web.AppKey("conversations", Conversations)

routes = RouteTable("silent-calls")

QUESTION_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {"text": {"type": "string", "minLength": 1, "maxLength": QUESTION_MAX,
                            "description": "the yes/no question asked aloud (1 yes, 2 no)"}},
}
SMS_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {"text": {"type": "string", "minLength": 1, "maxLength": SMS_MAX}},
}


@routes.post("/api/tickets/{number}/questions", DESK, "A yes/no question asked aloud to a silent caller (keys 1, 2)",
             body=QUESTION_BODY, scope=own_call)
async def post_question(request: web.Request) -> web.Response:
    body = await json_body(request)
    ticket = await request.app[CONVERSATIONS].ask(request.match_info["number"], body["text"], by=actor(request))
    return json_reply((await ticket_json(request.app, [ticket]))[0], 201)


@routes.post("/api/tickets/{number}/sms", DESK, "Text the caller (a plain phone number only); replies join the ticket",
             body=SMS_BODY, scope=own_call)
async def post_sms(request: web.Request) -> web.Response:
    body = await json_body(request)
    sent = await request.app[CONVERSATIONS].send(request.match_info["number"], body["text"], by=actor(request))
    return json_reply(sent, 202)


def add_routes(app: web.Application, conversations: Conversations) -> None:
    app[CONVERSATIONS] = conversations
    routes.add_to(app)
