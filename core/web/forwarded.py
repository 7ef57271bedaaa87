"""The client's address behind a TLS proxy: X-Forwarded-For, believed only from the proxies configured.

Behind the proxy every request comes from the proxy's address, so log-in throttling by address would lock out
the whole center at once. (aiohttp's access log keeps the peer's address: the proxy's own log has the client.) For a request whose peer is one of
``trusted_proxies`` the client is the last address in X-Forwarded-For (the one that proxy saw; earlier entries
are the client's own claims). From any other peer the header is ignored, so it cannot be forged from outside.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forwarded_client(peer: str | None, header: str | None, trusted: frozenset[str]) -> str | None:
    """The client's address for a request from ``peer`` carrying X-Forwarded-For ``header``."""
    if peer is None or peer not in trusted or not header:
        return peer
    last = header.split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer  # a proxy that sends no address: keep the one we know


def client_address(trusted_proxies: Iterable[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    trusted = frozenset(str(ipaddress.ip_address(a)) for a in trusted_proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = forwarded_client(request.remote, request.headers.get("X-Forwarded-For"), trusted)
        if client != request.remote:
            request = request.clone(remote=client)
        return await handler(request)

    return middleware
