"""HTTP API of the incident card: ``GET /api/tickets/{number}/briefing`` and the report's kept attachments.

The card (``core.triage.guidance.incident_card``) is for everyone who works the ticket: the desk (call-takers,
supervisors, admins), the station whose area the incident is in, and the officers rung for or sent to that
ticket. An officer not sent to a ticket is refused (403); another station's ticket is not there for a
station user (404), as for its other ticket routes. The photos and videos of a report the center kept
(``core.triage.attachments``) are for the same people, each serve journaled before the file goes out.
"""

from __future__ import annotations

from aiohttp import web

from core.auth.users import Principal, Role
from core.calls.numbering import looks_like_number
from core.calls.tickets import UnknownTicket
from core.calls.views import SERVICE, station_ticket, ticket_number
from core.http.replies import actor, error_reply, json_reply
from core.http.routes import DESK, RouteTable
from core.triage.attachments import AttachmentKeeper, AttachmentRefused
from core.triage.keywords import dispatched_badges
from core.triage.views import TRIAGE_DESK

routes = RouteTable("triage")
ATTACHMENTS = web.AppKey("attachments", AttachmentKeeper)


async def card_reader(request: web.Request, principal: Principal) -> web.Response | None:
    """Scope: an officer reads the cards of the tickets he was rung for or sent to; a station its own area's."""
    if principal.role is not Role.OFFICER:
        return await station_ticket(request, principal)
    number = request.match_info.get("number", "")
    ticket = await request.app[SERVICE].get(number) if looks_like_number(number) else None
    if ticket is None:
        return error_reply(404, "no such ticket", error_id=UnknownTicket.error_id, details={"number": number[:64]})
    if principal.username not in dispatched_badges(ticket):
        return error_reply(403, f"you were not sent to ticket {number}", error_id="not-your-ticket",
                           details={"number": number})
    return None


@routes.get("/api/tickets/{number}/briefing", DESK | {Role.STATION, Role.OFFICER},
            "The incident card: place, type and priority, keywords, the guidance for its type, and the background "
            "(earlier tickets at the place and from the caller, danger warnings, repeat-caller flags)",
            scope=card_reader)
async def get_briefing(request: web.Request) -> web.Response:
    return json_reply(await request.app[TRIAGE_DESK].briefing(ticket_number(request)))


@routes.get("/api/tickets/{number}/attachments/{sha256}", DESK | {Role.STATION, Role.OFFICER},
            "A photo or video of the ticket's report, as the center kept it (in its own content type); each serve "
            "is journaled first", scope=card_reader, content="*/*")
async def get_attachment(request: web.Request) -> web.StreamResponse:
    number = ticket_number(request)
    keeper = request.app.get(ATTACHMENTS)
    if keeper is None:
        raise AttachmentRefused("this center keeps no attachments", details={"number": number})
    kept = await keeper.open(number, request.match_info["sha256"], by=actor(request))
    return web.FileResponse(kept.path, headers={"Content-Type": kept.content_type, "Cache-Control": "no-store",
                                                "X-Content-Type-Options": "nosniff"})


def add_briefing_routes(app: web.Application, attachments: AttachmentKeeper | None = None) -> None:
    """Register the card's routes on an app that has the triage desk (after ``add_triage_routes``); without
    ``attachments`` (the keeper) no attachment is served."""
    if attachments is not None:
        app[ATTACHMENTS] = attachments
    routes.add_to(app)
