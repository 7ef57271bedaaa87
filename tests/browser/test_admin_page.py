"""The admins' page in headless Chromium: add a user, disable and re-enable him, change his role, reset his
password; then the user logs in and must choose his own password before he sees anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.web.app import make_app
from tests.browser.cdp import Browser
from tests.web_login import PASSWORD, TEST_SCRYPT_N

ROW = "document.querySelector('#users tr[data-user=\"wang\"]')"


@pytest.fixture
async def server(engine: AsyncEngine) -> AsyncIterator[TestServer]:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("root", PASSWORD, Role.ADMIN)
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("zhou", PASSWORD, Role.CALL_TAKER)
    async with TestServer(make_app(TicketService(engine), health={}), host="127.0.0.1", port=0) as server:
        yield server


async def _log_in(browser: Browser, url: str, username: str, password: str) -> None:
    await browser.goto(url)
    await browser.wait_for("!document.getElementById('login').hidden")
    await browser.type_into("#login input[name=username]", username)
    await browser.type_into("#login input[name=password]", password)
    await browser.click("#login button[type=submit]")


async def _state(browser: Browser) -> str:
    return await browser.evaluate(f"{ROW} ? {ROW}.querySelector('.state').textContent : ''")


async def test_an_admin_manages_a_user_who_then_chooses_his_own_password(
    server: TestServer, browser: Browser, screenshots: Path, engine: AsyncEngine
) -> None:
    await _log_in(browser, str(server.make_url("/admin")), "root", PASSWORD)
    await browser.wait_for("document.querySelectorAll('#users tr').length === 2")

    await browser.type_into("#add-user input[name=username]", "wang")
    await browser.evaluate("document.querySelector('#add-user select[name=role]').value = 'call_taker'")
    await browser.type_into("#add-user input[name=password]", "first-pass-110")
    await browser.click("#add-user button[type=submit]")
    await browser.wait_for(f"{ROW} !== null", timeout=15)
    assert "须改密码" in await _state(browser) and "正常" in await _state(browser)

    await browser.click("#users tr[data-user=wang] .toggle")
    await browser.wait_for(f"{ROW} && {ROW}.querySelector('.state').textContent.includes('已停用')")
    await browser.click("#users tr[data-user=wang] .toggle")
    await browser.wait_for(f"{ROW} && {ROW}.querySelector('.state').textContent.includes('正常')")

    await browser.evaluate(f"{ROW}.querySelector('.role').value = 'supervisor'")
    await browser.click("#users tr[data-user=wang] .save-role")
    await browser.wait_for(f"{ROW} && {ROW}.querySelector('.role').value === 'supervisor' && "
                           "document.getElementById('users-status').textContent.includes('supervisor')")

    await browser.type_into("#users tr[data-user=wang] .new-password", "short")
    await browser.click("#users tr[data-user=wang] .reset")
    await browser.wait_for("document.getElementById('users-status').classList.contains('bad')")
    await browser.type_into("#users tr[data-user=wang] .new-password", "second-pass-110")
    await browser.click("#users tr[data-user=wang] .reset")
    await browser.wait_for("document.getElementById('users-status').textContent.includes('password reset')",
                           timeout=15)
    await browser.screenshot(screenshots / "admin.png")
    users = {u.username: u for u in await AuthService(engine).users()}
    assert users["wang"].role is Role.SUPERVISOR and users["wang"].must_change_password and not users["wang"].disabled

    await browser.click(".logout")
    await _log_in(browser, str(server.make_url("/")), "wang", "second-pass-110")
    await browser.wait_for("document.getElementById('password-change') !== null")
    assert await browser.evaluate("document.getElementById('content').hidden") is True
    await browser.type_into("#password-change input[name=current]", "second-pass-110")
    await browser.type_into("#password-change input[name=new]", "his-own-pass-110")
    await browser.type_into("#password-change input[name=again]", "his-own-pass-11")
    await browser.click("#password-change button[type=submit]")
    await browser.wait_for("document.querySelector('#password-change .error').textContent.includes('不一致')")
    await browser.evaluate("document.querySelector('#password-change input[name=again]').value = ''")
    await browser.type_into("#password-change input[name=again]", "his-own-pass-110")
    await browser.screenshot(screenshots / "password-change.png")
    await browser.click("#password-change button[type=submit]")
    await browser.wait_for("!document.getElementById('content').hidden", timeout=15)
    assert await browser.evaluate("document.querySelector('.who').textContent") == "wang · supervisor"
    users = {u.username: u for u in await AuthService(engine).users()}
    assert not users["wang"].must_change_password
    assert not [line for line in browser.console if line.startswith("exception")]
