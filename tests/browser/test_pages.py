"""The operations pages in headless Chromium: log in, watch a call reach the wallboard, draw the heat map."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import h3
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.dispatch.officers import (
    City,
    OfficerService,
    OfficerSpec,
    OfficerStatus,
    StationSpec,
)
from core.dispatch.planner import DispatchPlanner
from core.seats.board import SeatBoard
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.web_login import PASSWORD, TEST_SCRYPT_N

LAT0, LON0 = 31.2304, 121.4737  # the city centre of the synthetic city
RES = 8
CENTER = h3.latlng_to_cell(LAT0, LON0, RES)


@pytest.fixture
async def backend(engine: AsyncEngine) -> AsyncIterator[tuple[TestServer, TicketService, SeatBoard]]:
    service = TicketService(engine)
    seats = SeatBoard(engine, wrap_up_s=5)
    app = make_app(service, health={}, seats=seats)
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("zhang", PASSWORD, Role.SUPERVISOR)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield server, service, seats


async def _log_in(browser: Browser, url: str) -> None:
    await browser.goto(url)
    await browser.wait_for("!document.getElementById('login').hidden")
    await browser.type_into("#login input[name=username]", "zhang")
    await browser.type_into("#login input[name=password]", PASSWORD)
    await browser.click("#login button[type=submit]")
    await browser.wait_for("!document.getElementById('content').hidden")


async def test_a_call_appears_on_the_wallboard_within_2_s(
    backend: tuple[TestServer, TicketService, SeatBoard], browser: Browser, screenshots: Path
) -> None:
    server, service, seats = backend
    for n in range(1, 13):
        await seats.login(f"seat-{n:02d}", f"接警员{n:02d}")
    await seats.pause("seat-11", "培训 training")
    now = time.time()
    # Calls earlier in the hour, so the answer-speed tiles have figures.
    for n in range(8):
        uid = f"1700000000.{n}"
        await service.open_call(uniqueid=uid, caller_id=f"1390000{n:04d}", at=now - 1800 + n * 60, source="ami")
        await service.record_step(uid, Step.QUEUED, at=now - 1800 + n * 60 + 0.5, source="ami", queue="emergency-110")
        await service.record_step(uid, Step.ANSWERED, at=now - 1800 + n * 60 + (2 if n < 7 else 6), source="ami",
                                  seat=f"seat-{n + 1:02d}")
    for n in range(3):
        uid = f"1700000000.{n}"
        await service.record_step(uid, Step.HUNG_UP, at=now - 1000, source="ami")

    await _log_in(browser, str(server.make_url("/wallboard")))
    await browser.wait_for("document.getElementById('status').classList.contains('live')")
    await browser.wait_for("document.getElementById('waiting-count').textContent === '0'")

    # As the AMI adapter does it: the call enters, joins the queue, a seat rings.
    started = time.monotonic()
    ticket = await service.open_call(uniqueid="1700000100.1", caller_id="13812345678", at=time.time(), source="ami")
    await service.record_step("1700000100.1", Step.QUEUED, at=time.time(), source="ami", queue="emergency-110")
    await browser.wait_for(f"document.querySelector('#waiting-list tr[data-number=\"{ticket.number}\"]') !== null",
                           timeout=2.0, interval=0.02)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert await browser.evaluate("document.getElementById('waiting-count').textContent") == "1"
    await service.open_call(uniqueid="1700000100.2", caller_id="13987654321", at=time.time() - 4, source="ami")
    await service.record_step("1700000100.2", Step.QUEUED, at=time.time() - 3.5, source="ami")
    await service.record_step("1700000100.2", Step.SEAT_RINGING, at=time.time(), source="ami", seat="seat-12")
    await browser.wait_for("document.getElementById('waiting-count').textContent === '2'")
    await asyncio.sleep(1.2)  # one wait-clock tick, so the screenshot shows running clocks
    shot = await browser.screenshot(screenshots / "wallboard.png")
    assert shot.stat().st_size > 10_000
    assert not [line for line in browser.console if line.startswith("exception")]


async def _city(engine: AsyncEngine, service: TicketService, now: float) -> None:
    officers = OfficerService(engine)
    disk = sorted(h3.grid_disk(CENTER, 6))
    rng = random.Random(110)
    quarters: dict[str, list[str]] = {"north": [], "south": [], "east": [], "west": []}
    for cell in disk:
        lat, lon = h3.cell_to_latlng(cell)
        key = ("north" if lat > LAT0 else "south") if abs(lat - LAT0) > abs(lon - LON0) * 0.85 else (
            "east" if lon > LON0 else "west")
        quarters[key].append(cell)
    stations = tuple(
        StationSpec(id=k, name=f"{name}派出所", bureau="黄浦分局", duty_desk=f"PJSIP/desk-{k}", superior=f"PJSIP/chief-{k}",
                    cells=tuple(cells))
        for (k, cells), name in zip(quarters.items(), ("北区", "南区", "东区", "西区"), strict=True)
    )
    shift = ((now - 3600, now + 8 * 3600),)
    specs = []
    # Officers crowd the centre and the east; the west edge is left thin: ice there.
    for i in range(14):
        cell = rng.choice(sorted(h3.grid_disk(CENTER, 2)) if i < 8 else quarters["east"])
        lat, lon = h3.cell_to_latlng(cell)
        station = next(s.id for s in stations if cell in s.cells)
        status = OfficerStatus.OFF_DUTY if i == 13 else OfficerStatus.AVAILABLE
        specs.append(OfficerSpec(badge=f"{1001 + i}", name=f"警员{i + 1}", station=station,
                                 endpoint=f"PJSIP/officer{1001 + i}", status=status, lat=lat, lon=lon, shifts=shift))
    await officers.load_city(City(name="测试市", resolution=RES, stations=stations, officers=tuple(specs)))
    planner = DispatchPlanner(service, officers)
    hot = [h3.cell_to_latlng(c) for c in sorted(h3.grid_disk(CENTER, 1))] + [h3.cell_to_latlng(quarters["west"][5])]
    types = ["盗窃", "交通事故", "纠纷", "求助"]
    for n in range(90):
        uid = f"1700000200.{n}"
        at = now - 3600 * 5 + n * 60
        lat, lon = rng.choice(hot) if rng.random() < 0.6 else h3.cell_to_latlng(rng.choice(disk))
        ticket = await service.open_call(uniqueid=uid, caller_id="1380000000", at=at, source="ami")
        await service.record_step(uid, Step.QUEUED, at=at + 1, source="ami")
        await service.record_step(uid, Step.ANSWERED, at=at + 2, source="ami", seat="seat-01")
        await planner.locate(ticket.number, lat=lat + rng.uniform(-0.001, 0.001), lon=lon, at=at + 30)
        await service.record_step(uid, Step.HUNG_UP, at=at + 90, source="ami")
        await service.close(ticket.number, disposition=types[n % 4 if n % 3 else 0], by="seat-01")


async def test_the_heat_map_draws_cells_officers_and_ice(
    engine: AsyncEngine, browser: Browser, screenshots: Path
) -> None:
    service = TicketService(engine)
    await _city(engine, service, time.time())
    app = make_app(service, health={})
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("zhang", PASSWORD, Role.SUPERVISOR)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        await _log_in(browser, str(server.make_url("/heatmap")))
        await browser.wait_for("document.getElementById('map').getAttribute('data-ready') === '1'")
        cells = await browser.evaluate("document.querySelectorAll('#map polygon.cell').length")
        hot = await browser.evaluate("[...document.querySelectorAll('#map polygon.cell')].filter(p => p.dataset.count > 0).length")
        ice = await browser.evaluate("document.querySelectorAll('#map polygon.ice').length")
        dots = await browser.evaluate("document.querySelectorAll('#map circle.officer').length")
        assert cells == len(h3.grid_disk(CENTER, 6))
        assert hot > 10
        assert 0 < ice < cells
        assert dots == 13  # the one signed off is not shown
        types = await browser.evaluate("[...document.querySelector('select[name=type]').options].map(o => o.value)")
        assert set(types) == {"", "盗窃", "交通事故", "纠纷", "求助"}
        await browser.screenshot(screenshots / "heatmap.png")
        # Choosing a type redraws with that type's incidents only.
        await browser.evaluate("document.querySelector('select[name=type]').value = '盗窃'")
        await browser.evaluate("document.getElementById('map').removeAttribute('data-ready')")
        await browser.click("#query button[type=submit]")
        await browser.wait_for("document.getElementById('map').getAttribute('data-ready') === '1'")
        theft = await browser.evaluate(
            "[...document.querySelectorAll('#map polygon.cell')].reduce((s, p) => s + Number(p.dataset.count), 0)")
        assert 0 < theft < 90
        await browser.screenshot(screenshots / "heatmap-theft.png")
    assert not [line for line in browser.console if line.startswith("exception")]
