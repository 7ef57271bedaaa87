"""The planner's lab check: how a storm's tickets are judged, and the simulation of the lab's own queue."""

from __future__ import annotations

import pytest

from core.staffing.erlang import erlang_c
from siplab.staffing_lab import (
    LAUNCH_RATE,
    LEAD_MS,
    Load,
    Row,
    arrival_times,
    chance_spread,
    launch_delays,
    measure,
    plan,
    simulate_polled,
    simulate_run,
)

S = 1_000_000  # µs


def _ticket(caller: str, received_s: float, answered_s: float | None) -> tuple[str, dict[str, int]]:
    at = {"received": round(received_s * S)}
    if answered_s is not None:
        at["answered"] = round(answered_s * S)
    return caller, at


def test_a_run_that_shared_the_seats_with_other_calls_is_not_judged() -> None:
    # The first lab run measured 240 calls while 210 calls of another run took the same 14 seats; nothing said so.
    ours = ["13900000001", "13900000002"]
    tickets = [_ticket(ours[0], 0.0, 1.02), _ticket(ours[1], 1.0, 2.5), _ticket("11000000007", 0.5, 1.5)]
    m = measure(tickets, ours, ring_s=1.0, target_s=2.0)
    assert (m.calls, m.answered, m.foreign) == (2, 2, 1)
    row = Row(14, Load(1.0, 1.0, 10.0), 0.9, 1.0, 1.0, (1.0, 1.0, 1.0), m)
    assert not row.judged and not row.within_margin


def test_wait_is_the_answer_time_less_the_ring_and_unanswered_calls_count_against_the_level() -> None:
    ours = ["1", "2", "3", "4"]
    tickets = [_ticket("1", 0.0, 1.0), _ticket("2", 1.0, 4.0), _ticket("3", 2.0, 5.5), _ticket("4", 3.0, None)]
    m = measure(tickets, ours, ring_s=1.0, target_s=2.0)
    assert m.waits_s == pytest.approx((0.0, 2.0, 2.5))
    assert (m.within, m.answered, m.service_level) == (2, 3, 0.5)
    assert m.arrival_rate == pytest.approx(1.0)
    row = Row(1, Load(1.0, 1.0, 10.0), 0.5, 0.5, 0.5, (0.5, 0.4, 0.6), m)
    assert not row.judged  # one call neither answered nor abandoned: the run did not finish


def test_launch_delays_put_each_invite_at_its_arrival_time() -> None:
    arrivals = [0.4, 0.9, 3.0]
    delays = launch_delays(arrivals)
    # SIPp starts call i at i / LAUNCH_RATE s, the call waits its delay: INVITE at LEAD + arrival
    assert [i * 1000 / LAUNCH_RATE + d for i, d in enumerate(delays)] == pytest.approx(
        [LEAD_MS + a * 1000 for a in arrivals], abs=0.5)


def test_arrivals_are_poisson_at_the_rate() -> None:
    at = arrival_times(20_000, 1.0, seed=3)
    assert at == sorted(at)
    assert len(at) / at[-1] == pytest.approx(1.0, rel=0.03)
    assert arrival_times(5, 1.0, seed=3) == at[:5]


def test_the_simulated_lab_queue_on_known_arrivals() -> None:
    # one seat, 11 s per call: arrivals at 1, 2 and 30 s wait 0, 10 (the first call's rest) and 0 s
    assert simulate_run([1.0, 2.0, 30.0], 1, 11.0, 2.0) == pytest.approx(2 / 3)
    assert simulate_run([1.0, 2.0, 30.0], 2, 11.0, 2.0) == 1.0


def test_fixed_handling_waits_less_than_erlang_c_says_at_the_planners_load() -> None:
    load = Load(1.0, 1.0, 10.0)
    seats = plan(load)
    assert seats == 16  # 11 Erlangs, 95 % within 2 s in the queue
    mean, lo, hi = chance_spread(240, load, seats - 2, replicates=60, seed=5)
    assert lo <= mean <= hi
    assert mean > erlang_c(1.0, 11.0, seats - 2, 2.0).service_level


def test_app_queues_once_a_second_look_rounds_every_wait_up_to_whole_seconds() -> None:
    # Found in the lab: every measured wait was k s + 10-40 ms. One seat, 11 s per call: the second caller
    # (at 2 s) finds the seat free at 12 s but only looks at 2, 3, … s, so takes it at 12 s (whole seconds
    # after 2) — and a caller at 2.5 s behind it waits for its own look at 23.5 s, not 23 s.
    assert simulate_polled([1.0, 2.0], 1, 11.0, 10.0, overhead_s=0.0) == 1.0  # waited exactly 10 s
    assert simulate_polled([1.0, 2.0, 2.5], 1, 11.0, 20.5, overhead_s=0.0) == 2 / 3  # third waits 21 s
    # a wait of exactly the target plus the lab's SIP time misses it, as a 3.02 s answer misses 3 s
    assert simulate_polled([0.0, 9.0], 1, 11.0, 2.0) == 0.5


def test_with_the_re_check_the_lab_queue_answers_fewer_in_time_than_the_ideal_queue() -> None:
    load = Load(1.0, 1.0, 10.0)
    arrivals = arrival_times(240, 1.0, seed=111)
    assert simulate_polled(arrivals, 15, 11.0, 2.0) < simulate_run(arrivals, 15, load.handle_s, 2.0) - 0.03
