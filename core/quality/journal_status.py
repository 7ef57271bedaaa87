"""The journal's state for supervisors: the latest verification, kept cheap, and retention's last run.

``JournalWatch.status`` runs ``core.journal.verify`` without re-hashing the
recording files (that reads every file; ``jiejing journal verify`` does it)
and keeps the answer for ``max_age_s``: however many screens poll, the chain
is walked at most once a minute, and concurrent callers wait for the one
walk under way instead of starting their own. Anchors are checked when the
backend has the key and file (it writes them, so it has both).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tickets import iso_utc
from core.quality.journal import verify
from core.quality.retention import RetentionSchedule

# A page shows a few findings; the CLI lists them all.
FINDINGS_SHOWN = 20


class JournalWatch:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        anchor_file: str | os.PathLike[str] | None = None,
        anchor_key: bytes | None = None,
        retention: RetentionSchedule | None = None,
        clock: Callable[[], float] = time.time,
        max_age_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.anchor_file = anchor_file
        self._anchor_key = anchor_key
        self.retention = retention
        self._clock = clock
        self._max_age_s = max_age_s
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._last: dict[str, Any] | None = None

    async def journal(self) -> dict[str, Any]:
        """The latest verification result, walking the chain again when it is older than ``max_age_s``."""
        async with self._lock:
            now = self._clock()
            if self._last is None or self._checked_at is None or now - self._checked_at >= self._max_age_s:
                started = time.monotonic()
                retention_days = self.retention.days if self.retention is not None else 0
                report = await verify(self.engine, recordings=False, anchor_file=self.anchor_file,
                                      anchor_key=self._anchor_key, retention_days=retention_days or None,
                                      clock=self._clock)
                answer = report.to_json()
                answer["findings_total"] = len(report.findings)
                answer["findings"] = answer["findings"][:FINDINGS_SHOWN]
                answer["recordings_rehashed"] = False
                answer["anchored"] = self.anchor_file is not None and self._anchor_key is not None
                answer["checked_at"] = iso_utc(round(now * 1_000_000))
                answer["duration_s"] = round(time.monotonic() - started, 3)
                self._last, self._checked_at = answer, now
            return self._last

    async def status(self) -> dict[str, Any]:
        retention = self.retention.status() if self.retention is not None else {"enabled": False}
        return {"journal": await self.journal(), "retention": retention}
