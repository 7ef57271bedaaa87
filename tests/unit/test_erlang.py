"""Erlang C and Erlang A: the published reference example, the Erlang C limit, an exact birth-death check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.linalg import expm

from core.staffing.erlang import (
    PlanningError,
    erlang_a,
    erlang_b,
    erlang_c,
    erlang_c_wait_probability,
    seats_for,
)

# The example of pyworkforce and of R's ErlangC package: 100 calls per 30 min, 3 min handling, 20 s target.
RATE = 100 / 1800
HANDLE_S = 180.0


def test_reference_example_needs_14_seats_for_80_percent_in_20_s() -> None:
    plan = seats_for(RATE, HANDLE_S, target_s=20, service_level=0.8)
    assert plan.seats == 14
    assert plan.offered_erlangs == pytest.approx(10.0)
    # the published figures, to their four places
    assert round(plan.service_level, 4) == 0.8884
    assert round(plan.wait_probability, 4) == 0.1741
    assert round(plan.occupancy, 4) == 0.7143


def test_reference_example_from_the_textbook_formula() -> None:
    # Recomputed the long way, A^n/n! · n/(n−A) over the sum, with exact fractions of A = 10 and n = 14.
    a, n = 10, 14
    top = a**n / math.factorial(n) * n / (n - a)
    c = top / (sum(a**k / math.factorial(k) for k in range(n)) + top)
    perf = erlang_c(RATE, HANDLE_S, n, 20)
    assert perf.wait_probability == pytest.approx(c, rel=1e-12)
    assert perf.service_level == pytest.approx(1 - c * math.exp(-(n - a) * 20 / 180), rel=1e-12)
    assert perf.mean_wait_s == pytest.approx(c * 180 / (n - a), rel=1e-12)
    # 13 seats miss the 80 %: 14 is the fewest
    assert erlang_c(RATE, HANDLE_S, 13, 20).service_level < 0.8


def test_erlang_b_recursion_matches_the_closed_form_and_survives_large_centers() -> None:
    assert erlang_b(5, 3.0) == pytest.approx((3**5 / 120) / sum(3**k / math.factorial(k) for k in range(6)))
    # 400 seats at 350 Erlangs: the closed form overflows a float, the recursion does not
    assert 0 < erlang_b(400, 350.0) < 1
    assert 0 < erlang_c_wait_probability(400, 350.0) < 1
    assert erlang_b(3000, 10.0) == 0.0  # underflows to zero, never to NaN


def test_overloaded_erlang_c_is_all_waiting() -> None:
    perf = erlang_c(1.0, 20.0, 15, 3)
    assert perf.wait_probability == 1.0 and perf.service_level == 0.0 and math.isinf(perf.mean_wait_s)


@pytest.mark.parametrize("seats", [11, 14, 20])
def test_erlang_a_tends_to_erlang_c_as_patience_grows(seats: int) -> None:
    c = erlang_c(RATE, HANDLE_S, seats, 20)
    far = erlang_a(RATE, HANDLE_S, seats, 20, patience_s=1e9)
    assert far.wait_probability == pytest.approx(c.wait_probability, abs=1e-6)
    assert far.service_level == pytest.approx(c.service_level, abs=1e-6)
    assert far.abandonment < 1e-6
    assert far.mean_wait_s == pytest.approx(c.mean_wait_s, rel=1e-4)
    # and monotonically: less patience, fewer waiting, more hanging up
    previous = None
    for patience in (1e7, 1e4, 600, 60, 10):
        perf = erlang_a(RATE, HANDLE_S, seats, 20, patience)
        if previous is not None:
            assert perf.abandonment > previous.abandonment
            assert perf.wait_probability < previous.wait_probability
        previous = perf


def _ctmc_erlang_a(rate: float, handle_s: float, seats: int, target_s: float, patience_s: float,
                   queue_max: int = 400) -> tuple[float, float, float]:
    """Exact M/M/n+M by brute force: the birth-death chain's stationary law, then, for each place in the queue
    an arrival may find, the absorbing chain of its own wait (served or hung up) by matrix exponential."""
    lam, mu, theta, n = rate, 1 / handle_s, 1 / patience_s, seats
    # stationary law of calls in the system, 0 .. n+queue_max
    weights = [1.0]
    for k in range(1, n + queue_max + 1):
        death = min(k, n) * mu + max(k - n, 0) * theta
        weights.append(weights[-1] * lam / death)
    pi = np.array(weights) / sum(weights)
    wait = float(pi[n:].sum())  # PASTA
    queue = float(sum(pi[n + j] * j for j in range(queue_max + 1)))
    abandon = theta * queue / lam
    # A caller with j callers ahead moves up at nμ + jθ, hangs up at θ; with none ahead, a free seat takes it (nμ).
    size = queue_max + 2  # positions 0..queue_max, then "served"
    q = np.zeros((size + 1, size + 1))  # last state: hung up
    served, gone = size - 1, size
    for j in range(queue_max + 1):
        move = n * mu + j * theta
        q[j, j - 1 if j > 0 else served] += move
        q[j, gone] += theta
        q[j, j] = -(move + theta)
    reach = expm(q * target_s)[:queue_max + 1, served]
    within = float(pi[:n].sum()) + float(sum(pi[n + j] * reach[j] for j in range(queue_max + 1)))
    return wait, abandon, within


@pytest.mark.parametrize(("rate", "handle_s", "seats", "target_s", "patience_s"), [
    (RATE, HANDLE_S, 14, 20, 60),  # the reference load, impatient callers
    (RATE, HANDLE_S, 9, 20, 300),  # fewer seats than Erlangs: Erlang C has no answer, Erlang A does
    (2.0, 9.0, 22, 3, 45),  # a 110 half hour: 2 calls/s, 9 s handling, the 3 s target
])
def test_erlang_a_matches_the_exact_birth_death_chain(rate: float, handle_s: float, seats: int, target_s: float,
                                                      patience_s: float) -> None:
    wait, abandon, within = _ctmc_erlang_a(rate, handle_s, seats, target_s, patience_s)
    perf = erlang_a(rate, handle_s, seats, target_s, patience_s)
    assert perf.wait_probability == pytest.approx(wait, abs=1e-9)
    assert perf.abandonment == pytest.approx(abandon, abs=1e-9)
    assert perf.service_level == pytest.approx(within, abs=1e-8)


def test_erlang_a_is_stable_for_a_city_sized_center() -> None:
    perf = erlang_a(10.0, 19.0, 220, 3, 60)
    assert 0.9 < perf.service_level <= 1 and 0 <= perf.abandonment < 0.01
    overloaded = erlang_a(10.0, 19.0, 150, 3, 60)
    # 150 seats answer at most 150/19 calls/s of 10: at least 21 % hang up, and Erlang A says so
    assert overloaded.abandonment == pytest.approx(1 - 150 / 190, abs=0.005)


def test_planning_for_a_target_with_patience_needs_no_more_seats_than_without() -> None:
    c = seats_for(2.0, 9.0, target_s=3, service_level=0.95)
    a = seats_for(2.0, 9.0, target_s=3, service_level=0.95, patience_s=45)
    assert a.seats <= c.seats
    assert a.service_level >= 0.95 and c.service_level >= 0.95
    assert erlang_c(2.0, 9.0, c.seats - 1, 3).service_level < 0.95


@pytest.mark.parametrize("bad", [
    lambda: erlang_c(-1, 180, 5, 20),
    lambda: erlang_c(1, 0, 5, 20),
    lambda: erlang_c(1, 180, 0, 20),
    lambda: erlang_a(1, 180, 5, 20, patience_s=0),
    lambda: seats_for(1, 180, target_s=20, service_level=1.0),
    lambda: seats_for(float("nan"), 180, target_s=20, service_level=0.9),
])
def test_bad_input_is_a_planning_error(bad) -> None:
    with pytest.raises(PlanningError) as caught:
        bad()
    assert caught.value.error_id == "bad-staffing-input" and caught.value.status == 400
