"""A real 110 call through the lab Asterisk appears on the wallboard in headless Chromium within 2 s."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from core.auth.users import AuthService, Role
from tests.browser.cdp import Browser, chromium_path
from tests.web_login import PASSWORD, TEST_SCRYPT_N

pytestmark = pytest.mark.lab

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture
async def browser():
    if chromium_path() is None and not os.environ.get("CI"):
        pytest.skip("chromium is not installed (sip-lab/bootstrap.sh installs it)")
    async with Browser() as browser:
        yield browser


async def test_a_lab_call_appears_on_the_wallboard_within_2_s(backend, calls, browser):
    await AuthService(backend.service.engine, scrypt_n=TEST_SCRYPT_N).add_user("wang", PASSWORD, Role.SUPERVISOR)
    await browser.goto(f"http://127.0.0.1:{backend.settings.http_port}/wallboard")
    await browser.wait_for("!document.getElementById('login').hidden")
    await browser.type_into("#login input[name=username]", "wang")
    await browser.type_into("#login input[name=password]", PASSWORD)
    await browser.click("#login button[type=submit]")
    await browser.wait_for("document.getElementById('status').classList.contains('live')")

    # Seats ring 3 s so the call waits long enough to be seen waiting.
    from siplab import lab

    current = lab.running_settings(calls.paths)
    lab.up(lab.LabSettings(seats=current.seats, seat_ring_ms=3000, seat_talk_ms=4000), calls.paths,
           log=lambda *_: None)
    try:
        number = f"135{random.randrange(10**8):08d}"
        call = asyncio.create_task(calls.place([(number, "Wallboard")], talk_s=4, patience_s=10))

        async def ticket_number():
            for _ in range(100):
                for t in await backend.service.list_recent(5):
                    if t.caller_id == number:
                        return t
                await asyncio.sleep(0.02)
            raise AssertionError("no ticket for the lab call")

        ticket = await ticket_number()
        received = ticket.steps[0].at_us / 1_000_000
        await browser.wait_for(
            f"document.querySelector('#waiting-list tr[data-number=\"{ticket.number}\"]') !== null",
            timeout=2.0, interval=0.02)
        shown = time.time()
        # from the INVITE reaching Asterisk to the row on the supervisor's screen
        assert shown - received < 2.0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = await browser.screenshot(SCREENSHOTS / "wallboard-lab-call.png")
        assert shot.stat().st_size > 10_000
        stats = await call
        assert stats.get("SuccessfulCall(C)") == "1", stats
    finally:
        lab.up(current, calls.paths, log=lambda *_: None)
