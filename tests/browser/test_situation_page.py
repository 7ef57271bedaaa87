"""The situation page in headless Chromium: forecast hot cells over coverage, the trend, anomalies, the report."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.situation.incidents import DAY_S
from core.situation.service import SituationService
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.situation_city import NOW, TZ, build
from tests.web_login import PASSWORD, TEST_SCRYPT_N


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server(engine: AsyncEngine) -> AsyncIterator[tuple[TestServer, dict]]:
    city = await build(engine)
    clock = Clock(NOW - 7 * DAY_S)
    situation = SituationService(engine, tz=TZ, clock=clock, poll_s=3600.0)
    for _ in range(7):  # a week of kept forecasts, as the daily task leaves them
        await situation.run_due()
        clock.now += DAY_S
    await situation.run_due()  # and today's: the app's own task finds it made
    auth = AuthService(engine, scrypt_n=TEST_SCRYPT_N)
    await auth.add_user("zhang", PASSWORD, Role.SUPERVISOR)
    await auth.add_user("west-desk", PASSWORD, Role.STATION, "west")
    app = make_app(TicketService(engine), health={}, situation=situation)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield server, city


async def _log_in(browser: Browser, url: str, user: str) -> None:
    await browser.goto(url)
    await browser.wait_for("!document.getElementById('login').hidden")
    await browser.type_into("#login input[name=username]", user)
    await browser.type_into("#login input[name=password]", PASSWORD)
    await browser.click("#login button[type=submit]")
    await browser.wait_for("!document.getElementById('content').hidden")


async def test_the_supervisor_sees_hot_cells_over_coverage_the_trend_and_the_burst(
    server: tuple[TestServer, dict], screenshots: Path
) -> None:
    srv, city = server
    async with Browser(width=1640, height=1000) as browser:
        await _log_in(browser, str(srv.make_url("/situation")), "zhang")
        await browser.evaluate("document.querySelector('#query input[name=cold_km]').value = '1.5'")
        await browser.click("#query button[type=submit]")
        await browser.wait_for("document.getElementById('map').getAttribute('data-ready') === '1'", timeout=30)
        count = "document.querySelectorAll('{}').length".format
        assert await browser.evaluate(count("#map polygon.cell")) == 61
        assert await browser.evaluate(count("#map polygon.hot")) == 3
        assert 0 < await browser.evaluate(count("#map polygon.ice")) < 61
        assert await browser.evaluate(count("#map circle.officer")) == 10
        assert await browser.evaluate(count("#trend rect.actual")) == 28
        assert await browser.evaluate(count("#trend polyline.sepp")) == 1
        # The burst: an anomaly in the table, tied to its surge alert, in a cell no officer covers.
        anomalies = await browser.evaluate("document.getElementById('anomalies').textContent")
        assert f"cell:{city['burst']}" in anomalies
        assert await browser.evaluate(
            f"document.querySelector('#map polygon.cell[data-cell=\"{city['burst']}\"]')"
            ".dataset.today") == "8"
        stations = await browser.evaluate("[...document.querySelector('select[name=station]').options].map(o => o.value)")
        assert set(stations) == {"", "north", "south", "east", "west"}
        await browser.screenshot(screenshots / "situation.png")
        # The printable report, fetched with the page's token, shown as it prints.
        html = await browser.evaluate(
            "fetch('/api/situation/report?cold_km=1.5', {headers: {Authorization: 'Bearer ' + jj.token()}})"
            ".then(r => r.text())")
        assert not [line for line in browser.console if line.startswith("exception")]
    async with Browser(width=760, height=2600) as report:
        await report.goto("about:blank#report")
        await report.evaluate(f"document.open(); document.write({json.dumps(html)}); document.close(); true")
        await report.wait_for("document.querySelectorAll('svg').length >= 3")
        assert await report.evaluate("document.querySelectorAll('svg.map polygon.hot').length") == 3
        assert await report.evaluate("document.querySelectorAll('svg.chart rect.actual').length") >= 28
        await report.screenshot(screenshots / "situation-report.png")


async def test_a_station_user_sees_its_own_cells_only(server: tuple[TestServer, dict], screenshots: Path) -> None:
    srv, _city = server
    async with Browser() as browser:
        await _log_in(browser, str(srv.make_url("/situation")), "west-desk")
        await browser.wait_for("document.getElementById('map').getAttribute('data-ready') === '1'", timeout=30)
        own = await browser.evaluate("document.querySelectorAll('#map polygon.cell').length")
        assert 0 < own < 61
        assert await browser.evaluate("document.querySelector('select[name=station]').disabled")
        assert await browser.evaluate("document.getElementById('stations').textContent.includes('west')")
        assert not await browser.evaluate("document.getElementById('stations').textContent.includes('east')")
        await browser.screenshot(screenshots / "situation-station.png")
        assert not [line for line in browser.console if line.startswith("exception")]
