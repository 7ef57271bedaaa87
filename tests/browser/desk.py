"""A call-taker's shift start at the desk, as a person does it: log in, then the seat by name and Enter."""

from __future__ import annotations

from tests.browser.cdp import Browser


async def log_in(browser: Browser, base: str, username: str, password: str) -> None:
    """Open ``/desk`` and log in; returns once the desk has read its state."""
    await browser.goto(f"{base}/desk")
    await browser.wait_for("!document.getElementById('login').hidden")
    await browser.type_into("#login input[name=username]", username)
    await browser.type_into("#login input[name=password]", password)
    await browser.press("Enter")
    await browser.wait_for("document.body.dataset.ready === '1'", 15)


async def start_shift(browser: Browser, base: str, username: str, password: str, seat: str) -> None:
    """Log in at the desk and log in to ``seat`` (which joins the 110 queue); returns once it is available."""
    await log_in(browser, base, username, password)
    await browser.type_into("#seat-name", seat)
    await browser.press("Enter")
    await browser.wait_for("document.getElementById('seat-state').dataset.state === 'available'")
    # The desk's keys work at once: the seat's field no longer has the focus.
    assert await browser.evaluate("document.activeElement === null || document.activeElement.id !== 'seat-name'")
