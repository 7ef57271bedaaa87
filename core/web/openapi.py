"""The OpenAPI 3.1 description of the HTTP API, built from the routes each capability declares (``core.http.routes``).

Only routes registered on the running application are described, each with
its roles (in the description and ``x-roles``), its body schema, its query
and path parameters, and the error answers every route shares.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from core.http.routes import ROUTE_SPECS, RouteSpec, registered
from core.triage.repeat import PHONE

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

# Path parameters whose form is known; the others are plain strings.
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "day": {"type": "string", "pattern": "^[0-9]{8}$"},
    "id": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    "number": {"type": "string", "maxLength": 32},
    "badge": {"type": "string", "minLength": 1, "maxLength": 32},
    "seat": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
    "username": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"},
    "name": {"type": "string", "maxLength": 64},
    "phone": {"type": "string", "pattern": f"^{PHONE.pattern}$"},
}

_ERROR = {"$ref": "#/components/schemas/Error"}


def _operation(spec: RouteSpec) -> dict[str, Any]:
    roles = "public" if spec.public else ", ".join(sorted(str(r) for r in spec.roles))
    op: dict[str, Any] = {
        "summary": spec.summary,
        "description": f"Roles: {roles}." + (" A WebSocket: send an Upgrade request." if spec.websocket else ""),
        "operationId": f"{spec.method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', spec.path).strip('_') or 'root'}",
        "tags": [spec.tag],
        "x-roles": sorted(str(r) for r in spec.roles),
        "responses": {
            "200": {"description": "done", "content": {spec.content: {"schema": {}}}},
            "400": {"description": "the request is malformed", "content": {"application/json": {"schema": _ERROR}}},
            "404": {"description": "no such thing", "content": {"application/json": {"schema": _ERROR}}},
        },
    }
    if spec.method == "POST":
        op["responses"]["201"] = {"description": "created", "content": {"application/json": {"schema": {}}}}
    if spec.method in ("POST", "PUT"):
        op["responses"]["409"] = {"description": "conflicts with the current state",
                                  "content": {"application/json": {"schema": _ERROR}}}
    if not spec.public:
        op["security"] = [{"bearer": []}]
        op["responses"]["401"] = {"description": "not logged in", "content": {"application/json": {"schema": _ERROR}}}
        op["responses"]["403"] = {"description": "not allowed for this role",
                                  "content": {"application/json": {"schema": _ERROR}}}
    else:
        op["security"] = []
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(name, {"type": "string"})}
        for name in _PARAM.findall(spec.path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": schema,
         **({"description": schema["description"]} if "description" in schema else {})}
        for name, schema in spec.query.items()
    ]
    if parameters:
        op["parameters"] = parameters
    if spec.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec.body}}}
    return op


def build_spec(app: web.Application) -> dict[str, Any]:
    table = app.get(ROUTE_SPECS, {})
    paths: dict[str, dict[str, Any]] = {}
    for key in sorted(set(registered(app))):
        spec = table.get(key)
        if spec is None:
            continue  # refused to all but admins until listed; not advertised
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jiejing operations API",
            "version": "1",
            "description": "Unified 110 call-intake center. Log in with POST /api/login, then send "
            "Authorization: Bearer <token>.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "error_id"],
                    "properties": {
                        "error": {"type": "string", "description": "for people; may be reworded"},
                        "error_id": {"type": "string", "description": "stable: what clients branch on"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
    }
