"""The browser seat's phone over HTTP: its credentials (``/api/phone``), its page and the JsSIP bundle (``/vendor/``)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.seats.phones import PhoneBook
from core.web.app import make_app
from tests.web_login import login_headers, on_seat

SECRET = "s3cret-of-wseat01"


@pytest.fixture
def phones_file(tmp_path: Path) -> Path:
    path = tmp_path / "phones.json"
    path.write_text(json.dumps({
        "ws_url": "wss://pbx.example:8089/ws", "domain": "pbx.example",
        "ice_servers": [{"urls": "stun:stun.example:3478"}],
        "seats": {"wseat01": {"password": SECRET}, "wseat02": {"password": "other"}},
    }))
    return path


@asynccontextmanager
async def serve(service: TicketService, role: Role | None = Role.CALL_TAKER, **kwargs: Any) -> AsyncIterator[TestClient]:
    app = make_app(service, health={}, **kwargs)
    headers = await login_headers(service.engine, role) if role else {}
    async with TestClient(TestServer(app), headers=headers) as client:
        if role is Role.CALL_TAKER:
            await on_seat(client, {}, "wseat01")  # a seat's phone is for the call-taker holding the seat
        yield client


async def test_a_call_taker_gets_only_the_phone_of_the_seat_they_hold(service, phones_file):
    async with serve(service, phones=PhoneBook(phones_file)) as client:
        resp = await client.get("/api/phone", params={"seat": "wseat02"})
        body = await resp.json()
    assert (resp.status, body["error_id"]) == (403, "not-your-seat")
    assert "other" not in json.dumps(body)


async def test_call_taker_gets_the_seats_websocket_url_and_credentials(service, phones_file, caplog):
    caplog.set_level(logging.DEBUG)
    async with serve(service, phones=PhoneBook(phones_file)) as client:
        resp = await client.get("/api/phone", params={"seat": "wseat01"})
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
    assert body == {"seat": "wseat01", "ws_url": "wss://pbx.example:8089/ws", "sip_uri": "sip:wseat01@pbx.example",
                    "username": "wseat01", "password": SECRET, "ice_servers": [{"urls": "stun:stun.example:3478"}]}
    assert SECRET not in caplog.text


async def test_phone_needs_a_desk_role(service, phones_file):
    async with serve(service, role=None, phones=PhoneBook(phones_file)) as client:
        assert (await client.get("/api/phone", params={"seat": "wseat01"})).status == 401
    async with serve(service, role=Role.OFFICER, phones=PhoneBook(phones_file)) as client:
        assert (await client.get("/api/phone", params={"seat": "wseat01"})).status == 403


@pytest.mark.parametrize(("query", "status", "error_id"), [
    ({"seat": "wseat09"}, 404, "unknown-phone"),
    ({"seat": "bad seat/.."}, 404, "unknown-seat"),
    ({}, 400, "invalid-seat"),
], ids=["not-a-browser-seat", "not-a-seat-name", "no-seat"])
async def test_phone_refusals(service, phones_file, query, status, error_id):
    async with serve(service, role=Role.SUPERVISOR, phones=PhoneBook(phones_file)) as client:
        resp = await client.get("/api/phone", params=query)
        assert resp.status == status
        body = await resp.json()
    assert body["error_id"] == error_id
    assert SECRET not in json.dumps(body)


async def test_no_phones_file_says_browser_seats_are_not_configured(service, tmp_path):
    async with serve(service) as client:
        body = await (await client.get("/api/phone", params={"seat": "wseat01"})).json()
    assert body["error_id"] == "phones-not-configured"
    broken = tmp_path / "broken.json"
    broken.write_text('{"seats": {"wseat01": {"password": "' + SECRET)
    async with serve(service, phones=PhoneBook(broken)) as client:
        resp = await client.get("/api/phone", params={"seat": "wseat01"})
        body = await resp.json()
    assert (resp.status, body["error_id"]) == (404, "phones-not-configured")
    assert SECRET not in json.dumps(body)


def test_account_repr_hides_the_password(phones_file):
    account = PhoneBook(phones_file).account("wseat01")
    assert SECRET not in repr(account) and SECRET not in str(account)


async def test_vendor_serves_the_jssip_bundle_from_the_configured_folder(service, tmp_path):
    (tmp_path / "jssip.min.js").write_text("var JsSIP = {};\n")
    (tmp_path / "secret.txt").write_text("no")
    async with serve(service, role=None, web_vendor=str(tmp_path)) as client:
        resp = await client.get("/vendor/jssip.min.js")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/javascript")
        assert await resp.text() == "var JsSIP = {};\n"
        other = await client.get("/vendor/secret.txt")
        assert (other.status, (await other.json())["error_id"]) == (404, "unknown-file")


async def test_vendor_file_not_installed_says_to_run_the_set_up(service, tmp_path):
    async with serve(service, role=None, web_vendor=str(tmp_path / "empty")) as client:
        resp = await client.get("/vendor/jssip.min.js")
        body = await resp.json()
    assert (resp.status, body["error_id"], body["details"]) == (404, "web-vendor-missing", {"file": "jssip.min.js"})
    assert "bootstrap.sh" in body["error"]


async def test_phone_page_loads_jssip_then_the_phone_module(service):
    async with serve(service, role=None) as client:
        page = await (await client.get("/phone")).text()
        module = await client.get("/static/webphone.js")
        assert module.status == 200
        source = await module.text()
    assert page.index("/vendor/jssip.min.js") < page.index("/static/webphone.js")
    assert "window.JiejingPhone" in source
