"""The staffing planner against the lab: storms at the planner's load with the planner's seat count, and fewer.

The planner (``core.staffing.erlang``) is asked how many seats a load needs
for the center's target, 95 % of calls answered within 3 s. The lab's seats
ring ``ring_s`` (1 s) before they answer, and a ring is part of every answer
time, so — as the planner does with a center's history (``core.staffing.
history``: target minus the answering seat's ring) — the queue is asked for
a wait of 3 s − ring = 2 s, and a seat is busy for ring + talk (no wrap-up:
``JIEJING_WRAP_UP_S=0``, as in the surge storm). At 1 call/s, ring 1 s and
talk 10 s that is 11 Erlangs and 16 seats.

Each storm runs with exactly ``seats`` lab seats unpaused (the planner's
count N, then N − 1 and N − 2, where the prediction is lower and the check
tells more), Poisson arrivals (each SIPp caller waits its own delay from the
injection file before its INVITE) and one in-process backend. The measured
**wait** of a call is its answer time from the ticket's steps (Asterisk's
time stamps: INVITE arrived → seat answered) minus the seats' fixed ring
``ring_s``; the ~20 ms of SIP and intake on every call stay in it.

Each run is set beside
- Erlang C's service level (what the planner promised: exponential handling,
  steady state);
- a ciw simulation of the lab's own queue: the run's very arrival times,
  fixed handling (ring + talk), first come first served, starting empty — what
  the lab should measure if Asterisk added nothing;
- the spread of that simulation over 400 fresh Poisson runs of the same
  size (the 2.5–97.5 % range): how far one run of a few hundred calls may be
  from the long-run figure by chance alone;
- the same arrivals through a model of how app_queue offers seats
  (``simulate_polled``: a waiting caller looks for a free seat once a second,
  so every wait is a whole number of seconds plus ~20 ms of SIP) — found by
  the first runs, where every measured wait was k s + 10–40 ms.

The stated margin: the measured share within ±``MARGIN`` (0.03) of the
same-arrivals simulation. A run that shared the lab with calls of anyone
else is not judged at all (``foreign`` calls counted from the backend's
tickets).

    .venv/bin/python -m siplab.check_staffing --lab [--calls 240] [--rate 1.0] [--talk-s 10] [--fewer 0,1,2]

Needs root, the lab chroot, and the lab to itself (run it under the lab lock).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import ciw

from core.staffing.erlang import erlang_c, seats_for
from siplab.check_staffing import handling

TARGET_S = 3.0  # the center's answer target, ring included
SERVICE_LEVEL = 0.95
MARGIN = 0.03  # stated margin: |measured − simulated on the same arrivals| ≤ 0.03
REPLICATES = 400  # fresh Poisson runs of the same size, for the chance spread of one run
LAUNCH_RATE = 50.0  # SIPp starts callers this fast; each waits its own delay before the INVITE
LEAD_MS = 5000  # every arrival is at least this far after SIPp starts, so no delay is negative
DRAIN_S = 90.0  # after SIPp, how long the store may take to show every call ended
RECHECK_S = 1.0  # app_queue looks for a free member for each waiting caller once a second (fixed in Asterisk)
OVERHEAD_S = 0.02  # SIP and intake on every lab call: an unqueued call is answered ~20 ms after the ring


@dataclass(frozen=True, slots=True)
class Load:
    rate: float  # calls/s
    ring_s: float
    talk_s: float

    @property
    def handle_s(self) -> float:
        return self.ring_s + self.talk_s  # no wrap-up

    @property
    def queue_target_s(self) -> float:
        return TARGET_S - self.ring_s


def arrival_times(calls: int, rate: float, seed: int) -> list[float]:
    """Poisson arrivals: seconds after the first call's slot (the first call arrives after one gap too)."""
    rng = random.Random(seed)
    at, out = 0.0, []
    for _ in range(calls):
        at += rng.expovariate(rate)
        out.append(at)
    return out


def launch_delays(arrivals: Sequence[float]) -> list[int]:
    """Per-call delay (ms) after SIPp's own start of call ``i`` (at ``i / LAUNCH_RATE`` s) so that the INVITEs
    leave at ``arrivals`` (plus ``LEAD_MS``)."""
    return [max(0, round(LEAD_MS + at * 1000 - i * 1000 / LAUNCH_RATE)) for i, at in enumerate(arrivals)]


def simulate_run(arrivals: Sequence[float], seats: int, handle_s: float, target_s: float) -> float:
    """The share of calls waiting at most ``target_s`` in the lab's own queue: these arrivals, fixed handling,
    ``seats`` seats first come first served, empty at the start (ciw)."""
    gaps = [arrivals[0]] + [b - a for a, b in zip(arrivals, arrivals[1:])]
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Sequential(gaps + [1e12])],  # the 1e12 keeps the sequence from repeating
        service_distributions=[handling("deterministic", handle_s)],
        number_of_servers=[seats],
    )
    sim = ciw.Simulation(network)
    sim.simulate_until_max_time(arrivals[-1] + handle_s * (len(arrivals) + 1))
    records = sim.get_all_records()
    if len(records) != len(arrivals):
        raise ValueError(f"the simulation served {len(records)} of {len(arrivals)} calls")
    return sum(1 for r in records if r.waiting_time <= target_s) / len(records)


def simulate_polled(arrivals: Sequence[float], seats: int, handle_s: float, target_s: float, *,
                    recheck_s: float = RECHECK_S, overhead_s: float = OVERHEAD_S) -> float:
    """The same queue as ``simulate_run`` with app_queue's way of offering seats: a waiting caller looks for a
    free seat when it joins and then once every ``recheck_s`` (app_queue's fixed re-check), taking one only if
    fewer callers ahead of it still wait than seats are free (``autofill``). A seat that frees between two looks
    stays idle until the next; every wait is a whole number of re-checks, plus the ``overhead_s`` of SIP and
    intake that every lab call has. Not ciw: ciw has no polling discipline."""
    free_at = [0.0] * seats
    waiting: list[int] = []  # callers in arrival order, still waiting
    started: list[float | None] = [None] * len(arrivals)
    looks = [(at, i) for i, at in enumerate(arrivals)]
    heapq.heapify(looks)
    while looks:
        t, i = heapq.heappop(looks)
        if i not in waiting:
            waiting.append(i)
        ahead = waiting.index(i)
        idle = [k for k, f in enumerate(free_at) if f <= t + 1e-9]
        if len(idle) > ahead:
            free_at[min(idle, key=free_at.__getitem__)] = t + handle_s
            started[i] = t
            waiting.remove(i)
        else:
            heapq.heappush(looks, (t + recheck_s, i))
    return sum(1 for s, at in zip(started, arrivals) if s - at + overhead_s <= target_s) / len(arrivals)


def chance_spread(calls: int, load: Load, seats: int, *, replicates: int = REPLICATES,
                  seed: int = 110) -> tuple[float, float, float]:
    """Mean and 2.5–97.5 % range of ``simulate_run`` over fresh Poisson runs of ``calls`` calls."""
    levels = sorted(simulate_run(arrival_times(calls, load.rate, seed + 7919 * k), seats, load.handle_s,
                                 load.queue_target_s) for k in range(replicates))
    lo = levels[int(0.025 * (replicates - 1))]
    hi = levels[int(round(0.975 * (replicates - 1)))]
    return statistics.fmean(levels), lo, hi


@dataclass(frozen=True, slots=True)
class Measured:
    calls: int  # placed by this run
    answered: int
    abandoned: int
    within: int  # answered with a wait ≤ the queue target
    waits_s: tuple[float, ...]  # answer time minus the ring, answered calls
    foreign: int  # tickets of calls this run did not place, seen while it ran
    arrival_rate: float | None  # calls/s as Asterisk saw them arrive

    @property
    def service_level(self) -> float:
        return self.within / self.calls if self.calls else 0.0


def measure(tickets: Iterable[tuple[str, dict[str, int]]], numbers: Sequence[str], *, ring_s: float,
            target_s: float) -> Measured:
    """Judge one run from its tickets: ``(caller number, {step: first time µs})`` of every ticket the backend
    made while the run was on. A call of ours with no answer counts against the level (it was offered); a
    ticket of a number we did not place is another's call sharing the seats, and is counted as such."""
    ours = set(numbers)
    answered = abandoned = foreign = 0
    waits: list[float] = []
    received: list[int] = []
    for caller, at in tickets:
        if caller not in ours:
            foreign += 1
            continue
        if "received" in at:
            received.append(at["received"])
        if "answered" in at and "received" in at:
            answered += 1
            waits.append((at["answered"] - at["received"]) / 1e6 - ring_s)
        elif "abandoned" in at:
            abandoned += 1
    received.sort()
    rate = (len(received) - 1) / ((received[-1] - received[0]) / 1e6) if len(received) > 1 and \
        received[-1] > received[0] else None
    within = sum(1 for w in waits if w <= target_s)
    return Measured(len(numbers), answered, abandoned, within, tuple(waits), foreign, rate)


@dataclass(frozen=True, slots=True)
class Row:
    seats: int
    load: Load
    predicted: float  # Erlang C
    simulated: float  # ciw, the run's arrivals, fixed handling
    polled: float  # the same with app_queue's 1 s re-check (simulate_polled)
    spread: tuple[float, float, float]  # mean, 2.5 %, 97.5 % of fresh runs of the same size
    measured: Measured

    @property
    def judged(self) -> bool:
        return self.measured.foreign == 0 and self.measured.answered + self.measured.abandoned == self.measured.calls

    @property
    def within_margin(self) -> bool:
        return self.judged and abs(self.measured.service_level - self.simulated) <= MARGIN


def plan(load: Load) -> int:
    """The planner's seats for the center's target at this load (Erlang C, as the plan suggests)."""
    return seats_for(load.rate, load.handle_s, target_s=load.queue_target_s, service_level=SERVICE_LEVEL).seats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _tickets_since(settings, since_us: int) -> list[tuple[str, dict[str, int]]]:
    """Every ticket received from ``since_us`` on, with the first time of each of its steps."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import selectinload

    from core.calls.tables import Ticket
    from core.store import make_engine

    engine = make_engine(settings.db_url)
    try:
        async with AsyncSession(engine) as session:
            rows = (await session.scalars(select(Ticket).options(selectinload(Ticket.steps)))).all()
            out = []
            for t in rows:
                at: dict[str, int] = {}
                for s in sorted(t.steps, key=lambda s: s.at_us):
                    at.setdefault(s.step, s.at_us)
                if at.get("received", since_us) >= since_us:
                    out.append((t.caller_id or "", at))
            return out
    finally:
        await engine.dispose()


async def run(calls: int, load: Load, fewer: Sequence[int], seed: int, out=sys.stderr) -> list[Row]:
    from aiohttp import web

    from core.config import Settings
    from siplab import asterisk, lab, sipp, storm
    from telephony import serve

    planned = plan(load)
    paths = lab.up(lab.LabSettings(seats=100, seat_ring_ms=round(load.ring_s * 1000),
                                   seat_talk_ms=round(load.talk_s * 1000)), log=lambda *_: None)
    up = asterisk.rx(paths, "core show channels count")
    if not up.lstrip().startswith("0 active channels"):
        raise asterisk.LabError(f"the lab is not idle ({up.strip().splitlines()[0]}): another run is using it")
    workdir = Path(tempfile.mkdtemp(prefix="jiejing-staffing-lab-"))
    settings = replace(Settings(), db_url=f"sqlite+aiosqlite:///{workdir / 'tickets.db'}", http_port=_free_port(),
                       recordings_dir=str(paths.recordings), wrap_up_s=0.0, city_file=str(asterisk.CITY_FILE))
    backend = serve.build(settings)
    runner = web.AppRunner(serve.make_web_app(backend))
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    rows: list[Row] = []
    try:
        for _ in range(200):
            if backend.ami.connected:
                break
            await asyncio.sleep(0.05)
        for k, less in enumerate(fewer):
            seats = planned - less
            arrivals = arrival_times(calls, load.rate, seed + k)
            run_tag = (seed * 10 + k) % 10_000
            numbers = storm.caller_numbers(calls, run_tag)
            await storm.set_seats(settings, 100, seats)
            since_us = time.time_ns() // 1000
            run_dir = paths.run / f"staffing-{int(time.time())}-{seats}"
            run_dir.mkdir(parents=True)
            storm.write_injection(run_dir / "callers.csv", [
                (n, f"Staffing {n[-4:]}", d) for n, d in zip(numbers, launch_delays(arrivals), strict=True)])
            scenario = sipp.render("caller_timed.xml", run_dir, PATIENCE_MS=300_000,
                                   AUDIO=sipp.audio_pcap(paths.run))
            print(f"staffing lab: {seats} seats, {calls} calls at {load.rate:g}/s …", file=out, flush=True)
            started = time.monotonic()
            await storm.drive_calls(run_dir, scenario, calls, LAUNCH_RATE,
                                    timeout=LEAD_MS / 1000 + arrivals[-1] + 300 + 60)
            deadline = time.monotonic() + DRAIN_S
            while True:
                measured = measure(await _tickets_since(settings, since_us), numbers, ring_s=load.ring_s,
                                   target_s=load.queue_target_s)
                if measured.answered + measured.abandoned >= calls or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            print(f"staffing lab: {seats} seats done in {time.monotonic() - started:.0f} s", file=out, flush=True)
            rows.append(Row(seats, load, erlang_c(load.rate, load.handle_s, seats, load.queue_target_s).service_level,
                            simulate_run(arrivals, seats, load.handle_s, load.queue_target_s),
                            simulate_polled(arrivals, seats, load.handle_s, load.queue_target_s),
                            chance_spread(calls, load, seats, seed=seed), measured))
    finally:
        await storm.set_seats(settings, 100, None)
        await runner.cleanup()
    return rows


def print_table(rows: Sequence[Row], out=sys.stdout) -> None:
    if not rows:
        return
    load = rows[0].load
    print(f"staffing planner against the lab: Poisson arrivals at {load.rate:g}/s, seats ring {load.ring_s:g} s "
          f"and talk {load.talk_s:g} s (fixed), no wrap-up; h = {load.handle_s:g} s, "
          f"A = {load.rate * load.handle_s:g} Erlangs", file=out)
    print(f"SL = share of calls waiting ≤ {load.queue_target_s:g} s (answer time − {load.ring_s:g} s ring, i.e. "
          f"answered ≤ {TARGET_S:g} s); the planner's seats for 95 %: {plan(load)}; margin ±{MARGIN} against the "
          "simulation on the same arrivals", file=out)
    head = (f"{'seats':>5} {'λ/s':>5} {'h s':>5} {'Erlang C':>9} {'sim same':>9} {'sim 95 % range':>15} "
            f"{'re-check':>9} {'measured':>9} {'calls':>6} {'answered':>8} {'wait p50':>8} {'p95':>6} {'max':>6} {'foreign':>7} "
            f"{'within':>7}")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        m = r.measured
        waits = sorted(m.waits_s)
        p50 = f"{waits[len(waits) // 2]:.2f}" if waits else "–"
        p95 = f"{waits[min(len(waits) - 1, int(0.95 * len(waits)))]:.2f}" if waits else "–"
        top = f"{waits[-1]:.2f}" if waits else "–"
        verdict = ("yes" if r.within_margin else "NO") if r.judged else "not judged"
        print(f"{r.seats:>5} {load.rate:>5g} {load.handle_s:>5g} {r.predicted:>9.4f} {r.simulated:>9.4f} "
              f"{r.spread[1]:>7.3f}–{r.spread[2]:<7.3f} {r.polled:>9.4f} {m.service_level:>9.4f} {m.calls:>6} {m.answered:>8} "
              f"{p50:>8} {p95:>6} {top:>6} {m.foreign:>7} {verdict:>7}", file=out)
    rates = ", ".join(f"{r.measured.arrival_rate:.3f}" for r in rows if r.measured.arrival_rate)
    print(f"arrival rate as Asterisk saw it (calls/s): {rates}; 'sim 95 % range': {REPLICATES} fresh Poisson runs "
          "of the same size", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siplab.check_staffing --lab",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=240, help="calls per seat count (default 240)")
    parser.add_argument("--rate", type=float, default=1.0, help="calls per second, Poisson (default 1)")
    parser.add_argument("--talk-s", type=float, default=10.0, help="the lab seats' talk time (default 10)")
    parser.add_argument("--ring-s", type=float, default=1.0, help="the lab seats' ring before answering (default 1)")
    parser.add_argument("--fewer", default="0,1,2",
                        help="run with the planner's seats minus each of these (default 0,1,2)")
    parser.add_argument("--seed", type=int, default=110)
    args = parser.parse_args(argv)
    fewer = [int(x) for x in args.fewer.split(",") if x.strip()]
    load = Load(args.rate, args.ring_s, args.talk_s)
    if not 10 <= args.calls <= 2000 or not 0.05 <= args.rate <= 20 or not 0 <= args.ring_s < TARGET_S \
            or not 0.5 <= args.talk_s <= 600 or not fewer or any(not 0 <= f < plan(load) for f in fewer):
        parser.error("--calls 10..2000, --rate 0.05..20, --ring-s 0..<3, --talk-s 0.5..600, --fewer below the plan")
    rows = asyncio.run(run(args.calls, load, fewer, args.seed))
    print_table(rows)
    return 0 if all(r.within_margin for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
