"""What every view uses: JSON replies, error replies, the request body read under a cap and its schema, times.

Views parse and bound their input, call a service, and return ``json_reply``;
refusals are raised as ``core.errors.DomainError`` (or returned with
``error_reply``), and one middleware in ``core.web.app`` answers every error as
``{"error": ..., "error_id": ..., "details": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from core.errors import BadRequest

if TYPE_CHECKING:
    from core.auth.users import Principal  # noqa: F401 - named in a RequestKey string

# Set by the authentication middleware (core.web.auth) before the handler runs.
PRINCIPAL = web.RequestKey("principal", "Principal")
BODY_SCHEMA = web.RequestKey("body_schema", "dict[str, Any] | None")
# Set by json_body, for the audit row.
BODY_SHA256 = web.RequestKey("body_sha256", "str | None")

MAX_BODY = 64 * 1024

# The error_id of a refusal that has no more precise one, by status.
STATUS_ERROR_IDS = {
    400: "invalid-request",
    401: "not-logged-in",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    500: "internal-error",
    502: "upstream-failed",
    503: "unavailable",
}


def dumps(value: Any) -> str:
    # Chinese dispositions stay readable for whoever inspects the traffic.
    return json.dumps(value, ensure_ascii=False)


def json_reply(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps)


def error_reply(status: int, message: str, headers: Mapping[str, str] | None = None, *,
                error_id: str | None = None, details: Mapping[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message, "error_id": error_id or STATUS_ERROR_IDS.get(status, f"http-{status}")}
    if details:
        body["details"] = dict(details)
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


def who(request: web.Request) -> str | None:
    """The logged-in user's name, or None on a public route."""
    principal = request.get(PRINCIPAL)
    return None if principal is None else principal.username


def actor(request: web.Request) -> str:
    """Who a record names as having acted: the logged-in user, never a name from the request body.

    Every route that records an actor requires a role, so the authentication middleware has set the
    principal; "-" only on an application assembled without it (a test of views alone).
    """
    return who(request) or "-"


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
            raise BadRequest(f'"{name}" must be epoch seconds or an ISO 8601 time', error_id="invalid-time",
                             details={"parameter": name}) from None
        if parsed.tzinfo is None:
            raise BadRequest(f'"{name}" needs a time zone, e.g. +08:00', error_id="time-without-zone",
                             details={"parameter": name}) from None
        value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 2**32:
        raise BadRequest(f'"{name}" is out of range', error_id="invalid-time", details={"parameter": name})
    return value


def text_field(body: dict[str, Any], name: str, limit: int = 2000, *, required: bool = True) -> str | None:
    """A body's text field: a non-empty string of at most ``limit`` characters (None if absent and not required)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f'"{name}" must be a non-empty string', error_id="invalid-body", details={"field": name})
    if len(value) > limit:
        raise BadRequest(f'"{name}" must be at most {limit} characters', error_id="invalid-body",
                         details={"field": name})
    return value


def _no_constant(name: str) -> Any:
    # Python's JSON reader takes NaN and Infinity, which no schema range check stops
    # and neither the store nor a coordinate can use.
    raise ValueError(f"{name} is not a JSON number")


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A Draft 2020-12 validator (the dialect of OpenAPI 3.1) for ``schema``, built once per schema."""
    return _validator(json.dumps(schema, sort_keys=True))


def check_body(body: Any, schema: dict[str, Any]) -> None:
    """Raise ``BadRequest`` (``invalid-body``) naming where and why ``body`` fails ``schema``."""
    error = best_match(validator(schema).iter_errors(body))
    if error is None:
        return
    where = error.json_path
    raise BadRequest(f"invalid body: {where}: {error.message}", error_id="invalid-body",
                     details={"path": where, "rule": str(error.validator)})


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, checked against the route's schema; ``optional``: an empty body is ``{}``."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"body larger than {MAX_BODY} bytes", error_id="body-too-large")
    # Read with our own cap: chunked bodies carry no Content-Length to check.
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes", error_id="body-too-large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    request[BODY_SHA256] = hashlib.sha256(raw).hexdigest()
    if not raw and optional:
        return {}
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadRequest("body must be a JSON object in UTF-8", error_id="body-not-json") from None
    except ValueError as exc:
        raise BadRequest(str(exc), error_id="body-not-json") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", error_id="body-not-json")
    schema = request.get(BODY_SCHEMA)
    if schema is not None:
        try:
            check_body(body, schema)
        except RecursionError:
            raise BadRequest("body nested too deeply", error_id="invalid-body") from None
    return body


# A browser's WebSocket cannot send an Authorization header; our pages offer the subprotocols ``jiejing`` and
# ``jiejing.bearer.<token>`` instead (``Sec-WebSocket-Protocol``), so the token is in no URL that a proxy or a
# server logs. Every WebSocket endpoint answers with ``jiejing``.
WS_PROTOCOLS = ("jiejing",)
WS_BEARER_PREFIX = "jiejing.bearer."
