"""Latency from an officer's position update to the reporter's page showing it.

The web application runs as ``serve`` assembles its dispatch and reporter parts (in this process, on
127.0.0.1), with one ticket dispatched to one officer. The reporter's page (``/s/<token>``) is open in headless
Chromium. The officer's phone posts positions (``POST /api/officers/<badge>/location``, with his token) every
``--interval`` seconds; for each, the time from just before the request to the moment the page rendered the new
distance (``Date.now()`` in the page's render, the same machine's clock) is one sample.

    .venv/bin/python -m siplab.bench_status [--updates 200] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from core.auth.users import AuthService, Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.dispatch.officers import OfficerService, load_city_file
from core.dispatch.planner import DispatchPlanner
from core.quality.outbox import Outbox
from core.quality.reporter_links import ReporterLinks
from core.quality.status_views import RateLimit, add_status_routes
from core.store import make_engine
from core.tables import init_schema
from core.web.app import make_app
from siplab.storm import interpolated_percentile

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-1"


async def run(updates: int, interval: float) -> list[float]:
    from tests.browser.cdp import Browser

    folder = Path(tempfile.mkdtemp(prefix="jiejing-bench-status-"))
    engine = make_engine(f"sqlite+aiosqlite:///{folder / 'bench.db'}")
    await init_schema(engine)
    service = TicketService(engine)
    officers = OfficerService(engine)
    city = load_city_file(REPO / "sip-lab" / "city.json")
    await officers.load_city(city)
    planner = DispatchPlanner(service, officers)
    links = ReporterLinks(engine, service, Outbox(engine, None), public_url="https://110.example.org",
                          travel=planner.settings)
    auth = AuthService(engine, scrypt_n=2**10)
    app = make_app(service, health={}, dispatch=planner)
    add_status_routes(app, links, limit=RateLimit(limit=10_000))
    # One answered call at the city's centre, dispatched to its nearest officer.
    lat, lon = 31.2304, 121.4737
    now = time.time()
    await service.open_call(uniqueid="9.1", caller_id="13800000000", at=now, source="agi")
    await service.record_step("9.1", Step.QUEUED, at=now, source="ami")
    ticket = await service.record_step("9.1", Step.ANSWERED, at=now, source="ami", seat="seat-01")
    await planner.locate(ticket.number, lat=lat, lon=lon)
    plan = await planner.begin(ticket.number)
    rung = plan.rungs[0]
    await planner.ringing(ticket.number, rung)
    await planner.joined(ticket.number, rung)
    badge = rung.badge
    # Watching from here on: the link is made here (its token is needed), not by the join's own SMS.
    links.attach(service, officers)
    token = await links.send(await service.get(ticket.number))
    assert token is not None
    await auth.add_user(badge, PASSWORD, Role.OFFICER)
    samples: list[float] = []
    async with TestServer(app, host="127.0.0.1", port=0) as server, Browser(390, 844) as page:
        base = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/api/login", json={"username": badge, "password": PASSWORD}) as r:
                headers = {"Authorization": f"Bearer {(await r.json())['token']}"}
            async with http.post(f"{base}/api/officers/{badge}/location", headers=headers,
                                 json={"lat": lat + 0.03, "lon": lon}) as r:
                assert r.status == 200, await r.text()
            await page.goto(f"{base}/s/{token}")
            try:
                await page.wait_for("document.querySelector('#officers .distance') !== null", 10)
            except TimeoutError:
                async with http.get(f"{base}/api/status/{token}") as r:
                    raise SystemExit(f"the page shows no distance; the status is {await r.text()}") from None
            for i in range(updates):
                before = await page.evaluate("reporterStats.updates")
                # 3 km north, closing in: each position a different distance
                north = 3000 - 10 * (i % 250)
                started = time.time() * 1000
                async with http.post(f"{base}/api/officers/{badge}/location", headers=headers,
                                     json={"lat": lat + north / 111_320, "lon": lon, "accuracy_m": 8}) as r:
                    assert r.status == 200, await r.text()
                await page.wait_for(f"reporterStats.updates > {before}", 5, interval=0.005)
                shown = await page.evaluate("reporterStats.lastAt")
                samples.append(shown - started)
                await asyncio.sleep(interval)
    await links.stop()
    await engine.dispose()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args(argv)
    samples = asyncio.run(run(args.updates, args.interval))
    print("| position updates | p50 ms | p95 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|")
    p = interpolated_percentile
    print(f"| {len(samples)} | {p(samples, 50):.1f} | {p(samples, 95):.1f} | {p(samples, 99):.1f} | "
          f"{max(samples):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
