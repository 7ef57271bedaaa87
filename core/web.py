"""The HTTP API: health, ticket reads and closing, as thin views over TicketService.

Views parse and bound their input, call the service, and map domain errors to
HTTP statuses. Every error answer is JSON ``{"error": "..."}``; an unexpected
failure is logged with its traceback and answered 500 without one.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from core.lifecycle import IllegalTransition
from core.numbering import looks_like_number
from core.store import check as check_database
from core.tickets import TicketService, UnknownTicket

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]]

SERVICE = web.AppKey("service", TicketService)
HEALTH = web.AppKey("health", dict[str, HealthCheck])

MAX_BODY = 64 * 1024
LIMIT_DEFAULT = 50
LIMIT_MAX = 1000
# A check that hangs must not hang the load balancer's probe with it.
CHECK_TIMEOUT_S = 2.0
_LIMIT = re.compile(r"[0-9]{1,7}")


class BadRequest(Exception):
    """Input the API refuses; its message is safe to show to the client."""


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404/405 would otherwise answer in plain text.
        keep = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return _error(exc.status, exc.reason, keep)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal error")


async def _run_check(name: str, probe: HealthCheck) -> dict[str, Any]:
    try:
        result = probe()
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, CHECK_TIMEOUT_S)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # noqa: BLE001 - a failing probe is a health result, not a 500
        log.warning("health check %s failed", name, exc_info=True)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    if not isinstance(result, Mapping):
        return {"ok": False, "error": f"check returned {type(result).__name__}, not an object"}
    return dict(result)


async def healthz(request: web.Request) -> web.Response:
    probes = request.app[HEALTH]
    results = await asyncio.gather(*(_run_check(name, probe) for name, probe in probes.items()))
    checks = dict(zip(probes, results, strict=True))
    healthy = all(result.get("ok") is not False for result in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "degraded", "checks": checks},
        status=200 if healthy else 503,
        # A probe reporting a datetime or similar must not turn the probe into a 500.
        dumps=lambda value: json.dumps(value, ensure_ascii=False, default=str),
    )


async def list_tickets(request: web.Request) -> web.Response:
    raw = request.query.get("limit")
    if raw is None:
        limit = LIMIT_DEFAULT
    else:
        if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= LIMIT_MAX:
            raise BadRequest(f"limit must be an integer from 1 to {LIMIT_MAX}")
        limit = int(raw)
    tickets = await request.app[SERVICE].list_recent(limit)
    return web.json_response({"tickets": [t.to_json() for t in tickets]}, dumps=_dumps)


async def get_ticket(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    # A malformed number cannot exist; skip the database round trip.
    ticket = await request.app[SERVICE].get(number) if looks_like_number(number) else None
    if ticket is None:
        return _error(404, "no such ticket")
    return web.json_response(ticket.to_json(), dumps=_dumps)


async def close_ticket(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    body = await _json_body(request)
    disposition = body.get("disposition")
    by = body.get("by")
    if not isinstance(disposition, str) or not disposition.strip():
        raise BadRequest('"disposition" must be a non-empty string')
    if not isinstance(by, str) or not by.strip():
        raise BadRequest('"by" must be a non-empty string')
    if not looks_like_number(number):
        return _error(404, "no such ticket")
    try:
        ticket = await request.app[SERVICE].close(number, disposition=disposition, by=by)
    except UnknownTicket:
        return _error(404, "no such ticket")
    except IllegalTransition as exc:
        return _error(409, str(exc))
    return web.json_response(ticket.to_json(), dumps=_dumps)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"body larger than {MAX_BODY} bytes")
    # Read with our own cap: chunked bodies carry no Content-Length to check.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadRequest("body must be a JSON object in UTF-8") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _dumps(value: Any) -> str:
    # Chinese dispositions stay readable for whoever inspects the traffic.
    return json.dumps(value, ensure_ascii=False)


def make_app(
    service: TicketService,
    *,
    health: Mapping[str, HealthCheck],
    cleanup_ctx: Iterable[Callable[[web.Application], AsyncIterator[None]]] = (),
) -> web.Application:
    """The web application; ``cleanup_ctx`` entries start in order and stop in reverse."""
    if "database" in health:
        raise ValueError('the "database" health check is built in; do not pass one')

    async def database() -> dict[str, Any]:
        return await check_database(service.engine)

    app = web.Application(middlewares=[_errors_as_json], client_max_size=MAX_BODY)
    app[SERVICE] = service
    app[HEALTH] = {"database": database, **health}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/tickets", list_tickets)
    app.router.add_get("/api/tickets/{number}", get_ticket)
    app.router.add_post("/api/tickets/{number}/close", close_ticket)
    app.cleanup_ctx.extend(cleanup_ctx)
    return app
