"""The intake's HTTP side: what Asterisk's ``CURL()`` asks for each 110 call.

``GET /intake?uniqueid=…&caller=…`` answers ``200 text/plain`` with
``queue=…&priority=…``, the form ``CURLOPT(hashcompat)`` reads into ``HASH()``.
Anything else (a refused request, an error, no answer within Asterisk's bound)
leaves the hash incomplete, and the dialplan takes its fallback branch.

Why HTTP and not FastAGI: Asterisk waits for a FastAGI answer without limit,
and an absolute channel timeout does not interrupt it (docs/design.md, "Never
drop a call"); a backend frozen by ``kill -STOP`` or a blocked event loop
would hold every caller. ``CURL()`` has its own connect and transfer timeouts,
kept by Asterisk whatever our process does.

The handler awaits nothing: the answer comes from memory (``Intake``). It runs
in its own process (``jiejing intake``, which ``jiejing serve`` starts and
watches), so it never waits for the CPU behind the backend's record keeping,
and it writes no access log. ``GET /intake/health`` gives its counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
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
}
UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,150}")
CALLER_MAX = 200  # characters of a caller id looked at


INTAKE = web.AppKey("intake", Intake)
STATS = web.AppKey("intake_stats", RouteStats)


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
        try:
            answer = request.app[INTAKE].answer(uniqueid=uniqueid, caller_id=q.get("caller", "")[:CALLER_MAX])
        except Exception:
            stats.failures += 1
            log.exception("intake %s failed; the call takes the dialplan's fallback", uniqueid)
            return _plain(503, error="intake failed")
        return _plain(200, **{key: answer[var] for key, var in ANSWER_KEYS.items()})
    finally:
        stats.durations.observe((time.perf_counter() - started) * 1000)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid(), **request.app[STATS].summary()})


def make_intake_app(service_intake: Intake, stats: RouteStats | None = None) -> web.Application:
    app = web.Application(client_max_size=8192)
    app[INTAKE] = service_intake
    app[STATS] = stats if stats is not None else RouteStats()
    app.router.add_get("/intake", intake)
    app.router.add_get("/intake/health", health)
    return app


def run(host: str, port: int, intake: Intake) -> None:
    """``jiejing intake``: the intake alone, in this process, until SIGTERM or SIGINT."""

    async def main() -> None:
        runner = web.AppRunner(make_intake_app(intake), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        log.info("intake listening on http://%s:%s/intake (pid %d)", host, port, os.getpid())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
