"""HTTP API of a declared major incident: declare, end, the recorded message callers hear (``core.triage.major``).

The message is sent as the request's body (``audio/wav``), read here with its
own cap (the JSON bodies' cap is far smaller than a 30 s recording), checked,
written where Asterisk plays it, then recorded on the incident: a bad file
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core.calls.views import SERVICE
from core.dispatch.views import PLANNER
from core.http.replies import PRINCIPAL, json_body, json_reply
from core.http.routes import DESK, SUPERVISORS, RouteTable
from core.triage.major import (
    ADDRESS_MAX,
    MESSAGE_BYTES_MAX,
    REASON_MAX,
    BadMessage,
    Kind,
    MajorIncidents,
    MessageFiles,
    check_message,
)

log = logging.getLogger(__name__)

MAJOR = web.AppKey("major_incidents", MajorIncidents)
MESSAGE_FILES = web.AppKey("major_message_files", MessageFiles)

routes = RouteTable("major")

DECLARE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["kind"],
    "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": [k.value for k in Kind]},
        "address": {"type": "string", "maxLength": ADDRESS_MAX},
        "lat": {"type": "number"},
        "lon": {"type": "number"},
        "ticket": {"type": "string", "maxLength": 32},
        "reason": {"type": "string", "maxLength": REASON_MAX},
    },
}
END_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": "string", "maxLength": REASON_MAX}},
}


async def _state(request: web.Request) -> dict[str, Any]:
    incidents = request.app[MAJOR]
    current = incidents.current
    return {"current": None if current is None else current.to_json(),
            "recent": [i.to_json() for i in await incidents.recent(10)],
            "kinds": [{"kind": k.value, "label": k.label} for k in Kind]}


@routes.get("/api/major-incident", DESK, "The declared major incident (if any) and the last ones")
async def major_get(request: web.Request) -> web.Response:
    return json_reply(await _state(request))


@routes.post("/api/major-incident", SUPERVISORS, "Declare a major incident: type, an address or a position (or "
             "both), optionally on an existing ticket; new 110 callers hear its message and may press 1",
             body=DECLARE_BODY)
async def major_declare(request: web.Request) -> web.Response:
    body = await json_body(request)
    await request.app[MAJOR].declare(by=request[PRINCIPAL].username, **body)
    return json_reply(await _state(request), status=201)


@routes.post("/api/major-incident/end", SUPERVISORS, "End the declared major incident: new callers no longer hear "
             "its message", body=END_BODY)
async def major_end(request: web.Request) -> web.Response:
    body = await json_body(request, optional=True)
    await request.app[MAJOR].end(by=request[PRINCIPAL].username, reason=body.get("reason"))
    return json_reply(await _state(request))


@routes.route("PUT", "/api/major-incident/message", SUPERVISORS, "The declared incident's recorded message for "
              "callers (body: WAV, PCM 16-bit, mono, 8000 Hz, 1-30 s): \"if you are calling about the fire at …, "
              "press 1\"")
async def major_message(request: web.Request) -> web.Response:
    incidents = request.app[MAJOR]
    incidents.require()  # refuse before reading a recording for nothing
    if request.content_length is not None and request.content_length > MESSAGE_BYTES_MAX:
        raise BadMessage("the message is longer than 30 s; keep it short", details={"reason": "too-long"})
    chunks, size = [], 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MESSAGE_BYTES_MAX:
            raise BadMessage("the message is longer than 30 s; keep it short", details={"reason": "too-long"})
        chunks.append(chunk)
    info, samples = check_message(b"".join(chunks))
    request.app[MESSAGE_FILES].keep(samples)
    await incidents.set_message(info, by=request[PRINCIPAL].username)
    log.info("major incident message recorded by %s: %.1f s, sha256 %s", request[PRINCIPAL].username, info.seconds,
             info.sha256)
    return json_reply(await _state(request))


def add_major_routes(app: web.Application, incidents: MajorIncidents | None = None,
                     files: MessageFiles | None = None) -> None:
    """The major-incident routes; by default an incident record on the app's store, located by its planner, and no
    message folder (callers then hear the generic message). The declared incident is restored at start."""
    if incidents is None:
        planner = app[PLANNER]
        incidents = MajorIncidents(app[SERVICE], locate=planner.locate)
    app[MAJOR] = incidents
    app[MESSAGE_FILES] = files if files is not None else MessageFiles(None)

    async def restore_ctx(app: web.Application) -> AsyncIterator[None]:
        try:
            app[MESSAGE_FILES].prepare()
        except OSError:
            log.exception("the ring-back for the major-incident message could not be written")
        try:
            await incidents.restore()
        except Exception:
            log.exception("the declared major incident was not restored")
        yield

    app.cleanup_ctx.append(restore_ctx)
    routes.add_to(app)
