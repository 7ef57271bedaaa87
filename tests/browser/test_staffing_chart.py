"""The staffing chart on the supervisor's page, in headless Chromium, over four weeks of synthetic history."""

from __future__ import annotations

import shutil
from pathlib import Path

from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.staffing_history import TZ, write_history
from tests.web_login import PASSWORD, TEST_SCRYPT_N

DOCS = Path(__file__).resolve().parents[2] / "docs"
WEEK_S = 7 * 86400


async def _plan_days(browser: Browser, days: int) -> None:
    await browser.evaluate(f"{{ const s = document.getElementById('staffing-days'); s.value = '{days}';"
                           " s.dispatchEvent(new Event('change')); }")


async def test_supervisor_sees_seats_per_half_hour_for_the_coming_week(engine: AsyncEngine, screenshots: Path) -> None:
    truth = await write_history(engine, weeks=4)
    now = truth.start_us / 1e6 + 4 * WEEK_S + 60  # one minute into the Monday after the history
    service = TicketService(engine, clock=lambda: now)
    app = make_app(service, health={}, timezone=TZ)
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("zhang", PASSWORD, Role.SUPERVISOR)
    async with TestServer(app, host="127.0.0.1", port=0) as server, Browser(width=1500, height=900) as browser:
        await browser.send("Emulation.setTimezoneOverride", timezoneId=TZ)
        await browser.goto(str(server.make_url("/supervisor")))
        await browser.wait_for("!document.getElementById('login').hidden")
        await browser.type_into("#login input[name=username]", "zhang")
        await browser.type_into("#login input[name=password]", PASSWORD)
        await browser.click("#login button[type=submit]")
        await browser.wait_for("document.body.dataset.staffing === '336'", timeout=60)

        # one step line per series, one hover strip per half hour, the day labels of the week
        for series in ("suggested", "erlang_a", "nena", "seen"):
            assert await browser.evaluate(f"document.querySelectorAll('#staffing-chart path.series-{series}').length") == 1
        assert await browser.evaluate("document.querySelectorAll('#staffing-chart rect[data-index]').length") == 336
        first = await browser.evaluate("document.querySelector('#staffing-chart rect[data-index=\"0\"] title').textContent")
        assert first.startswith("11/30 00:00")  # Monday 30 November, center time
        assert "建议 suggested" in first and "Erlang A" in first and "NENA" in first
        # the tiles: the peak is the evening's, the history's 5 seats fall short of it in busy half hours
        peak = int(await browser.evaluate("document.getElementById('staffing-peak').textContent"))
        assert truth.seats < peak < 20
        short, total = (await browser.evaluate("document.getElementById('staffing-short').textContent")).split(" / ")
        assert int(total) == 336 and 0 < int(short) < 336
        note = await browser.evaluate("document.getElementById('staffing-note').textContent")
        assert "holt_winters" in note or "seasonal_naive" in note
        assert "no duty roster" in note and "patience" in note

        # a day's plan on request
        await _plan_days(browser, 1)
        await browser.wait_for("document.body.dataset.staffing === '48'", timeout=60)

        # the chart alone, for the docs
        await _plan_days(browser, 7)
        await browser.wait_for("document.body.dataset.staffing === '336'", timeout=60)
        await browser.evaluate("document.querySelectorAll('main > *').forEach((n) => {"
                               " if (n.id !== 'staffing-box') n.hidden = true; })")
        shot = await browser.screenshot(screenshots / "staffing.png")
    shutil.copyfile(shot, DOCS / "staffing.png")
