"""Fault drill: a storm of 110 calls while the backend is killed (``kill -9``) or stopped (``kill -STOP``).

The backend (``jiejing serve``, a fresh SQLite store) runs as its own process. SIPp places the calls;
``--fault-at`` seconds into the storm the backend is killed (and started again ``--down`` seconds
later) or stopped (and continued ``--down`` seconds later). When the storm is over and the backend
has caught up, every ticket is compared with Asterisk's own log (CEL: steps and times, seat, end,
recording sha256 of the finished file), ``jiejing journal verify`` walks the journal, and Asterisk's
AMI time stamps tell how long each caller took to reach a seat. Needs the lab up
(``jiejing lab up``) and no backend running, as root.

    .venv/bin/python -m siplab.drill_backend --fault kill [--calls 60] [--rate 2] [--fault-at 5] [--down 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from core.config import Settings
from siplab import asterisk, lab, storm, trail_check
from telephony.ami.client import AMIClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackendProcess:
    """``jiejing serve`` as a child process, with its own store and log."""

    def __init__(self, run_dir: Path, paths: asterisk.LabPaths) -> None:
        self.run_dir = run_dir
        self.port = _free_port()
        self.db_url = f"sqlite+aiosqlite:///{run_dir / 'tickets.db'}"
        self.env = {
            **os.environ,
            "JIEJING_DB_URL": self.db_url,
            "JIEJING_HTTP_PORT": str(self.port),
            "JIEJING_RECORDINGS_DIR": str(paths.recordings),
            "JIEJING_CEL_FILE": str(paths.cel_file),
            "JIEJING_WRAP_UP_S": "0",
            "JIEJING_LAB": "yes",  # the lab's Asterisk, with the AMI secrets the repository ships
            # The drills' 2 s calls would each count as dropped (ended within seconds of the answer) and be called
            # back, a second recorded call on every ticket; call-backs have their own lab tests and benchmark.
            "JIEJING_AUTO_CALLBACK": "no",
        }
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.run_dir / f"backend-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "jiejing"), "serve"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     pass_fds=())
        log.close()

    def cpu_seconds(self) -> float:
        """User and system CPU the backend has used so far (0 once it is gone)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (AttributeError, OSError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return None

    async def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = await asyncio.to_thread(self.health)
            if health and health.get("checks", {}).get("ami", {}).get("ok"):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"the backend exited ({self.proc.returncode}); see {self.run_dir}")
            await asyncio.sleep(0.2)
        raise SystemExit(f"the backend was not ready within {timeout:.0f} s; see {self.run_dir}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def journal_verify(self) -> tuple[int, str]:
        done = subprocess.run([str(Path(sys.executable).parent / "jiejing"), "journal", "verify"], env=self.env,
                              capture_output=True, text=True, timeout=120)
        return done.returncode, (done.stdout + done.stderr).strip()


async def _fault(backend: BackendProcess, kind: str, at_s: float, down_s: float) -> None:
    if kind == "none":
        return
    await asyncio.sleep(at_s)
    if kind == "kill":
        backend.signal(signal.SIGKILL)
        await asyncio.sleep(down_s)
        backend.start()
        await backend.wait_ready(120)
    else:
        backend.signal(signal.SIGSTOP)
        await asyncio.sleep(down_s)
        backend.signal(signal.SIGCONT)


async def _watch_health(backend: BackendProcess, samples: list, stop: asyncio.Event) -> None:
    """/healthz every 0.5 s: (seconds since start, ok, the failing checks' reasons)."""
    started = time.monotonic()
    while not stop.is_set():
        health = await asyncio.to_thread(backend.health)
        if health is None:
            samples.append((time.monotonic() - started, None, "no answer"))
        else:
            bad = {k: v.get("reason") or "not ok" for k, v in health.get("checks", {}).items() if v.get("ok") is False}
            samples.append((time.monotonic() - started, not bad, bad))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def _storm(paths, backend: BackendProcess, ami_events: asyncio.Queue, run_dir: Path, *, calls: int,
                 rate: float, talk_s: float, tolerance_ms: float, catch_up_s: float, fault=None) -> dict:
    """Place ``calls``, wait for the backend to catch up, compare every ticket with Asterisk's log."""
    offset = trail_check.offset_now(paths.cel_file)
    numbers = set(storm.caller_numbers(calls, int(time.time() * 1000) % 10_000))
    storm.write_injection(run_dir / "callers.csv", [(n, "Drill") for n in sorted(numbers)])
    scenario = storm.prepare_callers(paths, run_dir, talk_s=talk_s, patience_s=60)
    faulting = asyncio.create_task(fault) if fault is not None else None
    try:
        stats = await storm.drive_calls(run_dir, scenario, calls, rate, timeout=calls / rate + talk_s + 180)
    except asterisk.LabError as exc:
        # An overloaded Asterisk may keep SIPp's calls past its bound: the record is compared all the same.
        print(f"SIPp: {exc} (its counts below are then 0)", flush=True)
        stats = {}
    if faulting is not None:
        await faulting
    ended = time.monotonic()
    caught_up_s = None
    deadline = time.monotonic() + catch_up_s
    candidate: tuple[float, int] | None = None  # (seconds after the storm, calls in the log) when it matched
    while True:
        log_calls = {u: c for u, c in trail_check.cel_calls(paths.cel_file, offset).items()
                     if c.events[0].caller in numbers}
        result = await trail_check.compare(backend.db_url, log_calls, paths.recordings, tolerance_ms=tolerance_ms)
        over = all(trail_check.expected(c).end_step is not None for c in log_calls.values())
        # The record equals Asterisk's log: every call in it has its ticket, none differs. The log may have
        # fewer calls than were placed (INVITEs an overloaded Asterisk never took) or more (an INVITE it took
        # again as a new call after answering the first late), so it must also have stopped growing: caught
        # up at the first match that the next look confirms.
        matches = over and bool(log_calls) and not result.differing and result.tickets == result.calls
        if matches and candidate is not None and candidate[1] == len(log_calls):
            caught_up_s = candidate[0]
            break
        candidate = (time.monotonic() - ended, len(log_calls)) if matches else None
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    arrived: dict[str, float] = {}
    seated: dict[str, float] = {}
    while not ami_events.empty():
        event = ami_events.get_nowait()
        uid = event.get("Uniqueid") or ""
        if event.name == "Newchannel" and event.get("CallerIDNum") in numbers:
            arrived[uid] = event.timestamp
        elif event.name == "AgentConnect" and uid in arrived:
            seated.setdefault(uid, event.timestamp - arrived[uid])
    deltas = sorted(result.deltas_ms)
    answer_ms = sorted(v * 1000 for v in seated.values())
    return {
        "calls": calls, "rate": rate,
        "sipp_successful": storm._int(stats, "SuccessfulCall(C)"), "sipp_failed": storm._int(stats, "FailedCall(C)"),
        "calls_in_log": result.calls, "tickets": result.tickets, "differing": result.differing,
        "recordings_ok": result.recordings_ok, "caught_up_s": caught_up_s,
        "delta_ms_p50": storm.percentile(deltas, 50), "delta_ms_max": deltas[-1] if deltas else None,
        "at_seat_within_3s": sum(1 for s in seated.values() if s <= 3.0), "answered": len(seated),
        "answer_ms_p50": storm.percentile(answer_ms, 50), "answer_ms_p99": storm.percentile(answer_ms, 99),
    }


async def run(fault: str, calls: int, rate: float, fault_at: float, down: float, talk_s: float,
              tolerance_ms: float, *, seats: int | None = None, then_calls: int = 0, then_rate: float = 2.0,
              catch_up_s: float = 60.0) -> dict:
    paths = asterisk.LabPaths()
    if asterisk.asterisk_pid(paths) is None:
        raise SystemExit("the lab is not up: jiejing lab up")
    current = lab.running_settings(paths) or lab.LabSettings()
    if seats is not None and seats != current.seats:
        current = replace(current, seats=seats)
    lab.up(current, paths, log=lambda *_: None)
    settings = Settings()
    run_dir = paths.run / f"drill-{fault}-{int(time.time() * 1000)}"
    run_dir.mkdir(parents=True)
    backend = BackendProcess(run_dir, paths)
    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    ami_events = ami.subscribe()
    samples: list = []
    watching = asyncio.Event()
    backend.start()
    try:
        await backend.wait_ready()
        await ami.start()
        await ami.wait_connected(10)
        watcher = asyncio.create_task(_watch_health(backend, samples, watching))
        report = await _storm(paths, backend, ami_events, run_dir, calls=calls, rate=rate, talk_s=talk_s,
                              tolerance_ms=tolerance_ms, catch_up_s=catch_up_s,
                              fault=_fault(backend, fault, fault_at, down))
        watching.set()
        await watcher
        if then_calls:
            then_dir = run_dir / "then"
            then_dir.mkdir()
            report["then"] = await _storm(paths, backend, ami_events, then_dir, calls=then_calls, rate=then_rate,
                                          talk_s=talk_s, tolerance_ms=tolerance_ms, catch_up_s=catch_up_s)
        health = await asyncio.to_thread(backend.health)
        backend.stop()
        verify_rc, verify_out = await asyncio.to_thread(backend.journal_verify)
    finally:
        await ami.stop()
        backend.stop()
    not_ok = [x for x in samples if x[1] is not True]
    reasons = sorted({r for _, ok, bad in not_ok for r in (bad.values() if isinstance(bad, dict) else [bad])})
    report.update({
        "fault": fault, "fault_at_s": fault_at, "down_s": down,
        "journal_verify_rc": verify_rc, "journal_verify": verify_out.splitlines()[-3:],
        "health_samples": len(samples), "health_not_ok": len(not_ok),
        "health_not_ok_span_s": (not_ok[0][0], not_ok[-1][0]) if not_ok else None,
        "health_reasons": reasons[:10],
        "health_after": health and {k: v.get("ok") for k, v in health.get("checks", {}).items()},
        "run_dir": str(run_dir),
    })
    return report


def _line(name: str, r: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return (f"{name:<7}{r['calls']:>6}{r['calls_in_log']:>8}{r['tickets']:>9}{len(r['differing']):>11}"
            f"{r['recordings_ok']:>8}{fmt(r['delta_ms_max']):>10}{r['at_seat_within_3s']:>6}/{r['answered']:<5}"
            f"{fmt(r['answer_ms_p99']):>10}{fmt(r['caught_up_s']):>11}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=("kill", "stop", "none"), required=True,
                        help="kill -9 and start again, kill -STOP and -CONT, or no fault (an overload)")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rate", type=float, default=2.0, help="calls per second")
    parser.add_argument("--fault-at", type=float, default=5.0, help="seconds into the storm")
    parser.add_argument("--down", type=float, default=10.0, help="seconds killed or stopped")
    parser.add_argument("--talk", type=float, default=3.0, help="seconds a seat talks after answering")
    parser.add_argument("--tolerance-ms", type=float, default=0.001,
                        help="how far a step may be from the log (default: the same microsecond)")
    parser.add_argument("--seats", type=int, help="the lab's seats (jiejing lab up --seats)")
    parser.add_argument("--then-calls", type=int, default=0, help="an ordinary storm afterwards: calls")
    parser.add_argument("--then-rate", type=float, default=2.0, help="an ordinary storm afterwards: calls/s")
    parser.add_argument("--catch-up", type=float, default=60.0, help="seconds to wait for the store to catch up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.fault, args.calls, args.rate, args.fault_at, args.down, args.talk,
                             args.tolerance_ms, seats=args.seats, then_calls=args.then_calls,
                             then_rate=args.then_rate, catch_up_s=args.catch_up))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(f"{'storm':<7}{'calls':>6}{'in log':>8}{'tickets':>9}{'differing':>11}{'rec ok':>8}{'Δ max ms':>10}"
              f"{'seat ≤3 s':>11}{'p99 ms':>10}{'caught up':>11}")
        print(_line(report["fault"], report))
        if "then" in report:
            print(_line("then", report["then"]))
        for uid, problems in list(report["differing"].items())[:20]:
            print(f"  {uid}: {'; '.join(problems)}")
        span = report["health_not_ok_span_s"]
        print(f"/healthz not ok in {report['health_not_ok']} of {report['health_samples']} samples"
              + (f" ({span[0]:.0f}–{span[1]:.0f} s into the storm)" if span else "")
              + "".join(f"\n  {r}" for r in report["health_reasons"]))
        print(f"journal verify: {'clean' if report['journal_verify_rc'] == 0 else 'FINDINGS'}; "
              f"SIPp: {report['sipp_successful']} successful, {report['sipp_failed']} failed; run in {report['run_dir']}")
    then_ok = not report.get("then", {}).get("differing")
    return 0 if not report["differing"] and then_ok and report["journal_verify_rc"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

