"""HTTP API of accounts: log-in and log-out, who am I, users (admins), the audit log (admins)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from core.auth.users import PASSWORD_MAX, AuthService, Role, TooManyLogIns
from core.errors import BadRequest, NotFound
from core.http.replies import (
    BODY_SHA256,
    PRINCIPAL,
    WS_BEARER_PREFIX,
    error_reply,
    json_body,
    json_reply,
)
from core.http.routes import ADMINS, ALL, PUBLIC, RouteTable

AUTH = web.AppKey("auth", AuthService)
# Who tried to log in, for the audit row of a refused log-in.
AUDIT_WHO = web.RequestKey("audit_who", str)
# Set on a request whose audit row is left out: a log-in refused during a lock-out after its first refusal.
AUDIT_SKIP = web.RequestKey("audit_skip", bool)

routes = RouteTable("auth")

_STATION_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,32}$"}
LOGIN_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {
        "username": {"type": "string", "minLength": 1, "maxLength": 64},
        "password": {"type": "string", "minLength": 1, "maxLength": PASSWORD_MAX},
    },
}
USER_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["username", "password", "role"],
    "properties": {
        "username": {"type": "string", "pattern": r"^[A-Za-z0-9_.@-]{1,64}$"},
        "password": {"type": "string", "minLength": 8, "maxLength": PASSWORD_MAX},
        "role": {"type": "string", "enum": [str(r) for r in Role]},
        "station": {**_STATION_ID, "type": ["string", "null"]},
    },
}
USER_BODY["properties"]["must_change_password"] = {
    "type": "boolean",
    "description": "the user must choose his own password at his first log-in (default: yes, but for a gateway)"}
DISABLED_BODY: dict[str, Any] = {"type": "object", "required": ["disabled"], "properties": {"disabled": {"type": "boolean"}}}
OWN_PASSWORD_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["current", "new"],
    "properties": {
        "current": {"type": "string", "minLength": 1, "maxLength": PASSWORD_MAX},
        "new": {"type": "string", "minLength": 8, "maxLength": PASSWORD_MAX},
    },
}
RESET_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["password"],
    "properties": {
        "password": {"type": "string", "minLength": 8, "maxLength": PASSWORD_MAX},
        "must_change_password": {"type": "boolean", "description": "default yes"},
    },
}
ROLE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": USER_BODY["properties"]["role"], "station": USER_BODY["properties"]["station"]},
}
# What a user whose password must change may still do: see who he is, change it, log out.
PASSWORD_CHANGE_ROUTES = frozenset({("GET", "/api/me"), ("POST", "/api/password"), ("POST", "/api/logout")})
_LIMIT = re.compile(r"[0-9]{1,7}")


def bearer_token(request: web.Request) -> str | None:
    """The request's bearer token: ``Authorization: Bearer``, or on a WebSocket upgrade the subprotocol
    ``jiejing.bearer.<token>`` (the pages) or ``?access_token=`` (clients that can do neither; our access log
    redacts it)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.headers.get("Upgrade", "").lower() == "websocket":
        for offered in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
            offered = offered.strip()
            if offered.startswith(WS_BEARER_PREFIX) and len(offered) > len(WS_BEARER_PREFIX):
                return offered[len(WS_BEARER_PREFIX):]
        return request.query.get("access_token") or None
    return None


@routes.post("/api/login", PUBLIC, "Log in; returns a bearer token", body=LOGIN_BODY)
async def login(request: web.Request) -> web.Response:
    body = await json_body(request)
    # The password's digest is not audited: it could be tested offline.
    request[BODY_SHA256] = None
    username, password = body["username"], body["password"]
    request[AUDIT_WHO] = username[:64]
    auth = request.app[AUTH]
    try:
        token, expires_us, principal = await auth.login(username, password, address=request.remote or "-")
    except TooManyLogIns as exc:
        # A lock-out is audited once, at its first refusal; the rest are counted in the process log.
        request[AUDIT_SKIP] = not exc.refusal.first
        return error_reply(exc.status, str(exc), {"Retry-After": str(exc.refusal.retry_after_s)},
                           error_id=exc.error_id, details=exc.details)
    return json_reply({"token": token, "expires_at_us": expires_us, "expires_in_s": auth.token_ttl_s,
                       **principal.to_json()})


@routes.post("/api/logout", ALL, "Log out: the token stops working")
async def logout(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if token is not None:
        await request.app[AUTH].logout(token)
    return json_reply({"ok": True})


@routes.get("/api/me", ALL, "The logged-in user")
async def me(request: web.Request) -> web.Response:
    return json_reply(request[PRINCIPAL].to_json())


@routes.get("/api/users", ADMINS, "Every user")
async def list_users(request: web.Request) -> web.Response:
    return json_reply({"users": [u.to_json() for u in await request.app[AUTH].users()]})


@routes.post("/api/users", ADMINS, "Create a user", body=USER_BODY)
async def add_user(request: web.Request) -> web.Response:
    body = await json_body(request)
    request[BODY_SHA256] = None  # the body holds a password
    try:
        user = await request.app[AUTH].add_user(body["username"], body["password"], body["role"],
                                                body.get("station"),
                                                # a machine account (a report gateway) has nobody to change it
                                                must_change=body.get("must_change_password",
                                                                     body["role"] != Role.GATEWAY))
    except ValueError as exc:
        raise BadRequest(str(exc), error_id="invalid-user") from None
    return json_reply(user.to_json(), 201)


@routes.post("/api/users/{username}/disabled", ADMINS, "Disable or re-enable a user", body=DISABLED_BODY)
async def set_disabled(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        user = await request.app[AUTH].set_disabled(request.match_info["username"], body["disabled"])
    except LookupError:
        raise NotFound("no such user", error_id="unknown-user") from None
    except ValueError as exc:
        return error_reply(409, str(exc), error_id="last-admin")
    return json_reply(user.to_json())


@routes.post("/api/password", ALL, "Change one's own password; one's other log-ins end", body=OWN_PASSWORD_BODY)
async def change_own_password(request: web.Request) -> web.Response:
    body = await json_body(request)
    request[BODY_SHA256] = None  # the passwords' digest is not audited: it could be tested offline
    try:
        user = await request.app[AUTH].change_own_password(request[PRINCIPAL].username, body["current"],
                                                           body["new"], token=bearer_token(request) or "",
                                                           address=request.remote or "-")
    except TooManyLogIns as exc:
        return error_reply(exc.status, str(exc), {"Retry-After": str(exc.refusal.retry_after_s)},
                           error_id=exc.error_id, details=exc.details)
    except ValueError as exc:
        raise BadRequest(str(exc), error_id="invalid-password") from None
    return json_reply(user.to_json())


@routes.post("/api/users/{username}/password", ADMINS,
             "Reset a user's password; his log-ins end, and he must change it at the next (unless told not to)",
             body=RESET_BODY)
async def reset_password(request: web.Request) -> web.Response:
    body = await json_body(request)
    request[BODY_SHA256] = None
    try:
        user = await request.app[AUTH].set_password(request.match_info["username"], body["password"],
                                                    must_change=body.get("must_change_password", True))
    except LookupError:
        raise NotFound("no such user", error_id="unknown-user") from None
    except ValueError as exc:
        raise BadRequest(str(exc), error_id="invalid-password") from None
    return json_reply(user.to_json())


@routes.post("/api/users/{username}/role", ADMINS, "Change a user's role (and station); his log-ins end",
             body=ROLE_BODY)
async def set_role(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        user = await request.app[AUTH].set_role(request.match_info["username"], body["role"], body.get("station"))
    except LookupError:
        raise NotFound("no such user", error_id="unknown-user") from None
    except ValueError as exc:
        if "last enabled admin" in str(exc):
            return error_reply(409, str(exc), error_id="last-admin")
        raise BadRequest(str(exc), error_id="invalid-user") from None
    return json_reply(user.to_json())


@routes.get("/api/audit", ADMINS, "The newest audit-log entries",
            query={"limit": {"type": "string", "pattern": "^[0-9]{1,7}$", "description": "1-1000, default 100"}})
async def audit_log(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "100")
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000", error_id="invalid-limit")
    return json_reply({"entries": [e.to_json() for e in await request.app[AUTH].audit_log(limit=int(raw))]})


def add_auth_routes(app: web.Application, auth: AuthService) -> None:
    app[AUTH] = auth
    routes.add_to(app)
