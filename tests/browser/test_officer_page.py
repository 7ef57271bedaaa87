"""The officer's phone page and the reporter's status page, in headless Chromium at a phone's size, positions
set through the DevTools protocol: the officer signs on and his phone shares where he is; he is sent to an app
report with a photo; the incident card appears; the reporter's page (another browser) shows his distance and arrival time shrinking
as he drives; he reports arrival; the reporter sees it; he clears with a disposition; the link ends."""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.quality.outbox import Outbox
from core.quality.playback import record_access
from core.quality.reporter_links import ReporterLinks
from core.quality.status_views import add_status_routes
from core.triage.attachments import AttachmentKeeper
from core.triage.attachments_http import HttpFetcher
from core.triage.reports import ReportIntake, parse_report
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.dispatch_city import CENTER, load, officer, point_in
from tests.triage_setup import make_desk, planner_for
from tests.unit.conftest import FakeClock
from tests.web_login import PASSWORD, TEST_SCRYPT_N

DOCS = Path(__file__).resolve().parents[2] / "docs"
PHONE = (390, 844)


def scene_photo(width: int = 240, height: int = 135) -> bytes:
    """A small PNG (a street at dusk, in bands of colour): the photo the reporter sent from the app."""
    import struct
    import zlib

    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            sky = y < height * 0.55
            r, g, b = ((40 + y, 60 + y // 2, 120 + y // 3) if sky else (60, 60, 66 + (x // 30) % 2 * 20))
            if not sky and abs(x - width // 2) < 4 + (y - height * 0.55):
                r, g, b = 200, 180, 90  # the road
            row += bytes((min(r, 255), min(g, 255), min(b, 255)))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


class Center:
    def __init__(self, engine: AsyncEngine, attachments_dir: Path) -> None:
        self.clock = FakeClock()
        self.service = TicketService(engine, clock=self.clock)
        self.planner = planner_for(self.service, self.clock)
        self.desk = make_desk(self.service, self.planner, self.clock)
        self.outbox = Outbox(engine, None)
        self.links = ReporterLinks(engine, self.service, self.outbox, public_url="https://110.example.org",
                                   travel=self.planner.settings, clock=self.clock)
        self.links.attach(self.service, self.planner.officers)
        # The reports' photos, fetched once from the app's media server and kept (core.triage.attachments).
        self.attachments = AttachmentKeeper(self.service, attachments_dir, HttpFetcher(),
                                            access=functools.partial(record_access, engine))
        self.attachments.attach()


@pytest.fixture
async def center(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[tuple[Center, TestServer]]:
    center = Center(engine, tmp_path / "attachments")
    # e1 starts off duty, 2 km north of where the call will be.
    from core.dispatch.officers import OfficerStatus

    await load(center.planner.officers, officer("e1", "east", point_in(CENTER, 2000), status=OfficerStatus.OFF_DUTY))
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("e1", PASSWORD, Role.OFFICER)
    app = make_app(center.service, health={}, dispatch=center.planner, triage=center.desk,
                   attachments=center.attachments, cleanup_ctx=[center.attachments.cleanup_ctx])
    add_status_routes(app, center.links)
    media = web.Application()  # the 110 app's media server, where the report's photo is
    async def photo(_request: web.Request) -> web.Response:
        return web.Response(body=scene_photo(), content_type="image/png")

    media.router.add_get("/media/77.png", photo)
    async with TestServer(media, host="127.0.0.1", port=0) as media_server, \
            TestServer(app, host="127.0.0.1", port=0) as server:
        center.photo_url = str(media_server.make_url("/media/77.png"))
        yield center, server
    await center.links.stop()


async def _log_in(browser: Browser, url: str, username: str) -> None:
    await browser.goto(url)
    await browser.wait_for("!document.getElementById('login').hidden")
    await browser.type_into("#login input[name=username]", username)
    await browser.type_into("#login input[name=password]", PASSWORD)
    await browser.click("#login button[type=submit]")


async def _officer(center: Center):
    return await center.planner.officers.get("e1")


async def test_an_officer_is_sent_drives_arrives_and_clears_while_the_reporter_watches(
    center: tuple[Center, TestServer], screenshots: Path
) -> None:
    center, server = center
    start = point_in(CENTER, 2000)
    async with Browser(*PHONE) as phone, Browser(*PHONE) as reporter:
        origin = str(server.make_url("/")).rstrip("/")
        await phone.grant(origin, "geolocation")
        await phone.phone(*start, accuracy=8)
        await _log_in(phone, origin + "/officer", "e1")
        await phone.wait_for("document.body.dataset.ready === '1'")
        assert "下岗" in await phone.evaluate("document.getElementById('duty-state').textContent")

        # Sign on with one tap: on duty (a roster fact supervisors see), and the phone starts sharing.
        await phone.click("#duty-toggle")
        await phone.wait_for("document.getElementById('duty-state').textContent.includes('在岗')")
        await phone.wait_for("officerStats.sent >= 1")
        shared = await _officer(center)
        assert str(shared.status) == "available" and shared.accuracy_m == 8
        assert abs(shared.lat - start[0]) < 1e-6 and abs(shared.lon - start[1]) < 1e-6

        # A report through the 110 app at the centre, with a photo; a call-taker takes it and dispatches it:
        # the ladder rings his phone alone (its steps as the dispatcher records them).
        lat, lon = point_in(CENTER)
        intake = ReportIntake(center.service, desk=center.desk, locate=center.planner.locate, clock=center.clock)
        answer = await intake.receive(parse_report({
            "ref": "app-77", "sender": "13900001111", "text": "有人持刀抢劫，嫌疑人往北跑了", "lat": lat, "lon": lon,
            "address": "人民大道200号", "attachments": [{"kind": "photo", "url": center.photo_url}]},
            channel="app"))
        ticket = await center.service.take(answer["number"], by="taker-1", seat="seat-05")
        plan = await center.planner.begin(ticket.number)
        assert plan.rungs[0].badge == "e1"
        await center.planner.ringing(ticket.number, plan.rungs[0])
        await center.planner.joined(ticket.number, plan.rungs[0])
        await phone.wait_for(f"document.getElementById('i-number').textContent === '{ticket.number}' && "
                             "document.getElementById('i-text').textContent !== ''", 10)
        card = await phone.evaluate("document.getElementById('incident').innerText")
        assert "人民大道200号" in card and "抢劫" in card and "有人持刀抢劫" in card  # the report's own words
        # The photo was fetched once and kept; the phone shows the kept copy (fetched with his token), loaded.
        await phone.wait_for("document.querySelector('#i-media img') && "
                             "document.querySelector('#i-media img').complete && "
                             "document.querySelector('#i-media img').naturalWidth === 240", 10)
        kept = [st for st in (await center.service.get(ticket.number)).steps if st.step == "attachment_kept"]
        assert len(kept) == 1 and kept[0].detail["content_type"] == "image/png"
        assert "uri.amap.com/navigation" in await phone.evaluate("document.getElementById('navigate').href")
        await phone.screenshot(screenshots / "officer-sent.png")
        # The phone loses the page (a reload, a dead network): it comes back to the same incident by itself.
        await phone.goto(origin + "/officer")
        await phone.wait_for(f"document.body.dataset.ready === '1' && "
                             f"document.getElementById('i-number').textContent === '{ticket.number}'", 10)

        # The reporter's SMS link opens his page: distance and arrival time of the officer, nothing personal.
        message = None
        for _ in range(100):
            if (message := await center.outbox.get(f"status:{ticket.number}")) is not None:
                break
            await asyncio.sleep(0.02)
        assert message is not None
        token = re.search(r"/s/([A-Za-z0-9_-]{22})", message.body).group(1)
        await reporter.phone(lat, lon)
        await reporter.goto(origin + f"/s/{token}")
        await reporter.wait_for("document.querySelector('#officers .distance') !== null", 10)
        far = await reporter.evaluate("document.querySelector('#officers .distance').textContent")
        assert "公里" in far and "警号 e1" in await reporter.evaluate("document.getElementById('officers').innerText")
        assert "警员e1" not in await reporter.evaluate("document.body.innerText")  # no name
        eta_far = await reporter.evaluate("document.querySelector('#officers .eta').textContent")

        # He drives south: each fix of his phone reaches the reporter's page, shrinking distance and ETA.
        for north in (1500, 600):
            before = await reporter.evaluate("reporterStats.updates")
            await phone.move(*point_in(CENTER, north), accuracy=6)
            await reporter.wait_for(f"reporterStats.updates > {before}", 10)
        near = await reporter.evaluate("document.querySelector('#officers .distance').textContent")
        assert near.endswith(" 米") and 500 < int(near.split()[0]) < 700, near
        assert await reporter.evaluate("document.querySelector('#officers .eta').textContent") != eta_far
        await reporter.screenshot(screenshots / "reporter-on-the-way.png")

        # Arrival, with the phone's position; the reporter's page says so.
        before = await phone.evaluate("officerStats.sent")
        await phone.move(lat, lon, accuracy=5)
        await phone.wait_for(f"officerStats.sent > {before}")  # the phone has the new fix
        await phone.click("#arrived")
        await phone.wait_for("!document.getElementById('clear-box').hidden")
        await reporter.wait_for("document.body.dataset.phase === 'arrived'", 10)
        assert "已到达" in await reporter.evaluate("document.getElementById('officers').innerText")
        arrived = [s for s in (await center.service.get(ticket.number)).steps if s.step == "arrived"]
        assert arrived and arrived[0].detail["badge"] == "e1" and arrived[0].detail["distance_m"] < 50

        # Cleared with a disposition: his card goes, he is available again, the reporter's link has ended.
        await phone.type_into("#disposition", "嫌疑人已被控制，带回派出所")
        await phone.click("#clear")
        await phone.wait_for("document.getElementById('incident').hidden")
        await phone.wait_for("document.getElementById('duty-state').textContent.includes('在岗')")
        assert str((await center.service.get(ticket.number)).state) == "cleared"
        steps = [str(st.step) for st in (await center.service.get(ticket.number)).steps]
        assert steps[0] == "reported" and "taken" in steps and steps[-2:] == ["arrived", "cleared"]
        await reporter.wait_for("document.body.dataset.phase === 'ended'", 10)
        await reporter.screenshot(screenshots / "reporter-ended.png")
    for name in ("officer-sent.png", "reporter-on-the-way.png"):
        shutil.copy2(screenshots / name, DOCS / name)
