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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from telephony import channel_vars
from telephony.agi.server import RouteStats
from telephony.intake import Intake

log = logging.getLogger("jiejing.intake")

# The answer's keys (what the dialplan reads with HASH(jiejing,<key>)) and the channel variables they fill.
ANSWER_KEYS = {
    "queue": channel_vars.QUEUE,
    "priority": channel_vars.PRIORITY,
    "recording": channel_vars.RECORDING,
    "ticket": channel_vars.TICKET,
}
UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,150}")
# A caller waits at most this long for our answer (Asterisk's own bound, CURLOPT(httptimeout) 1.5 s, is for a
# backend that does not answer at all). The answer only adds the ticket number, queue and priority: later, the
# dialplan's fallback is better for the caller, and Asterisk's log gives the ticket all the same. At 1.0 s a
# store busy with a storm's writes held callers over a second each (answer p50 2.1 s at 30 calls/s).
DEADLINE_S = 0.25

# /healthz says "not ok" for this long after an intake request that timed out or failed.
TROUBLE_WINDOW_S = 60.0
# Tickets still being written for requests already answered (the store is slow): past this many, a new
# request is answered "no ticket" at once, and its ticket comes from AMI. Work never piles up unbounded.
PENDING_MAX = 200
# On shutdown, how long the tickets still being written may take.
SHUTDOWN_WAIT_S = 5.0


@dataclass
class IntakeStats(RouteStats):
    """The intake's counters, and its last trouble for /healthz."""

    trouble_at: float | None = None  # time.monotonic() of the last timeout or failure
    trouble: str = ""

    def note_trouble(self, why: str) -> None:
        self.trouble_at, self.trouble = time.monotonic(), why

    def health(self, *, window_s: float = TROUBLE_WINDOW_S) -> dict[str, Any]:
        """Not ok while a request timed out or failed within ``window_s``: calls are taking the fallback branch."""
        recent = self.trouble_at is not None and time.monotonic() - self.trouble_at < window_s
        found: dict[str, Any] = {"ok": not recent, "requests": self.requests, "failures": self.failures,
                                 "timeouts": self.timeouts,
                                 "le_ms": {str(b): n for b, n in self.durations.cumulative()}}
        if recent:
            found["reason"] = (f"{self.trouble} {time.monotonic() - self.trouble_at:.0f} s ago: calls take the "
                               "dialplan's fallback branch")
        return found


INTAKE = web.AppKey("intake", Intake)
STATS = web.AppKey("intake_stats", IntakeStats)
PENDING = web.AppKey("intake_pending", set)


def _plain(status: int, **fields: str) -> web.Response:
    return web.Response(status=status, text=urlencode(fields), content_type="text/plain")


async def intake(request: web.Request) -> web.Response:
    stats: IntakeStats = request.app[STATS]
    stats.requests += 1
    started = time.perf_counter()
    try:
        q = request.query
        uniqueid = q.get("uniqueid", "")
        if not UNIQUEID.fullmatch(uniqueid):
            stats.failures += 1
            return _plain(400, error="uniqueid must be 1-150 of [A-Za-z0-9._-]")
        # Whatever the carrier sent is kept as text (the store clips it): a caller is never refused for it.
        caller, name, location = q.get("caller", ""), q.get("name") or None, q.get("location") or None
        pending: set[asyncio.Task] = request.app[PENDING]
        if len(pending) >= PENDING_MAX:
            stats.timeouts += 1
            stats.note_trouble(f"the store is behind ({len(pending)} intake writes pending)")
            log.warning("intake %s: %d writes pending; answered without a ticket", uniqueid, len(pending))
            return _plain(503, error="intake overloaded")
        # The store's work is never cut half way: past the deadline the caller is answered without a
        # ticket (the dialplan's fallback) and the ticket is still written, then completed from AMI.
        work = asyncio.create_task(request.app[INTAKE].admit(
            uniqueid=uniqueid, caller_id=caller, caller_name=name, arrived=q.get("arrived"), location=location))
        pending.add(work)
        work.add_done_callback(pending.discard)
        try:
            answer = await asyncio.wait_for(asyncio.shield(work), DEADLINE_S)
        except TimeoutError:
            stats.timeouts += 1
            stats.note_trouble(f"an intake request timed out ({DEADLINE_S:g} s)")
            log.warning("intake %s: no ticket within %.1f s; the call takes the dialplan's fallback", uniqueid,
                        DEADLINE_S)
            return _plain(503, error="intake deadline")
        except Exception as exc:
            stats.failures += 1
            stats.note_trouble(f"an intake request failed ({type(exc).__name__})")
            log.exception("intake %s failed; the call takes the dialplan's fallback", uniqueid)
            return _plain(503, error="intake failed")
        return _plain(200, **{key: answer[var] for key, var in ANSWER_KEYS.items()})
    finally:
        stats.durations.observe((time.perf_counter() - started) * 1000)


def make_intake_app(service_intake: Intake, stats: IntakeStats | None = None) -> web.Application:
    app = web.Application(client_max_size=8192)
    app[INTAKE] = service_intake
    app[STATS] = stats if stats is not None else IntakeStats()
    app[PENDING] = set()
    app.router.add_get("/intake", intake)

    async def finish(app: web.Application) -> None:
        # Bounded: a store that does not answer must not keep the backend from stopping.
        if app[PENDING]:
            done, left = await asyncio.wait(set(app[PENDING]), timeout=SHUTDOWN_WAIT_S)
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=1.0)  # a write cancelled mid-way may still roll back
                log.error("intake: %d ticket writes still pending at shutdown were cancelled", len(left))

    app.on_shutdown.append(finish)
    return app
