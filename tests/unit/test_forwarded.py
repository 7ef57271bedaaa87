"""The client's address behind the TLS proxy: X-Forwarded-For from the configured proxies only."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from core.config import ConfigError, Settings
from core.web.forwarded import client_address, forwarded_client

PROXY = frozenset({"127.0.0.1"})


def test_the_proxy_names_the_client_with_the_last_address():
    assert forwarded_client("127.0.0.1", "203.0.113.9", PROXY) == "203.0.113.9"
    # earlier entries are what the client claimed; the proxy appended the one it saw
    assert forwarded_client("127.0.0.1", "10.0.0.1, 198.51.100.7", PROXY) == "198.51.100.7"


def test_the_header_from_anyone_else_is_ignored():
    assert forwarded_client("192.0.2.5", "203.0.113.9", PROXY) == "192.0.2.5"
    assert forwarded_client("127.0.0.1", None, PROXY) == "127.0.0.1"
    assert forwarded_client("127.0.0.1", "", PROXY) == "127.0.0.1"


def test_a_header_without_an_address_keeps_the_peer():
    assert forwarded_client("127.0.0.1", "unknown", PROXY) == "127.0.0.1"
    assert forwarded_client("127.0.0.1", "1.2.3.4, <script>", PROXY) == "127.0.0.1"


def test_the_setting_takes_addresses_only():
    assert Settings.from_env({"JIEJING_TRUSTED_PROXIES": "127.0.0.1, ::1"}).trusted_proxies == ("127.0.0.1", "::1")
    assert Settings.from_env({}).trusted_proxies == ()
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Settings.from_env({"JIEJING_TRUSTED_PROXIES": "proxy.example"})


async def test_handlers_see_the_forwarded_client():
    async def who(request: web.Request) -> web.Response:
        return web.Response(text=request.remote or "-")

    app = web.Application(middlewares=[client_address(["127.0.0.1"])])
    app.router.add_get("/", who)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/", headers={"X-Forwarded-For": "203.0.113.9"})
        assert await resp.text() == "203.0.113.9"
        resp = await client.get("/")
        assert await resp.text() == "127.0.0.1"
