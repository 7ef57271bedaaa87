"""The web application: collects every capability's routes, authenticates, answers every error the same way.

``make_app`` mounts what every deployment has: authentication (``core.auth``),
calls, dispatch and its step stream, seats and the wallboard, triage and text
reports, and the operations pages, the OpenAPI document and ``/metrics``
(``core.web.ops``). Quality and supervision are mounted by the process
assembly (``core.quality.supervision``), the dispatch action by the telephony
side. Each capability declares its routes next to its views
(``core.http.routes.RouteTable``); this module imports the capabilities, never
the other way round.

Every error answer is JSON ``{"error": "...", "error_id": "...", "details": {...}}``:
domain errors (``core.errors.DomainError``) carry their status and id, aiohttp's
own 404/405 are turned into the same shape, and an unexpected failure is logged
with its traceback and answered 500 without one.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client.registry import Collector

from core.auth.users import AuthService
from core.calls import views as call_views
from core.calls.tickets import TicketService
from core.desk import views as desk_views
from core.dispatch import views as dispatch_views
from core.dispatch.planner import DispatchPlanner
from core.errors import DomainError
from core.http.replies import MAX_BODY, error_reply
from core.http.routes import PUBLIC, RouteSpec, RouteTable, declared
from core.quality import views as quality_views
from core.seats import views as seat_views
from core.seats.board import SeatBoard
from core.seats.phones import PhoneBook
from core.situation import views as situation_views
from core.situation.service import SituationService
from core.staffing import views as staffing_views
from core.store import check as check_database
from core.triage import (
    aml_views,
    briefing_views,
    major_views,
    report_views,
    wechat_views,
)
from core.triage import views as triage_views
from core.triage.aml_service import AmlService
from core.triage.attachments import AttachmentKeeper
from core.triage.desk import TriageDesk
from core.triage.major import MajorIncidents, MessageFiles
from core.triage.wechat import Account as WeChatAccount
from core.web import accounts as auth_views
from core.web import ops
from core.web.access_log import RedactingAccessLogger
from core.web.auth import authenticate
from core.web.forwarded import client_address

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]]
HEALTH = web.AppKey("health", dict[str, HealthCheck])

# A check that hangs must not hang the load balancer's probe with it.
CHECK_TIMEOUT_S = 2.0

routes = RouteTable("operations")

# Every route table of core; the telephony side declares the dispatch action in its own.
ROUTE_TABLES: tuple[RouteTable, ...] = (
    routes, auth_views.routes, call_views.routes, dispatch_views.routes, seat_views.routes, triage_views.routes,
    report_views.routes, briefing_views.routes, desk_views.routes, *quality_views.TABLES, ops.routes,
    wechat_views.routes, aml_views.routes, situation_views.routes, staffing_views.routes, major_views.routes,
)


def declared_routes() -> dict[tuple[str, str], RouteSpec]:
    """``{(method, path): spec}`` of every route core declares (mounted or not)."""
    return declared(*ROUTE_TABLES)


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return error_reply(exc.status, str(exc) or exc.error_id, error_id=exc.error_id, details=exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404/405 would otherwise answer in plain text.
        keep = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_reply(exc.status, exc.reason, keep)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_reply(500, "internal error")


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


@routes.get("/healthz", PUBLIC, "Health of the backend and its parts")
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


def serve_options() -> dict[str, Any]:
    """Options for ``web.run_app`` (or an ``AppRunner``): an access log that never holds a bearer token."""
    return {"access_log_class": RedactingAccessLogger}


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
    phones: PhoneBook | None = None,
    web_vendor: str | None = None,
    trusted_proxies: Iterable[str] = (),
    wechat: WeChatAccount | None = None,
    attachments: AttachmentKeeper | None = None,
    aml: AmlService | None = None,
    major: MajorIncidents | None = None,
    major_messages: MessageFiles | None = None,
    situation: SituationService | None = None,
) -> web.Application:
    """The web application; ``cleanup_ctx`` entries start in order and stop in reverse.

    ``dispatch`` is the planner behind the dispatch routes; by default one is
    built on ``service``'s store. ``auth`` holds users and tokens (by default
    on the same store); ``seats`` is the seat board (by default one that
    drives no queue); ``metrics`` are extra prometheus-client collectors for
    ``/metrics`` (see ``core.web.metrics``), e.g. the AMI and FastAGI figures
    from the telephony side; ``timezone`` is the center's, where the
    wallboard's "today" begins; ``triage`` is the triage desk (by default one
    on the same store with the dialplan's rule files); ``phones`` the browser
    seats' WebRTC accounts (by default none); ``web_vendor`` the folder of the
    browser libraries served under ``/vendor/`` (by default the set-up's
    ``vendor/web/dist``); ``trusted_proxies`` the TLS proxies whose
    X-Forwarded-For names the client (``core.web.forwarded``); ``wechat`` the official account whose
    messages are text reports (``core.triage.wechat``; without one ``/api/wechat`` answers 404); ``attachments``
    the keeper of the reports' photos and videos (``core.triage.attachments``; without one none is served);
    ``aml`` binds callers' AML positions to their tickets (by default one with the default windows); ``major`` the
    declared major incident (``core.triage.major``; by default one on the same store) and ``major_messages`` the
    folder its recorded message goes to for Asterisk (by default none: callers hear the generic message);
    ``situation`` makes the day's hot-spot forecast in its own task (``core.situation``; without one the situation
    routes are not mounted).
    """
    if "database" in health:
        raise ValueError('the "database" health check is built in; do not pass one')

    async def database() -> dict[str, Any]:
        return await check_database(service.engine)

    middlewares = [_errors_as_json, authenticate]
    if trusted_proxies:
        middlewares.insert(0, client_address(trusted_proxies))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[HEALTH] = {"database": database, **health}
    routes.add_to(app)
    call_views.add_call_routes(app, service)
    auth_views.add_auth_routes(app, auth if auth is not None else AuthService(service.engine))
    # Added after the given contexts so the event stream starts once the store is ready.
    app.cleanup_ctx.extend(cleanup_ctx)
    dispatch_views.add_dispatch_routes(app, planner=dispatch)
    seat_views.add_seat_routes(app, seats=seats, timezone=timezone, phones=phones)
    ops.add_ops_routes(app, metrics=metrics, vendor=web_vendor)
    triage_views.add_triage_routes(app, desk=triage)
    # The room's surge posture takes its thresholds from the surge rules file, on each reload.
    app[triage_views.TRIAGE_DESK].surge.on_config(lambda config: app[seat_views.POSTURE].set_rules(config.posture))
    wechat_views.add_wechat_routes(app, wechat, clock=service.clock)
    major_views.add_major_routes(app, major, major_messages)
    aml_views.add_aml_routes(app, aml)
    briefing_views.add_briefing_routes(app, attachments)
    desk_views.add_desk_routes(app)
    staffing_views.add_staffing_routes(app, timezone=timezone)
    if situation is not None:
        situation_views.add_situation_routes(app, situation)
    return app
