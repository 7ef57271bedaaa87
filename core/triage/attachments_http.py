"""The HTTP side of kept attachments: GET a report's photo or video from its gateway with aiohttp.

Kept apart from ``core.triage.attachments`` so the keeper stays free of a
transport. Only http(s), redirects followed by hand (each hop's address
checked, at most ``max_redirects``), one deadline for the whole fetch,
the body handed over in chunks as it arrives, so the keeper's size limit stops
the download at the first byte over it. 408, 429 and 5xx answers, timeouts
and connection errors are retried by the keeper; any other answer is refused
for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from yarl import URL

from core.triage.attachments import FetchFailed

TIMEOUT_S = 300.0  # 100 MiB of video over a slow link
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # a gateway silent this long is gone
MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


class _Download:
    def __init__(self, response: aiohttp.ClientResponse, chunk_bytes: int) -> None:
        self.content_type = response.headers.get("Content-Type", "")
        self.length = response.content_length
        self._response = response
        self._chunk_bytes = chunk_bytes

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_chunked(self._chunk_bytes)


class HttpFetcher:
    """One client session for every fetch; closed with ``close``."""

    def __init__(self, *, timeout_s: float = TIMEOUT_S, max_redirects: int = MAX_REDIRECTS,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self._timeout_s = timeout_s
        # The deadline covers the whole fetch (every hop and the body); these catch a dead peer sooner.
        self._socket_timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, CONNECT_TIMEOUT_S),
                                                     sock_read=min(timeout_s, READ_TIMEOUT_S))
        self._max_redirects = max_redirects
        self._chunk_bytes = chunk_bytes
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[_Download]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._socket_timeout)
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._follow(url)
                try:
                    if not 200 <= response.status < 300:
                        permanent = 400 <= response.status < 500 and response.status not in (408, 429)
                        raise FetchFailed(f"HTTP {response.status} from {response.url.host}", permanent=permanent)
                    yield _Download(response, self._chunk_bytes)
                finally:
                    response.close()  # not drained: what was not read is never sent
        except TimeoutError:
            raise FetchFailed(f"no whole file within {self._timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None

    async def _follow(self, address: str) -> aiohttp.ClientResponse:
        assert self._session is not None
        location = address
        url = URL()
        for _ in range(self._max_redirects + 1):
            try:
                url = url.join(URL(location))
            except ValueError:
                raise FetchFailed(f"not an address: {location[:200]}", permanent=True) from None
            if url.scheme not in ("http", "https") or not url.host:
                raise FetchFailed(f"not an http(s) address: {str(url)[:200]}", permanent=True)
            response = await self._session.get(url, allow_redirects=False)
            if response.status not in _REDIRECTS:
                return response
            then = response.headers.get("Location")
            response.close()
            if not then:
                raise FetchFailed(f"HTTP {response.status} without a Location", permanent=True)
            location = then
        raise FetchFailed(f"more than {self._max_redirects} redirects", permanent=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
