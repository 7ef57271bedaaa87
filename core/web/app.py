"""The HTTP API: health, ticket reads and closing, as thin views over TicketService.

Views parse and bound their input, call the service, and map domain errors to
HTTP statuses. Every error answer is JSON ``{"error": "..."}``; an unexpected
failure is logged with its traceback and answered 500 without one.

``make_app`` also mounts what every deployment has: authentication and the
route table (``core.web.auth``), the OpenAPI spec, ``/metrics``, seats, the
wallboard and the heat map (``core.web.ops``), and dispatch.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.calls.lifecycle import IllegalTransition
from core.calls.numbering import looks_like_number
from core.store import check as check_database
from core.calls.tickets import TicketService, TicketView, UnknownTicket

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from core.auth.users import AuthService, Principal
    from core.dispatch.planner import DispatchPlanner
    from core.seats.board import SeatBoard
    from core.triage.desk import TriageDesk

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]]

SERVICE = web.AppKey("service", TicketService)
HEALTH = web.AppKey("health", dict[str, HealthCheck])
# Set by the authentication middleware (core.web.auth) before the handler runs.
PRINCIPAL = web.RequestKey("principal", "Principal")
BODY_SCHEMA = web.RequestKey("body_schema", "dict[str, Any] | None")
# Set by _json_body, for the audit row.
BODY_SHA256 = web.RequestKey("body_sha256", "str | None")

MAX_BODY = 64 * 1024
LIMIT_DEFAULT = 50
LIMIT_MAX = 1000
# A check that hangs must not hang the load balancer's probe with it.
CHECK_TIMEOUT_S = 2.0
_LIMIT = re.compile(r"[0-9]{1,7}")


def parse_instant(raw: str | None, name: str) -> float | None:
    """A query parameter in epoch seconds or ISO 8601 with a zone, as epoch seconds; None if absent."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise BadRequest(f'"{name}" must be epoch seconds or an ISO 8601 time') from None
        if parsed.tzinfo is None:
            raise BadRequest(f'"{name}" needs a time zone, e.g. +08:00') from None
        value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 2**32:
        raise BadRequest(f'"{name}" is out of range')
    return value


class BadRequest(Exception):
    """Input the API refuses; its message is safe to show to the client."""


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers, dumps=_dumps)


def _text(body: dict[str, Any], name: str, limit: int = 2000, *, required: bool = True) -> str | None:
    """A body's text field: a non-empty string of at most ``limit`` characters (None if absent and not required)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f'"{name}" must be a non-empty string')
    if len(value) > limit:
        raise BadRequest(f'"{name}" must be at most {limit} characters')
    return value


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


def _station_of_user(request: web.Request) -> str | None | bool:
    """The station a station user is limited to; False for users who see every ticket."""
    from core.auth.users import Role

    principal = request.get(PRINCIPAL)
    if principal is None or principal.role is not Role.STATION:
        return False
    return principal.station


async def list_tickets(request: web.Request) -> web.Response:
    from core.triage.views import FILTERS, search_tickets

    if FILTERS.intersection(request.query):
        # Filtered searches over the whole history page by cursor and answer summaries.
        return await search_tickets(request)
    raw = request.query.get("limit")
    if raw is None:
        limit = LIMIT_DEFAULT
    else:
        if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= LIMIT_MAX:
            raise BadRequest(f"limit must be an integer from 1 to {LIMIT_MAX}")
        limit = int(raw)
    station = _station_of_user(request)
    if station is False:
        tickets = await request.app[SERVICE].list_recent(limit)
    else:
        from core.web.ops import station_tickets

        tickets = await station_tickets(request.app[SERVICE], station, limit)
    return _json({"tickets": await _with_triage(request, tickets)})


async def get_ticket(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    # A malformed number cannot exist; skip the database round trip.
    ticket = await request.app[SERVICE].get(number) if looks_like_number(number) else None
    if ticket is None:
        return _error(404, "no such ticket")
    return _json((await _with_triage(request, [ticket]))[0])


async def _with_triage(request: web.Request, tickets: list[TicketView]) -> list[dict[str, Any]]:
    """Ticket JSON with its ``triage`` block (classification, repeat link, prank flag) when triage is mounted."""
    from core.triage.views import annotate

    extra = await annotate(request.app, tickets)
    return [{**t.to_json(), **({"triage": extra[t.number]} if t.number in extra else {})} for t in tickets]


CLOSE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["disposition", "by"],
    "properties": {
        "disposition": {"type": "string", "minLength": 1, "pattern": r"\S"},
        "by": {"type": "string", "minLength": 1, "pattern": r"\S"},
    },
}


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
    return _json((await _with_triage(request, [ticket]))[0])


def _no_constant(name: str) -> Any:
    # Python's JSON reader takes NaN and Infinity, which no schema range check stops
    # and neither the store nor a coordinate can use.
    raise ValueError(f"{name} is not a JSON number")


async def _json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, checked against the route's schema; ``optional``: an empty body is ``{}``."""
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
    raw = b"".join(chunks)
    request[BODY_SHA256] = hashlib.sha256(raw).hexdigest()
    if not raw and optional:
        return {}
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadRequest("body must be a JSON object in UTF-8") from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    schema = request.get(BODY_SCHEMA)
    if schema is not None:
        from core.http.schema import SchemaError, validate

        try:
            validate(body, schema)
        except SchemaError as exc:
            raise BadRequest(f"invalid body: {exc}") from None
        except RecursionError:
            raise BadRequest("body nested too deeply") from None
    return body


def _dumps(value: Any) -> str:
    # Chinese dispositions stay readable for whoever inspects the traffic.
    return json.dumps(value, ensure_ascii=False)


def make_app(
    service: TicketService,
    *,
    health: Mapping[str, HealthCheck],
    cleanup_ctx: Iterable[Callable[[web.Application], AsyncIterator[None]]] = (),
    dispatch: DispatchPlanner | None = None,
    auth: AuthService | None = None,
    seats: SeatBoard | None = None,
    metrics: Iterable[Collector] = (),
    timezone: str = "Asia/Shanghai",
    triage: TriageDesk | None = None,
) -> web.Application:
    """The web application; ``cleanup_ctx`` entries start in order and stop in reverse.

    ``dispatch`` is the planner behind the dispatch routes; by default one is
    built on ``service``'s store. ``auth`` holds users and tokens (by default
    on the same store); ``seats`` is the seat board (by default one that
    drives no queue); ``metrics`` are extra prometheus-client collectors for
    ``/metrics`` (see ``core.web.metrics``), e.g. the AMI and FastAGI figures
    from the telephony side; ``timezone`` is the center's, where the
    wallboard's "today" begins; ``triage`` is the triage desk (by default one
    on the same store with the dialplan's rule files).
    """
    if "database" in health:
        raise ValueError('the "database" health check is built in; do not pass one')

    async def database() -> dict[str, Any]:
        return await check_database(service.engine)

    from core.auth.users import AuthService
    from core.web.auth import add_auth_routes, authenticate

    app = web.Application(middlewares=[_errors_as_json, authenticate], client_max_size=MAX_BODY)
    app[SERVICE] = service
    app[HEALTH] = {"database": database, **health}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/tickets", list_tickets)
    app.router.add_get("/api/tickets/{number}", get_ticket)
    app.router.add_post("/api/tickets/{number}/close", close_ticket)
    add_auth_routes(app, auth if auth is not None else AuthService(service.engine))
    app.cleanup_ctx.extend(cleanup_ctx)
    # Imported here: core.dispatch.views builds on this module. Added after the
    # given contexts so the event stream starts once the store is ready.
    from core.dispatch.views import add_dispatch_routes

    add_dispatch_routes(app, planner=dispatch)
    from core.web.ops import add_ops_routes

    add_ops_routes(app, seats=seats, metrics=metrics, timezone=timezone)
    from core.triage.views import add_triage_routes

    add_triage_routes(app, desk=triage)
    return app
