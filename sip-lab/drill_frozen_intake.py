"""Fault drill: callers while the backend is frozen (``kill -STOP``, a blocked event loop).

A frozen backend still has its intake port open: the kernel completes the TCP handshake, Asterisk
sends the request, and no answer comes. This drill puts a listener on the intake port that accepts
and reads but never answers (the same thing seen from Asterisk), places calls through SIPp, and
measures from Asterisk's own AMI time stamps how long after arriving each caller was queued and
reached a seat. The dialplan promises every caller a seat whatever the backend does; the drill says
how long that takes when the backend is frozen. Needs the lab up (``jiejing lab up``) and no backend
running, as root.

    .venv/bin/python -m siplab.drill_frozen_intake [--calls 5] [--rate 1] [--patience 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from core.config import Settings
from siplab import asterisk, lab, storm
from telephony.ami.client import AMIClient


class FrozenIntake:
    """A listener on the intake port that reads every request and answers none (a frozen backend)."""

    def __init__(self) -> None:
        self.held: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.append(writer)  # read the request, answer nothing, keep the connection open
        try:
            while await reader.read(4096):
                pass
        except (asyncio.CancelledError, ConnectionError):
            pass

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._hold, host, port)

    def release(self) -> None:
        """The backend "resumes": the held requests are let go."""
        for writer in self.held:
            writer.close()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def run(calls: int, rate: float, patience_s: float) -> dict:
    paths = asterisk.LabPaths()
    if asterisk.asterisk_pid(paths) is None:
        raise SystemExit("the lab is not up: jiejing lab up")
    lab.up(lab.running_settings(paths) or lab.LabSettings(), paths, log=lambda *_: None)
    settings = Settings()
    frozen = FrozenIntake()
    try:
        await frozen.start(settings.intake_host, settings.intake_port)
    except OSError as exc:
        raise SystemExit(f"the intake port {settings.intake_port} is taken (a backend running?): {exc}") from None
    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    events = ami.subscribe()
    await ami.start()
    try:
        try:
            await ami.wait_connected(10)
        except TimeoutError:
            raise SystemExit("no AMI connection to the lab") from None
        tag = int(time.time()) % 10_000
        numbers = storm.caller_numbers(calls, tag)
        run_dir = paths.run / f"drill-frozen-{int(time.time() * 1000)}"
        run_dir.mkdir(parents=True)
        storm.write_injection(run_dir / "callers.csv", [(n, "Frozen") for n in numbers])
        scenario = storm.prepare_callers(paths, run_dir, talk_s=3, patience_s=patience_s)
        stats = await storm.drive_calls(run_dir, scenario, calls, rate, timeout=calls / rate + patience_s + 40)
        await asyncio.sleep(1)
        # the backend "resumes": the held requests are let go; when do the callers' channels end?
        released = time.time()
        frozen.release()
        await asyncio.sleep(2)
    finally:
        await ami.stop()
        await frozen.close()
    by_uid: dict[str, dict[str, float]] = {}
    caller_of: dict[str, str] = {}
    while not events.empty():
        event = events.get_nowait()
        uid = event.get("Uniqueid") or ""
        if event.name == "Newchannel" and event.get("CallerIDNum") in numbers:
            caller_of[uid] = event.get("CallerIDNum") or ""
            by_uid.setdefault(uid, {})["arrived"] = event.timestamp
        elif uid in by_uid and event.name in ("QueueCallerJoin", "AgentConnect", "Hangup"):
            by_uid[uid].setdefault(event.name, event.timestamp)
    rows = []
    for uid, at in by_uid.items():
        arrived = at["arrived"]
        rows.append({
            "caller": caller_of[uid],
            "queued_s": None if "QueueCallerJoin" not in at else at["QueueCallerJoin"] - arrived,
            "seat_s": None if "AgentConnect" not in at else at["AgentConnect"] - arrived,
            "hung_up_s": None if "Hangup" not in at else at["Hangup"] - arrived,
            "released_s": released - arrived,
        })
    return {"calls": calls, "intake_requests_held": len(frozen.held), "rows": rows,
            "sipp_successful": stats.get("SuccessfulCall(C)"), "sipp_failed": stats.get("FailedCall(C)")}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1.0, help="calls per second")
    parser.add_argument("--patience", type=float, default=20.0, help="how long a caller waits before hanging up (s)")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.calls, args.rate, args.patience))
    print("seconds after each caller arrived (Asterisk's AMI time stamps):")
    print(f"{'caller':<14}{'queued':>9}{'at a seat':>11}{'channel ended':>15}{'backend resumed':>17}")
    for row in report["rows"]:
        print(f"{row['caller']:<14}{_s(row['queued_s']):>9}{_s(row['seat_s']):>11}{_s(row['hung_up_s']):>15}"
              f"{_s(row['released_s']):>17}")
    seated = [r for r in report["rows"] if r["seat_s"] is not None and r["seat_s"] <= 3.0]
    print(f"calls {report['calls']}, intake requests held by the frozen backend {report['intake_requests_held']}, "
          f"at a seat within 3 s: {len(seated)}/{len(report['rows'])}; "
          f"SIPp: {report['sipp_successful']} successful, {report['sipp_failed']} failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
