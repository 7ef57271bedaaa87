"""Managing users: an admin resets passwords, changes roles, re-enables users; a user changes his own password;
a password someone else set must be changed before anything else. Through a real aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from tests.unit.conftest import FakeClock
from tests.unit.test_web_auth import full_app
from tests.web_login import PASSWORD, TEST_SCRYPT_N, login_headers

NEW = "a-new-password-of-his-own"


@pytest.fixture
async def client(service: TicketService, engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(full_app(service, engine, clock))) as client:
        yield client


@pytest.fixture
async def admin(engine: AsyncEngine) -> dict[str, str]:
    return await login_headers(engine, Role.ADMIN)


async def _login(client: TestClient, username: str, password: str) -> tuple[int, dict]:
    resp = await client.post("/api/login", json={"username": username, "password": password})
    return resp.status, await resp.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_user_an_admin_made_must_choose_his_own_password_first(client: TestClient, admin) -> None:
    resp = await client.post("/api/users", json={"username": "wang", "password": PASSWORD, "role": "call_taker"},
                             headers=admin)
    assert resp.status == 201 and (await resp.json())["must_change_password"] is True
    status, login = await _login(client, "wang", PASSWORD)
    assert status == 200 and login["must_change_password"] is True
    wang = _bearer(login["token"])
    refused = await client.get("/api/tickets", headers=wang)
    assert refused.status == 403 and (await refused.json())["error_id"] == "password-change-required"
    assert (await (await client.get("/api/me", headers=wang)).json())["must_change_password"] is True
    same = await client.post("/api/password", json={"current": PASSWORD, "new": PASSWORD}, headers=wang)
    assert same.status == 400
    wrong = await client.post("/api/password", json={"current": "not-his-password", "new": NEW}, headers=wang)
    assert wrong.status == 403 and (await wrong.json())["error_id"] == "wrong-password"
    changed = await client.post("/api/password", json={"current": PASSWORD, "new": NEW}, headers=wang)
    assert changed.status == 200 and (await changed.json())["must_change_password"] is False
    assert (await client.get("/api/tickets", headers=wang)).status == 200  # the same log-in goes on
    assert (await _login(client, "wang", PASSWORD))[0] == 401
    assert (await _login(client, "wang", NEW))[0] == 200


async def test_a_gateway_account_is_not_asked_to_change(client: TestClient, admin) -> None:
    resp = await client.post("/api/users", json={"username": "app-gw", "password": PASSWORD, "role": "gateway"},
                             headers=admin)
    assert (await resp.json())["must_change_password"] is False


async def test_changing_ones_password_ends_ones_other_log_ins(client: TestClient, engine: AsyncEngine) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("li", PASSWORD, Role.SUPERVISOR)
    first = _bearer((await _login(client, "li", PASSWORD))[1]["token"])
    second = _bearer((await _login(client, "li", PASSWORD))[1]["token"])
    assert (await client.post("/api/password", json={"current": PASSWORD, "new": NEW}, headers=first)).status == 200
    assert (await client.get("/api/me", headers=first)).status == 200
    assert (await client.get("/api/me", headers=second)).status == 401


async def test_guessing_the_current_password_is_throttled_like_log_ins(client: TestClient, engine: AsyncEngine) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("zhao", PASSWORD, Role.CALL_TAKER)
    zhao = _bearer((await _login(client, "zhao", PASSWORD))[1]["token"])
    statuses = [(await client.post("/api/password", json={"current": f"guess-{i:04d}", "new": NEW},
                                   headers=zhao)).status for i in range(12)]
    assert statuses[0] == 403 and statuses[-1] == 429, statuses
    right = await client.post("/api/password", json={"current": PASSWORD, "new": NEW}, headers=zhao)
    assert right.status == 429  # locked out: even the right one waits


async def test_an_admin_resets_a_password_changes_a_role_and_re_enables(
    client: TestClient, engine: AsyncEngine, admin
) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("chen", PASSWORD, Role.CALL_TAKER)
    chen = _bearer((await _login(client, "chen", PASSWORD))[1]["token"])
    reset = await client.post("/api/users/chen/password", json={"password": "temporary-123"}, headers=admin)
    assert reset.status == 200 and (await reset.json())["must_change_password"] is True
    assert (await client.get("/api/me", headers=chen)).status == 401  # his log-ins ended
    status, login = await _login(client, "chen", "temporary-123")
    assert status == 200 and login["must_change_password"] is True

    role = await client.post("/api/users/chen/role", json={"role": "station"}, headers=admin)
    assert role.status == 400  # a station user needs his station
    role = await client.post("/api/users/chen/role", json={"role": "station", "station": "S2"}, headers=admin)
    assert role.status == 200 and (await role.json())["role"] == "station"
    assert (await client.get("/api/me", headers=_bearer(login["token"]))).status == 401
    assert (await client.post("/api/users/nobody/role", json={"role": "admin"}, headers=admin)).status == 404
    assert (await client.post("/api/users/nobody/password", json={"password": "temporary-123"},
                              headers=admin)).status == 404

    assert (await client.post("/api/users/chen/disabled", json={"disabled": True}, headers=admin)).status == 200
    assert (await _login(client, "chen", "temporary-123"))[0] == 401
    assert (await client.post("/api/users/chen/disabled", json={"disabled": False}, headers=admin)).status == 200
    assert (await _login(client, "chen", "temporary-123"))[0] == 200


async def test_only_admins_manage_users(client: TestClient, engine: AsyncEngine) -> None:
    supervisor = await login_headers(engine, Role.SUPERVISOR)
    for path, body in (("/api/users/x/password", {"password": "temporary-123"}),
                       ("/api/users/x/role", {"role": "admin"})):
        assert (await client.post(path, json=body, headers=supervisor)).status == 403


async def test_passwords_are_not_kept_in_the_audit_log(client: TestClient, engine: AsyncEngine, admin) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("sun", PASSWORD, Role.CALL_TAKER)
    await client.post("/api/users/sun/password", json={"password": "temporary-123"}, headers=admin)
    sun = _bearer((await _login(client, "sun", "temporary-123"))[1]["token"])
    await client.post("/api/password", json={"current": "temporary-123", "new": NEW}, headers=sun)
    entries = {e.path: e for e in await AuthService(engine).audit_log()}
    assert entries["/api/users/sun/password"].status == 200 and entries["/api/users/sun/password"].body_sha256 is None
    assert entries["/api/password"].status == 200 and entries["/api/password"].body_sha256 is None


async def test_the_last_admin_cannot_be_demoted_or_disabled(client: TestClient, engine: AsyncEngine) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("root", PASSWORD, Role.ADMIN)
    root = _bearer((await _login(client, "root", PASSWORD))[1]["token"])
    resp = await client.post("/api/users/root/role", json={"role": "supervisor"}, headers=root)
    assert resp.status == 409 and (await resp.json())["error_id"] == "last-admin"
    resp = await client.post("/api/users/root/disabled", json={"disabled": True}, headers=root)
    assert resp.status == 409 and (await resp.json())["error_id"] == "last-admin"
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("root2", PASSWORD, Role.ADMIN)
    assert (await client.post("/api/users/root/role", json={"role": "supervisor"}, headers=root)).status == 200
