"""Latency from a caller's AML message arriving to its position on the ticket (the ``located`` step committed).

The web application runs as ``serve`` mounts it (dispatch planner, the AML service, Twilio's SMS webhook) on
127.0.0.1 in this process, on SQLite, with the lab city loaded. Each of ``--messages`` numbers has a live,
answered call; for each, its handset's AML message is posted — as the relay's HTTPS form with a gateway's token
(``POST /api/aml``), or as the SMS through Twilio's signed webhook (``POST /api/twilio/sms``) — at ``--rate``
messages a second, each on its own schedule whether the earlier ones are done or not (as handsets send them). A
sample runs from just before the request to the moment the ticket service told its listeners of the committed
``located`` step (the same clock); the answer's own time is printed beside.

    .venv/bin/python -m siplab.bench_aml [--messages 1000] [--rate 20] [--channel https|sms]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from core.auth.users import AuthService, Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService, TicketView
from core.dispatch.officers import OfficerService, load_city_file
from core.dispatch.planner import DispatchPlanner
from core.quality import views as web_quality
from core.quality.complaints import Complaints
from core.quality.outbox import Outbox
from core.quality.survey import Survey
from core.store import make_engine
from core.tables import init_schema
from core.web.app import make_app
from siplab.storm import interpolated_percentile

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-1"
TWILIO_TOKEN = "bench-twilio-token"
WEBHOOK_URL = "https://110.example.org/api/twilio/sms"
LAT, LON = 31.2304, 121.4737  # the lab city's centre


def aml_sms(lat: float, lon: float, at: float) -> str:
    top = datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H%M%S")
    body = (f'A"ML=1;lt={lat:+09.5f};lg={lon:+010.5f};rd=8;top={top};lc=68;pm=G;si=460001000000000;'
            "ei=356938035643809;mcc=460;mnc=00")
    return f"{body};ml={len(body) + 7}"


def aml_form(number: str, lat: float, lon: float, at: float) -> dict[str, str]:
    return {"v": "1", "emergency_number": "110", "source": "CALL", "device_number": number,
            "location_latitude": f"{lat:.7f}", "location_longitude": f"{lon:.7f}", "location_accuracy": "8",
            "location_time": str(round(at * 1000)), "location_source": "gps", "location_certainty": "68"}


async def run(messages: int, rate: float, channel: str) -> tuple[list[float], list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="jiejing-bench-aml-"))
    engine = make_engine(f"sqlite+aiosqlite:///{folder / 'bench.db'}")
    await init_schema(engine)
    service = TicketService(engine)
    officers = OfficerService(engine)
    await officers.load_city(load_city_file(REPO / "sip-lab" / "city.json"))
    planner = DispatchPlanner(service, officers)
    app = make_app(service, health={}, dispatch=planner)
    complaints = Complaints(engine)
    survey = Survey(engine, Outbox(engine, None), complaints, auth_token=TWILIO_TOKEN, webhook_url=WEBHOOK_URL,
                    sends=False)
    web_quality.add_routes(app, survey=survey, complaints=complaints)
    auth = AuthService(engine, scrypt_n=2**10)
    await auth.add_user("aml-relay", PASSWORD, Role.GATEWAY)
    # One live, answered call per number, as the network presents it (national); the handset writes E.164.
    numbers = [f"138{i:08d}" for i in range(messages)]
    now = time.time()
    for i, caller in enumerate(numbers):
        uid = f"{int(now)}.{i}"
        await service.open_call(uniqueid=uid, caller_id=caller, at=now, source="agi")
        await service.record_step(uid, Step.QUEUED, at=now, source="ami")
        await service.record_step(uid, Step.ANSWERED, at=now, source="ami", seat=f"seat-{i % 300:03d}")
    located: dict[str, float] = {}
    waiting: dict[str, asyncio.Event] = {}

    def on_step(ticket: TicketView, step) -> None:
        if step.step is Step.LOCATED and step.source == "aml":
            located[ticket.caller_id] = time.time()
            if (event := waiting.get(ticket.caller_id)) is not None:
                event.set()

    service.add_listener(on_step)
    validator = RequestValidator(TWILIO_TOKEN)
    samples: list[float] = []
    answers: list[float] = []
    async with TestServer(app, host="127.0.0.1", port=0) as server, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0)) as http:
        base = str(server.make_url("")).rstrip("/")
        async with http.post(base + "/api/login", json={"username": "aml-relay", "password": PASSWORD}) as r:
            headers = {"Authorization": f"Bearer {(await r.json())['token']}"}

        async def send(i: int) -> None:
            caller = numbers[i]
            lat, lon = LAT + (i % 200 - 100) * 0.0002, LON + (i // 200) * 0.0002
            waiting[caller] = event = asyncio.Event()
            started = time.time()
            if channel == "https":
                request = http.post(base + "/api/aml", data=aml_form("+86" + caller, lat, lon, started - 2),
                                    headers=headers)
            else:
                sid = f"SM{i:032d}"
                params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+86" + caller,
                          "To": "+8610000110", "Body": aml_sms(lat, lon, started - 2), "NumMedia": "0"}
                request = http.post(base + "/api/twilio/sms", data=params, headers={
                    "X-Twilio-Signature": validator.compute_signature(WEBHOOK_URL, params)})
            async with request as r:
                if r.status != 200:
                    raise SystemExit(f"{caller}: {r.status} {await r.text()}")
                answered = time.time()
            await asyncio.wait_for(event.wait(), 30)
            samples.append((located[caller] - started) * 1000)
            answers.append((answered - started) * 1000)

        loop = asyncio.get_running_loop()
        begin = loop.time()
        sent: list[asyncio.Task[None]] = []
        for i in range(messages):
            await asyncio.sleep(max(0.0, begin + i / rate - loop.time()))
            sent.append(asyncio.create_task(send(i)))
        await asyncio.gather(*sent)
    await engine.dispose()
    return samples, answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="messages a second")
    parser.add_argument("--channel", choices=("https", "sms"), default="https")
    args = parser.parse_args(argv)
    samples, answers = asyncio.run(run(args.messages, args.rate, args.channel))
    print("| channel | messages | per second | p50 ms | p95 ms | p99 ms | max ms | answer p99 ms |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    p = interpolated_percentile
    print(f"| {args.channel} | {len(samples)} | {args.rate:g} | {p(samples, 50):.1f} | {p(samples, 95):.1f} | "
          f"{p(samples, 99):.1f} | {max(samples):.1f} | {p(answers, 99):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
