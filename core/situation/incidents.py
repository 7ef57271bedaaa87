"""Located incidents as the models see them: time, place on the area's plane, cell, type.

One small container of parallel numpy arrays, sorted by time, so a model
takes "everything before this instant" with one binary search and a
backtest never hands a model an incident from its own future.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from core.situation.grid import AreaGrid

__all__ = ["DAY_S", "Incidents", "local_day_start", "local_hours"]

DAY_S = 86_400.0


@dataclass(frozen=True)
class Incidents:
    t: np.ndarray  # epoch seconds, ascending
    xy: np.ndarray  # (n, 2) metres on the grid's plane
    cell: np.ndarray  # index into the grid's cells
    type: np.ndarray  # object array of type names ("" when unknown)
    station: np.ndarray | None = None  # object array of station ids (None when unknown)

    @classmethod
    def of(cls, grid: AreaGrid, t: Sequence[float], lat: Sequence[float], lon: Sequence[float],
           cells: Sequence[str] | None = None, types: Sequence[str] | None = None,
           stations: Sequence[str | None] | None = None) -> Incidents:
        """From raw rows; incidents outside the grid's cells are left out (they are not in the forecast area)."""
        t_arr = np.asarray(t, float)
        xy = grid.project(lat, lon) if len(t_arr) else np.zeros((0, 2))
        index = grid.cell_index(cells) if cells is not None else grid.locate(xy)
        kinds = np.array(list(types) if types is not None else [""] * len(t_arr), dtype=object)
        places = np.array(list(stations), dtype=object) if stations is not None else None
        keep = index >= 0
        order = np.argsort(t_arr[keep], kind="stable")
        return cls(t_arr[keep][order], xy[keep][order], index[keep][order], kinds[keep][order],
                   None if places is None else places[keep][order])

    @classmethod
    def empty(cls) -> Incidents:
        return cls(np.zeros(0), np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object))

    def __len__(self) -> int:
        return len(self.t)

    def _take(self, sel: slice | np.ndarray) -> Incidents:
        return Incidents(self.t[sel], self.xy[sel], self.cell[sel], self.type[sel],
                         None if self.station is None else self.station[sel])

    def between(self, start_s: float, end_s: float) -> Incidents:
        """Those with ``start_s <= t < end_s``."""
        lo, hi = np.searchsorted(self.t, [start_s, end_s], side="left")
        return self._take(slice(lo, hi))

    def of_type(self, kind: str) -> Incidents:
        return self._take(self.type == kind)

    def types(self) -> list[str]:
        return sorted({str(k) for k in self.type if k})

    def counts(self, cells: int) -> np.ndarray:
        return np.bincount(self.cell, minlength=cells).astype(float)


def local_hours(times_s: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray]:
    """Local hour of day (0-23) and weekday (0 Monday) of each instant, in the center's time zone."""
    zone = ZoneInfo(tz)
    times_s = np.asarray(times_s, float)
    if not len(times_s):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Offsets change only at a zone's transitions: take each distinct whole hour once.
    hours = np.floor(times_s / 3600.0).astype(np.int64)
    unique, inverse = np.unique(hours, return_inverse=True)
    hod = np.empty(len(unique), dtype=np.int64)
    dow = np.empty(len(unique), dtype=np.int64)
    for k, h in enumerate(unique):
        moment = datetime.fromtimestamp(float(h) * 3600.0 + 1800.0, zone)
        hod[k], dow[k] = moment.hour, moment.weekday()
    return hod[inverse], dow[inverse]


def local_day_start(at_s: float, tz: str) -> float:
    """The start (epoch seconds) of the local day holding ``at_s``."""
    moment = datetime.fromtimestamp(at_s, ZoneInfo(tz))
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
