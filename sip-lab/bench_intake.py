"""Benchmark: what the intake route costs on top of a bare FastAGI answer.

Plays Asterisk's side of FastAGI over loopback (headers, then "200 result=1"
to every SET VARIABLE) against our FastAGIServer with three routes:

- ``echo``: sets the same four variables, touches nothing else (the floor);
- ``intake``: the real route on a real store (SQLite file, or --db URL);
- ``intake`` for calls the AMI adapter opened first (the usual order in the
  lab), while it writes the other steps of every call (queued, seat ringing,
  answered, hung up), as during a storm.

    .venv/bin/python -m siplab.bench_intake [--calls 300] [--rate 20] [--db URL]

Prints a table of round-trip times (connect → connection closed) in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from pathlib import Path

from core.lifecycle import Step
from core.store import init_schema, make_engine
from core.tickets import TicketService
from telephony import channel_vars
from telephony.agi.routes import intake
from telephony.agi.server import FastAGIServer


def _headers(script: str, uniqueid: str, arrived: float) -> bytes:
    h = {
        "agi_network": "yes", "agi_network_script": script, "agi_request": f"agi://127.0.0.1/{script}",
        "agi_channel": "PJSIP/carrier-00000001", "agi_uniqueid": uniqueid, "agi_callerid": "13800138000",
        "agi_calleridname": "Bench", "agi_context": "from-carrier", "agi_extension": "110",
        "agi_arg_1": f"{arrived:.3f}",
    }
    return "".join(f"{k}: {v}\n" for k, v in h.items()).encode() + b"\n"


async def one_request(port: int, script: str, uniqueid: str) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_headers(script, uniqueid, time.time()))
    while True:
        line = await reader.readline()
        if not line:
            break
        writer.write(b"200 result=1\n")
    writer.close()
    await writer.wait_closed()
    return (time.perf_counter() - start) * 1000


async def echo(request, agi) -> None:
    await agi.set_variables({channel_vars.QUEUE: "emergency-110", channel_vars.PRIORITY: 10,
                             channel_vars.RECORDING: "x", channel_vars.TICKET: "110-00000000-000000"})


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


async def run_case(server_port: int, script: str, calls: int, rate: float, service: TicketService | None,
                   tag: str, steps: bool) -> list[float]:
    results: list[float] = []
    background: list[asyncio.Task] = []

    async def call(i: int) -> None:
        uid = f"{tag}.{i}"
        if steps and service is not None:
            # in the lab the AMI Newchannel event usually opens the ticket first
            await service.open_call(uniqueid=uid, caller_id="13800138000", at=time.time(), source="ami")
        results.append(await one_request(server_port, script, uid))
        if steps and service is not None:
            # what the AMI adapter writes for the same call, right behind the AGI request
            for step in (Step.QUEUED, Step.SEAT_RINGING, Step.ANSWERED, Step.HUNG_UP):
                await service.record_step(uid, step, at=time.time(), source="ami", seat="seat001")

    tasks = []
    for i in range(calls):
        tasks.append(asyncio.create_task(call(i)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks, *background)
    return results


async def main(args) -> None:
    tmp = tempfile.mkdtemp(prefix="jiejing-bench-")
    db = args.db or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
    engine = make_engine(db)
    await init_schema(engine)
    service = TicketService(engine)
    server = FastAGIServer({"echo": echo, "intake": intake.make_route(service)}, port=0)
    await server.start()
    tag = str(int(time.time()))
    rows = []
    try:
        for name, script, steps in (("bare echo (4 SET VARIABLE)", "echo", False),
                                    ("intake, store idle", "intake", False),
                                    ("intake after AMI, + AMI steps", "intake", True)):
            res = await run_case(server.port, script, args.calls, args.rate, service, f"{tag}{len(rows)}", steps)
            rows.append((name, len(res), pct(res, 50), pct(res, 95), pct(res, 99), max(res)))
    finally:
        await server.stop()
        await engine.dispose()
    print(f"FastAGI round trip, {args.calls} calls at {args.rate:g}/s, store {db.split(':')[0]}")
    print(f"{'case':32} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, n, p50, p95, p99, mx in rows:
        print(f"{name:32} {n:5d} {p50:8.2f} {p95:8.2f} {p99:8.2f} {mx:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--db", default=None)
    asyncio.run(main(parser.parse_args()))
