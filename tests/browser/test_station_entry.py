"""The heat map page's entry form: a station enters an incident at its counter, and the map counts it."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.dispatch.officers import OfficerService
from core.dispatch.places import Place
from core.dispatch.planner import DispatchPlanner
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.dispatch_city import CENTER, load, officer, point_in
from tests.web_login import PASSWORD, TEST_SCRYPT_N


async def test_a_station_enters_an_incident_from_the_heat_map_page(
    engine: AsyncEngine, browser: Browser, screenshots: Path
) -> None:
    service = TicketService(engine)
    planner = DispatchPlanner(service, OfficerService(engine))
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    await planner.places.replace([Place("人民大道200号", *point_in(CENTER))])
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("east-desk", PASSWORD, Role.STATION, "east")
    async with TestServer(make_app(service, health={}, dispatch=planner), host="127.0.0.1", port=0) as server:
        await browser.goto(str(server.make_url("/heatmap")))
        await browser.wait_for("!document.getElementById('login').hidden")
        await browser.type_into("#login input[name=username]", "east-desk")
        await browser.type_into("#login input[name=password]", PASSWORD)
        await browser.click("#login button[type=submit]")
        await browser.wait_for("!document.getElementById('incident').hidden")
        await browser.wait_for("document.getElementById('map').getAttribute('data-ready') === '1'")
        await browser.evaluate("document.querySelector('#incident select[name=incident_type]').value = 'property'")
        await browser.type_into("#incident input[name=address]", "人民大道200号")
        await browser.type_into("#incident input[name=text]", "自行车在门口被盗")
        await browser.evaluate("document.getElementById('map').removeAttribute('data-ready')")
        await browser.click("#incident button[type=submit]")
        await browser.wait_for("/^110-\\d{8}-\\d{6} · east$/.test(document.getElementById('entered').textContent)")
        await browser.wait_for("document.getElementById('map').getAttribute('data-ready') === '1'")
        assert await browser.evaluate("document.getElementById('summary').textContent.startsWith('1 ')")
        await browser.screenshot(screenshots / "heatmap-station-entry.png")
        # An address the gazetteer does not know is answered with the nearest names, and nothing is stored.
        await browser.type_into("#incident input[name=address]", "人民大道2")
        await browser.type_into("#incident input[name=text]", "有人打架")
        await browser.click("#incident button[type=submit]")
        await browser.wait_for("document.getElementById('entered').textContent.includes('人民大道200号')")
    [ticket] = await service.list_recent(5)
    assert ticket.steps[0].detail["entered_by_station"] == "east" and ticket.steps[-1].detail["type"] == "property"
    assert not [line for line in browser.console if line.startswith("exception")]
