"""The center's ceiling against Asterisk's own: answer time p99 by call rate, bare responder vs our backend.

For each rate, SIPp places calls for ``--seconds`` over the lab's seats twice: once with a bare intake
responder (an HTTP server on the intake port, in a process and session of its own like our intake, that
answers every request at once with fixed values, the least any backend can do), once with ``jiejing
serve`` (its own process and store). With ``--repeat N`` each rate is measured N times, the two sides
taking turns, and the median p99 of each side counts: one run's p99 moves by more than the margin from
run to run. The answer time of a call is Asterisk's ``AgentConnect`` minus its ``Newchannel`` (AMI time
stamps). The ceiling of each is the highest rate whose p99 stays within ``--margin-ms`` of the bare
responder's p99 at the lowest rate; the ratio is ours over the bare responder's. Needs the lab up and no
backend running, as root.

    .venv/bin/python -m siplab.bench_ceiling --rates 30,35,40,45,50 --seconds 30 --seats 300 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace

from aiohttp import web

from core.config import Settings
from siplab import asterisk, lab, storm
from siplab.drill_backend import BackendProcess
from telephony.ami.client import AMIClient


async def _bare(request: web.Request) -> web.Response:
    uid = request.query.get("uniqueid", "x")
    return web.Response(text=f"ticket=110-00000000-000000&queue=emergency-110&priority=10&recording={uid}",
                        content_type="text/plain")


def serve_bare(host: str, port: int) -> None:
    """The bare responder's process: answers until SIGTERM."""

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/intake", _bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())


class BareResponder:
    """The bare responder in a process and session of its own, as ``jiejing serve`` runs its intake."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    async def start(self, host: str, port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "siplab.bench_ceiling", "--serve-bare", f"{host}:{port}"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if line.strip() != b"ready":
            self.proc.kill()
            raise SystemExit(f"the bare responder did not start on {host}:{port}")

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 10)


async def one_rate(paths, ami_events: asyncio.Queue, rate: float, seconds: float, talk_s: float) -> dict:
    calls = max(1, int(rate * seconds))
    run_dir = paths.run / f"ceiling-{int(time.time() * 1000)}"
    run_dir.mkdir(parents=True)
    numbers = set(storm.caller_numbers(calls, int(time.time() * 1000) % 10_000))
    storm.write_injection(run_dir / "callers.csv", [(n, "Ceiling") for n in sorted(numbers)])
    scenario = storm.prepare_callers(paths, run_dir, talk_s=talk_s, patience_s=60)
    while not ami_events.empty():
        ami_events.get_nowait()
    try:
        stats = await storm.drive_calls(run_dir, scenario, calls, rate, timeout=seconds + talk_s + 120)
    except asterisk.LabError:
        stats = {"FailedCall(C)": "unfinished"}  # SIPp still had calls up long after the last was placed
    await asyncio.sleep(1)
    arrived: dict[str, float] = {}
    answer_ms: list[float] = []
    while not ami_events.empty():
        event = ami_events.get_nowait()
        uid = event.get("Uniqueid") or ""
        if event.name == "Newchannel" and event.get("CallerIDNum") in numbers:
            arrived[uid] = event.timestamp
        elif event.name == "AgentConnect" and uid in arrived:
            answer_ms.append((event.timestamp - arrived.pop(uid)) * 1000)
    answer_ms.sort()
    return {"rate": rate, "calls": calls, "answered": len(answer_ms),
            "sipp_failed": stats.get("FailedCall(C)"),
            "p50": storm.percentile(answer_ms, 50), "p99": storm.percentile(answer_ms, 99)}


async def run(rates: list[float], seconds: float, talk_s: float, seats: int | None,
              which: tuple[str, ...] = ("bare", "jiejing"), repeat: int = 1) -> dict:
    """Per side, per rate, the list of ``repeat`` runs (an empty list for a side not measured)."""
    paths = asterisk.LabPaths()
    if asterisk.asterisk_pid(paths) is None:
        raise SystemExit("the lab is not up: jiejing lab up")
    current = lab.running_settings(paths) or lab.LabSettings()
    if seats is not None and seats != current.seats:
        current = replace(current, seats=seats)
    lab.up(current, paths, log=lambda *_: None)
    settings = Settings()
    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    ami_events = ami.subscribe()
    await ami.start()
    await ami.wait_connected(10)
    rows: dict[str, list[list[dict]]] = {"bare": [[] for _ in rates], "jiejing": [[] for _ in rates]}
    order = [side for side in ("bare", "jiejing") if side in which]
    try:
        for i, rate in enumerate(rates):
            for turn in range(repeat):
                # The sides take turns and which goes first alternates: a slow spell of the machine falls on both.
                for side in (order if turn % 2 == 0 else order[::-1]):
                    measure = _bare_run if side == "bare" else _backend_run
                    rows[side][i].append(await measure(paths, settings, ami_events, rate, seconds, talk_s))
    finally:
        await ami.stop()
    return rows


async def _bare_run(paths, settings, ami_events, rate, seconds, talk_s) -> dict:
    bare = BareResponder()
    await bare.start(settings.intake_host, settings.intake_port)
    try:
        return await one_rate(paths, ami_events, rate, seconds, talk_s)
    finally:
        await bare.stop()


async def _backend_run(paths, settings, ami_events, rate, seconds, talk_s) -> dict:
    run_dir = paths.run / f"ceiling-backend-{int(time.time() * 1000)}"
    run_dir.mkdir(parents=True)
    backend = BackendProcess(run_dir, paths)
    backend.start()
    try:
        await backend.wait_ready()
        cpu_before = backend.cpu_seconds()
        row = await one_rate(paths, ami_events, rate, seconds, talk_s)
        row["backend_cpu_s"] = backend.cpu_seconds() - cpu_before
        intake = ((await asyncio.to_thread(backend.health)) or {}).get("checks", {}).get("intake", {})
        row["intake"] = intake_summary(intake)
        return row
    finally:
        backend.stop()


def median_run(runs: list[dict]) -> dict | None:
    """One side at one rate over its runs: the median p50 and p99, and whether every run answered every call."""
    if not runs:
        return None
    p99s = [r["p99"] for r in runs if r["p99"] is not None]
    p50s = [r["p50"] for r in runs if r["p50"] is not None]
    return {"rate": runs[0]["rate"], "calls": runs[0]["calls"],
            "all_answered": all(r["answered"] == r["calls"] for r in runs),
            "p50": statistics.median(p50s) if p50s else None,
            "p99": statistics.median(p99s) if len(p99s) == len(runs) else None}


def intake_summary(health: dict) -> str:
    """The backend's own intake answers from its /healthz: requests, timeouts, and the bucket holding p50/p99."""
    le = [(float(b), n) for b, n in (health.get("le_ms") or {}).items()]
    total = le[-1][1] if le else 0

    def bucket(q: float) -> str:
        for bound, n in le:
            if total and n >= q * total:
                return f"≤{bound:g}"
        return "-"

    return (f"intake requests {health.get('requests', '-')}, timeouts {health.get('timeouts', '-')}, "
            f"p50 {bucket(0.5)} ms, p99 {bucket(0.99)} ms")


def ceilings(rows: dict[str, list[dict | None]], margin_ms: float) -> dict:
    """Highest rate whose (median) p99 is within ``margin_ms`` of the bare responder's at its lowest rate."""
    base = next((r["p99"] for r in rows["bare"] if r), None)
    out = {}
    for name, results in rows.items():
        ok = [r["rate"] for r in results if r and r["p99"] is not None and base is not None
              and r["p99"] <= base + margin_ms and r["all_answered"]]
        out[name] = max(ok, default=None)
    out["ratio"] = (out["jiejing"] / out["bare"]) if out["bare"] and out["jiejing"] else None
    out["base_p99_ms"] = base
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="20,30,40,50,60", help="calls per second, comma separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each storm places calls")
    parser.add_argument("--talk", type=float, default=2.0)
    parser.add_argument("--seats", type=int, default=None)
    parser.add_argument("--margin-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per side and rate; the median p99 counts")
    parser.add_argument("--only", choices=("bare", "jiejing"), help="measure one side only")
    parser.add_argument("--serve-bare", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        host, _, port = args.serve_bare.rpartition(":")
        serve_bare(host, int(port))
        return 0
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    which = (args.only,) if args.only else ("bare", "jiejing")
    repeat = max(1, args.repeat)
    runs = asyncio.run(run(rates, args.seconds, args.talk, args.seats, which, repeat))
    rows = {side: [median_run(r) for r in per_rate] for side, per_rate in runs.items()}
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"{'rate/s':>7}{'calls':>7}  {'bare p50':>9}{'bare p99':>9}{'all ans':>8}"
          f"  {'ours p50':>9}{'ours p99':>9}{'all ans':>8}   (medians of {repeat} runs)")
    empty = {"p50": None, "p99": None, "all_answered": "-"}
    for rate, bare, ours in zip(rates, rows["bare"], rows["jiejing"], strict=True):
        calls = max(1, int(rate * args.seconds))
        bare, ours = bare or empty, ours or empty
        print(f"{rate:>7g}{calls:>7}  {fmt(bare['p50']):>9}{fmt(bare['p99']):>9}{bare['all_answered']!s:>8}"
              f"  {fmt(ours['p50']):>9}{fmt(ours['p99']):>9}{ours['all_answered']!s:>8}")
    for side in ("bare", "jiejing"):
        for rate, per_rate in zip(rates, runs[side], strict=True):
            for r in per_rate:
                extra = f"; backend CPU {r['backend_cpu_s']:.1f} s; {r['intake']}" if "intake" in r else ""
                print(f"  {side:>7} {rate:>5g}/s: p99 {fmt(r['p99'])} ms, answered {r['answered']}/{r['calls']}, "
                      f"SIPp failed {r['sipp_failed']}{extra}")
    c = ceilings(rows, args.margin_ms)
    print(f"ceiling (median p99 within {args.margin_ms:g} ms of the bare responder's {fmt(c['base_p99_ms'])} ms, "
          f"every call answered): bare {c['bare']}/s, jiejing {c['jiejing']}/s, "
          f"ratio {fmt(c['ratio'] and c['ratio'] * 100)} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
