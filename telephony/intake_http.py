"""The intake's HTTP side: what Asterisk's ``CURL()`` asks for each 110 call.

``GET /intake?uniqueid=…&caller=…&name=…&arrived=…&location=…`` answers
``200 text/plain`` with ``ticket=…&queue=…&priority=…&recording=…``, the form
``CURLOPT(hashcompat)`` reads into ``HASH()``. Anything else (a refused
request, an error, the deadline) is an answer without ``ticket``, and the
dialplan takes its fallback branch.

Why HTTP and not FastAGI: Asterisk waits for a FastAGI answer without limit,
and an absolute channel timeout does not interrupt it (docs/design.md, "Never
drop a call"); a backend frozen by ``kill -STOP`` or a blocked event loop
would hold every caller. ``CURL()`` has its own connect and transfer timeouts,
kept by Asterisk whatever our process does.

The server is its own listener (not the web API's), so the intake never waits
behind a page's request in aiohttp's queue, and it writes no access log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from urllib.parse import urlencode

from aiohttp import web

from telephony import channel_vars
from telephony.agi.server import RouteStats
from telephony.intake import LOCATION_MAX, Intake

log = logging.getLogger("jiejing.intake")

# The answer's keys (what the dialplan reads with HASH(jiejing,<key>)) and the channel variables they fill.
ANSWER_KEYS = {
    "queue": channel_vars.QUEUE,
    "priority": channel_vars.PRIORITY,
    "recording": channel_vars.RECORDING,
    "ticket": channel_vars.TICKET,
}
UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,150}")
TEXT_MAX = 255
DEADLINE_S = 1.0  # under the dialplan's CURLOPT(httptimeout) of 1.5 s: a late answer is not worth sending

INTAKE = web.AppKey("intake", Intake)
STATS = web.AppKey("intake_stats", RouteStats)
PENDING = web.AppKey("intake_pending", set)


def _plain(status: int, **fields: str) -> web.Response:
    return web.Response(status=status, text=urlencode(fields), content_type="text/plain")


async def intake(request: web.Request) -> web.Response:
    stats: RouteStats = request.app[STATS]
    stats.requests += 1
    started = time.perf_counter()
    try:
        q = request.query
        uniqueid = q.get("uniqueid", "")
        if not UNIQUEID.fullmatch(uniqueid):
            stats.failures += 1
            return _plain(400, error="uniqueid must be 1-150 of [A-Za-z0-9._-]")
        caller, name, location = q.get("caller", ""), q.get("name") or None, q.get("location") or None
        if len(caller) > TEXT_MAX or (name and len(name) > TEXT_MAX) or (location and len(location) > LOCATION_MAX):
            stats.failures += 1
            return _plain(400, error="caller, name or location too long")
        # The store's work is never cut half way: past the deadline the caller is answered without a
        # ticket (the dialplan's fallback) and the ticket is still written, then completed from AMI.
        work = asyncio.create_task(request.app[INTAKE].admit(
            uniqueid=uniqueid, caller_id=caller, caller_name=name, arrived=q.get("arrived"), location=location))
        pending: set[asyncio.Task] = request.app[PENDING]
        pending.add(work)
        work.add_done_callback(pending.discard)
        try:
            answer = await asyncio.wait_for(asyncio.shield(work), DEADLINE_S)
        except TimeoutError:
            stats.timeouts += 1
            log.warning("intake %s: no ticket within %.1f s; the call takes the dialplan's fallback", uniqueid,
                        DEADLINE_S)
            return _plain(503, error="intake deadline")
        except Exception:
            stats.failures += 1
            log.exception("intake %s failed; the call takes the dialplan's fallback", uniqueid)
            return _plain(503, error="intake failed")
        return _plain(200, **{key: answer[var] for key, var in ANSWER_KEYS.items()})
    finally:
        stats.durations.observe((time.perf_counter() - started) * 1000)


def make_intake_app(service_intake: Intake, stats: RouteStats | None = None) -> web.Application:
    app = web.Application(client_max_size=8192)
    app[INTAKE] = service_intake
    app[STATS] = stats if stats is not None else RouteStats()
    app[PENDING] = set()
    app.router.add_get("/intake", intake)

    async def finish(app: web.Application) -> None:
        await asyncio.gather(*app[PENDING], return_exceptions=True)

    app.on_shutdown.append(finish)
    return app
