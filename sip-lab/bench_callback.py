"""Abandoned 110 calls called back: from each caller's hang-up to the center's call-back starting.

The lab Asterisk with its 100 seats and the backend as ``serve`` assembles it, in this process (SQLite, Asterisk's
channel event log followed, automatic call-backs on with the shipped ``dialplan/callback.toml``). ``--calls``
SIPp callers ring 110 at ``--rate`` a second and each hangs up half a second after Asterisk answered, before any
seat (they ring 1 s) could take him: every call is abandoned. Each is then called back through the lab's carrier
trunk, whose handsets answer after 3 s and wait for a seat.

A sample runs from the ``abandoned`` step (Asterisk's own time of the hang-up, from its log) to the
``auto_callback_started`` step (written just before the Originate is sent). The shipped rules wait
``first_after_s`` before the first attempt (a caller often rings again at once): that wait is in the figures.
"On its ticket" checks every call-back channel Asterisk created (its ``Newchannel`` events, ``autocb-…``
uniqueids) against the attempts written on the tickets, and that every attempt has its outcome.

    .venv/bin/python -m siplab.bench_callback [--calls 100] [--rate 4]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from core.config import Settings
from core.triage.callback_rules import load_callback_rules
from siplab import lab, storm
from siplab.storm import interpolated_percentile
from telephony import serve

GOAL_S = 60.0
PATIENCE_S = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _row(name: str, values: list[float]) -> str:
    cells = [interpolated_percentile(values, p) if values else None for p in (50, 99)] + [max(values) if values else None]
    return f"| {name} | {len(values)} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |"


async def run(calls: int, rate: float, wait_s: float) -> int:
    paths = lab.up(lab.LabSettings(seats=100), log=lambda *_: None)
    workdir = Path(tempfile.mkdtemp(prefix="jiejing-bench-callback-"))
    settings = replace(Settings(), db_url=f"sqlite+aiosqlite:///{workdir / 'tickets.db'}", http_port=_free_port(),
                       recordings_dir=str(paths.recordings), cel_file=str(paths.cel_file), auto_callback=True)
    rules = load_callback_rules(Path(serve.__file__).resolve().parents[1] / "dialplan" / "callback.toml")
    backend = serve.build(settings)
    runner = web.AppRunner(serve.make_web_app(backend))
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    try:
        while not backend.ami.connected:
            await asyncio.sleep(0.05)
        # A new store takes the calls from where it first read Asterisk's log: read it once before the first call.
        assert backend.cel is not None
        await backend.cel.poll()
        events = backend.ami.subscribe(maxsize=100_000)
        run_dir = paths.run / f"bench-callback-{int(time.time() * 1000)}"
        run_dir.mkdir(parents=True)
        numbers = storm.caller_numbers(calls, int(time.time()))
        storm.write_injection(run_dir / "callers.csv", [(n, "Bench") for n in numbers])
        scenario = storm.prepare_callers(paths, run_dir, talk_s=2.0, patience_s=PATIENCE_S)
        started = time.monotonic()
        stats = await storm.drive_calls(run_dir, scenario, calls, rate, timeout=calls / rate + 60)
        print(f"# {calls} callers placed at {rate:g}/s in {time.monotonic() - started:.0f} s; waiting for the "
              "call-backs", file=sys.stderr)

        wanted = set(numbers)
        deadline = time.monotonic() + wait_s
        while True:
            tickets = [t for t in await backend.service.list_recent(calls * 3) if t.caller_id in wanted]
            finished = [t for t in tickets if any(str(s.step) in ("auto_callback_ended", "auto_callback_gave_up",
                                                                  "auto_callback_skipped") for s in t.steps)]
            if len(tickets) >= calls and len(finished) == len(tickets):
                break
            if time.monotonic() > deadline:
                print(f"# gave up waiting: {len(finished)} of {len(tickets)} tickets finished", file=sys.stderr)
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(1.0)
        created: set[str] = set()
        while not events.empty():
            e = events.get_nowait()
            if e.name == "Newchannel" and (e.get("Uniqueid") or "").startswith("autocb-"):
                created.add(e.get("Uniqueid"))
    finally:
        await runner.cleanup()

    lags, answered, connected = [], [], []
    abandoned = on_ticket = with_outcome = 0
    attempts: set[str] = set()
    for t in tickets:
        by = {str(s.step): s for s in reversed(t.steps)}  # the first of each kind
        hang_up = by.get("abandoned")
        if hang_up is None:
            continue
        abandoned += 1
        starts = [s for s in t.steps if str(s.step) == "auto_callback_started"]
        outcomes = [s for s in t.steps if str(s.step) in ("auto_callback_answered", "auto_callback_failed")]
        attempts.update(str(s.detail.get("channel")) for s in starts)
        on_ticket += bool(starts)
        with_outcome += len(starts) == len(outcomes)
        if starts:
            lags.append((starts[0].at_us - hang_up.at_us) / 1e6)
        if "auto_callback_answered" in by:
            answered.append((by["auto_callback_answered"].at_us - hang_up.at_us) / 1e6)
        if "auto_callback_connected" in by:
            connected.append((by["auto_callback_connected"].at_us - hang_up.at_us) / 1e6)

    print(f"automatic call-backs: {calls} callers at {rate:g}/s, each hanging up {PATIENCE_S} s after Asterisk "
          f"answered; SIPp {stats.get('SuccessfulCall(C)')} ok, {stats.get('FailedCall(C)')} failed; "
          f"rules: first attempt {rules.first_after_s:g} s after the hang-up, ring {rules.ring_s:g} s")
    print()
    print("| from the hang-up (s) to | n | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    print(_row("call-back started", lags))
    print(_row("caller answered", answered))
    print(_row("caller at a seat", connected))
    print()
    unknown = sorted(created - attempts)
    print(f"tickets: {len(tickets)}, abandoned {abandoned}; with a call-back started {on_ticket}; every attempt "
          f"with its outcome on {with_outcome}; call-back channels Asterisk created {len(created)}, "
          f"of them on no ticket: {len(unknown)}")
    p99 = interpolated_percentile(lags, 99) if lags else None
    ok = (abandoned == calls and on_ticket == abandoned and with_outcome == abandoned and not unknown
          and p99 is not None and p99 <= GOAL_S)
    print(f"goal (every abandoned call called back, p99 <= {GOAL_S:g} s, every attempt on its ticket): "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=float, default=4.0, help="callers a second")
    parser.add_argument("--wait-s", type=float, default=180.0, help="how long to wait for the call-backs to end")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 1000 or not 0 < args.rate <= 50:
        parser.error("--calls 1..1000, --rate 0..50")
    return asyncio.run(run(args.calls, args.rate, args.wait_s))


if __name__ == "__main__":
    sys.exit(main())
