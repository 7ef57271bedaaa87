"""The baseline every hot-spot model has to beat: a space-time kernel density of the recent past.

What crime analysts draw by hand (Chainey et al. 2008, "prospective" maps after Bowers et al. 2004): every
incident of the last ``lookback_days`` spreads a Gaussian of ``bandwidth_m`` over the cells, weighted down by
half every ``half_life_days`` so last week counts more than last month. Scaled so the area's total is the
recent daily rate (with the same weights) times the horizon: a count per cell, like the self-exciting
model's, though only its ranking matters for the hit rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.situation.grid import AreaGrid
from core.situation.incidents import DAY_S, Incidents

__all__ = ["KdeSettings", "forecast"]


@dataclass(frozen=True)
class KdeSettings:
    bandwidth_m: float = 400.0  # about half the distance between resolution-8 cell centres
    lookback_days: float = 56.0
    half_life_days: float = 14.0

    def summary(self) -> dict[str, float]:
        return {"bandwidth_m": self.bandwidth_m, "lookback_days": self.lookback_days,
                "half_life_days": self.half_life_days}


def forecast(grid: AreaGrid, incidents: Incidents, *, at_s: float, horizon_s: float = DAY_S,
             settings: KdeSettings = KdeSettings()) -> np.ndarray:
    """Expected incidents per cell in ``[at_s, at_s + horizon_s)`` from those of the lookback before ``at_s``."""
    past = incidents.between(at_s - settings.lookback_days * DAY_S, at_s)
    if not len(past):
        return np.zeros(len(grid))
    age = (at_s - past.t) / DAY_S
    weight = 0.5 ** (age / settings.half_life_days)
    # ∫ 0.5^(a/h) da over the lookback: the weighted number of days the weights stand for.
    h = settings.half_life_days
    weighted_days = h / math.log(2) * (1 - 0.5 ** (settings.lookback_days / h))
    shape = grid.gaussian_mass(past.xy, weight, settings.bandwidth_m)
    if shape.sum() <= 0:
        return shape
    return shape / shape.sum() * float(weight.sum()) / weighted_days * horizon_s / DAY_S
