"""A synthetic call history with known parameters, written into a store as the center writes it.

Arrivals are Poisson in each half hour with a known rate (a daily profile, busier
Friday and Saturday evenings); a fixed room of seats answers first come first
served; each seat rings ``ring_s``, talks an exponential ``talk_s``, then wraps up
``wrap_up_s``; callers hang up after an exponential patience of mean
``patience_s``. The queue is played call by call (the earliest free seat takes
the next caller who is still there), so waits and abandonments follow from the
load, as in the lab. Tickets and their steps are inserted in bulk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tables import Ticket, TicketStep
from core.staffing.history import HALF_HOUR_S, SLOTS_PER_DAY, SLOTS_PER_WEEK

TZ = "Asia/Shanghai"

# Calls per half hour relative to the day's mean: quiet small hours, a morning rise, an evening peak.
_HOURLY = (0.35, 0.25, 0.2, 0.2, 0.25, 0.35, 0.6, 0.9, 1.1, 1.2, 1.25, 1.25,
           1.2, 1.15, 1.15, 1.2, 1.25, 1.35, 1.5, 1.6, 1.55, 1.35, 1.0, 0.6)
_DAILY = np.repeat(np.array(_HOURLY) / np.mean(_HOURLY), 2)


@dataclass(frozen=True)
class Pattern:
    mean_per_half_hour: float = 30.0
    weekend_evening: float = 1.3  # Friday and Saturday from 18:00

    def rate(self, slot_of_week: int) -> float:
        """Expected calls in this half hour of the week (0 = Monday 00:00)."""
        day, slot = divmod(slot_of_week, SLOTS_PER_DAY)
        boost = self.weekend_evening if day in (4, 5) and slot >= 36 else 1.0
        return self.mean_per_half_hour * float(_DAILY[slot]) * boost

    def week(self) -> np.ndarray:
        return np.array([self.rate(s) for s in range(SLOTS_PER_WEEK)])


@dataclass(frozen=True)
class Truth:
    start_us: int
    weeks: int
    calls: int
    abandoned: int
    talk_s: float
    ring_s: float
    wrap_up_s: float
    patience_s: float
    seats: int


def monday(day: str = "20261102") -> int:
    """Monday 00:00 center time of the given date (YYYYMMDD), in epoch microseconds."""
    local = datetime.strptime(day, "%Y%m%d").replace(tzinfo=ZoneInfo(TZ))
    assert local.weekday() == 0, day
    return int(local.timestamp()) * 1_000_000


async def write_history(engine: AsyncEngine, *, weeks: int = 3, start_us: int | None = None,
                        pattern: Pattern = Pattern(), seats: int = 5, talk_s: float = 120.0, ring_s: float = 1.0,
                        wrap_up_s: float = 10.0, patience_s: float = 40.0, seed: int = 16) -> Truth:
    rng = np.random.default_rng(seed)
    start_us = monday() if start_us is None else start_us
    start_s = start_us / 1e6
    arrivals: list[float] = []
    for index in range(weeks * SLOTS_PER_WEEK):
        count = rng.poisson(pattern.rate(index % SLOTS_PER_WEEK))
        begin = start_s + index * HALF_HOUR_S
        arrivals.extend(sorted(begin + rng.uniform(0, HALF_HOUR_S, count)))
    free = np.full(seats, start_s)
    tickets, steps = [], []
    abandoned = 0
    for i, at in enumerate(arrivals, start=1):
        patience = rng.exponential(patience_s)
        k = int(np.argmin(free))
        start_ring = max(at, float(free[k]))
        number = f"110-SYN-{i:07d}"
        uid = f"syn.{i}"
        trail = [("received", "received", at)]
        if start_ring + ring_s - at > patience:
            # hung up waiting, or while the seat rang (which then rang for nothing until he did)
            abandoned += 1
            trail.append(("abandoned", "abandoned", at + patience))
            if start_ring - at < patience:
                free[k] = at + patience
            seat, state = None, "abandoned"
        else:
            answer = start_ring + ring_s
            end = answer + rng.exponential(talk_s)
            free[k] = end + wrap_up_s
            seat = f"seat-{k + 1:02d}"
            trail += [("queued", "queued", at), ("seat_ringing", "ringing", start_ring),
                      ("answered", "answered", answer), ("hung_up", "ended", end)]
            state = "ended"
            # the patience of an answered caller is longer than his wait: the censored observations
        tickets.append({"id": i, "number": number, "uniqueid": uid, "caller_id": f"1390000{i:04d}"[-11:],
                        "caller_name": None, "state": state, "queue": "emergency-110", "priority": None,
                        "seat": seat, "created_at_us": _us(at), "updated_at_us": _us(trail[-1][2])})
        for seq, (step, after, when) in enumerate(sorted(trail, key=lambda s: s[2]), start=1):
            detail = {"seat": seat} if step in ("seat_ringing", "answered") else {}
            steps.append({"ticket_id": i, "seq": seq, "step": step, "state_after": after, "at_us": _us(when),
                          "source": "ami", "detail": detail})
    async with engine.begin() as conn:
        for chunk in range(0, len(tickets), 5000):
            await conn.execute(insert(Ticket), tickets[chunk:chunk + 5000])
        for chunk in range(0, len(steps), 20000):
            await conn.execute(insert(TicketStep), steps[chunk:chunk + 20000])
    return Truth(start_us, weeks, len(arrivals), abandoned, talk_s, ring_s, wrap_up_s, patience_s, seats)


def _us(seconds: float) -> int:
    return int(math.floor(seconds * 1e6))
