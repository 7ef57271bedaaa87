"""HTTP API of the staffing planner: ``GET /api/staffing/plan`` for supervisors.

The plan reads weeks of ticket steps and fits a seasonal model, seconds of CPU:
it runs in a worker thread (the event loop also answers Asterisk, whose AMI
drops a reader that stalls) and is kept until the half hour changes, since the
history it reads changes only by whole half hours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.views import SERVICE
from core.errors import BadRequest
from core.http.replies import json_reply
from core.http.routes import SUPERVISORS, RouteTable
from core.seats.views import SEATS
from core.staffing.forecast import PLAN_DAYS_MAX, plan_seats
from core.staffing.history import HALF_HOUR_S, HISTORY_DAYS_MAX, load_history

routes = RouteTable("staffing")

DEFAULT_HISTORY_DAYS = 28
PLAN_QUERY: dict[str, dict[str, Any]] = {
    "days": {"type": "string", "pattern": "^[0-9]{1,2}$", "description": f"days to plan, 1..{PLAN_DAYS_MAX} (7)"},
    "history_days": {"type": "string", "pattern": "^[0-9]{1,3}$",
                     "description": f"days of history to learn from, 1..{HISTORY_DAYS_MAX} ({DEFAULT_HISTORY_DAYS})"},
}


class StaffingPlanner:
    """Builds plans from the store and keeps the last ones until the half hour turns."""

    def __init__(self, engine: AsyncEngine, *, timezone: str, wrap_up_s: Callable[[], float],
                 clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._timezone = timezone
        self._wrap_up_s = wrap_up_s
        self._clock = clock
        self._cache: dict[tuple[int, int, int, float], dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def plan(self, days: int, history_days: int) -> dict[str, Any]:
        now_us = round(self._clock() * 1e6)
        wrap_up = float(self._wrap_up_s())
        key = (days, history_days, now_us // (HALF_HOUR_S * 1_000_000), wrap_up)
        async with self._lock:
            if key not in self._cache:
                history = await load_history(self._engine, until_us=now_us, days=history_days,
                                             timezone=self._timezone, wrap_up_s=wrap_up)
                plan = await asyncio.to_thread(plan_seats, history, days)
                self._cache = {key: {**plan.to_json(), "generated_at_us": now_us, "timezone": self._timezone}}
            return self._cache[key]


STAFFING = web.AppKey("staffing", StaffingPlanner)


def _whole(request: web.Request, name: str, default: int, top: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= top:
        raise BadRequest(f'"{name}" must be a whole number 1..{top}', error_id="invalid-staffing-query")
    return int(raw)


@routes.get("/api/staffing/plan", SUPERVISORS, "Seats per half hour for the coming days: forecast calls, Erlang C "
            "and Erlang A for the center's and NENA's targets, against the seats seen in history", query=PLAN_QUERY)
async def get_plan(request: web.Request) -> web.Response:
    days = _whole(request, "days", 7, PLAN_DAYS_MAX)
    history_days = _whole(request, "history_days", DEFAULT_HISTORY_DAYS, HISTORY_DAYS_MAX)
    return json_reply(await request.app[STAFFING].plan(days, history_days))


def add_staffing_routes(app: web.Application, *, timezone: str) -> None:
    """The planner on the app's store; wrap-up is read from the seat board at each plan (it may be changed)."""
    service = app[SERVICE]
    seats = app[SEATS]
    app[STAFFING] = StaffingPlanner(service.engine, timezone=timezone, wrap_up_s=lambda: seats.wrap_up_s,
                                    clock=service.clock)
    routes.add_to(app)
