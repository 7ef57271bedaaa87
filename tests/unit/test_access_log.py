"""The access log never holds a bearer token: a WebSocket's ``?access_token=`` is written redacted."""

from __future__ import annotations

import logging

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.web.access_log import redacted
from core.web.app import make_app, serve_options
from tests.web_login import login_headers


async def test_tokens_in_the_query_are_not_written_to_the_access_log(
    service: TicketService, caplog: pytest.LogCaptureFixture
) -> None:
    token = (await login_headers(service.engine, Role.SUPERVISOR))["Authorization"].removeprefix("Bearer ")
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    server = TestServer(make_app(service, health={}))
    await server.start_server(**serve_options())  # as web.run_app is given them in telephony.serve
    async with TestClient(server) as client:
        # A refused upgrade is answered (and logged) like any request, with the token in its query.
        with pytest.raises(WSServerHandshakeError):
            await client.ws_connect("/api/events", params={"access_token": token, "station": "no such!"})
        resp = await client.get("/api/me", params={"token": token}, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("/api/events?access_token=redacted&station=no+such!" in line for line in lines), lines
    assert any("/api/me?token=redacted" in line for line in lines), lines
    assert not any(token in line for line in lines), lines


def test_only_secret_parameters_are_redacted() -> None:
    from yarl import URL

    assert redacted(URL("/api/tickets?limit=5")) == "/api/tickets?limit=5"
    assert redacted(URL("/ws?Access_Token=abc&access_token=def&a=b")) == (
        "/ws?Access_Token=redacted&access_token=redacted&a=b"
    )


async def test_pages_send_the_token_as_a_websocket_subprotocol_not_in_the_url(
    service: TicketService, caplog: pytest.LogCaptureFixture
) -> None:
    token = (await login_headers(service.engine, Role.SUPERVISOR))["Authorization"].removeprefix("Bearer ")
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    server = TestServer(make_app(service, health={}))
    await server.start_server(**serve_options())
    async with TestClient(server) as client:
        ws = await client.ws_connect("/api/events", protocols=("jiejing", f"jiejing.bearer.{token}"))
        assert ws.protocol == "jiejing"  # the server picks the plain one: the token is not echoed
        await ws.close()
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/api/events", protocols=("jiejing", "jiejing.bearer.forged"))
        assert refused.value.status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("/api/events" in line for line in lines) and not any(token in line for line in lines), lines
