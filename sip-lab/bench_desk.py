"""Benchmark: screen-pop latency of the call-taker's desk, from Asterisk's event to the ticket on screen.

A real seat (baresip, auto-answer) is the only seat in the 110 queue; a real
desk (headless Chromium, logged in as a call-taker who holds that seat) is
open; SIPp places N calls one after the other. For every call it compares
Asterisk's own time stamps (``AgentCalled``: the seat rings; ``AgentConnect``:
the seat answered) with the moment the desk page rendered the popped ticket
(the page's wall clock, same machine). Needs the lab up and root.

    .venv/bin/python -m siplab.bench_desk [--calls 50] [--rate 0.5]

Prints a table of latencies in ms (p50, p90, p99, max) for the ringing and the
answered pop.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from core.auth.users import AuthService, Role
from core.config import Settings
from siplab import asterisk, lab, storm
from siplab.softphone import Softphone
from telephony import serve
from tests.browser.cdp import Browser
from tests.browser.desk import start_shift

SEAT = "bseat01"
PASSWORD = "bench-desk-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _row(name: str, values: list[float]) -> str:
    cells = [storm.percentile(values, p) for p in (50, 90, 99)] + [max(values) if values else None]
    return f"{name:<22}{len(values):>6}" + "".join(f"{'-' if v is None else round(v, 1):>9}" for v in cells)


async def run(calls: int, rate: float) -> None:
    paths = lab.up(lab.LabSettings(seats=100), log=lambda *_: None)
    workdir = Path(tempfile.mkdtemp(prefix="jiejing-bench-desk-"))
    settings = replace(Settings(), db_url=f"sqlite+aiosqlite:///{workdir / 'tickets.db'}", http_port=_free_port(),
                       recordings_dir=str(paths.recordings), wrap_up_s=0.0, city_file=str(asterisk.CITY_FILE))
    backend = serve.build(settings)
    runner = web.AppRunner(serve.make_web_app(backend))
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    while not backend.ami.connected:
        await asyncio.sleep(0.05)
    ami = backend.ami
    events = ami.subscribe()
    await AuthService(backend.service.engine, scrypt_n=2**4).add_user("bench-taker", PASSWORD, Role.CALL_TAKER)
    phone = Softphone(SEAT, "lab-bseat01-secret")
    for i in range(1, 101):
        await ami.action("QueuePause", {"Interface": f"PJSIP/seat{i:03d}", "Paused": "true", "Reason": "bench"})
    base = f"http://127.0.0.1:{settings.http_port}"
    try:
        await phone.start()
        async with Browser(1366, 768) as browser:
            await start_shift(browser, base, "bench-taker", PASSWORD, SEAT)

            run_dir = paths.run / f"bench-desk-{int(time.time() * 1000)}"
            run_dir.mkdir(parents=True)
            numbers = storm.caller_numbers(calls, int(time.time()))
            storm.write_injection(run_dir / "callers.csv", [(n, "Bench") for n in numbers])
            scenario = storm.prepare_callers(paths, run_dir, talk_s=1.0, patience_s=30)
            stats = await storm.drive_calls(run_dir, scenario, calls, rate, timeout=calls / rate + 60)
            await asyncio.sleep(1.0)
            pops = await browser.evaluate("deskStats.pops")
    finally:
        await phone.stop()
        await ami.action("QueueRemove", {"Queue": "emergency-110", "Interface": f"PJSIP/{SEAT}"})
        for i in range(1, 101):
            await ami.action("QueuePause", {"Interface": f"PJSIP/seat{i:03d}", "Paused": "false"})

    rang: dict[str, float] = {}
    connected: dict[str, float] = {}
    while not events.empty():
        e = events.get_nowait()
        if e.get("MemberName") != SEAT or e.timestamp is None:
            continue
        if e.name == "AgentCalled":
            rang.setdefault(e.get("Uniqueid"), e.timestamp)
        elif e.name == "AgentConnect":
            connected[e.get("Uniqueid")] = e.timestamp
    uid_of = {t.number: t.uniqueid for t in await backend.service.list_recent(calls + 10)}
    ringing, answered = [], []
    for pop in pops:
        uid = uid_of.get(pop["number"])
        table = rang if pop["event"] == "ringing" else connected
        if uid in table:
            (ringing if pop["event"] == "ringing" else answered).append(pop["rendered_ms"] - table[uid] * 1000)
    await runner.cleanup()
    print(f"desk screen pop: {calls} calls at {rate}/s, SIPp: {stats.get('SuccessfulCall(C)')} ok, "
          f"{stats.get('FailedCall(C)')} failed; {len(connected)} answered by {SEAT}")
    print(f"{'pop (Asterisk → screen)':<22}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print(_row("ringing", ringing))
    print(_row("answered", answered))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.5, help="calls per second (one seat answers them all)")
    opts = parser.parse_args()
    asyncio.run(run(opts.calls, opts.rate))


if __name__ == "__main__":
    main()
