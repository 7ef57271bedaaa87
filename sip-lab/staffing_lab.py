"""The staffing planner against the lab: a storm at the planner's load with the planner's seat count.

The planner is asked how many seats a load needs for the center's target (95 %
of calls answered within 3 s; the lab seat rings 1 s, so the queue is asked for
2 s). The lab Asterisk then takes that load — Poisson arrivals (each SIPp caller
waits its own delay from the injection file before its INVITE, so arrivals are
not SIPp's even pacing), seats that ring 1 s and talk ``talk_s``, no wrap-up —
with exactly that many seats unpaused in the queue. The answer times come from
the tickets' steps (Asterisk's own time stamps), as for ``jiejing lab storm``.

The lab seats talk for a fixed time, where Erlang C assumes exponential
handling; a steadier queue waits less, so the measured level should reach the
planner's prediction (``measured ≥ predicted − margin``) and sit near the
simulation of the lab's own law (Poisson arrivals, fixed handling: ciw).

    .venv/bin/python -m siplab.check_staffing --lab [--calls 240] [--rate 1.0] [--talk-s 8]

Needs root, the lab chroot, and the lab to itself (run it under the lab lock).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from core.config import Settings
from core.staffing.erlang import erlang_c, seats_for
from siplab import asterisk, lab, sipp, storm
from siplab.check_staffing import handling, simulate
from telephony import serve

RING_S = 1.0
TARGET_S = 3.0
SERVICE_LEVEL = 0.95
MARGIN = 0.05  # stated margin: measured ≥ predicted − 0.05 (a few hundred calls: ±0.03 is sampling noise)
LAUNCH_RATE = 50.0  # SIPp starts callers this fast; each waits its own delay before the INVITE
LEAD_MS = 5000  # every arrival is at least this far after SIPp starts, so no delay is negative


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poisson_delays(calls: int, rate: float, seed: int) -> list[int]:
    """Per-call delay (ms) after SIPp's own start of call ``i`` (at ``i / LAUNCH_RATE`` s) so that the INVITEs
    leave at the arrival times of a Poisson stream of ``rate`` calls/s."""
    rng = random.Random(seed)
    at, out = 0.0, []
    for i in range(calls):
        at += rng.expovariate(rate)
        delay = LEAD_MS + at * 1000 - i * 1000 / LAUNCH_RATE
        out.append(max(0, round(delay)))
    return out


async def run(calls: int, rate: float, talk_s: float, seed: int) -> dict:
    handle_s = RING_S + talk_s  # no wrap-up in this run: JIEJING_WRAP_UP_S=0
    plan = seats_for(rate, handle_s, target_s=TARGET_S - RING_S, service_level=SERVICE_LEVEL)
    seats = plan.seats
    fewer = erlang_c(rate, handle_s, seats - 1, TARGET_S - RING_S)
    lab_law = simulate(rate, handle_s, seats, TARGET_S - RING_S, service=handling("deterministic", handle_s),
                       calls=60_000, seed=seed)

    paths = lab.up(lab.LabSettings(seats=100, seat_ring_ms=int(RING_S * 1000), seat_talk_ms=int(talk_s * 1000)),
                   log=lambda *_: None)
    workdir = Path(tempfile.mkdtemp(prefix="jiejing-staffing-lab-"))
    settings = replace(Settings(), db_url=f"sqlite+aiosqlite:///{workdir / 'tickets.db'}", http_port=_free_port(),
                       recordings_dir=str(paths.recordings), wrap_up_s=0.0, city_file=str(asterisk.CITY_FILE))
    backend = serve.build(settings)
    runner = web.AppRunner(serve.make_web_app(backend))
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    try:
        for _ in range(200):
            if backend.ami.connected:
                break
            await asyncio.sleep(0.05)
        await storm.set_seats(settings, 100, seats)
        run_dir = paths.run / f"staffing-{int(time.time())}"
        run_dir.mkdir(parents=True)
        numbers = storm.caller_numbers(calls, seed % 10_000)
        delays = poisson_delays(calls, rate, seed)
        storm.write_injection(run_dir / "callers.csv",
                              [(n, f"Staffing {n[-4:]}", d) for n, d in zip(numbers, delays, strict=True)])
        scenario = sipp.render("caller_timed.xml", run_dir, PATIENCE_MS=300_000, AUDIO=sipp.audio_pcap(paths.run))
        started = time.monotonic()
        stats = await storm.drive_calls(run_dir, scenario, calls, LAUNCH_RATE,
                                        timeout=max(delays) / 1000 + talk_s + 120)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 60
        while True:
            found = await storm.collect(settings, numbers)
            if found["answered"] + found["abandoned"] >= calls or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        await storm.set_seats(settings, 100, None)
        await runner.cleanup()
    answer_ms = found["answer_ms"]
    within = sum(1 for ms in answer_ms if ms <= TARGET_S * 1000)
    measured = within / calls
    return {
        "calls": calls, "rate": rate, "talk_s": talk_s, "handle_s": handle_s, "erlangs": rate * handle_s,
        "seats": seats, "predicted": plan.service_level, "predicted_one_fewer": fewer.service_level,
        "lab_law_simulated": lab_law.service_level, "measured": measured, "answered": found["answered"],
        "abandoned": found["abandoned"], "tickets": found["tickets"],
        "sipp_failed": storm._int(stats, "FailedCall(C)"),
        "p50_ms": storm.percentile(answer_ms, 50), "p95_ms": storm.percentile(answer_ms, 95),
        "max_ms": max(answer_ms) if answer_ms else None, "wall_s": elapsed,
        "holds": measured >= plan.service_level - MARGIN,
    }


def print_report(r: dict) -> None:
    print("staffing planner against the lab (Poisson arrivals, seats ring 1 s, fixed talk, no wrap-up)")
    rows = [
        ("load", f"{r['calls']} calls at {r['rate']:g}/s (Poisson), handling {r['handle_s']:g} s "
                 f"(ring 1 + talk {r['talk_s']:g}) = {r['erlangs']:g} Erlangs"),
        ("planned seats (Erlang C, 95 % ≤ 3 s)", f"{r['seats']}  (one fewer: {r['predicted_one_fewer']:.1%})"),
        ("predicted ≤ 3 s (Erlang C)", f"{r['predicted']:.1%}"),
        ("simulated ≤ 3 s (lab law: fixed handling, ciw)", f"{r['lab_law_simulated']:.1%}"),
        ("measured ≤ 3 s (lab)", f"{r['measured']:.1%}  ({r['answered']} answered, {r['abandoned']} abandoned, "
                                 f"{r['tickets']} tickets, SIPp failed {r['sipp_failed']})"),
        ("answer ms p50 / p95 / max", f"{_ms(r['p50_ms'])} / {_ms(r['p95_ms'])} / {_ms(r['max_ms'])}"),
        (f"measured ≥ predicted − {MARGIN}", "yes" if r["holds"] else "NO"),
        ("wall time of the storm", f"{r['wall_s']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siplab.check_staffing --lab", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=240)
    parser.add_argument("--rate", type=float, default=1.0, help="calls per second (Poisson)")
    parser.add_argument("--talk-s", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=110)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.calls, args.rate, args.talk_s, args.seed))
    print_report(report)
    return 0 if report["holds"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
