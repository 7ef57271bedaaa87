"""How good a hot-spot forecast is: PAI and PEI*, in a day-by-day backtest that only ever trains on the past.

* PAI, the predictive accuracy index (Chainey et al. 2008): the share of the day's incidents that fell in
  the flagged cells divided by the share of the area flagged. Flagging 1 % of the city and catching 10 % of
  its incidents is a PAI of 10; a random map scores 1.
* PEI* (Hunt 2016, after Hunt's PEI): the flagged cells' hits divided by the most hits any choice of the same
  number of cells could have had that day (the day's busiest cells, known only afterwards) — 1 is a perfect
  map for that area, and it does not reward a model for a day that was simply busy.

Cells are flagged whole, the forecast's highest first (ties in the grid's cell order, so results repeat):
``max(1, round(share × cells))`` of them; the share of the area they actually cover is reported, since a
small grid cannot flag exactly 1 %. Both indices are pooled over the days (hits summed, then divided), the
usual way to keep a quiet day's 0/0 out of an average.

``backtest`` walks the days: for each day it asks every model for that day's forecast made at its start —
the models (``RollingSepp``, ``RollingKde``) see only incidents before that instant and refit on them — and
only then counts where the day's incidents fell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.situation import kde, sepp
from core.situation.grid import AreaGrid
from core.situation.incidents import DAY_S, Incidents

__all__ = ["SHARES", "Forecaster", "HitTally", "RollingKde", "RollingSepp", "backtest", "flag", "flagged_count"]

SHARES = (0.01, 0.02, 0.05)

Forecaster = Callable[[float], np.ndarray]  # day start → expected incidents per cell that day


def flagged_count(cells: int, share: float) -> int:
    return max(1, min(cells, round(share * cells)))


def flag(expected: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` cells with the highest forecast (ties: grid order)."""
    return np.argsort(-np.asarray(expected, float), kind="stable")[:k]


@dataclass
class HitTally:
    """One model at one area share, pooled over the days."""

    share: float
    cells: int
    area_share_sum: float = 0.0
    days: int = 0
    hits: int = 0
    incidents: int = 0
    best: int = 0

    def add(self, expected: np.ndarray, actual: np.ndarray, area: np.ndarray) -> None:
        chosen = flag(expected, self.cells)
        self.area_share_sum += float(area[chosen].sum() / area.sum())
        self.days += 1
        self.hits += int(actual[chosen].sum())
        self.incidents += int(actual.sum())
        self.best += int(np.sort(actual)[::-1][: self.cells].sum())

    @property
    def area_share(self) -> float:
        return self.area_share_sum / self.days if self.days else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.incidents if self.incidents else 0.0

    @property
    def pai(self) -> float:
        return self.hit_rate / self.area_share if self.area_share else 0.0

    @property
    def pei_star(self) -> float:
        return self.hits / self.best if self.best else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {"share": self.share, "cells": self.cells, "area_share": round(self.area_share, 5),
                "days": self.days, "hits": self.hits, "incidents": self.incidents, "best_hits": self.best,
                "hit_rate": round(self.hit_rate, 4), "pai": round(self.pai, 3), "pei_star": round(self.pei_star, 3)}


def backtest(grid: AreaGrid, incidents: Incidents, models: Mapping[str, Forecaster], *, first_day_s: float,
             days: int, shares: Sequence[float] = SHARES, against: Mapping[str, Incidents] | None = None,
             on_day: Callable[[int], object] | None = None) -> dict[str, list[HitTally]]:
    """Score each model's forecast of each of ``days`` days from ``first_day_s`` against what happened.

    ``against`` names, per model, other incidents to score it on (a type's model on that type's incidents);
    by default all of ``incidents``. All models walk the days together, in order.
    """
    tallies = {name: [HitTally(s, flagged_count(len(grid), s)) for s in shares] for name in models}
    truth = {name: (against or {}).get(name, incidents) for name in models}
    for d in range(days):
        at = first_day_s + d * DAY_S
        forecasts = {name: model(at) for name, model in models.items()}  # all made before the day is looked at
        for name, expected in forecasts.items():
            actual = truth[name].between(at, at + DAY_S).counts(len(grid))
            for tally in tallies[name]:
                tally.add(expected, actual, grid.area_m2)
        if on_day is not None:
            on_day(d)
    return tallies


class RollingSepp:
    """The self-exciting model as a forecaster: refit every ``refit_days`` on the ``history_days`` before.

    Each refit starts from the previous parameters. Between refits the parameters stay, but every forecast
    takes every incident up to its own instant (the near-repeats of yesterday count today).
    """

    def __init__(self, grid: AreaGrid, incidents: Incidents, *, tz: str, history_days: float = 365.0,
                 refit_days: float = 7.0, settings: sepp.SeppSettings = sepp.SeppSettings()) -> None:
        self.grid, self.incidents, self.tz = grid, incidents, tz
        self.history_days, self.refit_days, self.settings = history_days, refit_days, settings
        self.model: sepp.SeppFit | None = None
        self.fitted_at: float | None = None
        self.fits = 0
        self._last: tuple[float, np.ndarray] | None = None

    def __call__(self, at_s: float) -> np.ndarray:
        if self._last is not None and self._last[0] == at_s:
            return self._last[1]  # asked again the same day (for a type and for the sum of types)
        if self.fitted_at is not None and at_s < self.fitted_at:
            raise ValueError("a rolling forecaster only walks forward: it was fitted on a later day's past")
        if self.fitted_at is None or at_s - self.fitted_at >= self.refit_days * DAY_S:
            # The window begins no earlier than the history does (an empty stretch is no quiet background).
            start = max(at_s - self.history_days * DAY_S, float(self.incidents.t[0]) if len(self.incidents) else -1.0)
            self.model = sepp.fit(self.grid, self.incidents, start_s=min(start, at_s - DAY_S), end_s=at_s,
                                  tz=self.tz, settings=self.settings, start=self.model)
            self.fitted_at = at_s
            self.fits += 1
        assert self.model is not None
        expected = sepp.forecast(self.grid, self.model, self.incidents, at_s=at_s)
        self._last = (at_s, expected)
        return expected


class RollingKde:
    def __init__(self, grid: AreaGrid, incidents: Incidents, settings: kde.KdeSettings = kde.KdeSettings()) -> None:
        self.grid, self.incidents, self.settings = grid, incidents, settings

    def __call__(self, at_s: float) -> np.ndarray:
        return kde.forecast(self.grid, self.incidents, at_s=at_s, settings=self.settings)


class Summed:
    """Several forecasters' sum: all incidents as the sum of each type's model."""

    def __init__(self, parts: Sequence[Forecaster]) -> None:
        self.parts = tuple(parts)

    def __call__(self, at_s: float) -> np.ndarray:
        return np.sum([part(at_s) for part in self.parts], axis=0)
