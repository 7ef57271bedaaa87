"""The access log, without secrets: query parameters that carry a bearer token are written as ``redacted``.

Browsers cannot set headers on a WebSocket, so the pages send their token as ``?access_token=``
(``core.web.accounts.bearer_token``); aiohttp's own access log writes the request line whole and would keep
every token for as long as the log is kept. Headers (``Authorization``) are not logged at all.
"""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from yarl import URL

SECRET_PARAMETERS = frozenset({"access_token", "token"})
REDACTED = "redacted"


def redacted(url: URL) -> str:
    """``path?query`` of ``url`` with the values of secret parameters replaced."""
    if not any(key.lower() in SECRET_PARAMETERS for key in url.query):
        return url.raw_path_qs
    pairs = [(key, REDACTED if key.lower() in SECRET_PARAMETERS else value) for key, value in url.query.items()]
    return url.with_query(pairs).raw_path_qs


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: client, request line (secrets redacted), status, size, seconds, user agent."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        try:
            self.logger.info(
                '%s "%s %s HTTP/%d.%d" %d %d %.6f "%s"',
                request.remote or "-", request.method, redacted(request.rel_url), request.version.major,
                request.version.minor, response.status, response.body_length, time,
                request.headers.get("User-Agent", "-"),
            )
        except Exception:
            self.logger.exception("could not write the access log line")
