"""The wallboard's figures: calls waiting, seats by state, answer speed, conferences, text reports waiting, alerts.

Kept in memory and fed by ticket steps (``on_step``) and seat changes, so a
snapshot costs no database round trip and can be sent to every screen once a
second for the wait clocks. At start ``prime`` reads today's calls from the
store. Open alerts are re-read every few seconds by ``run``.

"Answered within 3 s" is the center's answer target: of the calls received
in the window, those a seat answered within 3 s of the call being received,
out of those that were answered, abandoned, or have waited longer than 3 s
(a call still waiting less than that has not yet succeeded or failed).

The room's posture (``core.seats.posture``: normal or surge) is part of
each snapshot; ``queued_figures`` is what the posture watches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.lifecycle import State, Step
from core.calls.tables import Ticket, TicketStep
from core.calls.tickets import StepView, TicketView
from core.seats.board import SeatBoard
from core.seats.posture import Posture

log = logging.getLogger(__name__)

ANSWER_TARGET_S = 3.0
ALERTS_EVERY_S = 5.0
WAITING_STATES = frozenset({State.RECEIVED, State.QUEUED, State.RINGING})
UNRUNG_STATES = frozenset({State.RECEIVED, State.QUEUED})  # waiting, and no seat rings for them
CONFERENCE_STATES = frozenset({State.DISPATCHING, State.DISPATCHED, State.DISPATCHING_ENDED})
WAITING_SHOWN = 20  # the longest waits listed by caller
# Followed however old they are: waiting calls, conferences, text reports nobody has taken.
TRACKED_STATES = WAITING_STATES | CONFERENCE_STATES | {State.REPORTED}


@dataclass(slots=True)
class _Call:
    number: str
    caller_id: str
    state: State
    received_us: int
    answered_us: int | None = None
    abandoned: bool = False


class Wallboard:
    """Figures for the wallboard; ``changed`` wakes the screens after each step."""

    def __init__(
        self,
        engine: AsyncEngine,
        seats: SeatBoard,
        *,
        tz: str = "Asia/Shanghai",
        clock: Callable[[], float] = time.time,
        answer_target_s: float = ANSWER_TARGET_S,
        posture: Posture | None = None,
    ) -> None:
        self._engine = engine
        self._seats = seats
        self._tz = ZoneInfo(tz)
        self._clock = clock
        self.answer_target_s = answer_target_s
        self._calls: dict[str, _Call] = {}
        self._alerts: list[dict[str, Any]] = []
        self._waiters: set[asyncio.Event] = set()
        seats.add_listener(lambda _view: self._changed())
        self.posture = posture
        if posture is not None:
            posture.add_listener(lambda _change: self._changed())

    # -- feeding ---------------------------------------------------------------

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        call = self._calls.get(ticket.number)
        if call is None:
            received = ticket.steps[0].at_us if ticket.steps else step.at_us
            call = self._calls[ticket.number] = _Call(ticket.number, ticket.caller_id, ticket.state, received)
        call.state = ticket.state
        if step.step is Step.ANSWERED and call.answered_us is None:
            call.answered_us = step.at_us
        elif step.step is Step.ABANDONED:
            call.abandoned = True
        self._changed()

    def _changed(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def waiter(self) -> asyncio.Event:
        """An event set at each change; ``forget`` it when the screen goes."""
        event = asyncio.Event()
        self._waiters.add(event)
        return event

    def forget(self, event: asyncio.Event) -> None:
        self._waiters.discard(event)

    def _day_start_us(self, now: float) -> int:
        local = datetime.fromtimestamp(now, self._tz)
        return round(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1_000_000)

    async def prime(self) -> None:
        """Today's calls and every call still waiting or in conference, from the store."""
        now = self._clock()
        since_us = self._day_start_us(now)
        tracked = [s.value for s in TRACKED_STATES]
        async with self._engine.connect() as conn:
            tickets = (
                await conn.execute(
                    select(Ticket.id, Ticket.number, Ticket.caller_id, Ticket.state).where(
                        or_(Ticket.created_at_us >= since_us, Ticket.state.in_(tracked))
                    )
                )
            ).all()
            ids = {t.id: t for t in tickets}
            steps: list[Any] = []
            ordered = list(ids)
            for start in range(0, len(ordered), 500):
                steps += (
                    await conn.execute(
                        select(TicketStep.ticket_id, TicketStep.step, TicketStep.at_us).where(
                            TicketStep.ticket_id.in_(ordered[start : start + 500]),
                            TicketStep.step.in_([Step.RECEIVED.value, Step.REPORTED.value, Step.ANSWERED.value,
                                                 Step.ABANDONED.value]),
                        )
                    )
                ).all()
        calls: dict[int, _Call] = {}
        for step in sorted(steps, key=lambda s: s.at_us):
            row = ids[step.ticket_id]
            call = calls.get(row.id)
            if call is None:
                call = calls[row.id] = _Call(row.number, row.caller_id, State(row.state), step.at_us)
            if step.step == Step.ANSWERED.value and call.answered_us is None:
                call.answered_us = step.at_us
            elif step.step == Step.ABANDONED.value:
                call.abandoned = True
        for call in calls.values():
            self._calls.setdefault(call.number, call)
        self._changed()

    async def refresh_alerts(self) -> None:
        from core.alerts.board import Alert

        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(Alert.id, Alert.kind, Alert.ref, Alert.message, Alert.created_at_us)
                    .where(Alert.resolved_at_us.is_(None))
                    .order_by(Alert.id.desc())
                    .limit(50)
                )
            ).all()
        alerts = [dict(r._mapping) for r in rows]
        if alerts != self._alerts:
            self._alerts = alerts
            self._changed()

    async def run(self) -> None:
        """Re-read open alerts, and forget calls from before yesterday, until cancelled."""
        while True:
            try:
                await self.refresh_alerts()
            except Exception:
                log.exception("could not read the open alerts")
            self._prune()
            await asyncio.sleep(ALERTS_EVERY_S)

    def _prune(self) -> None:
        cutoff = self._day_start_us(self._clock()) - 24 * 3600 * 1_000_000
        for number in [n for n, c in self._calls.items() if c.received_us < cutoff and c.state not in TRACKED_STATES]:
            del self._calls[number]

    # -- reading ---------------------------------------------------------------

    def _share(self, since_us: int, now_us: int) -> dict[str, Any]:
        target_us = round(self.answer_target_s * 1_000_000)
        fast = counted = 0
        for call in self._calls.values():
            if call.received_us < since_us:
                continue
            if call.answered_us is not None:
                counted += 1
                fast += call.answered_us - call.received_us <= target_us
            elif call.abandoned or (call.state in WAITING_STATES and now_us - call.received_us > target_us):
                counted += 1
        return {"answered_fast": fast, "counted": counted, "share": None if not counted else round(fast / counted, 4)}

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        now_us = round(now * 1_000_000)
        waiting = sorted(
            (c for c in self._calls.values() if c.state in WAITING_STATES), key=lambda c: c.received_us
        )
        conferences = [c.number for c in self._calls.values() if c.state in CONFERENCE_STATES]
        reports = [c.received_us for c in self._calls.values() if c.state is State.REPORTED]
        return {
            "at_us": now_us,
            "answer_target_s": self.answer_target_s,
            "waiting": {
                "count": len(waiting),
                "longest_s": round((now_us - waiting[0].received_us) / 1e6, 1) if waiting else 0.0,
                "calls": [
                    {"number": c.number, "caller_id": c.caller_id, "state": str(c.state),
                     "wait_s": round((now_us - c.received_us) / 1e6, 1)}
                    for c in waiting[:WAITING_SHOWN]
                ],
            },
            "seats": {"by_state": self._seats.by_state(), "list": [s.to_json() for s in self._seats.seats()]},
            "answered_within_target": {
                "today": self._share(self._day_start_us(now), now_us),
                "last_hour": self._share(now_us - 3600 * 1_000_000, now_us),
            },
            "conferences": {"count": len(conferences), "tickets": sorted(conferences)},
            "reports_waiting": {"count": len(reports),
                                "longest_s": round((now_us - min(reports)) / 1e6, 1) if reports else 0.0},
            "alerts": {"count": len(self._alerts), "open": self._alerts[:10]},
            "posture": None if self.posture is None else self.posture.to_json(),
        }

    def waiting_figures(self) -> tuple[int, float]:
        """Calls waiting and the longest wait in seconds, for /metrics."""
        now_us = round(self._clock() * 1_000_000)
        received = [c.received_us for c in self._calls.values() if c.state in WAITING_STATES]
        return len(received), (now_us - min(received)) / 1e6 if received else 0.0


    def queued_figures(self) -> tuple[int, float]:
        """Calls waiting that no seat rings for, and the longest wait among them in seconds: what the posture watches.

        A ringing call has its seat (the lab's seats take 1 s to pick up, so at 10 calls/s about ten calls
        ring at any moment with seats to spare); one waiting with none ringing means no seat was free.
        """
        now_us = round(self._clock() * 1_000_000)
        received = [c.received_us for c in self._calls.values() if c.state in UNRUNG_STATES]
        return len(received), (now_us - min(received)) / 1e6 if received else 0.0
