"""The coming days' half hours: calls forecast from history, and the seats each half hour needs.

Forecast. Calls per half hour have a weekly season of 336 half hours (a
Saturday night is not a Tuesday morning). With at least three weeks of history
the last week is held out: Holt-Winters (statsmodels ``ExponentialSmoothing``,
additive weekly season, heuristic start, no trend) is fitted on the weeks before
it, and its error on the held-out week (mean absolute error, calls per half hour)
is set beside the seasonal-naive baseline's (each half hour as it was a week
earlier). The better of the two on that week is refitted on all of history and
forecasts; the report names it and both errors. With less history the method
falls back, and says so: two weeks or fewer is the seasonal-naive week (no
hold-out to judge a model on), less than a week the mean of each half hour of the
day over the days there are, less than a day the flat mean.

Seats. Each forecast half hour is planned for two targets — the center's (95 %
of calls answered within 3 s) and NENA's (90 % within 15 s) — by Erlang C and, once
the history gives callers' patience, by Erlang A (``core.staffing.erlang``). The
answer time includes the answering seat's ring, so the queue is asked for
``target − answer delay``, in whole seconds (``queue_wait_s``): Asterisk's queue
offers a waiting caller a freed seat only at its next check, once a second, so
waits come in whole seconds and 1.98 s of room is 1 s (measured in the lab:
docs/staffing.md). The suggested seats are Erlang C's for the center's
target: for an emergency line an abandoned caller is a call-back at best, so the
plan does not lean on callers giving up (Erlang A's smaller figure is shown
beside it). They are compared with the seats that answered calls in the same
half hour of the week in history (the project keeps no duty roster of seats; see
``core.staffing.history``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.staffing.erlang import Performance, PlanningError, seats_for
from core.staffing.history import HALF_HOUR_US, SLOTS_PER_DAY, SLOTS_PER_WEEK, History

__all__ = ["Forecast", "Plan", "Target", "TARGETS", "forecast_calls", "plan_seats", "queue_wait_s"]

PLAN_DAYS_MAX = 14


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    service_level: float
    within_s: float


TARGETS = (Target("center", 0.95, 3.0), Target("nena", 0.90, 15.0))


@dataclass(frozen=True)
class Forecast:
    start_us: int  # the first forecast half hour
    calls: np.ndarray  # expected calls per half hour
    method: str  # "holt_winters", "seasonal_naive", "daily_profile", "flat_mean", "none"
    reason: str
    holdout: dict[str, Any] = field(default_factory=dict)  # MAE of both on the held-out week, when there was one


def _holt_winters(series: np.ndarray, horizon: int) -> np.ndarray:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    model = ExponentialSmoothing(series.astype(float), trend=None, seasonal="add",
                                 seasonal_periods=SLOTS_PER_WEEK, initialization_method="heuristic")
    with warnings.catch_warnings():
        # convergence chatter from the optimiser is not an error of the plan; the hold-out judges the fit
        warnings.simplefilter("ignore")
        fitted = model.fit()
        return np.clip(np.asarray(fitted.forecast(horizon), dtype=float), 0, None)


def _seasonal_naive(series: np.ndarray, horizon: int) -> np.ndarray:
    week = series[-SLOTS_PER_WEEK:].astype(float)
    return np.resize(week, horizon)


def forecast_calls(history: History, horizon: int) -> Forecast:
    """``horizon`` half hours from the end of ``history``."""
    series = history.calls.astype(float)
    start = history.start_us + history.slots * HALF_HOUR_US
    n = len(series)
    if n == 0 or series.sum() == 0:
        return Forecast(start, np.zeros(horizon), "none", "no calls in the history: nothing to plan for")
    if n >= 3 * SLOTS_PER_WEEK:
        train, held = series[:-SLOTS_PER_WEEK], series[-SLOTS_PER_WEEK:]
        hw = _holt_winters(train, SLOTS_PER_WEEK)
        naive = _seasonal_naive(train, SLOTS_PER_WEEK)
        mae_hw = float(np.mean(np.abs(hw - held)))
        mae_naive = float(np.mean(np.abs(naive - held)))
        holdout = {"weeks_trained": len(train) // SLOTS_PER_WEEK, "holdout_half_hours": SLOTS_PER_WEEK,
                   "mae_holt_winters": round(mae_hw, 3), "mae_seasonal_naive": round(mae_naive, 3),
                   "mean_calls": round(float(held.mean()), 3)}
        if mae_hw <= mae_naive:
            return Forecast(start, _holt_winters(series, horizon), "holt_winters",
                            "Holt-Winters beat the seasonal-naive week on the held-out week", holdout)
        return Forecast(start, _seasonal_naive(series, horizon), "seasonal_naive",
                        "the seasonal-naive week beat Holt-Winters on the held-out week", holdout)
    if n >= SLOTS_PER_WEEK:
        return Forecast(start, _seasonal_naive(series, horizon), "seasonal_naive",
                        f"{n / SLOTS_PER_WEEK:.1f} weeks of history: fewer than 3 (two to fit a weekly season, "
                        "one to check it), so each half hour is forecast as it was a week earlier")
    if n >= SLOTS_PER_DAY:
        days = n // SLOTS_PER_DAY
        recent = series[-days * SLOTS_PER_DAY:].reshape(days, SLOTS_PER_DAY).mean(axis=0)
        # recent[j] is the half hour of the day (s0 + j) % 48, s0 that of the first of those days' half hours
        s0 = history.slot_of_week(n - days * SLOTS_PER_DAY) % SLOTS_PER_DAY
        first = history.slot_of_week(n) % SLOTS_PER_DAY
        return Forecast(start, np.array([recent[(first + i - s0) % SLOTS_PER_DAY] for i in range(horizon)]),
                        "daily_profile", f"{days} days of history: less than a week, so no weekly season; each "
                                         "half hour is the mean of the same half hour over those days")
    return Forecast(start, np.full(horizon, float(series.mean())), "flat_mean",
                    "less than a day of history: every half hour is forecast at the mean")


@dataclass(frozen=True)
class Plan:
    forecast: Forecast
    history: History
    handle_s: float
    patience_s: float | None
    answer_delay_s: float
    half_hours: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        f = self.forecast
        return {
            "history": self.history.summary(),
            "forecast": {"method": f.method, "reason": f.reason, "holdout": f.holdout, "from_us": f.start_us,
                         "half_hours": len(f.calls)},
            "assumptions": {
                "handle_s": round(self.handle_s, 3),
                "patience_s": None if self.patience_s is None else round(self.patience_s, 3),
                "answer_delay_s": round(self.answer_delay_s, 3),
                "targets": [{"name": t.name, "service_level": t.service_level, "within_s": t.within_s}
                            for t in TARGETS],
                "suggested": "Erlang C seats for the center's target",
                "roster": "no duty roster of seats is kept: compared with the seats that answered calls in the "
                          "same half hour of the week in history (a lower bound of the seats logged in)",
            },
            "half_hours": self.half_hours,
        }


def plan_seats(history: History, days: int, *, handle_s: float | None = None) -> Plan:
    """Seats per half hour for the next ``days`` days after ``history``."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= PLAN_DAYS_MAX:
        raise PlanningError(f"a plan covers 1..{PLAN_DAYS_MAX} days, got {days!r}")
    handle = handle_s if handle_s is not None else history.handle_s
    if handle is None:
        raise PlanningError("no answered call in the history gives a handling time; nothing to plan with",
                            error_id="no-handling-time", status=409)
    forecast = forecast_calls(history, days * SLOTS_PER_DAY)
    patience = history.patience_s
    delay = history.answer_delay_s
    seen = _seats_seen_by_slot_of_week(history)
    first_slot = history.slot_of_week(history.slots)
    rows = []
    for i, expected in enumerate(forecast.calls):
        rate = float(expected) / (HALF_HOUR_US / 1e6)
        row: dict[str, Any] = {"start_us": forecast.start_us + i * HALF_HOUR_US,
                               "calls": round(float(expected), 2), "erlangs": round(rate * handle, 3)}
        for target in TARGETS:
            wait_s = queue_wait_s(target.within_s, delay)
            row[f"{target.name}_erlang_c"] = _cell(_plan(rate, handle, target, wait_s, None))
            if patience is not None:
                row[f"{target.name}_erlang_a"] = _cell(_plan(rate, handle, target, wait_s, patience))
        slot = (first_slot + i) % SLOTS_PER_WEEK
        row["suggested_seats"] = row["center_erlang_c"]["seats"]
        row["seats_seen"] = seen.get(slot)
        rows.append(row)
    return Plan(forecast, history, handle, patience, delay, rows)


def queue_wait_s(within_s: float, answer_delay_s: float) -> float:
    """The queue wait a caller can be promised when he must be answered within ``within_s``.

    The seat's ring (``answer_delay_s``) comes off the target, and what is left is rounded down to
    whole seconds: app_queue looks for a free seat for each waiting caller once a second, so a caller
    who is not offered a seat at once waits 1 s, 2 s, … (plus a few milliseconds), never in between.
    """
    return float(max(0, math.floor(within_s - answer_delay_s + 1e-9)))


def _plan(rate: float, handle: float, target: Target, wait_s: float, patience: float | None) -> Performance:
    # An emergency line is never left without a seat, however quiet the forecast: at least one.
    return seats_for(max(rate, 0.0), handle, target_s=wait_s, service_level=target.service_level,
                     patience_s=patience)


def _cell(perf: Performance) -> dict[str, Any]:
    return {"seats": perf.seats, "service_level": round(perf.service_level, 4),
            "occupancy": round(perf.occupancy, 4), "abandonment": round(perf.abandonment, 4),
            "wait_probability": round(perf.wait_probability, 4)}


def _seats_seen_by_slot_of_week(history: History) -> dict[int, float]:
    """Mean seats that answered calls in each half hour of the week, over the weeks of history."""
    sums: dict[int, list[int]] = {}
    first = history.slot_of_week(0)
    for i, count in enumerate(history.seats_seen):
        sums.setdefault((first + i) % SLOTS_PER_WEEK, []).append(int(count))
    return {slot: round(float(np.mean(v)), 2) for slot, v in sums.items()}

