"""Benchmark: what the intake costs on top of a bare HTTP answer, and what the backend's own work does to it.

Plays Asterisk's side of the intake over loopback, as ``CURL()`` does (a new
connection, ``GET /intake?…``, read to the end) against:

- ``echo``: a bare aiohttp server in this process answering the same two values (the floor);
- the intake answering in this process (``JIEJING_INTAKE_PROCESS=no``), with the store idle, then while
  a task writes tickets and steps flat out on the same event loop, as a backend does under a storm;
- the intake in its own process (``jiejing intake``, as ``jiejing serve`` starts it), the same two ways.

    .venv/bin/python -m siplab.bench_intake [--calls 300] [--rate 20] [--db URL]

Prints a table of round-trip times (connect → connection closed) in ms, then
the cost of single TicketService operations run one at a time: wall time, and
CPU time of the event-loop thread (the part that delays everything else on
the loop; the database driver's own thread is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.store import make_engine
from core.tables import init_schema
from telephony.intake import Intake
from telephony.intake_http import make_intake_app
from telephony.intake_process import IntakeProcess

CALL_STEPS = (Step.QUEUED, Step.SEAT_RINGING, Step.ANSWERED, Step.HUNG_UP)
ECHO = "queue=emergency-110&priority=10"


def _request(uniqueid: str) -> bytes:
    query = urlencode({"uniqueid": uniqueid, "caller": "13800138000"})
    return f"GET /intake?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode()


async def one_request(port: int, uniqueid: str) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request(uniqueid))
    answer = await reader.read()  # to the end: the server closes (Connection: close)
    writer.close()
    await writer.wait_closed()
    if b"queue=" not in answer:
        raise RuntimeError(f"no queue in the answer: {answer[:200]!r}")
    return (time.perf_counter() - start) * 1000


async def _echo(request: web.Request) -> web.Response:
    return web.Response(text=ECHO, content_type="text/plain")


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


async def _open(service: TicketService, uid: str) -> None:
    await service.open_call(uniqueid=uid, caller_id="13800138000", at=time.time(), source="ami")


async def run_case(server_port: int, calls: int, rate: float, tag: str) -> list[float]:
    results: list[float] = []
    tasks = []
    for i in range(calls):
        tasks.append(asyncio.create_task(_append(results, one_request(server_port, f"{tag}.{i}"))))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    return results


async def run_case_other_writes(server_port: int, calls: int, rate: float, service: TicketService, tag: str,
                                steps_rate: float | None) -> tuple[list[float], float]:
    """Intake requests while a writer works on other calls on this process's event loop.

    The writer is one task, like the AMI adapter: it opens a call and writes its
    four steps, then the next call, paced at ``steps_rate`` record_step/s (None:
    flat out). Returns the round trips and the writer's record_step/s.
    """
    stop = asyncio.Event()
    written = 0

    async def writer() -> None:
        nonlocal written
        gap = 0 if steps_rate is None else 1 / steps_rate
        started = time.perf_counter()
        for n in itertools.count():
            uid = f"{tag}.w{n}"
            await _open(service, uid)
            for step in CALL_STEPS:
                if stop.is_set():
                    return
                await service.record_step(uid, step, at=time.time(), source="ami", seat="seat001")
                written += 1
                if gap:
                    # sleep until this step's slot, so the rate holds whatever a write costs
                    await asyncio.sleep(max(0.0, started + written * gap - time.perf_counter()))
                else:
                    await asyncio.sleep(0)

    results: list[float] = []
    writing = asyncio.create_task(writer())
    await asyncio.sleep(0.5)  # the writer is in its stride before the first request
    began = time.perf_counter()
    tasks = []
    for i in range(calls):
        tasks.append(asyncio.create_task(_append(results, one_request(server_port, f"{tag}.{i}"))))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    stop.set()
    before = written
    await writing
    return results, before / (elapsed + 0.5)


async def _append(results: list[float], measured: Awaitable[float]) -> None:
    results.append(await measured)


async def measure_ops(service: TicketService, tag: str, n: int) -> list[tuple[str, list[float], list[float]]]:
    """Single operations, one at a time on an otherwise idle loop: (name, wall ms, loop-thread CPU ms)."""
    costs: dict[str, tuple[list[float], list[float]]] = {}

    async def timed(name: str, op: Callable[[], Awaitable[object]]) -> None:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        await op()
        wall, cpu = costs.setdefault(name, ([], []))
        cpu.append((time.thread_time() - cpu0) * 1000)
        wall.append((time.perf_counter() - wall0) * 1000)

    for i in range(n):
        uid = f"{tag}.{i}"
        await timed("open_call (new ticket)", lambda: _open(service, uid))
        await timed("open_call (known, cached)", lambda: _open(service, uid))
        await timed("record_step (queued)", lambda: service.record_step(
            uid, Step.QUEUED, at=time.time(), source="ami", queue="emergency-110"))
        await timed("record_step (seat_ringing)", lambda: service.record_step(
            uid, Step.SEAT_RINGING, at=time.time(), source="ami", seat="seat001"))
        await timed("find_by_uniqueid (live)", lambda: service.find_by_uniqueid(uid))
        await timed("record_step (answered)", lambda: service.record_step(
            uid, Step.ANSWERED, at=time.time(), source="ami", seat="seat001"))
        await timed("record_step (hung_up)", lambda: service.record_step(
            uid, Step.HUNG_UP, at=time.time(), source="ami"))
    return [(name, wall, cpu) for name, (wall, cpu) in costs.items()]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def main(args) -> None:
    tmp = tempfile.mkdtemp(prefix="jiejing-bench-")
    db = args.db or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
    engine = make_engine(db)
    await init_schema(engine)
    service = TicketService(engine)
    echo_app = web.Application()
    echo_app.router.add_get("/intake", _echo)
    echo_runner, echo_port = await _serve(echo_app)
    here_runner, here_port = await _serve(make_intake_app(Intake()))
    own = IntakeProcess("127.0.0.1", _free_port(), Intake())
    await own.start()
    tag = str(int(time.time()))
    rows = []
    notes = []
    try:
        for name, port in (("bare echo, this process", echo_port), ("intake, this process, store idle", here_port),
                           ("intake, own process, store idle", own.port)):
            res = await run_case(port, args.calls, args.rate, f"{tag}{len(rows)}")
            rows.append((name, len(res), pct(res, 50), pct(res, 95), pct(res, 99), max(res)))
        for name, port in (("intake, this process, writes", here_port), ("intake, own process, writes", own.port)):
            res, achieved = await run_case_other_writes(port, args.calls, args.rate, service, f"{tag}{len(rows)}",
                                                        None)
            rows.append((name, len(res), pct(res, 50), pct(res, 95), pct(res, 99), max(res)))
            notes.append(f"{name}: the writer on this process's loop achieved {achieved:.1f} record_step/s")
        ops = await measure_ops(service, f"{tag}ops", args.ops)
    finally:
        await own.stop()
        await here_runner.cleanup()
        await echo_runner.cleanup()
        await engine.dispose()
    print(f"Intake round trip over HTTP, {args.calls} calls at {args.rate:g}/s, store {db.split(':')[0]}")
    print(f"{'case':32} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, n, p50, p95, p99, mx in rows:
        print(f"{name:32} {n:5d} {p50:8.2f} {p95:8.2f} {p99:8.2f} {mx:8.2f}")
    for note in notes:
        print(f"  {note}")
    print()
    print(f"TicketService per operation, {args.ops} each, one at a time (loop CPU = event-loop thread)")
    print(f"{'operation':32} {'wall p50':>9} {'wall p95':>9} {'loop CPU p50':>13} {'loop CPU mean':>14}")
    for name, wall, cpu in ops:
        print(f"{name:32} {pct(wall, 50):9.3f} {pct(wall, 95):9.3f} {pct(cpu, 50):13.3f} "
              f"{sum(cpu) / len(cpu):14.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--ops", type=int, default=200, help="operations of each kind in the per-op table")
    parser.add_argument("--db", default=None)
    asyncio.run(main(parser.parse_args()))
