"""HTTP of handset location (AML): the relay's ``POST /api/aml`` and the audit's ``GET /api/aml/messages``.

Thin views over ``core.triage.aml_service.AmlService`` (found at ``app[AML]``). The HTTPS form of AML comes
from a relay we configure — the carrier's, or the handset maker's (Android's Emergency Location Service) —
which logs in as a gateway user and posts the handset's form fields as they came
(``application/x-www-form-urlencoded``). The answer says what became of the message:

* 200 ``{"verdict": "located" | "recorded" | "duplicate", "ticket", "applied", "reason", …}``: bound to the
  ticket; ``located`` moved the incident, ``recorded`` kept it beside a location that stands;
* 400 ``aml-malformed`` (``details.reason``: which rule it broke): not a readable AML message;
* 422 ``aml-no-position`` (the handset had none), ``aml-stale``, ``aml-future``, ``aml-no-ticket``,
  ``aml-no-number``, ``aml-ticket-closed``: read, but nothing to bind it to.

Every one of them, refused or not, is kept in ``aml_messages`` before the answer. The AML SMS comes through
Twilio's webhook (``core.quality.views``), which hands it here before anything else looks at it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from core.auth.users import Role
from core.calls.views import SERVICE
from core.dispatch.views import PLANNER
from core.errors import BadRequest
from core.http.replies import json_reply
from core.http.routes import ADMINS, SUPERVISORS, RouteTable
from core.triage.aml import HTTPS_FIELDS_MAX, RAW_MAX, AmlError
from core.triage.aml_service import AmlService

AML = web.AppKey("aml_service", AmlService)
BODY_MAX = 8 * 1024  # an ELS form is well under 2 KiB

routes = RouteTable("location")

MESSAGES_QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "string", "pattern": "^[0-9]{1,4}$", "description": "at most this many (default 100, ≤ 1000)"},
    "ticket": {"type": "string", "description": "only the messages bound to this ticket"},
}


async def _body(request: web.Request) -> bytes:
    """The body, read no further than ``BODY_MAX`` (one byte more tells that it is larger)."""
    data = bytearray()
    while len(data) <= BODY_MAX:
        chunk = await request.content.read(BODY_MAX + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _form(request: web.Request, raw: bytes) -> dict[str, str]:
    if len(raw) > BODY_MAX:
        raise AmlError("too-long", f"the body is larger than {BODY_MAX} bytes")
    if request.content_type != "application/x-www-form-urlencoded":
        raise AmlError("not-a-form", f"expected application/x-www-form-urlencoded, not {request.content_type}")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw),
                          max_num_fields=HTTPS_FIELDS_MAX)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AmlError("not-a-form", f"the body is not a form in UTF-8: {str(exc)[:100]}") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise AmlError("repeated-field", f"{key[:40]} is given twice", field=key[:40])
        form[key] = value
    return form


@routes.post("/api/aml", ADMINS | {Role.GATEWAY}, "An AML message's form fields from the carrier's or the handset "
             "maker's relay: the caller's own position on the ticket of their number (every message kept)",
             tag="location")
async def post_aml(request: web.Request) -> web.Response:
    service = request.app[AML]
    raw = await _body(request)
    try:
        form = _form(request, raw)
    except AmlError as exc:
        await service.refuse("https", raw[:RAW_MAX].decode("utf-8", "replace"), exc)
        raise
    outcome = await service.receive_https(form)
    return json_reply(outcome.to_json())


@routes.get("/api/aml/messages", SUPERVISORS, "AML messages as they came in, newest first, with what became of "
            "each", tag="location", query=MESSAGES_QUERY)
async def get_messages(request: web.Request) -> web.Response:
    limit_text = request.query.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        raise BadRequest("limit must be 1 to 1000", error_id="invalid-query")
    ticket = request.query.get("ticket") or None
    messages = await request.app[AML].messages(limit=int(limit_text), ticket=ticket)
    return json_reply({"messages": messages})


def add_aml_routes(app: web.Application, aml: AmlService | None = None) -> None:
    """Mount the AML routes on an app from ``core.web.make_app`` (after dispatch: the planner locates).

    Without ``aml``, one is built on the app's ticket service and dispatch planner with the default settings.
    """
    app[AML] = aml if aml is not None else AmlService(app[SERVICE], app[PLANNER])
    routes.add_to(app)
