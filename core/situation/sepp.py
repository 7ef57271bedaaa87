"""The self-exciting point process of Mohler et al. (JASA 2011): background plus near-repeat triggering.

An incident raises, for a while and close by, the chance of another (the
burglar comes back, the feud flares again, the bar street's Friday goes on).
The conditional intensity at time t (days) and place x (metres) is

    λ(t, x) = μ · b(x) · p(t)  +  Σ_{t_j < t}  θ · ω e^{−ω (t − t_j)} · N(x − x_j; σ²)

* μ: background incidents per day over the whole area; b(x): where they fall (per m², integrating to one:
  constant within a cell, a kernel density of the incidents judged background, as in the paper);
  p(t): the week's rhythm (``core.situation.profile``), averaging one;
* θ: expected near-repeats each incident sets off; ω: how fast that wears off (1/ω days on average);
  σ: how far away they fall (metres, an isotropic Gaussian).

The paper's triggering kernel is non-parametric; here it is exponential in time and Gaussian in space, as in
the parametric form used in its follow-ups (Mohler 2014; Mohler et al., JASA 2015), so that θ, ω and σ are
readable figures a supervisor can be told, and can be checked against a simulation of known parameters.

Fitting is expectation-maximisation by stochastic declustering: each incident is, with some probability, a
background incident or the offspring of an earlier one (E-step); those probabilities re-estimate μ, b, p, θ,
ω and σ in closed form (M-step), until the parameters stop moving. Only pairs closer than ``max_lag_days``
and ``reach_m`` are candidate parent and offspring — beyond those the kernel is negligible for the values it
can take, and the work stays linear in the history. The edge of the window in time (an incident near its end
has not yet had its offspring) and of the area in space (part of a kernel falls outside) are both corrected
for in θ and ω, so a short window or a small city does not bias them.

The forecast for ``[T, T + horizon)`` per cell is the background's expected count there plus what every
earlier incident's kernel still puts into the window — the first generation only (offspring of incidents
that have not happened yet are left out, as in the paper's daily forecasts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from core.situation.grid import AreaGrid, _spacing
from core.situation.incidents import DAY_S, Incidents, local_hours
from core.situation.profile import WeekProfile, exposure

__all__ = ["SeppFit", "SeppSettings", "fit", "forecast"]

BACKGROUND_FLOOR = 0.005  # share of the background spread evenly: no cell is ever impossible
SIGMA_MIN_M = 20.0  # GPS noise: two calls about one incident are not a 1-metre near-repeat
OMEGA_MAX = 48.0  # per day: a trigger gone within half an hour is the same incident reported twice
THETA_MAX = 0.95  # below one, or the process explodes


@dataclass(frozen=True)
class SeppSettings:
    max_lag_days: float = 30.0
    reach_m: float = 2000.0
    background_bandwidth_m: float | None = None  # default: the distance between neighbouring cells
    max_iterations: int = 300
    tolerance: float = 1e-5
    week_profile: bool = True


@dataclass(frozen=True)
class SeppFit:
    mu: float  # background incidents per day over the area
    theta: float  # near-repeats per incident
    omega: float  # per day
    sigma_m: float
    background: np.ndarray = field(repr=False)  # (cells,) share of the background per cell, sums to one
    profile: WeekProfile = field(repr=False)
    events: int = 0
    days: float = 0.0
    iterations: int = 0
    converged: bool = False
    log_likelihood: float = float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "mu_per_day": round(self.mu, 4), "theta": round(self.theta, 4), "omega_per_day": round(self.omega, 4),
            "mean_delay_h": round(24.0 / self.omega, 2) if self.omega > 0 else None,
            "sigma_m": round(self.sigma_m, 1), "events": self.events, "days": round(self.days, 2),
            "iterations": self.iterations, "converged": self.converged,
        }


def _pairs(t_days: np.ndarray, xy: np.ndarray, max_lag: float, reach: float) -> tuple[np.ndarray, ...]:
    """Candidate (offspring i, parent j) pairs: 0 < t_i − t_j ≤ max_lag and |x_i − x_j| ≤ reach."""
    if len(t_days) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    block = np.floor((t_days - t_days[0]) / max_lag).astype(np.int64)
    bounds = np.searchsorted(block, np.arange(block[-1] + 2))
    out_i, out_j = [], []
    for k in range(block[-1] + 1):
        a0, a1 = bounds[k], bounds[k + 1]
        if a0 == a1:
            continue
        b0 = bounds[k - 1] if k else a0
        near = cKDTree(xy[a0:a1]).sparse_distance_matrix(cKDTree(xy[b0:a1]), reach, output_type="ndarray")
        if not len(near):
            continue
        i = near["i"].astype(np.int64) + a0
        j = near["j"].astype(np.int64) + b0
        dt = t_days[i] - t_days[j]
        keep = (dt > 0) & (dt <= max_lag)
        out_i.append(i[keep])
        out_j.append(j[keep])
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    i = np.concatenate(out_i)
    j = np.concatenate(out_j)
    return i, j, t_days[i] - t_days[j], ((xy[i] - xy[j]) ** 2).sum(axis=1)


def fit(grid: AreaGrid, incidents: Incidents, *, start_s: float, end_s: float, tz: str,
        settings: SeppSettings = SeppSettings(), start: SeppFit | None = None) -> SeppFit:
    """Fit on the incidents in ``[start_s, end_s)``; ``start``: a previous fit to begin from (fewer rounds)."""
    seen = incidents.between(start_s, end_s)
    n = len(seen)
    days = (end_s - start_s) / DAY_S
    if days <= 0:
        raise ValueError("the training window must have a positive length")
    flat = WeekProfile.flat(tz)
    if n < 2:
        share = grid.area_m2 / grid.total_area_m2
        return SeppFit(n / days, 0.0, 1.0, 200.0, share, flat, n, days, 0, True, float("nan"))
    t = (seen.t - start_s) / DAY_S
    xy, cell = seen.xy, seen.cell
    pi, pj, dt, d2 = _pairs(t, xy, settings.max_lag_days, settings.reach_m)
    area = grid.area_m2
    bandwidth = settings.background_bandwidth_m or _spacing(grid)
    remaining = days - t  # time each incident's offspring had inside the window

    if start is not None:
        mu, theta, omega, sigma = start.mu, max(start.theta, 0.05), start.omega, start.sigma_m
        background, profile = start.background, start.profile if settings.week_profile else flat
    else:
        mu, theta, omega, sigma = 0.7 * n / days, 0.3, 1.0, settings.reach_m / 8.0
        background = _smooth(grid, np.bincount(cell, minlength=len(grid)).astype(float), bandwidth)
        profile = flat
    hours, window = local_hours(seen.t, tz), exposure(start_s, end_s, tz)
    p_at = profile.at_hours(hours)
    converged, rounds, loglik = False, 0, float("nan")
    for rounds in range(1, settings.max_iterations + 1):
        # E-step: who set off whom.
        bg = mu * background[cell] / area[cell] * p_at
        norm = theta * omega / (2.0 * math.pi * sigma * sigma)
        trig = norm * np.exp(-omega * dt - d2 / (2.0 * sigma * sigma))
        lam = bg + np.bincount(pi, weights=trig, minlength=n)
        p_bg = bg / lam
        p_tr = trig / lam[pi]
        kept = grid.kept_share(cell, sigma)
        # M-step.
        offspring = float(p_tr.sum())
        new_theta = offspring / float((kept * (1.0 - np.exp(-omega * remaining))).sum())
        new_omega = omega
        if offspring > 0:
            for _ in range(20):  # ω's equation holds θ's edge term: a few fixed-point steps
                tail = float((kept * remaining * np.exp(-new_omega * remaining)).sum())
                new_omega = offspring / (float((p_tr * dt).sum()) + new_theta * tail)
            new_sigma = math.sqrt(float((p_tr * d2).sum()) / (2.0 * offspring))
        else:
            new_sigma = sigma
        new_theta = min(new_theta, THETA_MAX)
        new_omega = min(max(new_omega, 1.0 / settings.max_lag_days), OMEGA_MAX)
        new_sigma = min(max(new_sigma, SIGMA_MIN_M), settings.reach_m / 3.0)
        if settings.week_profile:
            profile = WeekProfile.estimate_at(hours, p_bg, window, tz)
            p_at = profile.at_hours(hours)
        new_mu = float(p_bg.sum()) / days  # the profile averages one over the window
        background = _smooth(grid, np.bincount(cell, weights=p_bg, minlength=len(grid)), bandwidth)
        change = max(abs(new_mu - mu) / mu, abs(new_theta - theta) / max(theta, 1e-3),
                     abs(new_omega - omega) / omega, abs(new_sigma - sigma) / sigma)
        mu, theta, omega, sigma = new_mu, new_theta, new_omega, new_sigma
        loglik = float(np.log(lam).sum() - mu * days - offspring)
        if change < settings.tolerance:
            converged = True
            break
    return SeppFit(mu, theta, omega, sigma, background, profile, n, days, rounds, converged, loglik)


def _smooth(grid: AreaGrid, weights: np.ndarray, bandwidth_m: float) -> np.ndarray:
    """Share per cell of a Gaussian kernel density of the (weighted) incidents binned to cell centres."""
    total = float(weights.sum())
    even = grid.area_m2 / grid.total_area_m2
    if total <= 0:
        return even
    mass = weights @ grid.smoothing(bandwidth_m)
    if mass.sum() <= 0:
        return even
    return (1.0 - BACKGROUND_FLOOR) * mass / mass.sum() + BACKGROUND_FLOOR * even


def forecast(grid: AreaGrid, model: SeppFit, incidents: Incidents, *, at_s: float,
             horizon_s: float = DAY_S) -> np.ndarray:
    """Expected incidents per cell in ``[at_s, at_s + horizon_s)`` from the incidents before ``at_s``."""
    background = model.mu * model.background * model.profile.integral_days(at_s, at_s + horizon_s)
    if model.theta <= 0:
        return background
    past = incidents.between(at_s - 40.0 / model.omega * DAY_S, at_s)  # e^-40: nothing left of older ones
    if not len(past):
        return background
    age0 = (at_s - past.t) / DAY_S
    weight = model.theta * (np.exp(-model.omega * age0) - np.exp(-model.omega * (age0 + horizon_s / DAY_S)))
    return background + grid.gaussian_mass(past.xy, weight, model.sigma_m)
