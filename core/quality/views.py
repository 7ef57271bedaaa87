"""HTTP API of supervision and quality: spot checks, survey rates, complaints, alerts, journal status, SMS webhook.

Thin views in the manner of ``core.web.app``: bodies are parsed and bounded here,
domain errors become 400/404/409, and the app-wide middleware answers errors
as JSON. ``add_routes`` registers only the parts it is given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from core.quality.complaints import AlreadyAnswered, Complaints, UnknownFollowUp
from core.quality.journal_status import JournalWatch
from core.calls.numbering import looks_like_number
from core.quality.spot_checks import CRITERIA, AlreadyDrawn, NotDrawn, NotInSample, SpotChecks
from core.triage.reports import clean_text, media_attachments, parse_report
from core.quality.survey import Survey, WebhookVerdict
from core.web.app import BadRequest, _error, _json, _json_body, _text
from core.triage.report_views import REPORTS

log = logging.getLogger(__name__)

SPOT_CHECKS = web.AppKey("spot_checks", SpotChecks)
SURVEY = web.AppKey("survey", Survey)
COMPLAINTS = web.AppKey("complaints", Complaints)
JOURNAL = web.AppKey("journal_watch", JournalWatch)

_DAY = re.compile(r"[0-9]{8}")
_ID = re.compile(r"[0-9]{1,12}")
_TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
SIZE_MAX = 1000

# Request bodies, for the OpenAPI spec and the check before the view (core.web.auth);
# the views below still check what a schema cannot say.
_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": r"\S"}
_BY = {**_TEXT, "maxLength": 255}
DRAW_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["day", "by"],
    "properties": {
        "day": {"type": "string", "pattern": "^[0-9]{8}$"},
        "by": _BY,
        "size": {"type": ["integer", "null"], "minimum": 1, "maximum": SIZE_MAX},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**62 - 1},
    },
}
SCORE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["ticket", "by", "scores"],
    "properties": {
        "ticket": {**_TEXT, "maxLength": 32},
        "by": _BY,
        "comment": {**_TEXT, "type": ["string", "null"], "maxLength": 2000},
        "scores": {
            "type": "object",
            "required": list(CRITERIA),
            "properties": {c: {"type": "integer", "minimum": 1, "maximum": 5} for c in CRITERIA},
            "additionalProperties": False,
        },
    },
}
PUBLISH_BODY: dict[str, Any] = {"type": "object", "required": ["by"], "properties": {"by": _BY}}
COMPLAINT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["ticket", "reason"],
    "properties": {
        "ticket": {**_TEXT, "maxLength": 32},
        "reason": {**_TEXT, "maxLength": 2000},
        "station": {**_TEXT, "type": ["string", "null"], "maxLength": 255},
    },
}
ANSWER_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["answer", "by"],
    "properties": {
        "answer": {**_TEXT, "maxLength": 2000},
        "by": _BY,
        "caller": {**_TEXT, "type": ["string", "null"], "maxLength": 32},
    },
}


def _day(request: web.Request, value: Any = None) -> str:
    day = request.match_info.get("day") if value is None else value
    if not isinstance(day, str) or not _DAY.fullmatch(day):
        raise BadRequest("day must be YYYYMMDD")
    return day


# -- spot checks -----------------------------------------------------------------------


async def draw_sample(request: web.Request) -> web.Response:
    body = await _json_body(request)
    day = _day(request, body.get("day"))
    by = _text(body, "by", limit=255)
    size, seed = body.get("size"), body.get("seed")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= SIZE_MAX):
        raise BadRequest(f'"size" must be an integer from 1 to {SIZE_MAX}')
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62):
        raise BadRequest('"seed" must be a non-negative integer below 2**62')
    try:
        sample = await request.app[SPOT_CHECKS].draw(day, by=by or "", size=size, seed=seed)
    except AlreadyDrawn as exc:
        return _error(409, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(sample, 201)


async def get_sample(request: web.Request) -> web.Response:
    try:
        return _json(await request.app[SPOT_CHECKS].sample(_day(request)))
    except NotDrawn as exc:
        return _error(404, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def score_call(request: web.Request) -> web.Response:
    day = _day(request)
    body = await _json_body(request)
    ticket = _text(body, "ticket", limit=32)
    by = _text(body, "by", limit=255)
    comment = _text(body, "comment", required=False)
    scores = body.get("scores")
    if not isinstance(scores, dict):
        raise BadRequest('"scores" must be an object of criterion: 1-5')
    try:
        result = await request.app[SPOT_CHECKS].score(day, ticket or "", scores=scores, by=by or "", comment=comment)
    except (NotDrawn, NotInSample) as exc:
        return _error(404, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return _json(result)


async def get_report(request: web.Request) -> web.Response:
    try:
        return _json(await request.app[SPOT_CHECKS].report(_day(request)))
    except NotDrawn as exc:
        return _error(404, str(exc))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def publish_report(request: web.Request) -> web.Response:
    day = _day(request)
    body = await _json_body(request)
    by = _text(body, "by", limit=255)
    try:
        return _json(await request.app[SPOT_CHECKS].publish(day, by=by or ""), 201)
    except NotDrawn as exc:
        return _error(404, str(exc))
    except AlreadyDrawn as exc:
        return _error(409, str(exc))
    except ValueError as exc:  # a day that does not exist, e.g. 20261340
        raise BadRequest(str(exc)) from None


# -- survey --------------------------------------------------------------------------------


async def survey_rates(request: web.Request) -> web.Response:
    day_from = _day(request, request.query.get("from"))
    day_to = _day(request, request.query.get("to", day_from))
    by = tuple(p for p in request.query.get("by", "day").split(",") if p)
    if not by or any(p not in ("day", "station", "seat") for p in by) or len(set(by)) != len(by):
        raise BadRequest('"by" must be a comma-separated subset of day, station, seat')
    rates = await request.app[SURVEY].rates(day_from, day_to, by=by)
    return _json({"from": day_from, "to": day_to, "by": list(by), "rates": rates})


_VERDICT_STATUS = {
    WebhookVerdict.ACCEPTED: 200,
    WebhookVerdict.UNMATCHED: 200,  # genuine: Twilio must not retry it
    WebhookVerdict.REPORTED: 200,
    WebhookVerdict.FORGED: 403,
    WebhookVerdict.REPLAYED: 409,
    WebhookVerdict.MALFORMED: 400,
}


async def twilio_sms(request: web.Request) -> web.Response:
    survey = request.app[SURVEY]
    if request.content_type != "application/x-www-form-urlencoded":
        raise BadRequest("expected a form post")
    form = await request.post()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    # The signature covers the public URL Twilio was given, not what a proxy forwarded to us.
    url = survey.webhook_url or str(request.url)
    intake = request.app.get(REPORTS)

    async def as_report(message: Mapping[str, str]) -> None:
        sid, sender = message["MessageSid"], message["From"]
        body = clean_text(message.get("Body", ""))  # nobody can be asked to resend an SMS: mend, do not refuse
        attachments = media_attachments(message)
        if not body.strip() and attachments:
            body = "（彩信，无文字 MMS without text）"
        try:
            report = parse_report({"ref": sid, "sender": sender, "text": body, "attachments": attachments},
                                  channel="sms")
        except ValueError as exc:  # an empty message, a sender that is no number: nothing to call back
            log.warning("SMS webhook: message %s from %r is not a text report: %s", sid, sender, exc)
            return
        await intake.receive(report)  # a failure answers 500 before the receipt: Twilio retries

    verdict = await survey.receive(url, params, request.headers.get("X-Twilio-Signature"),
                                   report=None if intake is None else as_report,
                                   urgent=None if intake is None else intake.urgent)
    status = _VERDICT_STATUS[verdict]
    if status != 200:
        return _error(status, f"request {verdict}")
    return web.Response(text=_TWIML_EMPTY, content_type="text/xml")


# -- complaints and alerts ----------------------------------------------------------------------


async def list_follow_ups(request: web.Request) -> web.Response:
    complaints = request.app[COMPLAINTS]
    state = request.query.get("state", "all")
    if state not in ("all", "open", "overdue", "answered"):
        raise BadRequest('"state" must be all, open, overdue or answered')
    now = complaints.now_us()
    return _json({"follow_ups": [f.to_json(now) for f in await complaints.list(state=state)]})


async def open_complaint(request: web.Request) -> web.Response:
    body = await _json_body(request)
    ticket = _text(body, "ticket", limit=32) or ""
    if not looks_like_number(ticket):
        raise BadRequest('"ticket" must be a ticket number')
    reason = _text(body, "reason") or ""
    station = _text(body, "station", required=False, limit=255)
    complaints = request.app[COMPLAINTS]
    view = await complaints.open(ticket, origin="complaint", reason=reason, station=station)
    return _json(view.to_json(complaints.now_us()), 201)


async def answer_follow_up(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not _ID.fullmatch(raw):
        return _error(404, "no such follow-up")
    body = await _json_body(request)
    answer = _text(body, "answer") or ""
    by = _text(body, "by", limit=255) or ""
    caller = _text(body, "caller", required=False, limit=32)
    complaints = request.app[COMPLAINTS]
    try:
        view = await complaints.answer(int(raw), answer=answer, by=by, caller=caller)
    except UnknownFollowUp:
        return _error(404, "no such follow-up")
    except AlreadyAnswered as exc:
        return _error(409, str(exc))
    return _json(view.to_json(complaints.now_us()))


async def list_alerts(request: web.Request) -> web.Response:
    alerts = await request.app[COMPLAINTS].alerts(open_only=request.query.get("all") is None)
    return _json({"alerts": [
        {"id": a.id, "kind": a.kind, "ref": a.ref, "message": a.message, "created_at_us": a.created_at_us,
         "resolved_at_us": a.resolved_at_us} for a in alerts
    ]})


# -- the journal -------------------------------------------------------------------------------


async def journal_status(request: web.Request) -> web.Response:
    try:
        return _json(await request.app[JOURNAL].status())
    except Exception as exc:
        # The store is unreachable or the walk failed: say so rather than claim anything about the chain.
        log.exception("journal verification for the status endpoint failed")
        return _error(503, f"journal verification failed: {type(exc).__name__}")


def add_routes(
    app: web.Application,
    *,
    spot_checks: SpotChecks | None = None,
    survey: Survey | None = None,
    complaints: Complaints | None = None,
    journal: JournalWatch | None = None,
) -> None:
    """Register the routes of the parts given on ``app`` (the application from ``core.web.make_app``)."""
    if spot_checks is not None:
        app[SPOT_CHECKS] = spot_checks
        app.router.add_post("/api/quality/draws", draw_sample)
        app.router.add_get("/api/quality/draws/{day}", get_sample)
        app.router.add_post("/api/quality/draws/{day}/scores", score_call)
        app.router.add_get("/api/quality/reports/{day}", get_report)
        app.router.add_post("/api/quality/reports/{day}/publish", publish_report)
    if survey is not None:
        app[SURVEY] = survey
        app.router.add_get("/api/survey/rates", survey_rates)
        app.router.add_post("/api/twilio/sms", twilio_sms)
    if complaints is not None:
        app[COMPLAINTS] = complaints
        app.router.add_get("/api/complaints", list_follow_ups)
        app.router.add_post("/api/complaints", open_complaint)
        app.router.add_post("/api/complaints/{id}/answer", answer_follow_up)
        app.router.add_get("/api/alerts", list_alerts)
    if journal is not None:
        app[JOURNAL] = journal
        app.router.add_get("/api/journal/status", journal_status)
