"""Incidents simulated from known parameters: the check that the fit finds what was put in.

No public incident data can be used here, so the models are validated on
histories drawn from the model itself (background plus near-repeats, by
branching: every incident, background or not, has Poisson(θ) offspring,
each ω-exponentially later and σ-Gaussian away) and on a generated
"city-year" of several incident types, some with near-repeats and some
without, over the lab city's grid. Offspring falling outside the area are
lost, as incidents over the city's border are in the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.situation.grid import AreaGrid, _spacing
from core.situation.incidents import DAY_S, Incidents, local_hours

__all__ = ["CITY_TYPES", "Truth", "city_year", "simulate"]


@dataclass(frozen=True)
class Truth:
    """Parameters of a simulated history (units as in ``core.situation.sepp``)."""

    mu: float  # background incidents per day
    theta: float
    omega: float  # per day
    sigma_m: float
    hour_amplitude: float = 0.5  # the day's rhythm: 1 ± amplitude, highest at peak_hour
    peak_hour: int = 21
    weekend: float = 1.2  # Saturday and Sunday against the other days
    hotspots: int = 4  # background centres over an even floor
    hotspot_km: float = 1.5
    floor: float = 0.3  # share of the background spread evenly

    def hour_factor(self) -> np.ndarray:
        h = np.arange(24)
        return 1.0 + self.hour_amplitude * np.cos(2 * math.pi * (h - self.peak_hour) / 24.0)

    def weekday_factor(self) -> np.ndarray:
        w = np.array([1, 1, 1, 1, 1, self.weekend, self.weekend], float)
        return w / w.mean()


# A city's incident types: (name, truth). Thefts and fights come back near where they were; traffic
# accidents and calls for help do not.
CITY_TYPES: tuple[tuple[str, Truth], ...] = (
    ("property", Truth(mu=9.0, theta=0.45, omega=0.5, sigma_m=250.0, peak_hour=3, hotspots=5)),
    ("person", Truth(mu=5.0, theta=0.3, omega=2.0, sigma_m=150.0, peak_hour=23, hotspots=3, weekend=1.5)),
    ("dispute", Truth(mu=8.0, theta=0.2, omega=1.0, sigma_m=120.0, peak_hour=20, hotspots=6)),
    ("traffic", Truth(mu=10.0, theta=0.0, omega=1.0, sigma_m=100.0, peak_hour=8, hotspots=4, weekend=0.8)),
    ("public_service", Truth(mu=6.0, theta=0.0, omega=1.0, sigma_m=100.0, peak_hour=14, hotspots=2, floor=0.6)),
)


def _background_cells(grid: AreaGrid, truth: Truth, rng: np.random.Generator) -> np.ndarray:
    """Share of the background per cell: a few Gaussian hot spots over an even floor (by area)."""
    even = grid.area_m2 / grid.total_area_m2
    centres = grid.xy[rng.choice(len(grid), size=min(truth.hotspots, len(grid)), replace=False)]
    bumps = np.zeros(len(grid))
    s = truth.hotspot_km * 1000.0
    for c in centres:
        bumps += np.exp(-((grid.xy - c) ** 2).sum(axis=1) / (2 * s * s)) * rng.uniform(0.5, 1.5)
    bumps *= grid.area_m2
    if bumps.sum() <= 0:
        return even
    return truth.floor * even + (1 - truth.floor) * bumps / bumps.sum()


def _points_in(grid: AreaGrid, cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A point uniform within each given cell (rejection from the cell's surrounding square)."""
    out = np.zeros((len(cells), 2))
    todo = np.arange(len(cells))
    edge = _spacing(grid) / math.sqrt(3)
    while len(todo):
        guess = grid.xy[cells[todo]] + rng.uniform(-edge, edge, size=(len(todo), 2))
        ok = grid.locate(guess) == cells[todo]
        out[todo[ok]] = guess[ok]
        todo = todo[~ok]
    return out


def simulate(grid: AreaGrid, truth: Truth, *, start_s: float, days: float, tz: str, seed: int,
             kind: str = "") -> Incidents:
    """A history of ``days`` days from ``start_s`` drawn from ``truth`` (reproducible with ``seed``)."""
    rng = np.random.default_rng(seed)
    end_s = start_s + days * DAY_S
    share = _background_cells(grid, truth, rng)
    # Background: a Poisson process at the peak rate, thinned by the week's rhythm.
    hour, week = truth.hour_factor(), truth.weekday_factor()
    peak = float(hour.max() * week.max())
    count = rng.poisson(truth.mu * days * peak)
    t = np.sort(rng.uniform(start_s, end_s, size=count))
    hod, dow = local_hours(t, tz)
    # The factors average one over a whole week of hours, as the model's profile does.
    rhythm = hour[hod] * week[dow]
    t = t[rng.uniform(0, peak, size=count) < rhythm]
    cells = rng.choice(len(grid), size=len(t), p=share)
    xy = _points_in(grid, cells, rng)
    all_t, all_xy, all_cell = [t], [xy], [cells]
    parents_t, parents_xy = t, xy
    while len(parents_t) and truth.theta > 0:
        n_off = rng.poisson(truth.theta, size=len(parents_t))
        src = np.repeat(np.arange(len(parents_t)), n_off)
        child_t = parents_t[src] + rng.exponential(1.0 / truth.omega, size=len(src)) * DAY_S
        child_xy = parents_xy[src] + rng.normal(0.0, truth.sigma_m, size=(len(src), 2))
        keep = child_t < end_s
        child_t, child_xy = child_t[keep], child_xy[keep]
        child_cell = grid.locate(child_xy) if len(child_t) else np.zeros(0, dtype=np.int64)
        inside = child_cell >= 0
        child_t, child_xy, child_cell = child_t[inside], child_xy[inside], child_cell[inside]
        all_t.append(child_t)
        all_xy.append(child_xy)
        all_cell.append(child_cell)
        parents_t, parents_xy = child_t, child_xy
    t = np.concatenate(all_t)
    order = np.argsort(t, kind="stable")
    return Incidents(t[order], np.concatenate(all_xy)[order], np.concatenate(all_cell)[order].astype(np.int64),
                     np.full(len(t), kind, dtype=object))


def city_year(grid: AreaGrid, *, start_s: float, tz: str, seed: int, days: float = 365.0,
              types: tuple[tuple[str, Truth], ...] = CITY_TYPES) -> Incidents:
    """Every type of ``types`` over ``days`` days, merged in time order."""
    parts = [simulate(grid, truth, start_s=start_s, days=days, tz=tz, seed=seed + k, kind=name)
             for k, (name, truth) in enumerate(types)]
    t = np.concatenate([p.t for p in parts])
    order = np.argsort(t, kind="stable")
    return Incidents(t[order], np.concatenate([p.xy for p in parts])[order],
                     np.concatenate([p.cell for p in parts])[order], np.concatenate([p.type for p in parts])[order])
