"""Supervisor alerts raised by the call path (dispatch ladder exhausted, …).

Raising must never hold up a call: ``raise_alert`` is synchronous (it is
called from ticket listeners and hooks), queues the write, and one owned task
stores it in the ``alerts`` table (one open alert per kind and reference;
raising it again keeps the first). The event stream already carries the step
that caused it to every supervisor; this row is what stays open until
someone resolves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import BigInteger, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.store import TEXT_MAX, Base, _Id

log = logging.getLogger(__name__)


class Alert(Base):
    """A small alert row; a general alert system may later take these over."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("kind", "ref"),)  # one alert per overdue thing

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(TEXT_MAX))
    message: Mapped[str] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    resolved_at_us: Mapped[int | None] = mapped_column(BigInteger)
    # A supervisor has seen it and is on it; then who resolved it and how ("-" by: resolved by the system,
    # e.g. a follow-up answered, a surge over).
    acknowledged_at_us: Mapped[int | None] = mapped_column(BigInteger)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolution: Mapped[str | None] = mapped_column(Text)


class AlertResolved(ValueError):
    """The alert is resolved already: it cannot be acknowledged or resolved again."""


def alert_view(a: Alert) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "ref": a.ref, "message": a.message, "created_at_us": a.created_at_us,
            "acknowledged_at_us": a.acknowledged_at_us, "acknowledged_by": a.acknowledged_by,
            "resolved_at_us": a.resolved_at_us, "resolved_by": a.resolved_by, "resolution": a.resolution}


async def acknowledge_alert(engine: AsyncEngine, alert_id: int, *, by: str, at_us: int) -> dict[str, Any]:
    """Mark an open alert seen by ``by`` (the first acknowledgement stays); LookupError, AlertResolved."""
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        alert = await _open_alert(session, alert_id)
        if alert.acknowledged_at_us is None:
            alert.acknowledged_at_us, alert.acknowledged_by = at_us, by
        return alert_view(alert)


async def resolve_alert(engine: AsyncEngine, alert_id: int, *, by: str, resolution: str, at_us: int) -> dict[str, Any]:
    """Close an open alert with who, when and how; LookupError, AlertResolved."""
    async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
        alert = await _open_alert(session, alert_id)
        if alert.acknowledged_at_us is None:
            alert.acknowledged_at_us, alert.acknowledged_by = at_us, by
        alert.resolved_at_us, alert.resolved_by, alert.resolution = at_us, by, resolution
        return alert_view(alert)


async def _open_alert(session: Any, alert_id: int) -> Alert:
    alert = await session.get(Alert, alert_id, with_for_update=True)
    if alert is None:
        raise LookupError(f"no alert {alert_id}")
    if alert.resolved_at_us is not None:
        raise AlertResolved(f"alert {alert_id} was resolved by {alert.resolved_by or '-'}")
    return alert


# Alerts waiting to be stored at most; past it a new one is refused (counted, and /healthz says so).
PENDING_MAX = 10_000
# A write that failed is tried again after this long, doubling up to RETRY_MAX_S, until it is stored.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# A refusal keeps /healthz not ok this long (seconds).
REFUSED_SHOWN_S = 300.0


class AlertBoard:
    def __init__(self, engine: AsyncEngine, clock=time.time, *, pending_max: int = PENDING_MAX) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._pending: asyncio.Queue[tuple[str, str, str, int]] = asyncio.Queue(pending_max)
        self._task: asyncio.Task | None = None
        self.refused = 0  # alerts not taken because too many were waiting
        self._refused_at: float | None = None  # monotonic time of the last refusal
        self.failures = 0  # failed writes (each tried again)
        self.last_error: str | None = None  # of the write now failing, None once it is stored

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        await self._pending.join()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def raise_alert(self, kind: str, ref: str, message: str) -> None:
        log.warning("alert %s %s: %s", kind, ref, message)
        try:
            self._pending.put_nowait((kind, ref, message, round(self._clock() * 1_000_000)))
        except asyncio.QueueFull:
            self.refused += 1
            self._refused_at = time.monotonic()
            log.error("alert %s %s refused: %d alerts already wait for the store", kind, ref,
                      self._pending.qsize())

    async def _run(self) -> None:
        while True:
            kind, ref, message, at_us = await self._pending.get()
            try:
                await self._store(kind, ref, message, at_us)
            finally:
                self._pending.task_done()

    async def _store(self, kind: str, ref: str, message: str, at_us: int) -> None:
        """Store one alert; a failing store is tried again (with a growing pause) until it takes it."""
        pause = RETRY_FIRST_S
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    session.add(Alert(kind=kind, ref=ref, message=message, created_at_us=at_us))
            except IntegrityError:
                pass  # already open for this kind and reference
            except Exception as exc:
                self.failures += 1
                self.last_error = f"alert {kind} {ref}: {type(exc).__name__}: {exc}"
                log.exception("alert %s %s not stored yet; trying again in %.1f s", kind, ref, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            self.last_error = None
            return

    def health(self) -> dict[str, Any]:
        reasons = []
        if self.last_error is not None:
            reasons.append(f"alerts are not being stored ({self.last_error}); {self._pending.qsize()} waiting")
        if self._refused_at is not None and time.monotonic() - self._refused_at < REFUSED_SHOWN_S:
            reasons.append(f"{self.refused} alerts refused: too many waited for the store")
        return {"ok": not reasons, "reason": "; ".join(reasons) or None, "waiting": self._pending.qsize(),
                "failures": self.failures, "refused": self.refused}

    async def flush(self) -> None:
        await self._pending.join()

    async def raised(self, kind: str, ref: str) -> bool:
        """Whether an alert of ``kind`` for ``ref`` was stored, resolved or not (queued ones not yet)."""
        async with self._sessions() as session:
            found = await session.scalar(select(Alert.id).where(Alert.kind == kind, Alert.ref == ref).limit(1))
            return found is not None

    async def open_alerts(self) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = await session.scalars(select(Alert).where(Alert.resolved_at_us.is_(None)).order_by(Alert.id))
            return [{"kind": a.kind, "ref": a.ref, "message": a.message, "created_at_us": a.created_at_us}
                    for a in rows]
