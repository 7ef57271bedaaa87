"""HTTP of WeChat reports: the official account's server URL, ``GET/POST /api/wechat``.

Thin views over ``core.triage.wechat`` (the protocol) and the text-report intake (``app[REPORTS]``).
Public: the platform signs every request with the account's token, and nothing is done before the
signature holds. Without an account (no WeChat settings) both answer 404. A message that is a report is
filed before the answer goes back, and the answer names its ticket; the platform waits 5 s and then
delivers again, and the redelivery finds the same ticket.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from core.errors import NotFound
from core.http.routes import PUBLIC, RouteTable
from core.triage import wechat
from core.triage.report_views import REPORTS
from core.triage.reports import ReportIntake

log = logging.getLogger(__name__)

WECHAT = web.AppKey("wechat_account", wechat.Account)
CLOCK = web.AppKey("wechat_clock", Callable[[], float])

routes = RouteTable("reports")

_SIGNED: dict[str, dict[str, Any]] = {
    "signature": {"type": "string", "description": "sha1 of the sorted token, timestamp and nonce"},
    "timestamp": {"type": "string", "description": "seconds since 1970; refused beyond 5 minutes from now"},
    "nonce": {"type": "string"},
}
VERIFY_QUERY = {**_SIGNED, "echostr": {"type": "string", "description": "answered as it is once the signature holds"}}
MESSAGE_QUERY = {
    **_SIGNED,
    "openid": {"type": "string"},
    "encrypt_type": {"type": "string", "enum": ["aes", "raw"], "description": "aes: safe mode"},
    "msg_signature": {"type": "string", "description": "safe mode: sha1 of the sorted token, timestamp, nonce "
                                                       "and Encrypt"},
}


def _account(request: web.Request) -> wechat.Account:
    account = request.app.get(WECHAT)
    if account is None or request.app.get(REPORTS) is None:
        raise NotFound("WeChat reports are not configured here", error_id="wechat-disabled")
    return account


async def _body(request: web.Request) -> bytes:
    """The body, read no further than ``BODY_MAX`` (one byte more tells that it is larger)."""
    if request.content_length is not None and request.content_length > wechat.BODY_MAX:
        raise wechat.Malformed(f"the body is larger than {wechat.BODY_MAX} bytes")
    data = bytearray()
    while len(data) <= wechat.BODY_MAX:
        chunk = await request.content.read(wechat.BODY_MAX + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


@routes.get("/api/wechat", PUBLIC, "WeChat's check of the official account's server URL (signed with its token)",
            query=VERIFY_QUERY, content="text/plain")
async def verify(request: web.Request) -> web.Response:
    account = _account(request)
    echostr = wechat.verify_url(account, request.query, now=request.app[CLOCK]())
    return web.Response(text=echostr, content_type="text/plain")


@routes.post("/api/wechat", PUBLIC, "A message to the official account (signed; encrypted in safe mode): a "
             "report becomes a ticket, the answer names it", query=MESSAGE_QUERY, content="text/xml")
async def receive(request: web.Request) -> web.Response:
    account = _account(request)
    intake: ReportIntake = request.app[REPORTS]
    now = request.app[CLOCK]()
    message = wechat.open_message(account, request.query, await _body(request), now=now)
    report = wechat.as_report(message)
    # A failure here answers 500 before any reply: the platform delivers again and the ticket's key holds.
    number = None if report is None else (await intake.receive(report))["number"]
    content = wechat.answer(message, number)
    if content is None:
        return web.Response(text="success", content_type="text/plain")
    reply = wechat.text_reply(message, content, now=int(now))
    if message.sealed:
        reply = wechat.sealed_reply(account, reply, timestamp=str(int(now)), nonce=str(secrets.randbelow(10**10)),
                                    random=os.urandom(16))
    return web.Response(body=reply, content_type="text/xml", charset="utf-8")


def add_wechat_routes(app: web.Application, account: wechat.Account | None, *,
                      clock: Callable[[], float] = time.time) -> None:
    """Mount ``/api/wechat``; without ``account`` it answers 404. The text-report intake must be mounted."""
    if account is not None:
        app[WECHAT] = account
    app[CLOCK] = clock
    routes.add_to(app)
