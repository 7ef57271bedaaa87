"""HTTP API of text reports: the 110 app's gateway posts reports, call-takers take them.

Thin views over ``core.reports.ReportIntake`` (found at ``app[REPORTS]``).
Waiting reports are listed by ``GET /api/tickets?status=reported&order=oldest``; a
report is closed like any ticket (``POST /api/tickets/{n}/close``). SMS
reports come in through Twilio's webhook (``core.quality.views``), which
hands every message that is not a survey answer to the same intake.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.auth.users import Role
from core.calls.views import SERVICE, ticket_number
from core.errors import BadRequest
from core.http.replies import PRINCIPAL, json_body, json_reply
from core.http.routes import ADMINS, DESK, RouteTable
from core.triage.repeat import PHONE
from core.triage.reports import (
    ATTACHMENT_KINDS,
    ATTACHMENTS_MAX,
    REF,
    REPORT_TEXT_MAX,
    URL_MAX,
    ReportIntake,
    parse_report,
)

REPORTS = web.AppKey("report_intake", ReportIntake)

routes = RouteTable("reports")

REPORT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["ref", "sender", "text"],
    "additionalProperties": False,
    "properties": {
        "ref": {"type": "string", "pattern": f"^{REF.pattern}$",
                "description": "the report's id at the gateway: a second post with it is answered, not repeated"},
        "sender": {"type": "string", "pattern": f"^{PHONE.pattern}$"},
        "text": {"type": "string", "minLength": 1, "maxLength": REPORT_TEXT_MAX, "pattern": r"\S"},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "address": {"type": "string", "maxLength": 500},
        "attachments": {
            "type": "array", "maxItems": ATTACHMENTS_MAX,
            "items": {
                "type": "object", "required": ["kind", "url"], "additionalProperties": False,
                "properties": {"kind": {"type": "string", "enum": list(ATTACHMENT_KINDS)},
                               "url": {"type": "string", "maxLength": URL_MAX, "pattern": "^https?://"}},
            },
        },
    },
}
TAKE_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"seat": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"}},
}


@routes.route("POST", "/api/reports", ADMINS | {Role.GATEWAY}, "A text report from the 110 app's gateway: a ticket at once, major-incident keywords alerted", tag="reports", body=REPORT_BODY)
async def post_report(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        report = parse_report(body, channel="app")  # a gateway posts app reports; SMS comes through Twilio
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    result = await request.app[REPORTS].receive(report)
    return json_reply(result, 200 if result["duplicate"] else 201)


@routes.route("POST", "/api/tickets/{number}/take", DESK, "Take a waiting text report", tag="reports", body=TAKE_BODY)
async def post_take(request: web.Request) -> web.Response:
    body = await json_body(request, optional=True)  # the seat is optional, so is the body
    number = ticket_number(request)
    principal = request[PRINCIPAL]
    ticket = await request.app[SERVICE].take(number, by=principal.username, seat=body.get("seat"))
    return json_reply(ticket.to_json())


def add_report_routes(app: web.Application, intake: ReportIntake) -> None:
    app[REPORTS] = intake
    routes.add_to(app)
