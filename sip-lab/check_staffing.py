"""Check the staffing planner's formulas against a simulated queue, and against the lab.

Without ``--lab``: a discrete-event simulation (ciw) of the same half hour the
formulas describe — Poisson arrivals, ``n`` seats, first come first served,
exponential patience — compared with Erlang C and Erlang A; then the same
queue with lognormal handling times of the same mean, to show where the
formulas drift once handling is not exponential. Prints a table:

    .venv/bin/python -m siplab.check_staffing [--calls 200000] [--seed 110]

With ``--lab``: storms through the lab Asterisk at the planner's load with the
planner's seat count and fewer (``siplab.staffing_lab``), measured against
Erlang C and against this simulation of the lab's own queue (fixed handling,
the storm's own arrivals).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import ciw

from core.staffing.erlang import erlang_a, erlang_c

# The stated tolerance of the formula-against-simulation check (absolute, on shares of calls): with 60,000
# simulated calls the batch-means standard error of these shares is below 0.005, so 0.02 is four of them.
TOLERANCE = 0.02
WARM_UP = 0.05  # the first 5 % of simulated time is discarded: the queue starts empty


@dataclass(frozen=True, slots=True)
class Simulated:
    calls: int
    service_level: float  # answered within target, over all calls
    wait_probability: float
    abandonment: float
    standard_error: float  # of service_level, by 20 batch means


def handling(kind: str, mean_s: float, cv: float = 1.0) -> ciw.dists.Distribution:
    """A handling-time law of the given mean: exponential (cv 1), lognormal of coefficient of variation ``cv``,
    or deterministic."""
    if kind == "exponential":
        return ciw.dists.Exponential(1 / mean_s)
    if kind == "lognormal":
        sigma2 = math.log(1 + cv * cv)
        return ciw.dists.Lognormal(math.log(mean_s) - sigma2 / 2, math.sqrt(sigma2))
    if kind == "deterministic":
        return ciw.dists.Deterministic(mean_s)
    raise ValueError(f"unknown handling law {kind!r}")


def simulate(rate: float, handle_s: float, seats: int, target_s: float, *, patience_s: float | None = None,
             service: ciw.dists.Distribution | None = None, calls: int = 60_000, seed: int = 110) -> Simulated:
    """Run the M/G/n(+M) queue for about ``calls`` arrivals after a warm-up and measure what the formulas predict."""
    ciw.seed(seed)
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate)],
        service_distributions=[service or ciw.dists.Exponential(1 / handle_s)],
        number_of_servers=[seats],
        reneging_time_distributions=[ciw.dists.Exponential(1 / patience_s)] if patience_s else None,
    )
    horizon = calls / rate / (1 - WARM_UP)
    sim = ciw.Simulation(network)
    sim.simulate_until_max_time(horizon)
    start = horizon * WARM_UP
    records = sorted((r for r in sim.get_all_records() if r.arrival_date >= start), key=lambda r: r.arrival_date)
    if not records:
        raise ValueError("the simulation produced no calls")
    within = [r.record_type == "service" and r.waiting_time <= target_s for r in records]
    waited = sum(1 for r in records if r.waiting_time > 0)
    gone = sum(1 for r in records if r.record_type == "renege")
    batches = 20
    size = len(within) // batches
    means = [sum(within[i * size:(i + 1) * size]) / size for i in range(batches)] if size else [0.0]
    mean = sum(means) / len(means)
    se = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means)) if len(means) > 1 else 0.0
    return Simulated(len(records), sum(within) / len(records), waited / len(records), gone / len(records), se)


# (label, calls/s, handling s, seats, target s, patience s or None)
CASES = (
    ("reference: 100 per 30 min, 180 s, 14 seats, 20 s", 100 / 1800, 180.0, 14, 20.0, None),
    ("reference, patience 600 s", 100 / 1800, 180.0, 14, 20.0, 600.0),
    ("reference, patience 60 s", 100 / 1800, 180.0, 14, 20.0, 60.0),
    # 2 calls/s, 9 s talk + 10 s wrap-up: the 46 seats Erlang C plans for 95 % within 3 s
    ("110 half hour: 2/s, 19 s, 46 seats, 3 s", 2.0, 19.0, 46, 3.0, None),
    ("110 half hour, patience 45 s", 2.0, 19.0, 46, 3.0, 45.0),
)
LOGNORMAL_CVS = (0.5, 1.0, 2.0)


def rows(calls: int, seed: int) -> list[tuple[str, str, float, float, Simulated]]:
    """(case, handling law, Erlang C SL, Erlang A SL (or C), simulated) for every case and handling law."""
    out = []
    for label, rate, handle_s, seats, target_s, patience_s in CASES:
        c = erlang_c(rate, handle_s, seats, target_s).service_level
        a = erlang_a(rate, handle_s, seats, target_s, patience_s).service_level if patience_s else c
        laws = [("exponential", handling("exponential", handle_s))]
        laws += [(f"lognormal cv {cv:g}", handling("lognormal", handle_s, cv)) for cv in LOGNORMAL_CVS]
        for name, law in laws:
            sim = simulate(rate, handle_s, seats, target_s, patience_s=patience_s, service=law, calls=calls,
                           seed=seed)
            out.append((label, name, c, a, sim))
    return out


def print_table(calls: int, seed: int, out=sys.stdout) -> None:
    print(f"service level: formula against simulation (ciw, ~{calls:,} calls per row after a {WARM_UP:.0%} "
          f"warm-up, seed {seed}); tolerance ±{TOLERANCE} for exponential handling", file=out)
    head = f"{'case':<50} {'handling':<17} {'Erlang C':>9} {'Erlang A':>9} {'simulated':>10} {'± se':>7} " \
           f"{'sim − formula':>14} {'abandoned':>10}"
    print(head, file=out)
    print("-" * len(head), file=out)
    for label, law, c, a, sim in rows(calls, seed):
        formula = a
        print(f"{label:<50} {law:<17} {c:>9.4f} {a:>9.4f} {sim.service_level:>10.4f} {sim.standard_error:>7.4f} "
              f"{sim.service_level - formula:>+14.4f} {sim.abandonment:>10.4f}", file=out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--lab" in argv:  # the lab check has its own options (--calls there is the storm's)
        from siplab import staffing_lab

        return staffing_lab.main([a for a in argv if a != "--lab"])
    parser = argparse.ArgumentParser(prog="python -m siplab.check_staffing", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="simulated calls per row (default 200000)")
    parser.add_argument("--seed", type=int, default=110)
    parser.add_argument("--lab", action="store_true", help="run the storm check in the lab instead (its options: "
                        "--calls, --rate, --talk-s, --ring-s, --fewer, --seed)")
    args = parser.parse_args(argv)
    print_table(args.calls, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
