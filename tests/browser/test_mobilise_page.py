"""A supervisor mobilises support from the heat map page, follows every pick's ladder, and sees what it leaves cold."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.dispatch.officers import OfficerService, OfficerStatus
from core.dispatch.planner import DispatchPlanner
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.dispatch_city import (
    CENTER,
    T0,
    answered_call,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.web_login import PASSWORD, TEST_SCRYPT_N

DOCS = Path(__file__).resolve().parents[2] / "docs"
CENTER_LAT, CENTER_LON = point_in(CENTER)


async def test_a_supervisor_mobilises_support_from_the_heat_map_page(
    engine: AsyncEngine, browser: Browser, screenshots: Path
) -> None:
    service = TicketService(engine)
    # The lab city's roster is around T0: the officers' clock stands there (the heat map's window is the page's).
    planner = DispatchPlanner(service, OfficerService(engine, clock=lambda: T0 + 60))
    await load(planner.officers,
               officer("e1", "east", point_in(CENTER, 50)),
               officer("e2", "east", point_in(ring_cell(1, 2))),
               officer("w1", "west", point_in(ring_cell(2, 1))),
               officer("w2", "west", point_in(ring_cell(2, 7))),
               officer("s1", "south", point_in(ring_cell(3, 4))))
    rung: list[str] = []

    async def phones(number: str, endpoint: str, timeout_s: float) -> tuple[bool, str]:
        # The telephony side's ring (the lab test, tests/integration/test_mobilise.py, rings real phones):
        # here e2 does not answer and his station's duty desk does.
        rung.append(endpoint)
        await asyncio.sleep(1.5)
        return (False, "no_answer") if endpoint == "PJSIP/e2" else (True, "answered")

    planner.ring_alone = phones
    ticket = await answered_call(service)
    await planner.locate(ticket.number, lat=CENTER_LAT, lon=CENTER_LON, address="人民大道200号")
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("sup", PASSWORD, Role.SUPERVISOR)
    async with TestServer(make_app(service, health={}, dispatch=planner), host="127.0.0.1", port=0) as server:
        await browser.goto(str(server.make_url("/heatmap")))
        await browser.wait_for("!document.getElementById('login').hidden")
        await browser.type_into("#login input[name=username]", "sup")
        await browser.type_into("#login input[name=password]", PASSWORD)
        await browser.click("#login button[type=submit]")
        await browser.wait_for("!document.getElementById('mobilise').hidden")
        await browser.wait_for("document.getElementById('map').getAttribute('data-ready') === '1'")
        await browser.evaluate("document.querySelector('#query input[name=cold_km]').value = '1'")
        await browser.type_into("#mobilise input[name=number]", ticket.number)
        await browser.evaluate("document.querySelector('#mobilise input[name=officers]').value = '3'")
        await browser.click("#mobilise button[type=submit]")
        # while the phones ring, the table shows each pick ringing
        await browser.wait_for("document.querySelectorAll('#support tr[data-state=ringing]').length >= 1 || "
                               "document.getElementById('mobilised').textContent.startsWith('错误')")
        assert not (await browser.evaluate("document.getElementById('mobilised').textContent")).startswith('错误')
        await browser.wait_for("document.getElementById('mobilised').dataset.done === '1'", timeout=20)
        states = await browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#support tbody tr')]"
            ".map((tr) => [tr.dataset.badge, tr.dataset.state]))")
        assert (states.pop("e1"), states.pop("e2")) == ("on_the_way", "escalated")
        assert list(states.values()) == ["on_the_way"] and set(states) <= {"w1", "w2"}  # the nearer of west's two
        # the map redrawn: the mobilised officers marked, the cells they left cold outlined
        await browser.wait_for("document.querySelectorAll('#officers circle[fill=\"#c77dff\"]').length === 2")
        await browser.wait_for("document.querySelectorAll('.left-by-support').length > 0")
        assert "2 名增援调出 mobilised" in await browser.evaluate("document.getElementById('summary').textContent")
        await browser.screenshot(screenshots / "heatmap-mobilise.png")
        shutil.copy2(screenshots / "heatmap-mobilise.png", DOCS / "heatmap-mobilise.png")
        assert rung.count("PJSIP/desk-east") == 1 and "PJSIP/e2" in rung
    e1 = await planner.officers.get("e1")
    assert e1.status is OfficerStatus.DISPATCHED and e1.ticket == ticket.number
    assert not [line for line in browser.console if line.startswith("exception")]

