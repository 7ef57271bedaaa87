"""The reporter's status link: ``/s/{token}`` (the page), ``/api/status/{token}`` (JSON, also for the 110 app) and
``/api/status/{token}/ws`` (pushed on every change). Public: the token is the authority; requests are
rate-limited per client address and per token (``core.quality.reporter_links``)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path

from aiohttp import WSMsgType, web

from core.http.replies import dumps, error_reply, json_reply
from core.http.routes import PUBLIC, RouteTable
from core.quality.reporter_links import LinkEnded, ReporterLinks, UnknownLink

LINKS = web.AppKey("reporter_links", ReporterLinks)
PAGE = Path(__file__).resolve().parents[1] / "web" / "static" / "reporter.html"
REFRESH_S = 15.0  # a socket is refreshed at least this often (positions age; a missed wake-up heals)

routes = RouteTable("reporters")


class RateLimit:
    """At most ``limit`` requests per ``window_s`` for each key (a client address, a token)."""

    def __init__(self, limit: int = 60, window_s: float = 60.0, clock=time.monotonic, max_keys: int = 100_000):
        self.limit, self.window_s, self._clock, self._max_keys = limit, window_s, clock, max_keys
        self._seen: dict[str, deque[float]] = {}

    def allow(self, *keys: str) -> bool:
        now = self._clock()
        if len(self._seen) > self._max_keys:  # a flood of distinct keys: forget the idle ones
            for key in [k for k, q in self._seen.items() if not q or now - q[-1] > self.window_s]:
                del self._seen[key]
        allowed = True
        for key in keys:
            times = self._seen.setdefault(key, deque())
            while times and now - times[0] > self.window_s:
                times.popleft()
            if len(times) >= self.limit:
                allowed = False
        if allowed:
            for key in keys:
                self._seen[key].append(now)
        return allowed


LIMITER = web.AppKey("status_rate_limit", RateLimit)


def _limited(request: web.Request, token: str) -> web.Response | None:
    if request.app[LIMITER].allow("ip:" + (request.remote or "-"), "token:" + token[:32]):
        return None
    return error_reply(429, "too many requests: try again in a minute", {"Retry-After": "60"},
                       error_id="rate-limited")


@routes.get("/s/{token}", PUBLIC, "The reporter's status page (the link in the SMS)", tag="reporters",
            content="text/html")
async def status_page(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    if (refusal := _limited(request, token)) is not None:
        return refusal
    # The page reads its status itself; an unknown or ended link shows as such there.
    return web.FileResponse(PAGE, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                           "X-Robots-Tag": "noindex"})


@routes.get("/api/status/{token}", PUBLIC, "A dispatched ticket's status for its reporter: phase, and for each "
            "officer on the way his badge, unit, distance and expected arrival", tag="reporters")
async def status_json(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    if (refusal := _limited(request, token)) is not None:
        return refusal
    reply = json_reply(await request.app[LINKS].status(token))
    reply.headers["Cache-Control"] = "no-store"
    return reply


@routes.get("/api/status/{token}/ws", PUBLIC, "WebSocket of the same status, sent at once and on every change",
            tag="reporters", websocket=True)
async def status_socket(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    if (refusal := _limited(request, token)) is not None:
        return refusal
    links = request.app[LINKS]
    number = await links.number_of(token)  # 404 before the upgrade
    ws = web.WebSocketResponse(heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        return error_reply(400, "this endpoint is a WebSocket; send an Upgrade request", error_id="websocket-only")
    await ws.prepare(request)
    changed = links.watch(number)
    reader = asyncio.create_task(_drain(ws))
    try:
        while not ws.closed:
            changed.clear()
            try:
                status = await links.status(token)
            except LinkEnded as exc:
                await ws.send_str(dumps({"phase": "ended", "message": str(exc)}))
                break
            await ws.send_str(dumps(status))
            waiter = asyncio.create_task(changed.wait())
            done, _ = await asyncio.wait({waiter, reader}, timeout=REFRESH_S, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if reader in done:
                break
    finally:
        links.unwatch(number, changed)
        reader.cancel()
        if not ws.closed:
            await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            return


def add_status_routes(app: web.Application, links: ReporterLinks, *, limit: RateLimit | None = None) -> None:
    app[LINKS] = links
    app[LIMITER] = limit or RateLimit()
    routes.add_to(app)


__all__ = ["LinkEnded", "UnknownLink", "RateLimit", "add_status_routes", "routes"]
