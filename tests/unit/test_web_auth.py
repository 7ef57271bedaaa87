"""Authentication, roles and the audit log through a real aiohttp server: every route, every role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.dispatch.planner import IncidentRow
from core.http.routes import registered, unlisted
from core.quality import views as web_quality
from core.quality.complaints import Complaints
from core.quality.journal import Journaler
from core.quality.journal_status import JournalWatch
from core.quality.outbox import Outbox
from core.quality.retention import RetentionSchedule
from core.quality.spot_checks import SpotChecks
from core.quality.survey import Survey
from core.situation.service import SituationService
from core.web.app import declared_routes as routes
from core.web.app import make_app
from tests.unit.conftest import T0, FakeClock
from tests.web_login import PASSWORD, TEST_SCRYPT_N, login_headers

NUMBER = "110-20261129-000001"
OFFICER_BADGE = "007"
# Listed in the table, registered by the telephony side (it rings phones).
NOT_MOUNTED_HERE = {("POST", "/api/tickets/{number}/dispatch")}


def full_app(service: TicketService, engine: AsyncEngine, clock: FakeClock) -> web.Application:
    """The app as ``jiejing serve`` builds it: every part mounted."""
    app = make_app(service, health={}, situation=SituationService(engine, tz="Asia/Shanghai", clock=clock))
    outbox = Outbox(engine, None, clock=clock)
    complaints = Complaints(engine, clock=clock)
    survey = Survey(engine, outbox, complaints, auth_token="t", webhook_url="https://x/sms", clock=clock)
    retention = RetentionSchedule(engine, Journaler(engine, clock=clock), days=180, clock=clock)
    web_quality.add_routes(app, spot_checks=SpotChecks(engine, clock=clock), survey=survey, complaints=complaints,
                           journal=JournalWatch(engine, retention=retention, clock=clock))
    return app


@pytest.fixture
async def client(service: TicketService, engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(full_app(service, engine, clock))) as client:
        yield client


@pytest.fixture
async def headers(engine: AsyncEngine) -> dict[Role, dict[str, str]]:
    return {
        role: await login_headers(
            engine, role, username=OFFICER_BADGE if role is Role.OFFICER else None,
            station="S1" if role is Role.STATION else None,
        )
        for role in Role
    }


_SAMPLES = {"number": NUMBER, "day": "20261129", "id": "1", "badge": OFFICER_BADGE, "seat": "seat-01",
            "username": "nobody", "name": "app.js", "phone": "13800000000", "sha256": "0" * 64}


def _path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: _SAMPLES[m.group(1)], template)


def _matrix() -> list[Any]:
    cases = []
    for (method, path), spec in sorted(routes().items()):
        if spec.public or (method, path) in NOT_MOUNTED_HERE:
            continue
        for role in Role:
            cases.append(pytest.param(method, path, role, role in spec.roles, id=f"{method} {path} {role}"))
    return cases


def test_every_registered_route_is_in_the_table(service: TicketService, engine: AsyncEngine, clock: FakeClock) -> None:
    assert unlisted(full_app(service, engine, clock)) == []


@pytest.mark.parametrize(("method", "path", "role", "allowed"), _matrix())
async def test_role_matrix(
    client: TestClient, headers: dict[Role, dict[str, str]], method: str, path: str, role: Role, allowed: bool
) -> None:
    params = {"station": "S1"} if role is Role.STATION else {}
    resp = await client.request(method, _path(path), headers=headers[role], params=params, json={})
    body = await resp.text()
    if allowed:
        assert resp.status not in (401, 403), body
        assert resp.status < 500, body
    else:
        assert resp.status == 403, body
        assert "error" in await resp.json()


@pytest.mark.parametrize(("method", "path"), sorted(set(routes()) - set(NOT_MOUNTED_HERE)))
async def test_nothing_but_public_routes_answer_without_a_token(client: TestClient, method: str, path: str) -> None:
    resp = await client.request(method, _path(path), json={})
    if routes()[(method, path)].public:
        assert resp.status != 401
    else:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_a_route_missing_from_the_table_is_for_admins_only(
    service: TicketService, engine: AsyncEngine, clock: FakeClock, headers: dict[Role, dict[str, str]]
) -> None:
    app = full_app(service, engine, clock)

    async def secret(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/api/not-yet-listed", secret)
    assert unlisted(app) == [("GET", "/api/not-yet-listed")]
    async with TestClient(TestServer(app)) as client:
        for role in Role:
            resp = await client.get("/api/not-yet-listed", headers=headers[role])
            assert resp.status == (200 if role is Role.ADMIN else 403)


async def test_login_logout_and_bad_passwords(client: TestClient, engine: AsyncEngine) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("wang", PASSWORD, Role.CALL_TAKER)
    for body in ({"username": "wang", "password": "wrong password"}, {"username": "nobody", "password": PASSWORD}):
        resp = await client.post("/api/login", json=body)
        assert resp.status == 401
        assert (await resp.json())["error_id"] == "bad-credentials"
    resp = await client.post("/api/login", json={"username": "wang", "password": PASSWORD})
    assert resp.status == 200
    login = await resp.json()
    assert login["role"] == "call_taker" and login["expires_in_s"] == 12 * 3600
    auth = {"Authorization": f"Bearer {login['token']}"}
    assert (await (await client.get("/api/me", headers=auth)).json())["username"] == "wang"
    assert (await client.post("/api/logout", headers=auth)).status == 200
    assert (await client.get("/api/me", headers=auth)).status == 401


@pytest.mark.parametrize(
    "body", [{}, {"username": "x"}, {"username": 1, "password": "x"}, {"username": "x", "password": None}, []]
)
async def test_login_body_is_validated(client: TestClient, body: Any) -> None:
    resp = await client.post("/api/login", json=body)
    assert resp.status == 400
    assert "error" in await resp.json()


async def test_tokens_expire_and_disabled_users_are_out(engine: AsyncEngine, clock: FakeClock) -> None:
    auth = AuthService(engine, clock=clock, token_ttl_s=60, scrypt_n=TEST_SCRYPT_N)
    await auth.add_user("li", PASSWORD, Role.SUPERVISOR)
    token, expires_us, _ = await auth.login("li", PASSWORD)
    assert expires_us == round((T0 + 60) * 1e6)
    assert (await auth.resolve(token)).username == "li"
    clock.now = T0 + 61
    assert await auth.resolve(token) is None
    token, _, _ = await auth.login("li", PASSWORD)
    await auth.set_disabled("li", True)
    assert await auth.resolve(token) is None


async def test_passwords_are_stored_hashed_and_salted(engine: AsyncEngine) -> None:
    from sqlalchemy import select

    from core.auth.users import TokenRow, UserRow

    auth = AuthService(engine, scrypt_n=TEST_SCRYPT_N)
    await auth.add_user("a", PASSWORD, Role.ADMIN)
    await auth.add_user("b", PASSWORD, Role.ADMIN)
    token, _, _ = await auth.login("a", PASSWORD)
    async with async_sessionmaker(engine)() as session:
        hashes = list(await session.scalars(select(UserRow.password_hash)))
        stored_tokens = list(await session.scalars(select(TokenRow.token_sha256)))
    assert len(set(hashes)) == 2 and all(h.startswith("scrypt$") and PASSWORD not in h for h in hashes)
    assert token not in stored_tokens


async def test_mutating_requests_are_audited_with_who_and_status(
    client: TestClient, engine: AsyncEngine, headers: dict[Role, dict[str, str]]
) -> None:
    await client.post(f"/api/tickets/{NUMBER}/close", json={"disposition": "x", "by": "y"}, headers=headers[Role.SUPERVISOR])
    await client.post("/api/users", json={"username": "x1", "password": PASSWORD, "role": "admin"},
                      headers=headers[Role.OFFICER])
    await client.post("/api/login", json={"username": "ghost", "password": "guess-guess"})
    await client.get("/api/tickets", headers=headers[Role.CALL_TAKER])  # reads are not audited
    entries = (await AuthService(engine).audit_log())[::-1]
    assert [(e.who, e.role, e.method, e.path, e.status) for e in entries] == [
        (entries[0].who, "supervisor", "POST", f"/api/tickets/{NUMBER}/close", 404),
        (OFFICER_BADGE, "officer", "POST", "/api/users", 403),
        ("ghost", None, "POST", "/api/login", 401),
    ]
    assert entries[0].who.startswith("supervisor-")
    assert entries[0].body_sha256 is not None and len(entries[0].body_sha256) == 64
    assert entries[2].body_sha256 is None  # a password's digest is never kept
    admin = headers[Role.ADMIN]
    listed = await (await client.get("/api/audit", headers=admin)).json()
    assert len(listed["entries"]) == 3


async def test_admin_creates_users_with_checked_fields(client: TestClient, headers: dict[Role, dict[str, str]]) -> None:
    admin = headers[Role.ADMIN]
    bad = [
        {"username": "s", "password": PASSWORD, "role": "station"},  # no station
        {"username": "c", "password": PASSWORD, "role": "call_taker", "station": "S1"},
        {"username": "c", "password": "short", "role": "call_taker"},
        {"username": "c d", "password": PASSWORD, "role": "call_taker"},
        {"username": "c", "password": PASSWORD, "role": "king"},
    ]
    for body in bad:
        resp = await client.post("/api/users", json=body, headers=admin)
        assert resp.status == 400, body
    resp = await client.post("/api/users", json={"username": "desk-S2", "password": PASSWORD, "role": "station",
                                                 "station": "S2"}, headers=admin)
    assert resp.status == 201
    assert (await client.post("/api/users", json={"username": "desk-S2", "password": PASSWORD, "role": "admin"},
                              headers=admin)).status == 409
    login = await (await client.post("/api/login", json={"username": "desk-S2", "password": PASSWORD})).json()
    assert login["station"] == "S2"


async def test_station_users_see_their_own_incidents_only(
    client: TestClient, service: TicketService, engine: AsyncEngine, headers: dict[Role, dict[str, str]]
) -> None:
    numbers = []
    for i, station in enumerate(("S1", "S2", None)):
        ticket = await service.open_call(uniqueid=f"9.{i}", caller_id="1", at=T0 + i, source="agi")
        numbers.append(ticket.number)
        if station is not None:
            async with async_sessionmaker(engine).begin() as session:
                session.add(IncidentRow(number=ticket.number, lat=39.9, lon=116.4, cell="882a100d2dfffff",
                                        station_id=station, located_at_us=0))
    station = headers[Role.STATION]  # of station S1
    listed = await (await client.get("/api/tickets", headers=station)).json()
    assert [t["number"] for t in listed["tickets"]] == [numbers[0]]
    assert (await client.get(f"/api/tickets/{numbers[0]}", headers=station)).status == 200
    for other in numbers[1:]:
        assert (await client.get(f"/api/tickets/{other}", headers=station)).status == 404
    every = await (await client.get("/api/tickets", headers=headers[Role.CALL_TAKER])).json()
    assert len(every["tickets"]) == 3
    # The event stream and the officer list need the station's own id.
    assert (await client.get("/api/officers", headers=station)).status == 403
    assert (await client.get("/api/officers", params={"station": "S2"}, headers=station)).status == 403
    assert (await client.get("/api/officers", params={"station": "S1"}, headers=station)).status == 200


async def test_officers_report_for_themselves_only(client: TestClient, headers: dict[Role, dict[str, str]]) -> None:
    officer = headers[Role.OFFICER]
    resp = await client.post("/api/officers/008/location", json={"lat": 39.9, "lon": 116.4}, headers=officer)
    assert resp.status == 403
    resp = await client.post(f"/api/officers/{OFFICER_BADGE}/location", json={"lat": 39.9, "lon": 116.4},
                             headers=officer)
    assert resp.status == 404  # allowed; no such officer in this store


async def test_a_websocket_may_carry_the_token_in_the_query_but_nothing_else_may(
    client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    token = headers[Role.SUPERVISOR]["Authorization"].removeprefix("Bearer ")
    assert (await client.get("/api/wallboard", params={"access_token": token})).status == 401
    ws = await client.ws_connect("/api/wallboard/ws", params={"access_token": token})
    message = await ws.receive_json(timeout=2)
    assert message["type"] == "wallboard"
    await ws.close()
    with pytest.raises(Exception):  # noqa: B017 - aiohttp raises WSServerHandshakeError
        await client.ws_connect("/api/wallboard/ws", params={"access_token": "forged"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"by": "x"}, ("$", "required")),
        ({"disposition": 5, "by": "y"}, ("$.disposition", "type")),
        ({"disposition": "x", "by": "   "}, ("$.by", "pattern")),
    ],
)
async def test_bodies_are_checked_against_the_schema_with_clear_errors(
    client: TestClient, headers: dict[Role, dict[str, str]], body: dict, message: tuple[str, str]
) -> None:
    resp = await client.post(f"/api/tickets/{NUMBER}/close", json=body, headers=headers[Role.SUPERVISOR])
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error_id"] == "invalid-body"
    assert (answer["details"]["path"], answer["details"]["rule"]) == message
    assert answer["error"].startswith(f"invalid body: {message[0]}: ")


async def test_the_app_jiejing_serve_builds_lists_every_route(tmp_path: Any) -> None:
    from core.config import Settings
    from telephony import serve

    backend = serve.build(Settings(db_url=f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}"))
    try:
        app = serve.make_web_app(backend)
        assert unlisted(app) == []
        assert ("POST", "/api/tickets/{number}/dispatch") in set(registered(app))
    finally:
        await backend.service.engine.dispose()
