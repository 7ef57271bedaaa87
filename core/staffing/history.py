"""What the store says about past half hours: calls offered, handling time, callers' patience, seats at work.

Everything comes from the ticket steps the center already keeps (``core.calls``):
``received`` is a call's arrival, ``seat_ringing`` and ``answered`` the seat that
took it, ``hung_up`` the end of its talk, ``abandoned`` a caller who hung up
before any seat answered. Text reports (``reported``) are not calls and are left
out. Half hours are cut on the center's clock (``timezone``).

- **Handling time** is what keeps a seat from the next call: the ring of the
  seat that answered, the talk (answer to hang-up) and the wrap-up. Wrap-up is
  not stored per call (the seat board holds it in memory); the configured
  ``wrap_up_s`` is added, which overstates it for seats that ended wrap-up early.
- **Answer delay** (the answering seat's ring, median) is part of every
  answer time, so the planner asks the queue for ``target − delay``.
- **Patience**: a caller who abandoned after waiting ``w`` had patience ``w``;
  one answered after ``w`` had patience longer than ``w`` (a censored
  observation). Under exponential patience the likelihood of both kinds gives
  the estimate ``mean patience = (waits of all callers who waited) / (abandoned
  calls)``: every second anyone spent waiting is exposure, every abandonment an
  event. Without abandonments there is no estimate (patience looks endless:
  Erlang C is then the model).
- **Seats at work**: the project keeps no duty roster of seats (log-ins live in
  the seat board's memory; the roster tables are the officers'). What the store
  does show is the seats that answered at least one call in each half hour: a
  lower bound of the seats that were logged in, and the comparison the planner
  makes. It says so in its output.

Pure: SQLAlchemy on the store's tables, numpy; no aiohttp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.lifecycle import Step
from core.calls.tables import Ticket, TicketStep
from core.errors import DomainError

__all__ = ["HALF_HOUR_S", "History", "HistoryError", "SLOTS_PER_WEEK", "load_history", "slot_of_week"]

HALF_HOUR_S = 1800
HALF_HOUR_US = HALF_HOUR_S * 1_000_000
SLOTS_PER_DAY = 48
SLOTS_PER_WEEK = 7 * SLOTS_PER_DAY  # 336: the weekly season of the forecast
HISTORY_DAYS_MAX = 366


class HistoryError(DomainError, ValueError):
    status = 400
    error_id = "bad-history-window"


def slot_of_week(start_us: int, tz: ZoneInfo) -> int:
    """0 (Monday 00:00–00:30, center time) … 335 (Sunday 23:30–24:00)."""
    local = datetime.fromtimestamp(start_us / 1e6, tz)
    return local.weekday() * SLOTS_PER_DAY + local.hour * 2 + local.minute // 30


@dataclass(frozen=True)
class History:
    """Half hours from ``start_us`` (the first one's start), one figure per half hour in each array."""

    start_us: int
    timezone: str
    calls: np.ndarray  # offered calls
    answered: np.ndarray
    abandoned: np.ndarray
    seats_seen: np.ndarray  # seats that answered at least one call
    handle_s: float | None  # mean handling time per answered call: ring + talk + wrap-up
    talk_s: float | None
    answer_delay_s: float  # median ring of the answering seat
    wrap_up_s: float
    patience_s: float | None  # censored exponential estimate; None without abandonments
    waited_s_total: float  # exposure of the patience estimate

    @property
    def slots(self) -> int:
        return len(self.calls)

    def slot_starts_us(self) -> np.ndarray:
        return self.start_us + np.arange(self.slots, dtype=np.int64) * HALF_HOUR_US

    def slot_of_week(self, index: int = 0) -> int:
        return slot_of_week(self.start_us + index * HALF_HOUR_US, ZoneInfo(self.timezone))

    def summary(self) -> dict[str, Any]:
        calls = int(self.calls.sum())
        return {
            "from_us": self.start_us, "to_us": self.start_us + self.slots * HALF_HOUR_US,
            "half_hours": self.slots, "calls": calls, "answered": int(self.answered.sum()),
            "abandoned": int(self.abandoned.sum()),
            "abandonment": round(float(self.abandoned.sum()) / calls, 4) if calls else None,
            "handle_s": _r(self.handle_s), "talk_s": _r(self.talk_s), "wrap_up_s": self.wrap_up_s,
            "answer_delay_s": _r(self.answer_delay_s), "patience_s": _r(self.patience_s),
            "patience_method": "censored exponential: total waiting time of all callers / abandoned calls",
        }


def _r(value: float | None, places: int = 3) -> float | None:
    return None if value is None else round(value, places)


async def load_history(engine: AsyncEngine, *, until_us: int, days: int, timezone: str,
                       wrap_up_s: float) -> History:
    """The ``days`` before ``until_us`` (cut to whole half hours), from the ticket steps of calls."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= HISTORY_DAYS_MAX:
        raise HistoryError(f"history must be 1..{HISTORY_DAYS_MAX} days, got {days!r}")
    tz = ZoneInfo(timezone)
    end = _half_hour_floor(until_us, tz)
    start = end - days * SLOTS_PER_DAY * HALF_HOUR_US
    slots = (end - start) // HALF_HOUR_US

    def first(step: Step):
        return func.min(case((TicketStep.step == str(step), TicketStep.at_us)))

    query = (
        select(
            first(Step.RECEIVED).label("received"),
            first(Step.ANSWERED).label("answered"),
            first(Step.ABANDONED).label("abandoned"),
            first(Step.HUNG_UP).label("hung_up"),
            # the last seat to ring before the answer is the one that answered
            func.max(case((TicketStep.step == str(Step.SEAT_RINGING), TicketStep.at_us))).label("ringing"),
            Ticket.seat,
        )
        .join(Ticket, Ticket.id == TicketStep.ticket_id)
        .where(Ticket.created_at_us >= start, Ticket.created_at_us < end,
               TicketStep.step.in_([str(s) for s in (Step.RECEIVED, Step.ANSWERED, Step.ABANDONED, Step.HUNG_UP,
                                                     Step.SEAT_RINGING)]))
        .group_by(TicketStep.ticket_id, Ticket.seat)
    )
    async with engine.connect() as conn:
        rows = [r for r in (await conn.execute(query)).all() if r.received is not None]

    calls = np.zeros(slots, dtype=np.int64)
    answered = np.zeros(slots, dtype=np.int64)
    abandoned = np.zeros(slots, dtype=np.int64)
    seats_by_slot: list[set[str]] = [set() for _ in range(slots)]
    talks: list[float] = []
    rings: list[float] = []
    waited_us = 0
    for received, answered_us, abandoned_us, hung_up_us, ringing_us, seat_name in rows:
        index = (received - start) // HALF_HOUR_US
        if not 0 <= index < slots:
            continue
        calls[index] += 1
        if answered_us is not None:
            answered[index] += 1
            waited_us += max(0, answered_us - received)
            if seat_name:
                seats_by_slot[index].add(seat_name)
            if hung_up_us is not None and hung_up_us >= answered_us:
                talks.append((hung_up_us - answered_us) / 1e6)
            if ringing_us is not None and received <= ringing_us <= answered_us:
                rings.append((answered_us - ringing_us) / 1e6)
        elif abandoned_us is not None:
            abandoned[index] += 1
            waited_us += max(0, abandoned_us - received)
    talk = float(np.mean(talks)) if talks else None
    ring = float(np.median(rings)) if rings else 0.0
    mean_ring = float(np.mean(rings)) if rings else 0.0
    handle = None if talk is None else talk + mean_ring + wrap_up_s
    gone = int(abandoned.sum())
    patience = (waited_us / 1e6) / gone if gone and waited_us > 0 else None
    return History(
        start_us=start, timezone=timezone, calls=calls, answered=answered, abandoned=abandoned,
        seats_seen=np.array([len(s) for s in seats_by_slot], dtype=np.int64), handle_s=handle, talk_s=talk,
        answer_delay_s=ring, wrap_up_s=wrap_up_s, patience_s=patience, waited_s_total=waited_us / 1e6,
    )


def _half_hour_floor(at_us: int, tz: ZoneInfo) -> int:
    """The start of the half hour (center time) holding ``at_us``; offsets of whole half hours keep UTC cuts."""
    local = datetime.fromtimestamp(at_us / 1e6, tz)
    floored = local.replace(minute=30 if local.minute >= 30 else 0, second=0, microsecond=0)
    return int(math.floor(floored.timestamp())) * 1_000_000
