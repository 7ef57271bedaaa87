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

from core.alerts.board import (
    AlertResolved,
    acknowledge_alert,
    alert_view,
    resolve_alert,
)
from core.calls.numbering import looks_like_number
from core.calls.views import SERVICE
from core.errors import BadRequest
from core.http.replies import actor, error_reply, json_body, json_reply, text_field
from core.http.routes import DESK, PUBLIC, SUPERVISORS, RouteTable
from core.quality.complaints import Complaints
from core.quality.conversation_views import CONVERSATIONS
from core.quality.dossier import build as build_dossier
from core.quality.journal_status import JournalWatch
from core.quality.playback import PlaybackRefused, open_for_playback, record_access
from core.quality.spot_checks import CRITERIA, SpotChecks
from core.quality.survey import Survey, WebhookVerdict
from core.triage.aml import AmlError
from core.triage.aml_service import AmlRefused
from core.triage.aml_views import AML
from core.triage.report_views import REPORTS
from core.triage.reports import clean_text, media_attachments, parse_report

log = logging.getLogger(__name__)

SPOT_CHECKS = web.AppKey("spot_checks", SpotChecks)
SURVEY = web.AppKey("survey", Survey)
COMPLAINTS = web.AppKey("complaints", Complaints)
JOURNAL = web.AppKey("journal_watch", JournalWatch)

def _day_query(name: str) -> dict[str, Any]:
    return {"type": "string", "pattern": "^[0-9]{8}$", "description": f"{name} day, YYYYMMDD"}


# One table per part: the assembly mounts only the parts it has.
spot_check_routes = RouteTable("quality")
survey_routes = RouteTable("quality")
complaint_routes = RouteTable("quality")
journal_routes = RouteTable("quality")
RECORDINGS_DIR = web.AppKey("recordings_dir", str)
TABLES = (spot_check_routes, survey_routes, complaint_routes, journal_routes)

_DAY = re.compile(r"[0-9]{8}")
_ID = re.compile(r"[0-9]{1,12}")
_TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
SIZE_MAX = 1000

# Request bodies, for the OpenAPI spec and the check before the view (core.http.replies.json_body);
# the views below still check what a schema cannot say.
_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": r"\S"}
# A body's "by" is accepted for older clients and ignored: records name the logged-in user.
_BY = {**_TEXT, "maxLength": 255}
DRAW_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["day"],
    "properties": {
        "day": {"type": "string", "pattern": "^[0-9]{8}$"},
        "by": _BY,
        "size": {"type": ["integer", "null"], "minimum": 1, "maximum": SIZE_MAX},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**62 - 1},
    },
}
SCORE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["ticket", "scores"],
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
PUBLISH_BODY: dict[str, Any] = {"type": "object", "properties": {"by": _BY}}
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
    "required": ["answer"],
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


@spot_check_routes.route("POST", "/api/quality/draws", SUPERVISORS, "Draw the day's spot-check sample", tag="quality", body=DRAW_BODY)
async def draw_sample(request: web.Request) -> web.Response:
    body = await json_body(request)
    day = _day(request, body.get("day"))
    by = actor(request)
    size, seed = body.get("size"), body.get("seed")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= SIZE_MAX):
        raise BadRequest(f'"size" must be an integer from 1 to {SIZE_MAX}')
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62):
        raise BadRequest('"seed" must be a non-negative integer below 2**62')
    try:
        sample = await request.app[SPOT_CHECKS].draw(day, by=by, size=size, seed=seed)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return json_reply(sample, 201)


@spot_check_routes.route("GET", "/api/quality/draws/{day}", SUPERVISORS, "A day's sample", tag="quality")
async def get_sample(request: web.Request) -> web.Response:
    try:
        return json_reply(await request.app[SPOT_CHECKS].sample(_day(request)))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@spot_check_routes.route("POST", "/api/quality/draws/{day}/scores", SUPERVISORS, "Score a sampled call", tag="quality", body=SCORE_BODY)
async def score_call(request: web.Request) -> web.Response:
    day = _day(request)
    body = await json_body(request)
    ticket = text_field(body, "ticket", limit=32)
    by = actor(request)
    comment = text_field(body, "comment", required=False)
    scores = body.get("scores")
    if not isinstance(scores, dict):
        raise BadRequest('"scores" must be an object of criterion: 1-5')
    try:
        result = await request.app[SPOT_CHECKS].score(day, ticket or "", scores=scores, by=by, comment=comment)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return json_reply(result)


@spot_check_routes.route("GET", "/api/quality/reports/{day}", SUPERVISORS, "A day's spot-check report", tag="quality")
async def get_report(request: web.Request) -> web.Response:
    try:
        return json_reply(await request.app[SPOT_CHECKS].report(_day(request)))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


@spot_check_routes.route("POST", "/api/quality/reports/{day}/publish", SUPERVISORS, "Publish a day's report", tag="quality", body=PUBLISH_BODY)
async def publish_report(request: web.Request) -> web.Response:
    day = _day(request)
    await json_body(request, optional=True)  # checked against the schema; "by" in it is ignored
    by = actor(request)
    try:
        return json_reply(await request.app[SPOT_CHECKS].publish(day, by=by), 201)
    except ValueError as exc:  # a day that does not exist, e.g. 20261340
        raise BadRequest(str(exc)) from None


# -- survey --------------------------------------------------------------------------------


@survey_routes.route("GET", "/api/survey/rates", SUPERVISORS, "Survey satisfaction rates", tag="quality", query={"from": _day_query("first"), "to": _day_query("last"), "by": {"type": "string", "description": "comma-separated subset of day, station, seat"}})
async def survey_rates(request: web.Request) -> web.Response:
    day_from = _day(request, request.query.get("from"))
    day_to = _day(request, request.query.get("to", day_from))
    by = tuple(p for p in request.query.get("by", "day").split(",") if p)
    if not by or any(p not in ("day", "station", "seat") for p in by) or len(set(by)) != len(by):
        raise BadRequest('"by" must be a comma-separated subset of day, station, seat')
    rates = await request.app[SURVEY].rates(day_from, day_to, by=by)
    return json_reply({"from": day_from, "to": day_to, "by": list(by), "rates": rates})


_VERDICT_STATUS = {
    WebhookVerdict.ACCEPTED: 200,
    WebhookVerdict.UNMATCHED: 200,  # genuine: Twilio must not retry it
    WebhookVerdict.REPORTED: 200,
    WebhookVerdict.FORGED: 403,
    WebhookVerdict.REPLAYED: 409,
    WebhookVerdict.MALFORMED: 400,
    WebhookVerdict.AML: 200,  # refused or not, it is kept in the AML service's record
    WebhookVerdict.CONVERSATION: 200,  # a silent caller's reply, on his ticket
}


@survey_routes.route("POST", "/api/twilio/sms", PUBLIC, "Twilio's SMS webhook (authenticated by its signature)", tag="quality", content="text/xml")
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

    aml = request.app.get(AML)

    async def as_aml(message: Mapping[str, str]) -> None:
        # A handset's position, not words to a person: bound to the caller's ticket, kept even when refused.
        try:
            await aml.receive_sms(message.get("Body", ""), sender=message["From"])
        except (AmlError, AmlRefused) as exc:
            log.warning("SMS webhook: AML message %s from %r not used: %s", message["MessageSid"], message["From"],
                        exc)

    conversations = request.app.get(CONVERSATIONS)  # a silent caller's replies to the desk
    verdict = await survey.receive(url, params, request.headers.get("X-Twilio-Signature"),
                                   report=None if intake is None else as_report,
                                   urgent=None if intake is None else intake.urgent,
                                   aml=None if aml is None else as_aml,
                                   conversation=None if conversations is None else conversations.receive)
    status = _VERDICT_STATUS[verdict]
    if status != 200:
        return error_reply(status, f"request {verdict}")
    return web.Response(text=_TWIML_EMPTY, content_type="text/xml")


# -- complaints and alerts ----------------------------------------------------------------------


@complaint_routes.route("GET", "/api/complaints", SUPERVISORS, "Follow-ups of complaints and bad survey answers", tag="quality", query={"state": {"type": "string", "enum": ["all", "open", "overdue", "answered"]}})
async def list_follow_ups(request: web.Request) -> web.Response:
    complaints = request.app[COMPLAINTS]
    state = request.query.get("state", "all")
    if state not in ("all", "open", "overdue", "answered"):
        raise BadRequest('"state" must be all, open, overdue or answered')
    now = complaints.now_us()
    return json_reply({"follow_ups": [f.to_json(now) for f in await complaints.list(state=state)]})


@complaint_routes.route("POST", "/api/complaints", DESK, "Open a complaint follow-up", tag="quality", body=COMPLAINT_BODY)
async def open_complaint(request: web.Request) -> web.Response:
    body = await json_body(request)
    ticket = text_field(body, "ticket", limit=32) or ""
    if not looks_like_number(ticket):
        raise BadRequest('"ticket" must be a ticket number')
    reason = text_field(body, "reason") or ""
    station = text_field(body, "station", required=False, limit=255)
    complaints = request.app[COMPLAINTS]
    view = await complaints.open(ticket, origin="complaint", reason=reason, station=station)
    return json_reply(view.to_json(complaints.now_us()), 201)


@complaint_routes.route("POST", "/api/complaints/{id}/answer", SUPERVISORS, "Answer a follow-up", tag="quality", body=ANSWER_BODY)
async def answer_follow_up(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not _ID.fullmatch(raw):
        return error_reply(404, "no such follow-up")
    body = await json_body(request)
    answer = text_field(body, "answer") or ""
    by = actor(request)
    caller = text_field(body, "caller", required=False, limit=32)
    complaints = request.app[COMPLAINTS]
    view = await complaints.answer(int(raw), answer=answer, by=by, caller=caller)
    return json_reply(view.to_json(complaints.now_us()))


@complaint_routes.route("GET", "/api/alerts", DESK, "Open alerts (all with ?all)", tag="quality", query={"all": {"type": "string"}})
async def list_alerts(request: web.Request) -> web.Response:
    alerts = await request.app[COMPLAINTS].alerts(open_only=request.query.get("all") is None)
    return json_reply({"alerts": [alert_view(a) for a in alerts]})


RESOLVE_BODY = {"type": "object", "required": ["resolution"],
                "properties": {"resolution": {"type": "string", "minLength": 1, "maxLength": 2000}}}


@complaint_routes.route("POST", "/api/alerts/{id}/acknowledge", SUPERVISORS,
                        "Acknowledge an open alert: a supervisor is on it (who and when are kept)", tag="quality")
async def acknowledge(request: web.Request) -> web.Response:
    return await _alert_action(request, acknowledge_alert)


@complaint_routes.route("POST", "/api/alerts/{id}/resolve", SUPERVISORS,
                        "Resolve an open alert with what was done (who and when are kept)", tag="quality",
                        body=RESOLVE_BODY)
async def resolve(request: web.Request) -> web.Response:
    body = await json_body(request)
    resolution = text_field(body, "resolution") or ""
    return await _alert_action(request, resolve_alert, resolution=resolution.strip())


async def _alert_action(request: web.Request, action: Any, **extra: Any) -> web.Response:
    raw = request.match_info["id"]
    if not _ID.fullmatch(raw):
        return error_reply(404, "no such alert", error_id="unknown-alert")
    complaints = request.app[COMPLAINTS]
    try:
        view = await action(complaints.engine, int(raw), by=actor(request), at_us=complaints.now_us(), **extra)
    except LookupError:
        return error_reply(404, "no such alert", error_id="unknown-alert")
    except AlertResolved as exc:
        return error_reply(409, str(exc), error_id="alert-resolved")
    return json_reply(view)


# -- the journal -------------------------------------------------------------------------------


@journal_routes.route("GET", "/api/journal/status", SUPERVISORS, "The latest journal verification (files not re-hashed; at most one walk a minute) and retention's last run", tag="quality")
async def journal_status(request: web.Request) -> web.Response:
    try:
        return json_reply(await request.app[JOURNAL].status())
    except Exception as exc:
        # The store is unreachable or the walk failed: say so rather than claim anything about the chain.
        log.exception("journal verification for the status endpoint failed")
        return error_reply(503, f"journal verification failed: {type(exc).__name__}")


_SHA256 = re.compile(r"[0-9a-f]{64}")


@journal_routes.route("GET", "/api/tickets/{number}/recordings/{sha256}", SUPERVISORS,
                      "Play a ticket's recording (the WAV file): refused if altered; each playback is journaled",
                      tag="quality", content="audio/wav")
async def play_recording(request: web.Request) -> web.StreamResponse:
    number, sha256 = request.match_info["number"], request.match_info["sha256"]
    if not looks_like_number(number) or not _SHA256.fullmatch(sha256):
        return error_reply(404, "no such recording", error_id="unknown-recording")
    watch = request.app[JOURNAL]
    try:
        path = await open_for_playback(watch.engine, number, sha256, by=actor(request),
                                       recordings_dir=request.app.get(RECORDINGS_DIR))
    except PlaybackRefused as exc:
        return error_reply(exc.status, str(exc), error_id=exc.error_id)
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})


@journal_routes.route("GET", "/api/tickets/{number}/dossier", SUPERVISORS,
                      "A ticket's dossier for a court or a complaint: the ticket and its journal entries, checkable "
                      "away from the center (jiejing dossier check); each export is journaled", tag="quality")
async def export_dossier(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    if not looks_like_number(number):
        return error_reply(404, "no such ticket", error_id="unknown-ticket")
    watch, service, by = request.app[JOURNAL], request.app[SERVICE], actor(request)
    if await service.get(number) is None:
        return error_reply(404, "no such ticket", error_id="unknown-ticket")
    await record_access(watch.engine, "dossier_exported", number, by=by)  # in the chain, and in the dossier
    dossier = await build_dossier(service, number, anchor_file=watch.anchor_file, by=by)
    response = json_reply(dossier)
    response.headers["Content-Disposition"] = f'attachment; filename="dossier-{number}.json"'
    return response


def add_routes(
    app: web.Application,
    *,
    spot_checks: SpotChecks | None = None,
    survey: Survey | None = None,
    complaints: Complaints | None = None,
    journal: JournalWatch | None = None,
    recordings_dir: str | None = None,
) -> None:
    """Register the routes of the parts given on ``app`` (the application from ``core.web.make_app``)."""
    if recordings_dir:
        app[RECORDINGS_DIR] = recordings_dir
    if spot_checks is not None:
        app[SPOT_CHECKS] = spot_checks
        spot_check_routes.add_to(app)
    if survey is not None:
        app[SURVEY] = survey
        survey_routes.add_to(app)
    if complaints is not None:
        app[COMPLAINTS] = complaints
        complaint_routes.add_to(app)
    if journal is not None:
        app[JOURNAL] = journal
        journal_routes.add_to(app)
