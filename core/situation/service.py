"""The day's hot-spot forecast, made once a day in a background task of its own and kept.

``SituationService`` owns one task (``core.tasks.every``): after each local midnight (and right after the
start, when the day has no forecast yet) it reads a year of located incidents from the store, fits both
models — the kernel baseline and the self-exciting process, for all incidents together and for each type
with enough history of its own (``MIN_TYPE_EVENTS``; a rarer type gets the all-incidents forecast times its
share) — in a worker thread, so the event loop that serves the desks and the dispatch never waits for it,
and keeps the result in memory and in ``situation_forecasts``. Nothing on a call's path calls it. A failed
round is logged and tried again at the next poll; the previous forecast stays until then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from core.situation import kde, sepp
from core.situation.grid import AreaGrid
from core.situation.history import (
    IncidentRecord,
    cell_stations,
    read_incidents,
    save_forecast,
)
from core.situation.incidents import DAY_S, Incidents, local_day_start
from core.tasks import every, stop_task

__all__ = ["ALL", "DayForecast", "SituationService", "compute"]

log = logging.getLogger(__name__)

ALL = ""  # the key of all incidents together
MIN_TYPE_EVENTS = 60  # a type needs this many incidents in the history for a model of its own
HISTORY_DAYS = 365.0
POLL_S = 600.0


@dataclass(frozen=True)
class DayForecast:
    """Expected incidents per cell for one local day, per model and type (``ALL``: every incident)."""

    day: str
    from_s: float
    to_s: float
    made_at_s: float
    grid: AreaGrid
    station_of: dict[str, str]  # cell → station
    expected: dict[str, dict[str, np.ndarray]]  # model → type → (cells,)
    params: dict[str, Any]
    events: int
    profile: sepp.WeekProfile = field(repr=False)

    def of(self, model: str, kind: str = ALL) -> np.ndarray:
        by_type = self.expected[model]
        return by_type.get(kind, np.zeros(len(self.grid)))

    def share_elapsed(self, at_s: float) -> float:
        """How much of the day's expected incidents the week's rhythm puts before ``at_s``."""
        whole = self.profile.integral_days(self.from_s, self.to_s)
        part = self.profile.integral_days(self.from_s, min(max(at_s, self.from_s), self.to_s))
        return part / whole if whole > 0 else 0.0

    def to_store(self, model: str) -> dict[str, dict[str, float]]:
        return {kind: {self.grid.cells[i]: round(float(v), 5) for i, v in enumerate(values) if v >= 1e-5}
                for kind, values in self.expected[model].items()}


def _incidents(grid: AreaGrid, rows: list[IncidentRecord]) -> Incidents:
    return Incidents.of(grid, [r.at_us / 1e6 for r in rows], [r.lat for r in rows], [r.lon for r in rows],
                        [r.cell for r in rows], [r.type for r in rows], [r.station for r in rows])


def compute(rows: list[IncidentRecord], station_of: dict[str, str], *, day_start_s: float, tz: str,
            history_days: float = HISTORY_DAYS, sepp_settings: sepp.SeppSettings = sepp.SeppSettings(),
            kde_settings: kde.KdeSettings = kde.KdeSettings(), made_at_s: float | None = None) -> DayForecast | None:
    """The forecast of the local day starting at ``day_start_s`` from ``rows`` (all before it); CPU-bound."""
    cells = set(station_of) | {r.cell for r in rows}
    if not cells:
        return None
    grid = AreaGrid.of(cells)
    incidents = _incidents(grid, rows)
    # The window begins with the store's history: a year's window over a month of records would read the
    # empty months as a quiet background and take every incident for a near-repeat.
    start = max(day_start_s - history_days * DAY_S, float(incidents.t[0]) if len(incidents) else 0.0)
    start = min(start, day_start_s - 3600.0)
    end = day_start_s + DAY_S
    everything = sepp.fit(grid, incidents, start_s=start, end_s=day_start_s, tz=tz, settings=sepp_settings)
    expected: dict[str, dict[str, np.ndarray]] = {"sepp": {}, "kde": {}}
    params: dict[str, Any] = {"sepp": {ALL: everything.summary()}, "kde": kde_settings.summary(),
                              "history_days": history_days}
    expected["sepp"][ALL] = sepp.forecast(grid, everything, incidents, at_s=day_start_s)
    expected["kde"][ALL] = kde.forecast(grid, incidents, at_s=day_start_s, settings=kde_settings)
    recent = incidents.between(start, day_start_s)
    for kind in recent.types():
        own = incidents.of_type(kind)
        count = len(own.between(start, day_start_s))
        expected["kde"][kind] = kde.forecast(grid, own, at_s=day_start_s, settings=kde_settings)
        if count >= MIN_TYPE_EVENTS:
            model = sepp.fit(grid, own, start_s=start, end_s=day_start_s, tz=tz, settings=sepp_settings)
            params["sepp"][kind] = model.summary()
            expected["sepp"][kind] = sepp.forecast(grid, model, own, at_s=day_start_s)
        else:
            share = count / max(len(recent), 1)
            params["sepp"][kind] = {"share_of_all": round(share, 4), "events": count}
            expected["sepp"][kind] = expected["sepp"][ALL] * share
    day = datetime.fromtimestamp(day_start_s, ZoneInfo(tz)).date().isoformat()
    return DayForecast(day, day_start_s, end, time.time() if made_at_s is None else made_at_s, grid,
                       dict(station_of), expected, params, len(recent), everything.profile)


class SituationService:
    """Makes each day's forecast in an owned task; keeps the latest in memory (``current``) and in the store."""

    def __init__(self, engine: AsyncEngine, *, tz: str, clock: Callable[[], float] = time.time,
                 history_days: float = HISTORY_DAYS, poll_s: float = POLL_S,
                 sepp_settings: sepp.SeppSettings = sepp.SeppSettings(),
                 kde_settings: kde.KdeSettings = kde.KdeSettings()) -> None:
        self.engine = engine
        self.tz = tz
        self.clock = clock
        self.history_days = history_days
        self.sepp_settings = sepp_settings
        self.kde_settings = kde_settings
        self._poll_s = poll_s
        self.current: DayForecast | None = None
        self.last_error: str | None = None
        self.runs = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.create_task(every(self._poll_s, self.run_due, what="situation forecast", log=log),
                                         name="situation-forecast")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def today_start(self) -> float:
        return local_day_start(self.clock(), self.tz)

    async def run_due(self) -> DayForecast | None:
        """Make today's forecast unless it is made already."""
        if self.current is not None and self.current.from_s == self.today_start():
            return None
        return await self.refresh()

    async def refresh(self) -> DayForecast | None:
        """Make today's forecast now (from every incident before today's start) and keep it."""
        async with self._lock:
            day_start = self.today_start()
            try:
                rows = await read_incidents(self.engine, round((day_start - self.history_days * DAY_S) * 1e6),
                                            round(day_start * 1e6))
                station_of = await cell_stations(self.engine)
                made = await asyncio.to_thread(
                    compute, rows, station_of, day_start_s=day_start, tz=self.tz, history_days=self.history_days,
                    sepp_settings=self.sepp_settings, kde_settings=self.kde_settings, made_at_s=self.clock())
                if made is not None:
                    for model in ("sepp", "kde"):
                        await save_forecast(
                            self.engine, day=made.day, model=model, made_at_us=round(made.made_at_s * 1e6),
                            from_us=round(made.from_s * 1e6), to_us=round(made.to_s * 1e6), events=made.events,
                            params=made.params if model == "sepp" else {"kde": made.params["kde"]},
                            expected=made.to_store(model))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise
            self.current, self.last_error = made, None
            self.runs += 1
            if made is not None:
                log.info("situation forecast for %s from %d incidents: %s", made.day, made.events,
                         made.params["sepp"][ALL])
            return made

    def status(self) -> dict[str, Any]:
        """Not a health check: a failed forecast must never take the backend out of a load balancer."""
        return {"error": self.last_error, "runs": self.runs, "day": None if self.current is None else self.current.day}
