"""The planner's formulas against a discrete-event simulation (ciw) of the queue they describe."""

from __future__ import annotations

import pytest

from core.staffing.erlang import erlang_a, erlang_c
from siplab.check_staffing import TOLERANCE, handling, simulate

RATE, HANDLE_S = 100 / 1800, 180.0


@pytest.mark.parametrize("patience_s", [None, 60.0])
def test_formulas_match_the_simulated_queue_within_the_stated_tolerance(patience_s: float | None) -> None:
    perf = (erlang_c(RATE, HANDLE_S, 14, 20) if patience_s is None
            else erlang_a(RATE, HANDLE_S, 14, 20, patience_s))
    sim = simulate(RATE, HANDLE_S, 14, 20, patience_s=patience_s, calls=40_000, seed=16)
    assert sim.calls > 35_000
    assert sim.service_level == pytest.approx(perf.service_level, abs=TOLERANCE)
    assert sim.wait_probability == pytest.approx(perf.wait_probability, abs=TOLERANCE)
    assert sim.abandonment == pytest.approx(perf.abandonment, abs=TOLERANCE / 2)


def test_steady_handling_beats_the_formula_and_erratic_handling_falls_short() -> None:
    # Same mean, 19 s: lognormal with a coefficient of variation of 0.5 (steadier than exponential) and 2.
    predicted = erlang_c(2.0, 19.0, 46, 3).service_level
    steady = simulate(2.0, 19.0, 46, 3, service=handling("lognormal", 19.0, 0.5), calls=40_000, seed=16)
    erratic = simulate(2.0, 19.0, 46, 3, service=handling("lognormal", 19.0, 2.0), calls=40_000, seed=16)
    assert steady.service_level > predicted + 0.01
    assert erratic.service_level < predicted
