"""The situation report of the city bureau or one station: today against the forecast, and what stands out.

* ``types`` and ``stations``: incidents so far today against the forecast — the whole day's expected count and
  the part of it the week's rhythm puts before now;
* ``trend``: the last ``TREND_DAYS`` days, each day's incidents against the forecast kept for that day (both
  models), all together and per type;
* ``anomalies``: a station and type, or a cell, with incidents well above what was expected by now —
  the Poisson chance of so many or more below ``ANOMALY_P`` and at least ``ANOMALY_MIN`` incidents — each
  tied to the surge alert (``core.triage.surge``) at the same place, if there is one; and ``surges``: today's
  surge alerts with what the forecast expected there, so a surge in a cell the map had flagged hot reads as
  foreseen;
* ``cells``: the "ice map" — every cell's forecast, its rank, whether it is flagged hot (the top
  ``HOT_SHARE`` of the area, at least ``HOT_MIN`` cells), its incidents of the last 24 hours, and whether it
  is cold (no available officer on duty within ``cold_km``, as on the heat map); a hot cold cell is where a
  car is needed before the calls come;
* ``track``: how the kept forecasts of the last ``TREND_DAYS`` days did: PAI and PEI* at 1/2/5 % per model.

A station's report holds its own cells, incidents, officers and surges only; the hot flags stay the city's,
so "hot" means the same on every station's map.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from scipy.stats import poisson
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.alerts.board import Alert
from core.dispatch.geo import haversine_m
from core.dispatch.officers import OfficerService, OfficerStatus
from core.situation.evaluate import SHARES, HitTally, flagged_count
from core.situation.history import read_forecasts, read_incidents
from core.situation.service import ALL, DayForecast, SituationService

__all__ = ["ANOMALY_MIN", "ANOMALY_P", "HOT_SHARE", "situation_report"]

TREND_DAYS = 28
HOT_SHARE = 0.05
HOT_MIN = 3
ANOMALY_P = 0.01
ANOMALY_MIN = 3
DEFAULT_COLD_KM = 3.0


def _alpha(kind: str) -> str:
    return kind or "all"


def _day_names(today: str, days: int) -> list[str]:
    first = datetime.fromisoformat(today).date()
    return [(first - timedelta(days=d)).isoformat() for d in range(days, 0, -1)]


async def situation_report(service: SituationService, officers: OfficerService, *, station: str | None,
                           cold_km: float = DEFAULT_COLD_KM) -> dict[str, Any]:
    now = service.clock()
    made = service.current
    if made is None:
        return {"ready": False, "station": station, "error": service.last_error,
                "message": "no forecast yet: the first one is made after the start (a few seconds to minutes)"}
    engine = service.engine
    tz = ZoneInfo(service.tz)
    grid = made.grid
    mine = np.array([station is None or made.station_of.get(c) == station for c in grid.cells])
    today_rows = [r for r in await read_incidents(engine, round(made.from_s * 1e6), round(now * 1e6) + 1)
                  if station is None or r.station == station]
    last24 = await read_incidents(engine, round((now - 86_400) * 1e6), round(now * 1e6) + 1)
    elapsed = made.share_elapsed(now)

    # -- today by type and station -------------------------------------------------------------
    kinds = sorted(k for k in made.expected["sepp"] if k != ALL)
    types = []
    for kind in [ALL, *kinds]:
        expected = float(made.of("sepp", kind)[mine].sum())
        seen = sum(1 for r in today_rows if kind == ALL or r.type == kind)
        types.append({"type": _alpha(kind), "today": seen, "expected_day": round(expected, 2),
                      "expected_by_now": round(expected * elapsed, 2),
                      "kde_expected_day": round(float(made.of("kde", kind)[mine].sum()), 2)})
    stations = []
    names = sorted({s for s in made.station_of.values() if station is None or s == station})
    for name in names:
        own = np.array([made.station_of.get(c) == name for c in grid.cells])
        by_type = []
        for kind in [ALL, *kinds]:
            expected = float(made.of("sepp", kind)[own].sum())
            seen = sum(1 for r in today_rows if r.station == name and (kind == ALL or r.type == kind))
            by_type.append({"type": _alpha(kind), "today": seen, "expected_by_now": round(expected * elapsed, 2),
                            "expected_day": round(expected, 2), "p": _tail(seen, expected * elapsed)})
        stations.append({"station": name, "today": by_type[0]["today"], "expected_day": by_type[0]["expected_day"],
                         "expected_by_now": by_type[0]["expected_by_now"], "types": by_type})

    # -- the ice map -------------------------------------------------------------------------------
    everything = made.of("sepp", ALL)
    hot_count = max(HOT_MIN, flagged_count(len(grid), HOT_SHARE))
    order = np.argsort(-everything, kind="stable")
    rank = np.empty(len(grid), dtype=np.int64)
    rank[order] = np.arange(1, len(grid) + 1)
    duty = [o for o in await officers.list(station=station)
            if o.status is not OfficerStatus.OFF_DUTY and o.on_roster(round(now * 1e6)) and o.lat is not None]
    available = [o for o in duty if o.status is OfficerStatus.AVAILABLE]
    recent = {}
    for r in last24:
        recent[r.cell] = recent.get(r.cell, 0) + 1
    today_cells: dict[str, int] = {}
    for r in today_rows:
        today_cells[r.cell] = today_cells.get(r.cell, 0) + 1
    cells = []
    for i in np.flatnonzero(mine):
        lat, lon = _centre(grid, int(i))
        nearest = min((haversine_m(lat, lon, o.lat, o.lon) for o in available), default=None)  # type: ignore[arg-type]
        cells.append({
            "cell": grid.cells[i], "station": made.station_of.get(grid.cells[i]), "boundary": grid.boundary(int(i)),
            "expected": round(float(everything[i]), 4), "kde_expected": round(float(made.of("kde")[i]), 4),
            "rank": int(rank[i]), "hot": bool(rank[i] <= hot_count), "today": today_cells.get(grid.cells[i], 0),
            "last_24h": recent.get(grid.cells[i], 0),
            "nearest_available_km": None if nearest is None else round(nearest / 1000, 2),
            "cold": nearest is None or nearest > cold_km * 1000,
        })

    # -- anomalies and surges ----------------------------------------------------------------------
    surges = await _surges(engine, made, station)
    surge_refs = {s["ref"]: s for s in surges}
    anomalies = []
    for s in stations:
        for t in s["types"]:
            if t["today"] >= ANOMALY_MIN and t["p"] < ANOMALY_P:
                ref = f"station:{s['station']}"
                anomalies.append({"place": ref, "station": s["station"], "type": t["type"], "today": t["today"],
                                  "expected_by_now": t["expected_by_now"], "p": t["p"],
                                  "surge": ref if ref in surge_refs else None})
    for c in cells:
        expected_now = everything[grid.index[c["cell"]]] * elapsed
        p = _tail(c["today"], expected_now)
        if c["today"] >= ANOMALY_MIN and p < ANOMALY_P:
            ref = f"cell:{c['cell']}"
            anomalies.append({"place": ref, "station": c["station"], "type": "all", "today": c["today"],
                              "expected_by_now": round(float(expected_now), 2), "p": p, "hot": c["hot"],
                              "surge": ref if ref in surge_refs else None})
    anomalies.sort(key=lambda a: a["p"])
    for s in surges:
        s["anomaly"] = any(a["place"] == s["ref"] for a in anomalies)

    return {
        "ready": True, "station": station, "day": made.day, "now": _iso(now, tz),
        "made_at": _iso(made.made_at_s, tz), "events": made.events, "elapsed_share": round(elapsed, 4),
        "params": made.params, "hot_cells": hot_count, "cold_km": cold_km,
        "types": types, "stations": stations, "anomalies": anomalies, "surges": surges,
        "cells": cells, "officers": [
            {"badge": o.badge, "name": o.name, "station": o.station, "status": str(o.status), "lat": o.lat,
             "lon": o.lon} for o in duty],
        "hot_and_cold": sum(1 for c in cells if c["hot"] and c["cold"]),
        "trend": await _trend(engine, made, station, kinds),
        "track": await _track(engine, made, mine),
    }


def _tail(seen: int, expected: float) -> float:
    """P(N ≥ seen) for N ~ Poisson(expected): how surprising today's count is."""
    if seen <= 0:
        return 1.0
    return float(poisson.sf(seen - 1, max(expected, 1e-9)))


def _centre(grid: Any, i: int) -> tuple[float, float]:
    lat, lon = grid.unproject(grid.xy[[i]])
    return float(lat[0]), float(lon[0])


def _iso(at_s: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(at_s, tz).isoformat(timespec="seconds")


async def _surges(engine: AsyncEngine, made: DayForecast, station: str | None) -> list[dict[str, Any]]:
    """Surge alerts of the day (begun today or still open), with what the forecast expected at the place."""
    since = round(made.from_s * 1e6)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Alert).where(
            Alert.kind == "surge", or_(Alert.created_at_us >= since, Alert.resolved_at_us.is_(None)))
            .order_by(Alert.created_at_us))).all()
    grid = made.grid
    everything = made.of("sepp", ALL)
    hot = set(np.argsort(-everything, kind="stable")[:max(HOT_MIN, flagged_count(len(grid), HOT_SHARE))].tolist())
    out = []
    for row in rows:
        kind, _, ident = row.ref.partition(":")
        if kind == "station":
            if station is not None and ident != station:
                continue
            expected = float(sum(everything[grid.index[c]] for c, s in made.station_of.items()
                                 if s == ident and c in grid.index))
            foreseen = None
        elif kind == "cell":
            if station is not None and made.station_of.get(ident) != station:
                continue
            i = grid.index.get(ident)
            expected = float(everything[i]) if i is not None else 0.0
            foreseen = i is not None and i in hot
        else:
            continue
        out.append({"ref": row.ref, "message": row.message, "open": row.resolved_at_us is None,
                    "since_us": row.created_at_us, "expected_day": round(expected, 2), "forecast_hot": foreseen})
    return out


async def _trend(engine: AsyncEngine, made: DayForecast, station: str | None,
                 kinds: list[str]) -> dict[str, Any]:
    """Each of the last days: incidents against the forecast kept for it, all types and per type."""
    days = _day_names(made.day, TREND_DAYS)
    start = made.from_s - TREND_DAYS * 86_400
    rows = [r for r in await read_incidents(engine, round(start * 1e6), round(made.from_s * 1e6))
            if station is None or r.station == station]
    tz = ZoneInfo(made.profile.tz)
    kept = {(f["day"], f["model"]): f for f in await read_forecasts(engine, days[0], days[-1])}
    series: dict[str, dict[str, list]] = {}
    for kind in [ALL, *kinds]:
        actual = dict.fromkeys(days, 0)
        for r in rows:
            if kind == ALL or r.type == kind:
                day = datetime.fromtimestamp(r.at_us / 1e6, tz).date().isoformat()
                if day in actual:
                    actual[day] += 1
        line: dict[str, list] = {"actual": [actual[d] for d in days]}
        for model in ("sepp", "kde"):
            values = []
            for d in days:
                row = kept.get((d, model))
                cells = None if row is None else row["expected"].get(kind)
                values.append(None if cells is None else round(sum(
                    v for c, v in cells.items() if station is None or made.station_of.get(c) == station), 2))
            line[model] = values
        series[_alpha(kind)] = line
    return {"days": days, "series": series}


async def _track(engine: AsyncEngine, made: DayForecast, mine: np.ndarray) -> dict[str, Any]:
    """PAI and PEI* of the kept forecasts of the last days against those days' incidents (the area shown)."""
    grid = made.grid
    days = _day_names(made.day, TREND_DAYS)
    kept = await read_forecasts(engine, days[0], days[-1])
    if not kept:
        return {"days": 0, "models": {}}
    cells = [grid.cells[i] for i in np.flatnonzero(mine)]
    index = {c: k for k, c in enumerate(cells)}
    area = grid.area_m2[mine]
    rows = await read_incidents(engine, min(f["from_us"] for f in kept), max(f["to_us"] for f in kept))
    tallies: dict[str, list[HitTally]] = {}
    scored_days = set()
    for f in kept:
        expected = np.zeros(len(cells))
        for c, v in f["expected"].get(ALL, {}).items():
            if c in index:
                expected[index[c]] = v
        actual = np.zeros(len(cells))
        for r in rows:
            if f["from_us"] <= r.at_us < f["to_us"] and r.cell in index:
                actual[index[r.cell]] += 1
        model = tallies.setdefault(f["model"], [HitTally(s, flagged_count(len(cells), s)) for s in SHARES])
        for tally in model:
            tally.add(expected, actual, area)
        scored_days.add(f["day"])
    return {"days": len(scored_days), "models": {m: [t.to_json() for t in ts] for m, ts in tallies.items()},
            "note": None if len(scored_days) >= 7 else "fewer than a week of kept forecasts: figures are noisy"}
