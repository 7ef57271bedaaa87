"""Who may call which route: the authentication middleware and the audit log of every mutating request.

Every route is declared with its roles next to its handler
(``core.http.routes``); ``app[ROUTE_SPECS]`` holds the specs of the routes
mounted. A route registered on the application without a declaration is
refused (403) to everyone except admins, and a unit test fails until it is
declared.

Every request carries ``Authorization: Bearer <token>`` except on the public
routes (health, metrics, log-in, the spec, the static pages, and Twilio's
webhook, which proves itself with its signature). Browsers cannot set
headers on a WebSocket, so an upgrade request may carry the token as
``?access_token=``. A route's scope adds the checks of the station and
officer roles (a station user sees its own station's incidents only).
Every mutating request (POST/PUT/PATCH/DELETE) is written to the audit log
with who made it and the status it got, refused ones included.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from core.auth.users import Role
from core.errors import DomainError
from core.http.replies import BODY_SCHEMA, BODY_SHA256, PRINCIPAL, error_reply
from core.http.routes import ROUTE_SPECS
from core.web.accounts import (
    AUDIT_SKIP,
    AUDIT_WHO,
    AUTH,
    PASSWORD_CHANGE_ROUTES,
    bearer_token,
)

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _admit(request: web.Request) -> web.StreamResponse | None:
    """None if the request may go on to its handler, else the refusal."""
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method
    spec = None if resource is None else request.app.get(ROUTE_SPECS, {}).get((method, resource.canonical))
    request[BODY_SCHEMA] = None if spec is None else spec.body
    if spec is not None and spec.public:
        return None
    token = bearer_token(request)
    principal = None if token is None else await request.app[AUTH].resolve(token)
    if principal is None:
        return error_reply(401, "log in first: Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    request[PRINCIPAL] = principal
    if resource is None:
        return None  # aiohttp's own 404/405 follows
    if principal.must_change_password and (method, resource.canonical) not in PASSWORD_CHANGE_ROUTES:
        return error_reply(403, "choose your own password first: POST /api/password", error_id="password-change-required")
    if spec is None:
        if principal.role is Role.ADMIN:
            return None
        return error_reply(403, "this route is not open to any role yet", error_id="route-not-declared")
    if principal.role not in spec.roles:
        return error_reply(403, f"not allowed for role {principal.role}", error_id="role-not-allowed",
                           details={"role": str(principal.role)})
    if spec.scope is not None:
        return await spec.scope(request, principal)
    return None


@web.middleware
async def authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method not in MUTATING:
        refusal = await _admit(request)
        return refusal if refusal is not None else await handler(request)
    status = 500
    try:
        refusal = await _admit(request)
        response = refusal if refusal is not None else await handler(request)
        status = response.status
        return response
    except DomainError as exc:
        status = exc.status
        raise
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        await _audit(request, status)


async def _audit(request: web.Request, status: int) -> None:
    if request.get(AUDIT_SKIP):
        return
    principal = request.get(PRINCIPAL)
    who = principal.username if principal is not None else request.get(AUDIT_WHO, "-")
    try:
        await request.app[AUTH].audit(
            who=who,
            role=None if principal is None else str(principal.role),
            method=request.method,
            path=request.path,
            status=status,
            body_sha256=request.get(BODY_SHA256),
        )
    except Exception:
        # The request has had its effect; losing its audit row is logged loudly, not turned into an error.
        log.exception("could not write the audit row of %s %s by %s", request.method, request.path, who)
