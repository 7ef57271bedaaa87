"""Hot-spot backtest: PAI and PEI* of the kernel-density baseline and the self-exciting model, day by day.

Three histories, each scored on its last ``--test-days`` days, every day's forecast made at the day's start
from the incidents before it (``core.situation.evaluate.backtest``):

* ``near-repeat``: one incident type simulated from known parameters with strong near-repeats
  (μ 10/day, θ 0.5, ω 0.5/day, σ 250 m) over the 469 cells within ring 12 of the lab city's centre;
* ``lab city``: a generated city-year (five types, three with near-repeats of their own strengths and two
  without: ``core.situation.synthetic.CITY_TYPES``) over the lab city's own 37 cells (``sip-lab/city.json``),
  where 1 % and 2 % of the area both round up to one cell (2.7 %);
* ``lab district``: the same city-year's types over the 721 cells within ring 15 of the lab centre, where
  1 % of the area is 7 cells.

For the city-years every type has its own self-exciting model and its own kernel map; "all" is each model's
sum over the types. With ``--db URL`` the store's own located incidents are backtested instead (the area:
the cells of the stations' city, or every cell with an incident).

    python -m siplab.backtest_hotspots [--test-days 182] [--refit-days 14] [--seed 110] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import h3

from core.situation import kde, sepp
from core.situation.evaluate import SHARES, RollingKde, RollingSepp, Summed, backtest
from core.situation.grid import AreaGrid
from core.situation.incidents import DAY_S, Incidents, local_day_start
from core.situation.synthetic import CITY_TYPES, Truth, city_year, simulate

TZ = "Asia/Shanghai"
START_S = 1_767_196_800.0  # 2026-01-01 00:00 Asia/Shanghai
CITY_FILE = Path(__file__).resolve().with_name("city.json")
NEAR_REPEAT = Truth(mu=10.0, theta=0.5, omega=0.5, sigma_m=250.0)


def lab_city() -> tuple[tuple[str, ...], tuple[float, float]]:
    city = json.loads(CITY_FILE.read_text(encoding="utf-8"))
    cells = tuple(c for station in city["stations"] for c in station["cells"])
    return cells, (city["center"]["lat"], city["center"]["lon"])


def rows_for(name: str, grid: AreaGrid, incidents: Incidents, *, test_days: int, refit_days: float,
             first_day_s: float) -> list[tuple]:
    types = incidents.types() or [""]
    models: dict[str, object] = {}
    for kind in types:
        part = incidents.of_type(kind) if kind else incidents
        models[f"kde {kind}"] = RollingKde(grid, part)
        models[f"sepp {kind}"] = RollingSepp(grid, part, tz=TZ, refit_days=refit_days)
    if len(types) > 1:
        models["kde all"] = RollingKde(grid, incidents)  # one map of all incidents, as an analyst draws it
        models["sepp all"] = Summed([models[f"sepp {k}"] for k in types])
    kinds = types + ["all"] if len(types) > 1 else types
    against = {f"{m} {k}": incidents.of_type(k) for m in ("kde", "sepp") for k in types if k}
    started = time.monotonic()
    tallies = backtest(grid, incidents, models, first_day_s=first_day_s, days=test_days, against=against)
    elapsed = time.monotonic() - started
    scored = {kind: {m: tallies[f"{m} {kind}"] for m in ("kde", "sepp")} for kind in kinds}
    rows = []
    for kind, tallies in scored.items():
        test = incidents if kind in ("all", "") else incidents.of_type(kind)
        n = len(test.between(first_day_s, first_day_s + test_days * DAY_S))
        fit = models[f"sepp {kind}"]
        params = ""
        if isinstance(fit, RollingSepp) and fit.model is not None:
            s = fit.model.summary()
            params = f"θ {s['theta']:.2f} ω {s['omega_per_day']:.2f}/d σ {s['sigma_m']:.0f} m"
        rows.append((name, kind or "-", n, tallies, params))
    print(f"# {name}: {len(grid)} cells, {len(incidents)} incidents, backtest {elapsed:.0f} s", file=sys.stderr)
    return rows


def print_table(rows: list[tuple]) -> None:
    head = ["history", "type", "test incidents"]
    for share in SHARES:
        head += [f"area {share:.0%}", f"KDE PAI {share:.0%}", f"SEPP PAI {share:.0%}", f"KDE PEI* {share:.0%}",
                 f"SEPP PEI* {share:.0%}"]
    head.append("SEPP's last fit")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, kind, n, tallies, params in rows:
        cells = [name, kind, str(n)]
        for i, _ in enumerate(SHARES):
            k, s = tallies["kde"][i], tallies["sepp"][i]
            cells += [f"{k.area_share:.1%}", f"{k.pai:.2f}", f"{s.pai:.2f}", f"{k.pei_star:.3f}", f"{s.pei_star:.3f}"]
        cells.append(params)
        print("| " + " | ".join(cells) + " |")


async def store_history(url: str) -> tuple[AreaGrid, Incidents]:
    from core.situation.history import read_area, read_incidents
    from core.store import make_engine

    engine = make_engine(url)
    try:
        cells = await read_area(engine)
        rows = await read_incidents(engine, 0, int(time.time() * 1_000_000))
    finally:
        await engine.dispose()
    grid = AreaGrid.of(cells | {r.cell for r in rows})
    return grid, Incidents.of(grid, [r.at_us / 1e6 for r in rows], [r.lat for r in rows], [r.lon for r in rows],
                              [r.cell for r in rows], [r.type for r in rows], [r.station for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-days", type=int, default=182)
    parser.add_argument("--refit-days", type=float, default=14.0)
    parser.add_argument("--seed", type=int, default=110)
    parser.add_argument("--db", help="backtest the store's own located incidents (a database URL) instead")
    args = parser.parse_args(argv)
    print(f"# kernel baseline: {kde.KdeSettings().summary()}; self-exciting: {sepp.SeppSettings()}", file=sys.stderr)
    rows = []
    if args.db:
        grid, incidents = asyncio.run(store_history(args.db))
        if not len(incidents):
            print("the store holds no located incidents", file=sys.stderr)
            return 1
        last = local_day_start(float(incidents.t[-1]), TZ)
        days = min(args.test_days, int((last - incidents.t[0]) / DAY_S) // 2)
        rows += rows_for("store", grid, incidents, test_days=days, refit_days=args.refit_days,
                         first_day_s=last - days * DAY_S)
        print_table(rows)
        return 0
    year = 365
    first = START_S + (year - args.test_days) * DAY_S
    centre = h3.latlng_to_cell(*lab_city()[1], 8)
    wide = AreaGrid.of(h3.grid_disk(centre, 12))
    history = simulate(wide, NEAR_REPEAT, start_s=START_S, days=year, tz=TZ, seed=args.seed)
    rows += rows_for("near-repeat", wide, history, test_days=args.test_days, refit_days=args.refit_days,
                     first_day_s=first)
    lab = AreaGrid.of(lab_city()[0])
    rows += rows_for("lab city", lab, city_year(lab, start_s=START_S, tz=TZ, seed=args.seed + 1, types=CITY_TYPES),
                     test_days=args.test_days, refit_days=args.refit_days, first_day_s=first)
    district = AreaGrid.of(h3.grid_disk(centre, 15))
    rows += rows_for("lab district", district, city_year(district, start_s=START_S, tz=TZ, seed=args.seed + 2),
                     test_days=args.test_days, refit_days=args.refit_days, first_day_s=first)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
