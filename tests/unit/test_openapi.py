"""The OpenAPI spec: complete, served without a token, and fuzzed with schemathesis (no 5xx allowed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.http.routes import registered
from core.store import make_engine
from core.tables import init_schema
from core.web.app import declared_routes as routes
from core.web.openapi import build_spec
from tests.unit.conftest import FakeClock
from tests.unit.test_web_auth import full_app
from tests.web_login import login_headers

# Logging out would end the fuzzer's own session; it is tested by hand in test_web_auth.
NOT_FUZZED = {("POST", "/api/logout")}
MAX_EXAMPLES = 25


async def test_spec_describes_every_route_with_its_roles(
    service: TicketService, engine: AsyncEngine, clock: FakeClock
) -> None:
    app = full_app(service, engine, clock)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/openapi.json")  # no token needed
        assert resp.status == 200
        spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert described == set(registered(app))
    close = spec["paths"]["/api/tickets/{number}/close"]["post"]
    assert close["x-roles"] == ["admin", "call_taker", "station", "supervisor"]  # a station: its own entries
    # "by" is not required: it is ignored, the record names the logged-in user.
    assert close["requestBody"]["content"]["application/json"]["schema"]["required"] == ["disposition"]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert build_spec(app) == spec


class _Server:
    """The full app on 127.0.0.1 (port chosen by the OS) on its own event loop, for a synchronous client."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.headers: dict[str, str] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _start(self) -> None:
        self.engine = make_engine(f"sqlite+aiosqlite:///{self.db}")
        await init_schema(self.engine)
        clock = FakeClock()
        app = full_app(TicketService(self.engine, clock=clock), self.engine, clock)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.headers = await login_headers(self.engine, Role.ADMIN)

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.engine.dispose()

    def __enter__(self) -> _Server:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    with _Server(tmp_path / "fuzz.db") as server:
        yield server


def test_schema_fuzzing_finds_no_server_error(server: _Server) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    base = f"http://127.0.0.1:{server.port}"
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = set()
    for operation in operations:
        if (operation.method.upper(), operation.path) in NOT_FUZZED:
            continue

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case: object) -> None:
            response = case.call(base_url=base, headers=server.headers)  # type: ignore[attr-defined]
            case.validate_response(response, checks=[not_a_server_error])  # type: ignore[attr-defined]

        fuzz()
        fuzzed.add((operation.method.upper(), operation.path))
    # Everything listed and mounted here; the dispatch route is mounted by the telephony
    # side, and schemathesis leaves out the address it read the spec from.
    skipped = NOT_FUZZED | {("POST", "/api/tickets/{number}/dispatch"), ("GET", "/api/openapi.json")}
    assert fuzzed == set(routes()) - skipped
