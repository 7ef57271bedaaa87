"""The HTTP side of ticket pushes: POST the ticket JSON with aiohttp.

Kept apart from ``core.triage.push`` so the push queue stays free of a transport.
A 2xx answer is taken; 408, 429 and 5xx answers, timeouts and connection
errors are retried by the queue; any other 4xx is refused for good.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from core.triage.push import PushFailed

TIMEOUT_S = 10.0


class HttpPoster:
    """One client session for every push; closed with ``close``."""

    def __init__(self, *, timeout_s: float = TIMEOUT_S, headers: dict[str, str] | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, payload: dict[str, Any], *, idempotency_key: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {**self._headers, "Content-Type": "application/json; charset=utf-8",
                   "Idempotency-Key": idempotency_key}
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                text = (await resp.text())[:500]
                if 200 <= resp.status < 300:
                    return _reference(text)
                permanent = 400 <= resp.status < 500 and resp.status not in (408, 429)
                raise PushFailed(f"HTTP {resp.status}: {text[:200]}", permanent=permanent)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PushFailed(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reference(text: str) -> str:
    # A receiver that answers {"id": ...} gives the ticket a reference in its system.
    try:
        answer = json.loads(text)
    except ValueError:
        return ""
    if isinstance(answer, dict) and isinstance(answer.get("id"), str | int):
        return str(answer["id"])[:255]
    return ""
