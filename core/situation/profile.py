"""The week's rhythm of incidents: an hour-of-day and a day-of-week factor, each averaging one.

Night-time fights and rush-hour accidents make the background rate vary
within the day far more than between neighbouring days; the profile carries
that, so a forecast for "the next 24 hours" made at 06:00 and one made at
18:00 differ where they should. Factors are per local hour and weekday of
the center's time zone and multiply (a separable week); they are scaled so
that their average over the training window is exactly one, which keeps the
background rate μ in events per day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.situation.incidents import local_hours

__all__ = ["WeekProfile", "exposure"]

PSEUDO = 1.0  # events added to every hour and weekday: a thin history gives a flat profile, not a jagged one


@dataclass(frozen=True)
class WeekProfile:
    hour: np.ndarray  # (24,)
    weekday: np.ndarray  # (7,) Monday first
    tz: str

    @classmethod
    def flat(cls, tz: str) -> WeekProfile:
        return cls(np.ones(24), np.ones(7), tz)

    @classmethod
    def estimate(cls, times_s: np.ndarray, weights: np.ndarray, start_s: float, end_s: float, tz: str) -> WeekProfile:
        """From (weighted) incidents in ``[start_s, end_s)``, against how often each hour and weekday occur there."""
        return cls.estimate_at(local_hours(times_s, tz), weights, exposure(start_s, end_s, tz), tz)

    @classmethod
    def estimate_at(cls, hours: tuple[np.ndarray, np.ndarray], weights: np.ndarray,
                    window: tuple[np.ndarray, np.ndarray], tz: str) -> WeekProfile:
        """``estimate`` with the incidents' local hours and the window's (``exposure``) worked out already."""
        hod, dow = hours
        grid_h, grid_d = window
        # The pseudo-events come with the exposure they would take at the overall rate (events per hour).
        rate = max(float(np.sum(weights)), PSEUDO) / max(len(grid_h), 1)
        hour = (np.bincount(hod, weights, 24) + PSEUDO) / (np.bincount(grid_h, minlength=24) + PSEUDO / rate)
        weekday = (np.bincount(dow, weights, 7) + PSEUDO) / (np.bincount(grid_d, minlength=7) + PSEUDO / rate)
        profile = cls(hour / hour.mean(), weekday / weekday.mean(), tz)
        # Scale to an average of exactly one over the window's own hours.
        mean = float(profile.hour[grid_h].dot(profile.weekday[grid_d]) / max(len(grid_h), 1))
        return cls(profile.hour / mean, profile.weekday, tz)

    def at(self, times_s: np.ndarray) -> np.ndarray:
        return self.at_hours(local_hours(times_s, self.tz))

    def at_hours(self, hours: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return self.hour[hours[0]] * self.weekday[hours[1]]

    def integral_days(self, start_s: float, end_s: float) -> float:
        """∫ profile dt over ``[start_s, end_s)`` in days (a flat profile gives the window's length in days)."""
        if end_s <= start_s:
            return 0.0
        edges = np.arange(np.floor(start_s / 3600.0) * 3600.0, end_s + 3600.0, 3600.0)
        lo = np.maximum(edges[:-1], start_s)
        hi = np.minimum(edges[1:], end_s)
        width = np.clip(hi - lo, 0.0, None)
        return float((self.at(edges[:-1] + 1.0) * width).sum() / 86_400.0)

    def to_json(self) -> dict:
        return {"hour": [round(float(v), 4) for v in self.hour], "weekday": [round(float(v), 4) for v in self.weekday],
                "tz": self.tz}


def exposure(start_s: float, end_s: float, tz: str) -> tuple[np.ndarray, np.ndarray]:
    """Local hour and weekday of every whole hour in the window."""
    starts = np.arange(np.ceil(start_s / 3600.0) * 3600.0, end_s, 3600.0)
    return local_hours(starts + 1.0, tz)
