"""The hot-spot models: the fit finds the parameters a history was simulated from; the scores mean what they say."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from core.situation import kde, sepp
from core.situation.evaluate import (
    HitTally,
    RollingKde,
    RollingSepp,
    backtest,
    flag,
    flagged_count,
)
from core.situation.grid import AreaGrid
from core.situation.incidents import DAY_S, Incidents, local_day_start
from core.situation.synthetic import Truth, simulate

TZ = "Asia/Shanghai"
START = 1_767_196_800.0  # 2026-01-01 00:00 in Shanghai
CENTRE = h3.latlng_to_cell(31.2304, 121.4737, 8)


@pytest.fixture(scope="module")
def district() -> AreaGrid:
    return AreaGrid.of(h3.grid_disk(CENTRE, 10))  # 331 cells, ~185 km²


@pytest.fixture(scope="module")
def small() -> AreaGrid:
    return AreaGrid.of(h3.grid_disk(CENTRE, 3))


def test_em_recovers_mu_theta_omega_sigma_within_10_percent(district: AreaGrid) -> None:
    truth = Truth(mu=20.0, theta=0.5, omega=0.5, sigma_m=250.0)
    history = simulate(district, truth, start_s=START, days=300, tz=TZ, seed=0)
    assert 10_000 < len(history) < 13_000  # μ·T / (1 − θ), less what falls outside the area
    fit = sepp.fit(district, history, start_s=START, end_s=START + 300 * DAY_S, tz=TZ,
                   settings=sepp.SeppSettings(max_lag_days=20.0, reach_m=1500.0, tolerance=1e-4))
    assert fit.converged
    for found, true in ((fit.mu, truth.mu), (fit.theta, truth.theta), (fit.omega, truth.omega),
                        (fit.sigma_m, truth.sigma_m)):
        assert found == pytest.approx(true, rel=0.10)
    # The day's rhythm too: evenings (21:00) busiest, mornings (09:00) quietest.
    assert int(np.argmax(fit.profile.hour)) in (19, 20, 21, 22, 23)
    assert int(np.argmin(fit.profile.hour)) in (7, 8, 9, 10, 11)


def test_a_history_without_near_repeats_is_found_to_have_almost_none(small: AreaGrid) -> None:
    history = simulate(small, Truth(mu=8.0, theta=0.0, omega=1.0, sigma_m=200.0), start_s=START, days=120, tz=TZ,
                       seed=3)
    fit = sepp.fit(small, history, start_s=START, end_s=START + 120 * DAY_S, tz=TZ)
    assert fit.theta < 0.05
    assert fit.mu == pytest.approx(8.0, rel=0.1)


def test_a_gaussian_keeps_its_mass_inside_the_area_but_not_over_its_edge(small: AreaGrid) -> None:
    centre = small.xy[small.index[CENTRE]][None, :]
    inside = small.gaussian_mass(centre, np.ones(1), 200.0)
    assert inside.sum() == pytest.approx(1.0, abs=0.01)
    assert inside.argmax() == small.index[CENTRE]
    edge_cell = sorted(h3.grid_ring(CENTRE, 3))[0]
    at_edge = small.gaussian_mass(small.xy[small.index[edge_cell]][None, :], np.ones(1), 400.0)
    assert 0.3 < at_edge.sum() < 0.9
    assert small.kept_share(np.array([small.index[CENTRE], small.index[edge_cell]]), 400.0)[0] == 1.0


def test_the_forecast_rises_next_to_a_fresh_incident_and_fades_with_time(small: AreaGrid) -> None:
    model = sepp.SeppFit(mu=5.0, theta=0.5, omega=1.0, sigma_m=150.0,
                         background=small.area_m2 / small.total_area_m2,
                         profile=sepp.WeekProfile.flat(TZ))
    cell = small.index[CENTRE]
    one = Incidents(np.array([START]), small.xy[[cell]], np.array([cell]), np.array([""], dtype=object))
    quiet = sepp.forecast(small, model, Incidents.empty(), at_s=START + 3600)
    fresh = sepp.forecast(small, model, one, at_s=START + 3600)
    later = sepp.forecast(small, model, one, at_s=START + 5 * DAY_S)
    assert quiet.sum() == pytest.approx(5.0, rel=0.01)  # the background alone: μ a day
    assert fresh[cell] > 3 * quiet[cell]
    assert fresh.argmax() == cell
    assert quiet[cell] < later[cell] < fresh[cell]
    # One day of a kernel that lasts a day on average: θ(1 − e^−1) of an offspring, nearly all inside.
    assert fresh.sum() - quiet.sum() == pytest.approx(0.5 * (np.exp(-1 / 24) - np.exp(-25 / 24)), rel=0.02)


def test_the_kernel_map_totals_the_recent_daily_rate(small: AreaGrid) -> None:
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(START, START + 56 * DAY_S, 560))  # 10 a day
    cells = rng.integers(0, len(small), 560)
    incidents = Incidents(t, small.xy[cells], cells, np.full(560, "", dtype=object))
    flat = kde.forecast(small, incidents, at_s=START + 56 * DAY_S, settings=kde.KdeSettings(half_life_days=1e9))
    assert flat.sum() == pytest.approx(10.0, rel=0.05)  # some mass falls over the edge: the rate is kept


def test_pai_and_pei_star_by_hand() -> None:
    area = np.ones(100)
    tally = HitTally(0.02, flagged_count(100, 0.02))
    expected = np.zeros(100)
    expected[[3, 7]] = [2.0, 1.0]  # the map flags cells 3 and 7
    actual = np.zeros(100)
    actual[[3, 7, 50]] = [4, 0, 6]  # cell 50 was the busiest: the best two cells held 10 of the 10 incidents
    tally.add(expected, actual, area)
    assert tally.cells == 2
    assert tally.hit_rate == pytest.approx(0.4)
    assert tally.pai == pytest.approx(0.4 / 0.02)  # 20
    assert tally.pei_star == pytest.approx(4 / 10)
    assert list(flag(np.array([1.0, 3.0, 3.0, 0.0]), 2)) == [1, 2]  # ties in the grid's order
    assert flagged_count(37, 0.01) == 1  # a small grid flags at least one cell


def test_the_backtest_forecasts_each_day_before_seeing_it(small: AreaGrid) -> None:
    # A burst in one cell on day 10 only: the forecast for day 10 cannot know it.
    cell = small.index[sorted(h3.grid_ring(CENTRE, 2))[4]]
    rng = np.random.default_rng(1)
    t = np.sort(np.concatenate([rng.uniform(START, START + 20 * DAY_S, 100), START + 10 * DAY_S + np.arange(30)]))
    cells = np.where((t >= START + 10 * DAY_S) & (t < START + 10 * DAY_S + 30), cell, rng.integers(0, len(small), len(t)))
    incidents = Incidents(t, small.xy[cells], cells.astype(np.int64), np.full(len(t), "", dtype=object))
    seen: list[float] = []

    def spy(at_s: float) -> np.ndarray:
        seen.append(at_s)
        return RollingKde(small, incidents)(at_s)

    tallies = backtest(small, incidents, {"kde": spy}, first_day_s=START + 10 * DAY_S, days=1)
    assert seen == [START + 10 * DAY_S]
    burst_day = tallies["kde"][0]
    assert burst_day.best >= 30 and burst_day.hits < 30  # no look-ahead: the burst cell was not flagged


def test_a_rolling_model_refuses_to_step_back_in_time(small: AreaGrid) -> None:
    history = simulate(small, Truth(mu=5.0, theta=0.3, omega=1.0, sigma_m=200.0), start_s=START, days=40, tz=TZ,
                       seed=2)
    model = RollingSepp(small, history, tz=TZ, history_days=30)
    model(START + 35 * DAY_S)
    with pytest.raises(ValueError):
        model(START + 34 * DAY_S)


def test_local_days_start_at_the_centers_midnight() -> None:
    assert local_day_start(START + 5 * 3600, TZ) == START
    assert local_day_start(START - 1, TZ) == START - DAY_S
