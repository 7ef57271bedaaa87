"""Queueing formulas for seat planning: Erlang C (callers wait forever) and Erlang A (callers give up).

Both describe one half hour in steady state: calls arrive as a Poisson stream
of ``rate`` calls per second, a seat is busy with each for an exponentially
distributed time of mean ``handle_s`` (talk plus wrap-up: the time the seat
cannot take another call), ``seats`` seats take them first come first served.
Erlang A adds exponential patience of mean ``patience_s``: a caller still
waiting then hangs up (M/M/n+M, Garnett, Mandelbaum & Reiman 2002).

Service level is the share of **all** offered calls answered within the target
``target_s``; a caller who hangs up counts against it, however soon. Waiting
probability is the share that finds no seat free. Occupancy is the share of
seat time spent on calls.

Why the formulas are written the way they are. The textbook forms hold
``A**n / n!`` and incomplete-gamma products that overflow long before a city's
100-300 seats. Erlang B is computed by its recursion on ``1/B`` in log space
(``_log_inv_erlang_b``), which never overflows and never loses the small
values. Erlang A (Mandelbaum & Zeltyn's summary of M/M/n+G, specialised to
exponential patience, rate ``θ``) needs

    J(t) = ∫_t^∞ exp(λ H(x) − nμ x) dx,   H(x) = (1 − e^{−θx}) / θ,

which the substitution ``u = e^{−θx}`` turns into lower incomplete gamma
functions; here every one of them is carried as ``nμ J(t) = e^{λH(t) − nμt}
S(λ e^{−θt}/θ)`` with ``S(x) = Σ_k x^k / ((a+1)…(a+k)) = Γ(a+1) e^x x^{−a}
P(a, x)`` and ``a = nμ/θ``: scipy's regularized incomplete gamma ``P`` where it
is near one (``x ≥ a``), the series where ``P`` would underflow (``x < a``,
where it converges geometrically), and everything divided by
``ε + λJ(0)`` in log space. As patience grows, ``S → 1/(1 − λ/(nμ))`` and
every Erlang A figure tends to its Erlang C value (tests/unit/test_erlang.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammainc, gammaln, logsumexp

from core.errors import DomainError

__all__ = [
    "Performance",
    "PlanningError",
    "erlang_a",
    "erlang_b",
    "erlang_c",
    "erlang_c_wait_probability",
    "seats_for",
]

SEATS_MAX = 5000  # a search for seats stops here: no center plans more in one half hour


class PlanningError(DomainError, ValueError):
    """Input no queueing formula can take (a negative rate, no handling time, an unreachable target)."""

    status = 400
    error_id = "bad-staffing-input"


@dataclass(frozen=True, slots=True)
class Performance:
    """What one half hour looks like with ``seats`` seats, by one model."""

    model: str  # "erlang_c" or "erlang_a"
    seats: int
    offered_erlangs: float  # rate × handling time: seats busy on average if nobody hung up
    wait_probability: float  # share of callers who find no seat free
    service_level: float  # share of offered calls answered within target_s
    target_s: float
    occupancy: float  # share of seat time on calls
    abandonment: float  # share of callers who hang up before a seat answers (0 for Erlang C)
    mean_wait_s: float  # Erlang C: mean wait of all callers (ASA); Erlang A: mean time in queue of all callers

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "seats": self.seats, "offered_erlangs": round(self.offered_erlangs, 4),
                "wait_probability": round(self.wait_probability, 6),
                "service_level": round(self.service_level, 6), "target_s": self.target_s,
                "occupancy": round(self.occupancy, 6), "abandonment": round(self.abandonment, 6),
                "mean_wait_s": None if math.isinf(self.mean_wait_s) else round(self.mean_wait_s, 3)}


def _check(rate: float, handle_s: float, seats: int | None = None, target_s: float | None = None) -> None:
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate >= 0):
        raise PlanningError(f"arrival rate must be a finite number ≥ 0 calls/s, got {rate!r}")
    if not (isinstance(handle_s, (int, float)) and math.isfinite(handle_s) and handle_s > 0):
        raise PlanningError(f"handling time must be a finite number > 0 s, got {handle_s!r}")
    if seats is not None and (isinstance(seats, bool) or not isinstance(seats, int) or seats < 1):
        raise PlanningError(f"seats must be a whole number ≥ 1, got {seats!r}")
    if target_s is not None and not (isinstance(target_s, (int, float)) and math.isfinite(target_s)
                                     and target_s >= 0):
        raise PlanningError(f"target must be a finite number ≥ 0 s, got {target_s!r}")


def _log1p_exp(x: float) -> float:
    """``log(1 + e^x)`` without overflow."""
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def _log_inv_erlang_b(n: int, a: float) -> float:
    """``log(1 / B(n, a))`` by the recursion ``1/B(k) = 1 + (k/a) / B(k−1)``, ``B(0) = 1``, in log space."""
    if a <= 0:
        return math.inf if n > 0 else 0.0
    value = 0.0
    log_a = math.log(a)
    for k in range(1, n + 1):
        value = _log1p_exp(math.log(k) - log_a + value)
    return value


def erlang_b(seats: int, erlangs: float) -> float:
    """Erlang B: the share of calls that find all ``seats`` busy when nobody may wait (loss system)."""
    if seats < 0 or erlangs < 0:
        raise PlanningError("Erlang B needs seats ≥ 0 and traffic ≥ 0")
    return math.exp(-_log_inv_erlang_b(seats, erlangs))


def erlang_c_wait_probability(seats: int, erlangs: float, *, _log_inv_b: float | None = None) -> float:
    """Erlang C: the share of callers who must wait; 1 when the seats cannot keep up (``erlangs ≥ seats``)."""
    if erlangs >= seats:
        return 1.0
    b = math.exp(-(_log_inv_erlang_b(seats, erlangs) if _log_inv_b is None else _log_inv_b))
    return seats * b / (seats - erlangs * (1 - b))


def erlang_c(rate: float, handle_s: float, seats: int, target_s: float, *,
             _log_inv_b: float | None = None) -> Performance:
    """M/M/n: callers wait as long as it takes."""
    _check(rate, handle_s, seats, target_s)
    a = rate * handle_s
    if a >= seats:
        return Performance("erlang_c", seats, a, 1.0, 0.0, target_s, 1.0, 0.0, math.inf)
    c = erlang_c_wait_probability(seats, a, _log_inv_b=_log_inv_b)
    sl = 1.0 - c * math.exp(-(seats - a) * target_s / handle_s)
    return Performance("erlang_c", seats, a, c, sl, target_s, a / seats, 0.0, c * handle_s / (seats - a))


def _log_s(a: float, x: float) -> float:
    """``log S(x)``, ``S(x) = Σ_{k≥0} x^k / ((a+1)(a+2)…(a+k)) = Γ(a+1) e^x x^{−a} P(a, x)``."""
    if x <= 0:
        return 0.0
    if x >= a:
        # P(a, x) is at least about one half here: no underflow, scipy's incomplete gamma is exact to rounding.
        return x - a * math.log(x) + float(gammaln(a + 1)) + math.log(float(gammainc(a, x)))
    # x < a: the ratio of successive terms x/(a+k) < 1 falls further with k; 12·√a terms leave < e^−70.
    terms = int(60 + 12 * math.sqrt(a + 1))
    k = np.arange(1, terms + 1, dtype=float)
    log_terms = np.concatenate(([0.0], np.cumsum(math.log(x) - np.log(a + k))))
    return float(logsumexp(log_terms))


def erlang_a(rate: float, handle_s: float, seats: int, target_s: float, patience_s: float, *,
             _log_inv_b_before: float | None = None) -> Performance:
    """M/M/n+M: callers hang up after an exponentially distributed patience of mean ``patience_s``.

    ``_log_inv_b_before`` is ``log 1/B(seats − 1, A)`` when the caller already has it (``seats_for``)."""
    _check(rate, handle_s, seats, target_s)
    if not (isinstance(patience_s, (int, float)) and patience_s > 0 and not math.isnan(patience_s)):
        raise PlanningError(f"patience must be > 0 s, got {patience_s!r}")
    if math.isinf(patience_s):
        return erlang_c(rate, handle_s, seats, target_s)  # no abandonment: Erlang C exactly
    lam, mu, theta, n = float(rate), 1.0 / handle_s, 1.0 / patience_s, seats
    a_erl = lam * handle_s
    if lam == 0:
        return Performance("erlang_a", n, 0.0, 0.0, 1.0, target_s, 0.0, 0.0, 0.0)
    a = n * mu / theta
    x0 = lam / theta
    # ε = 1/B(n−1, A)
    log_eps = _log_inv_erlang_b(n - 1, a_erl) if _log_inv_b_before is None else _log_inv_b_before
    log_s0 = _log_s(a, x0)  # nμ J(0) = S(x0)
    log_lam_j = math.log(lam / (n * mu)) + log_s0  # λ J(0)
    log_d = float(np.logaddexp(log_eps, log_lam_j))  # ε + λJ
    wait = math.exp(log_lam_j - log_d)
    rho = lam / (n * mu)
    # P(Ab) = (1 + (λ − nμ) J) / (ε + λJ) = (1 − (1 − ρ) S(x0)) / (ε + λJ)
    abandon = math.exp(-log_d) - (1 - rho) * math.exp(log_s0 - log_d)
    abandon = min(max(abandon, 0.0), 1.0)
    # Answered within t: P(V = 0) + ∫_0^t f_V(x) e^{−θx} dx
    #   = (ε − 1 + nμJ(0) + e^{g} (1 − S(y))) / (ε + λJ),  g = λH(t) − nμt,  y = x0 e^{−θt}
    t = float(target_s)
    g = x0 * (-math.expm1(-theta * t)) - n * mu * t
    y = x0 * math.exp(-theta * t)
    log_sy = _log_s(a, y)
    sl = (math.exp(log_eps - log_d) + math.exp(log_s0 - log_d) - math.exp(-log_d)
          + math.exp(g - log_d) - math.exp(g + log_sy - log_d))
    sl = min(max(sl, 0.0), 1.0)
    occupancy = min(1.0, lam * (1 - abandon) * handle_s / n)
    # Little's law on the queue's abandonment flow: λ P(Ab) = θ E[queue], E[wait] = E[queue] / λ.
    mean_wait = abandon / theta
    return Performance("erlang_a", n, a_erl, wait, sl, target_s, occupancy, abandon, mean_wait)


def seats_for(rate: float, handle_s: float, *, target_s: float, service_level: float,
              patience_s: float | None = None, max_occupancy: float = 1.0) -> Performance:
    """The fewest seats that answer ``service_level`` of calls within ``target_s`` (Erlang A with a patience,
    Erlang C without), at most ``max_occupancy`` busy; at least one seat."""
    _check(rate, handle_s, target_s=target_s)
    if not 0 < service_level < 1:
        raise PlanningError(f"service level must be strictly between 0 and 1, got {service_level!r}")
    if not 0 < max_occupancy <= 1:
        raise PlanningError(f"maximum occupancy must be in (0, 1], got {max_occupancy!r}")
    a = rate * handle_s
    # n seats answer at most n/A of the offered calls (throughput ≤ n/h): fewer than A·SL cannot do.
    n = max(1, math.floor(a * service_level))
    # 1/B(k) for k = n−1 and n, carried up the search instead of recomputed for every k
    log_before = _log_inv_erlang_b(n - 1, a) if a > 0 else 0.0
    while n <= SEATS_MAX:
        log_at = _log1p_exp(math.log(n) - math.log(a) + log_before) if a > 0 else math.inf
        if patience_s is None:
            perf = erlang_c(rate, handle_s, n, target_s, _log_inv_b=log_at)
        else:
            perf = erlang_a(rate, handle_s, n, target_s, patience_s, _log_inv_b_before=log_before)
        if perf.service_level >= service_level and perf.occupancy <= max_occupancy:
            return perf
        log_before = log_at
        n += 1
    raise PlanningError(f"no seat count up to {SEATS_MAX} reaches {service_level:.0%} within {target_s:g} s")
