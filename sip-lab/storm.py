"""`jiejing lab storm`: N calls at R calls/s through the lab, and a report.

SIPp plays the carrier trunk. Every call of a run gets a caller number unique
to the run, so the report can find exactly this run's tickets in the store.
Answer time is taken from the ticket trail, i.e. from Asterisk's own AMI
timestamps: ``received`` (the caller's channel was created when its INVITE
arrived) to ``answered`` (a seat answered: AgentConnect).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from core.calls.lifecycle import CALL_LIVE_STATES
from core.calls.tables import Recording, Ticket
from core.config import Settings
from core.store import make_engine

from . import asterisk, lab, sipp

ANSWER_TARGET_MS = 3000
STORE_CATCH_UP_S = 120.0  # how long the report waits for the backend to store every call
REPORT_KEYS = ("calls", "answered", "failed", "abandoned", "tickets", "recordings", "within_3s_pct", "answer_ms")


@dataclass
class StormOptions:
    calls: int
    rate: float
    seats: int | None = None
    talk_s: float = 8.0
    patience_s: float = 60.0
    dispatch: bool = False
    mix: bool = False  # classify calls with a mix of incident types (fraud and 12345 are handed over)
    dispatch_after_s: float = 2.0  # talk time before the call-taker dispatches (or classifies)
    officer_ring_ms: int = 3000  # the lab's officer phones ring this long before answering
    json_path: str | None = None
    settings: Settings = field(default_factory=Settings.from_env)
    paths: asterisk.LabPaths = field(default_factory=asterisk.LabPaths)
    caller_name: str = "Storm caller"
    out = sys.stderr

    def validate(self) -> None:
        if not 1 <= self.calls <= 100_000:
            raise asterisk.LabError("--calls must be 1..100000")
        if not 0.01 <= self.rate <= 100:
            raise asterisk.LabError("--rate must be 0.01..100 calls/s")
        if not 0.5 <= self.talk_s <= 3600:
            raise asterisk.LabError("--talk-s must be 0.5..3600")
        if not 1 <= self.patience_s <= 3600:
            raise asterisk.LabError("--patience-s must be 1..3600")
        if self.dispatch and self.dispatch_after_s + 1 + self.officer_ring_ms / 1000 >= self.talk_s:
            raise asterisk.LabError("--talk-s must leave time to dispatch and for the officer to answer")


def interpolated_percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between the nearest ranks (the latency benchmarks', over many short samples)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every figure is a real call)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def caller_numbers(count: int, run_tag: int) -> list[str]:
    # 139 + 4-digit run tag + 4-digit index: 11 digits like a mobile number,
    # unique within the run and unlikely to repeat across runs.
    return [f"139{run_tag:04d}{i:04d}" for i in range(1, count + 1)]


def write_injection(path: Path, callers: list[tuple]) -> None:
    """SIPp injection file: one (number, display name[, latitude, longitude]) per call, in order."""
    with path.open("w", newline="") as f:
        f.write("SEQUENTIAL\n")
        for fields in callers:
            # SIPp splits fields on ';' and has no quoting: keep it out of the data.
            f.write("".join(f"{str(v).replace(';', ' ')};" for v in fields) + "\n")


def read_stats(stat_file: Path) -> dict[str, str]:
    """The last row of SIPp's -trace_stat file, by column name."""
    try:
        lines = [ln for ln in stat_file.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    return dict(zip(header, lines[-1].split(";")))


def _int(stats: dict[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


async def set_seats(settings: Settings, lab_seats: int, active: int | None) -> None:
    """Pause the seats beyond ``active`` (or unpause all) through AMI."""
    from telephony.ami.client import AMIClient

    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    await ami.start()
    try:
        for _ in range(50):
            if ami.connected:
                break
            await asyncio.sleep(0.1)
        for i in range(1, lab_seats + 1):
            paused = active is not None and i > active
            await ami.action(
                "QueuePause",
                {"Interface": f"PJSIP/{asterisk.seat_name(i)}", "Paused": "true" if paused else "false",
                 "Reason": "storm: seat not staffed" if paused else ""},
            )
    finally:
        await ami.stop()


async def collect(settings: Settings, numbers: list[str]) -> dict:
    engine = make_engine(settings.db_url)
    try:
        async with engine.connect() as conn:
            from sqlalchemy.ext.asyncio import AsyncSession

            async with AsyncSession(bind=conn) as session:
                rows = (
                    await session.scalars(
                        select(Ticket).where(Ticket.caller_id.in_(numbers)).options(selectinload(Ticket.steps))
                    )
                ).all()
                ids = [t.id for t in rows]
                recordings = 0
                if ids:
                    recordings = await session.scalar(
                        select(func.count(func.distinct(Recording.ticket_id))).where(Recording.ticket_id.in_(ids))
                    )
                answer_ms: list[float] = []
                answered = abandoned = 0
                for t in rows:
                    at = {s.step: s.at_us for s in t.steps}
                    if "answered" in at and "received" in at:
                        answered += 1
                        answer_ms.append((at["answered"] - at["received"]) / 1000)
                    elif "abandoned" in at:
                        abandoned += 1
                return {"tickets": len(rows), "answered": answered, "abandoned": abandoned,
                        "recordings": int(recordings or 0), "answer_ms": answer_ms, "rows": rows,
                        "ended": sum(1 for t in rows if t.state not in CALL_LIVE_STATES)}
    finally:
        await engine.dispose()


def prepare_callers(paths: asterisk.LabPaths, run_dir: Path, *, talk_s: float, patience_s: float,
                    scenario: str = "caller.xml") -> Path:
    """Seats talk ``talk_s`` after answering; callers give up after ``patience_s``.

    ``caller_located.xml`` also sends the handset's position (injection fields 3 and 4) as PIDF-LO.
    """
    current = lab.running_settings(paths) or lab.LabSettings()
    talk_ms = int(talk_s * 1000)
    if current.seat_talk_ms != talk_ms:
        lab.up(replace(current, seat_talk_ms=talk_ms), paths, log=lambda *_: None)
    return sipp.render(scenario, run_dir, PATIENCE_MS=int(patience_s * 1000), AUDIO=sipp.audio_pcap(paths.run))


async def drive_calls(run_dir: Path, scenario: Path, calls: int, rate: float, *, timeout: float,
                      progress=None) -> dict[str, str]:
    """Run the caller scenario (injection file ``callers.csv`` in run_dir); SIPp's final statistics."""
    stat_file = run_dir / "stats.csv"
    proc = await asyncio.create_subprocess_exec(
        sipp.sipp_binary(), sipp.ASTERISK_SIP, "-sf", str(scenario), "-inf", str(run_dir / "callers.csv"),
        "-i", "127.0.0.1", "-p", str(sipp.CALLER_SIP_PORT), "-mi", "127.0.0.1", "-mp", str(sipp.CALLER_MEDIA_PORT),
        "-r", f"{rate:g}", "-rp", "1000", "-m", str(calls), "-l", str(calls),
        "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
        "-trace_err", "-error_file", str(run_dir / "errors.log"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=run_dir,
    )
    started = time.monotonic()
    try:
        while True:
            try:
                await asyncio.wait_for(proc.wait(), timeout=1.0)
                break
            except asyncio.TimeoutError:
                pass
            if progress:
                progress(read_stats(stat_file), time.monotonic() - started)
            if time.monotonic() - started > timeout:
                raise asterisk.LabError(f"SIPp did not finish within {timeout:.0f} s; see {run_dir}")
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    return read_stats(stat_file)


class DispatchDriver:
    """Plays the call-taker over the HTTP API: locate and dispatch each answered call
    ``dispatch_after_s`` after its answer, and clear incidents whose call ended so
    their officers are free for the next ones."""

    def __init__(self, opts: StormOptions, numbers: list[str]) -> None:
        self.opts = opts
        self.numbers = set(numbers)
        self.base = f"http://{opts.settings.http_host}:{opts.settings.http_port}"
        self.dispatched: set[str] = set()
        self.cleared: set[str] = set()
        self.errors: list[str] = []
        self.rng = random.Random(7)
        self.types: dict[str, str] = {}
        self.tasks: set[asyncio.Task] = set()
        # Text reports posted through the app gateway alongside the calls (--mix): one per 8 calls.
        self.reports = {"posted": 0, "tickets": set(), "duplicates": 0, "keyword_alerts": 0, "taken": 0,
                        "dispatched": 0, "officer_joined": 0, "to_ringing_ms": [],
                        "closed": 0, "post_ms": []}

    # A plausible day's mix at a city center: most calls are police matters,
    # about one in ten is fraud, one in ten belongs to the 12345 hotline.
    MIX = (("person", 15), ("property", 25), ("fraud", 10), ("traffic", 20), ("dispute", 15),
           ("public_service", 10), ("other", 5))

    async def _login(self, http, role: str = "supervisor") -> str:
        from core.auth.users import AuthService, Role

        engine = make_engine(self.opts.settings.db_url)
        try:
            name, password = f"storm-{role}-{random.randrange(10**9)}", f"{random.getrandbits(128):x}"
            await AuthService(engine).add_user(name, password, Role(role))
        finally:
            await engine.dispose()
        async with http.post(f"{self.base}/api/login", json={"username": name, "password": password}) as r:
            r.raise_for_status()
            token = (await r.json())["token"]
        if role == "supervisor":
            http.headers["Authorization"] = f"Bearer {token}"
        return token

    # What people write to 110 by app; one in three names a major crime.
    REPORT_TEXTS = ("门口有人持刀抢劫 robbery in progress", "楼下两人打架，已经见血", "我的电动车被偷了",
                    "有人在小区里放火 arson", "邻居家一直有小孩哭喊", "路口红绿灯坏了，车很多")

    async def run_reports(self, http, done: asyncio.Event) -> None:
        """Post app reports as the gateway, then take and close each one as a call-taker."""
        gateway = {"Authorization": f"Bearer {await self._login(http, 'gateway')}"}
        count = max(1, self.opts.calls // 8)
        every = self.opts.calls / self.opts.rate / count
        handling: list[asyncio.Task] = []
        for i in range(count):
            if done.is_set():
                break
            lat, lon = self._spot()
            body = {"ref": f"storm-{id(self)}-{i}", "sender": f"139{random.randrange(10**8):08d}",
                    "text": self.REPORT_TEXTS[i % len(self.REPORT_TEXTS)], "lat": lat, "lon": lon,
                    "attachments": [{"kind": "photo", "url": f"https://app.invalid/media/{i}.jpg"}]}
            for attempt in range(2):  # the second post is the gateway's retry: same ticket, no second alert
                started = time.monotonic()
                async with http.post(f"{self.base}/api/reports", json=body, headers=gateway) as r:
                    answer = await r.json() if r.content_type == "application/json" else {}
                    if r.status not in (200, 201):
                        self.errors.append(f"POST /api/reports: {r.status} {str(answer)[:200]}")
                        break
                self.reports["post_ms"].append((time.monotonic() - started) * 1000)
                self.reports["posted"] += 1
                self.reports["duplicates"] += bool(answer["duplicate"])
                self.reports["tickets"].add(answer["number"])
                if not attempt:
                    self.reports["keyword_alerts"] += bool(answer["major_incident"])
            else:
                handling.append(asyncio.create_task(self._take_and_close(http, answer["number"])))
            try:
                await asyncio.wait_for(done.wait(), every)
            except asyncio.TimeoutError:
                pass
        await asyncio.gather(*handling, return_exceptions=True)

    async def _take_and_close(self, http, number: str) -> None:
        await asyncio.sleep(2.0)  # a call-taker reads it
        if not await self._post(http, "POST", f"/api/tickets/{number}/take", {"seat": "storm"}, None, number):
            return
        self.reports["taken"] += 1
        if self.opts.dispatch and await self._dispatch_report(http, number):
            # sent and on his way: the officer clears it, then the call-taker closes it
            if not await self._post(http, "POST", f"/api/tickets/{number}/clear",
                                    {"disposition": "storm: report handled on scene"}, None, number):
                return
        if await self._post(http, "POST", f"/api/tickets/{number}/close",
                            {"disposition": "storm: text report handled", "by": "storm"}, None, number):
            self.reports["closed"] += 1

    async def _dispatch_report(self, http, number: str) -> bool:
        """Dispatch a taken report (its position came with it); wait for the ladder; time report → ringing."""
        if not await self._post(http, "POST", f"/api/tickets/{number}/dispatch", {}, None, number):
            return False
        self.reports["dispatched"] += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with http.get(f"{self.base}/api/tickets/{number}") as r:
                ticket = await r.json()
            steps = ticket.get("steps", [])
            at = {st["step"]: st["at_us"] for st in reversed(steps)}  # the first of each
            if ticket.get("state") in ("en_route", "ended"):
                if "officer_ringing" in at and "reported" in at:
                    self.reports["to_ringing_ms"].append((at["officer_ringing"] - at["reported"]) / 1000)
                joined = ticket["state"] == "en_route"
                self.reports["officer_joined"] += joined
                return joined
            await asyncio.sleep(0.5)
        self.errors.append(f"{number}: the report's dispatch did not end within 60 s")
        return False

    def _spot(self) -> tuple[float, float]:
        # somewhere within ~1.5 km of the lab city's centre, where its officers are
        lat0, lon0 = 31.2304, 121.4737
        return lat0 + self.rng.uniform(-0.012, 0.012), lon0 + self.rng.uniform(-0.014, 0.014)

    async def run(self, done: asyncio.Event) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            await self._login(http)
            if self.opts.mix:
                reports = asyncio.create_task(self.run_reports(http, done))
                self.tasks.add(reports)
                reports.add_done_callback(self.tasks.discard)
            pending: dict[str, float] = {}
            while not done.is_set():
                now = time.time()
                for t in await self._tickets():
                    if t["state"] == "answered" and t["number"] not in self.dispatched:
                        pending.setdefault(t["number"], now + self.opts.dispatch_after_s)
                    elif t["state"] == "en_route" and t["number"] not in self.cleared:
                        await self._post(http, "POST", f"/api/tickets/{t['number']}/clear",
                                         {"disposition": "storm: handled"}, self.cleared, t["number"])
                for number, due in list(pending.items()):
                    if due <= now:
                        del pending[number]
                        self.dispatched.add(number)  # handled once, whatever happens
                        task = asyncio.create_task(self._handle(http, number))
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
                await asyncio.sleep(0.2)
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _handle(self, http, number: str) -> None:
        lat, lon = self._spot()
        if not await self._post(http, "PUT", f"/api/tickets/{number}/location",
                                {"lat": lat, "lon": lon, "address": "storm"}, None, number):
            return
        if self.opts.mix:
            kinds, weights = zip(*self.MIX)
            kind = self.rng.choices(kinds, weights)[0]
            self.types[number] = kind
            # fraud and public-service calls are handed over by the routing rules
            await self._post(http, "POST", f"/api/tickets/{number}/classify", {"type": kind, "priority": 2},
                             None, number)
            if kind in ("fraud", "public_service"):
                return
        if self.opts.dispatch:
            await self._post(http, "POST", f"/api/tickets/{number}/dispatch", {}, None, number)

    async def _post(self, http, method: str, path: str, body: dict, into: set | None, number: str) -> bool:
        async with http.request(method, self.base + path, json=body) as r:
            if r.status >= 400:
                self.errors.append(f"{method} {path}: {r.status} {(await r.text())[:200]}")
                return False
        if into is not None:
            into.add(number)
        return True

    async def _tickets(self) -> list[dict]:
        engine = make_engine(self.opts.settings.db_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(Ticket.number, Ticket.state).where(Ticket.caller_id.in_(self.numbers)))
                return [{"number": n, "state": st} for n, st in rows]
        finally:
            await engine.dispose()


def dispatch_figures(rows, officer_ring_ms: int) -> dict:
    """Time to officer from the ticket steps of dispatched calls."""
    to_ringing, to_bridged, share = [], [], []
    joined = 0
    for t in rows:
        at = {}
        for s in t.steps:
            at.setdefault(s.step, s.at_us)  # first occurrence of each step
        if "dispatch_requested" not in at or "officer_ringing" not in at:
            continue
        to_ringing.append((at["officer_ringing"] - at["dispatch_requested"]) / 1000)
        if "officer_joined" in at and "answered" in at:
            joined += 1
            to_bridged.append((at["officer_joined"] - at["answered"]) / 1000)
            # everything but the officer's own ring: our side and Asterisk's
            last_ring = max(s.at_us for s in t.steps if s.step == "officer_ringing")
            share.append(to_ringing[-1] + (at["officer_joined"] - last_ring) / 1000 - officer_ring_ms)

    def pcts(v):
        return {"p50": _round(percentile(v, 50)), "p95": _round(percentile(v, 95)),
                "p99": _round(percentile(v, 99)), "max": _round(max(v) if v else None)}

    return {"dispatched": len(to_ringing), "officer_joined": joined,
            "request_to_officer_ringing_ms": pcts(to_ringing), "answered_to_three_parties_ms": pcts(to_bridged),
            "backend_share_ms": pcts(share)}


def _progress(out, line: str) -> None:
    if out.isatty():
        out.write("\r" + line.ljust(100))
    else:
        out.write(line + "\n")
    out.flush()


async def run_async(opts: StormOptions) -> dict:
    opts.validate()
    paths = opts.paths
    if not asterisk.asterisk_pid(paths):
        raise asterisk.LabError("the lab is not up: run `jiejing lab up` first")
    current = lab.running_settings(paths) or lab.LabSettings()
    lab_seats = current.seats
    opts.officer_ring_ms = current.officer_ring_ms
    if opts.seats is not None and not 1 <= opts.seats <= lab_seats:
        raise asterisk.LabError(f"--seats must be 1..{lab_seats} (the lab runs {lab_seats} seats)")
    if not asterisk.port_open(opts.settings.http_port, opts.settings.http_host):
        print("storm: warning: the backend (jiejing serve) is not reachable; tickets will be missing",
              file=opts.out)

    run_tag = random.randrange(10_000)
    run_dir = paths.run / f"storm-{int(time.time())}-{run_tag:04d}"
    run_dir.mkdir(parents=True)
    numbers = caller_numbers(opts.calls, run_tag)
    write_injection(run_dir / "callers.csv", [(n, f"{opts.caller_name} {n[-4:]}") for n in numbers])
    scenario = prepare_callers(paths, run_dir, talk_s=opts.talk_s, patience_s=opts.patience_s)

    await set_seats(opts.settings, lab_seats, opts.seats)
    started = time.monotonic()
    driver_done = asyncio.Event()
    driver = DispatchDriver(opts, numbers) if (opts.dispatch or opts.mix) else None
    driver_task = asyncio.create_task(driver.run(driver_done)) if driver else None
    try:
        stats = await drive_calls(
            run_dir, scenario, opts.calls, opts.rate,
            timeout=opts.calls / opts.rate + opts.patience_s + opts.talk_s + 60,
            progress=lambda s, elapsed: _progress(
                opts.out, f"storm: {elapsed:5.0f}s  started {_int(s, 'TotalCallCreated')}/{opts.calls}  "
                          f"up {_int(s, 'CurrentCall')}  ok {_int(s, 'SuccessfulCall(C)')}  "
                          f"failed {_int(s, 'FailedCall(C)')}"),
        )
    finally:
        await set_seats(opts.settings, lab_seats, None)
        if driver_task:
            await asyncio.sleep(1.0)  # let the last ended calls be cleared
            driver_done.set()
            await asyncio.gather(driver_task, return_exceptions=True)
    if opts.out.isatty():
        opts.out.write("\n")
    sipp_failed = _int(stats, "FailedCall(C)")
    sipp_ok = _int(stats, "SuccessfulCall(C)")

    # Let the backend finish binding recordings of the last calls, and store the calls it is still reading from
    # Asterisk's log: a call is failed when it never has its ticket, not when its ticket comes late.
    waited_from = time.monotonic()
    deadline = waited_from + 20
    settled = waited_from + STORE_CATCH_UP_S
    while True:
        found = await collect(opts.settings, numbers)
        complete = found["answered"] + found["abandoned"] >= opts.calls - sipp_failed
        if found["recordings"] >= found["ended"] and complete or time.monotonic() > (deadline if complete
                                                                                       else settled):
            break
        await asyncio.sleep(0.5)
    opts.out.write(f"storm: store read {time.monotonic() - waited_from:.1f} s after the last call\n")

    answer_ms = found["answer_ms"]
    answered = found["answered"]
    abandoned = found["abandoned"]
    failed = max(sipp_failed, opts.calls - answered - abandoned)
    within = sum(1 for ms in answer_ms if ms <= ANSWER_TARGET_MS)
    report = {
        "calls": opts.calls,
        "answered": answered,
        "failed": failed,
        "abandoned": abandoned,
        "tickets": found["tickets"],
        "recordings": found["recordings"],
        "within_3s_pct": round(100 * within / opts.calls, 2) if opts.calls else 0.0,
        "answer_ms": {
            "p50": _round(percentile(answer_ms, 50)),
            "p95": _round(percentile(answer_ms, 95)),
            "p99": _round(percentile(answer_ms, 99)),
            "max": _round(max(answer_ms) if answer_ms else None),
        },
    }
    if opts.mix:
        handed: dict[str, int] = {}
        for t in found["rows"]:
            for step in t.steps:
                if step.step == "handed_over":
                    target = (step.detail or {}).get("to", "?")
                    handed[target] = handed.get(target, 0) + 1
        classified: dict[str, int] = {}
        for kind in driver.types.values():
            classified[kind] = classified.get(kind, 0) + 1
        r = driver.reports
        report["triage"] = {"classified": classified, "handed_over": handed, "errors": driver.errors[:20],
                            "text_reports": {
                                "posted": r["posted"], "tickets": len(r["tickets"]), "duplicates": r["duplicates"],
                                "keyword_alerts": r["keyword_alerts"], "taken": r["taken"], "closed": r["closed"],
                                "post_ms_p50": _round(percentile(r["post_ms"], 50)),
                                "post_ms_max": _round(max(r["post_ms"]) if r["post_ms"] else None),
                                "dispatched": r["dispatched"], "officer_joined": r["officer_joined"],
                                "report_to_officer_ringing_ms": {
                                    "p50": _round(percentile(r["to_ringing_ms"], 50)),
                                    "p99": _round(percentile(r["to_ringing_ms"], 99)),
                                    "max": _round(max(r["to_ringing_ms"]) if r["to_ringing_ms"] else None)}}}
    if opts.dispatch:
        report["dispatch"] = dispatch_figures(found["rows"], opts.officer_ring_ms)
        report["dispatch"]["errors"] = driver.errors[:20] if driver else []
        # calls handed over to another service are not dispatched
        handed_over = sum(report.get("triage", {}).get("handed_over", {}).get(k, 0)
                          for k in ("anti_fraud", "hotline_12345"))
        answered = answered - handed_over
        if report["dispatch"]["officer_joined"] < answered:
            report["failed"] = max(report["failed"], answered - report["dispatch"]["officer_joined"])
    print_report(report, opts, sipp_ok=sipp_ok, sipp_failed=sipp_failed, elapsed=time.monotonic() - started,
                 run_dir=run_dir)
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def print_report(report: dict, opts: StormOptions, *, sipp_ok: int, sipp_failed: int, elapsed: float,
                 run_dir: Path) -> None:
    a = report["answer_ms"]
    rows = [
        ("calls", report["calls"]),
        ("answered by a seat", report["answered"]),
        ("failed", report["failed"]),
        ("abandoned", report["abandoned"]),
        ("tickets", report["tickets"]),
        ("recordings", report["recordings"]),
        ("answered within 3 s", f'{report["within_3s_pct"]} %'),
        ("answer ms p50 / p95 / p99 / max", f'{a["p50"]} / {a["p95"]} / {a["p99"]} / {a["max"]}'),
        ("SIPp successful / failed calls", f"{sipp_ok} / {sipp_failed}"),
        ("rate, seats, talk, patience",
         f"{opts.rate:g}/s, {opts.seats or 'all'}, {opts.talk_s:g} s, {opts.patience_s:g} s"),
        ("wall time", f"{elapsed:.1f} s"),
        ("run folder", str(run_dir)),
    ]
    if "triage" in report:
        rows += [("classified", ", ".join(f"{k} {v}" for k, v in sorted(report["triage"]["classified"].items()))),
                 ("handed over", ", ".join(f"{k} {v}" for k, v in sorted(report["triage"]["handed_over"].items()))
                  or "none")]
        t = report["triage"]["text_reports"]
        rows += [("app reports posted / tickets / retries", f'{t["posted"]} / {t["tickets"]} / {t["duplicates"]}'),
                 ("reports keyword alerts / taken / closed", f'{t["keyword_alerts"]} / {t["taken"]} / {t["closed"]}'),
                 ("report post ms p50 / max (alert inside)", f'{t["post_ms_p50"]} / {t["post_ms_max"]}')]
        if t["dispatched"]:
            ring = t["report_to_officer_ringing_ms"]
            rows += [("reports dispatched / officer joined", f'{t["dispatched"]} / {t["officer_joined"]}'),
                     ("report → officer ringing ms p50 / p99 / max",
                      f'{ring["p50"]} / {ring["p99"]} / {ring["max"]}')]
    if "dispatch" in report:
        d = report["dispatch"]

        def fmt(x):
            return f'{x["p50"]} / {x["p95"]} / {x["p99"]} / {x["max"]}'
        rows += [
            ("dispatched / officer joined", f'{d["dispatched"]} / {d["officer_joined"]}'),
            ("dispatch -> officer ringing ms", fmt(d["request_to_officer_ringing_ms"])),
            ("answered -> 3 parties ms", fmt(d["answered_to_three_parties_ms"])),
            ("backend share ms (no ring)", fmt(d["backend_share_ms"])),
            ("dispatch API errors", len(d["errors"])),
        ]
    width = max(len(k) for k, _ in rows)
    print("jiejing lab storm")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def run(opts: StormOptions) -> dict:
    return asyncio.run(run_async(opts))
