"""HTTP API of text reports: the 110 app's gateway posts reports, call-takers take them.

Thin views over ``core.reports.ReportIntake`` (found at ``app[REPORTS]``).
Waiting reports are listed by ``GET /api/tickets?status=reported&order=oldest``; a
report is closed like any ticket (``POST /api/tickets/{n}/close``). SMS
reports come in through Twilio's webhook (``core.quality.views``), which
hands every message that is not a survey answer to the same intake. Stations
enter the incidents that never came through 110 through it too
(``POST /api/incidents``, ``core.triage.station_incidents``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.auth.users import Role
from core.calls.views import SERVICE, ticket_number
from core.errors import BadRequest
from core.http.replies import PRINCIPAL, json_body, json_reply
from core.http.routes import ADMINS, DESK, SUPERVISORS, RouteTable
from core.triage.classify import IncidentType
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
from core.triage.station_incidents import HOW, STATION, StationIncidents, parse_entry

REPORTS = web.AppKey("report_intake", ReportIntake)
STATION_INCIDENTS = web.AppKey("station_incidents", StationIncidents)

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
INCIDENT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["how", "text", "type", "priority"],
    "additionalProperties": False,
    "description": "the place is lat and lon (with an optional address text), or an address alone: the gazetteer's "
                   "place of that name",
    "properties": {
        "how": {"type": "string", "enum": list(HOW), "description": "at the counter, found on patrol, or a tip"},
        "text": REPORT_BODY["properties"]["text"],
        "lat": REPORT_BODY["properties"]["lat"],
        "lon": REPORT_BODY["properties"]["lon"],
        "address": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": r"\S"},
        "type": {"type": "string", "enum": [str(t) for t in IncidentType]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 4},
        "reporter": {"type": "string", "pattern": f"^{PHONE.pattern}$", "description": "the reporter's phone"},
        "ref": {"type": "string", "pattern": f"^{REF.pattern}$",
                "description": "the entry's id at the client: the same ref again is answered with the same ticket"},
        "occurred_at": {"type": ["string", "number"],
                        "description": "when it happened: ISO 8601 with a zone or epoch seconds, in the last 30 days"},
        "station": {"type": "string", "pattern": f"^{STATION.pattern}$",
                    "description": "the station entering it: a station user's own (or left out); a supervisor's choice"},
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


@routes.route("POST", "/api/incidents", SUPERVISORS | {Role.STATION}, "An incident a station entered (counter, patrol, tip): numbered, taken, located and classified at once", tag="reports", body=INCIDENT_BODY)
async def post_incident(request: web.Request) -> web.Response:
    body = await json_body(request)
    principal = request[PRINCIPAL]
    own = principal.station if principal.role is Role.STATION else None
    if principal.role is Role.STATION and own is None:
        raise BadRequest("this station user has no station", error_id="no-station")
    entry = parse_entry(body, by=principal.username, own_station=own, now=request.app[SERVICE].clock())
    result = await request.app[STATION_INCIDENTS].enter(entry)
    return json_reply(result, 200 if result["duplicate"] else 201)


def add_report_routes(app: web.Application, intake: ReportIntake, incidents: StationIncidents) -> None:
    app[REPORTS] = intake
    app[STATION_INCIDENTS] = incidents
    routes.add_to(app)
