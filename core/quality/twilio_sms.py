"""Sending SMS through Twilio's Messages API with the official ``twilio`` client.

The client is synchronous (``requests``), so calls run in a worker thread. A
``base_url`` points the client somewhere other than ``https://api.twilio.com``
— a local stand-in in tests, or an outbound relay — through the client's
supported extension point, a custom ``HttpClient``: ``RelayHttpClient``
rewrites the scheme and host of every request and leaves path, query, body,
headers and authentication exactly as the client built them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ConnectTimeout
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import MaxRetryError, NewConnectionError

from core.quality.outbox import DefiniteFailure, UnknownOutcome

log = logging.getLogger(__name__)

# How far back the reconciliation looks in the recipient's messages.
FIND_LIMIT = 50


class RelayHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, sending every request to ``base_url`` instead of Twilio's hosts."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base URL must be http(s)://host[:port][/prefix], got {base_url!r}")
        self._scheme, self._netloc, self._prefix = parts.scheme, parts.netloc, parts.path.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        url = urlunsplit((self._scheme, self._netloc, self._prefix + parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


def _refused(exc: RequestsConnectionError) -> bool:
    # Only a connection that was never made proves the request never arrived.
    if isinstance(exc, ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError)


class TwilioMessenger:
    """A ``Messenger`` over twilio's REST client."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        base_url: str = "",
        timeout_s: float = 15.0,
    ) -> None:
        http_client = (
            RelayHttpClient(base_url, timeout=timeout_s) if base_url else TwilioHttpClient(timeout=timeout_s)
        )
        self._http = http_client
        self._client = Client(account_sid, auth_token, http_client=http_client)
        self._from = from_number

    def close(self) -> None:
        if self._http.session is not None:
            self._http.session.close()

    async def send(self, to: str, body: str) -> str:
        return await asyncio.to_thread(self._send, to, body)

    def _send(self, to: str, body: str) -> str:
        try:
            message = self._client.messages.create(to=to, from_=self._from, body=body)
        except TwilioRestException as exc:
            if exc.status >= 500:
                raise UnknownOutcome(f"Twilio answered {exc.status}: {exc.msg}") from exc
            # 400 means this message can never be sent (bad number, bad body).
            raise DefiniteFailure(f"Twilio refused ({exc.status}, code {exc.code}): {exc.msg}",
                                  permanent=exc.status == 400) from exc
        except RequestsConnectionError as exc:
            if _refused(exc):
                raise DefiniteFailure(f"Twilio unreachable: {exc}") from exc
            raise UnknownOutcome(f"connection to Twilio failed mid-request: {exc}") from exc
        except OSError as exc:  # read timeouts and other transport errors after the request left
            raise UnknownOutcome(f"{type(exc).__name__}: {exc}") from exc
        if not message.sid:
            raise UnknownOutcome("Twilio answered without a message sid")
        return message.sid

    async def find(self, to: str, tag: str) -> str | None:
        return await asyncio.to_thread(self._find, to, tag)

    def _find(self, to: str, tag: str) -> str | None:
        for message in self._client.messages.list(to=to, from_=self._from, limit=FIND_LIMIT):
            if message.body and tag in message.body:
                return message.sid
        return None
