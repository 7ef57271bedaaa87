"""Log-in throttling: repeated failures for a name from an address, or from one address, are refused for a while
(429, Retry-After), in bounded memory, and a lock-out writes one audit row, not one per refused attempt."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.throttle import LoginThrottle
from core.auth.users import AuthService, Role
from core.calls.tickets import TicketService
from core.web.app import make_app
from tests.web_login import PASSWORD, TEST_SCRYPT_N, login_headers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_for_a_name_from_an_address_lock_it_out_for_a_while() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_name=5, per_address=20, window_s=300, lockout_s=300, clock=clock)
    for _ in range(5):
        assert throttle.check("wang", "10.0.0.1") is None
        throttle.failed("wang", "10.0.0.1")
    refusal = throttle.check("wang", "10.0.0.1")
    assert refusal is not None and refusal.retry_after_s == 300 and refusal.first
    clock.now += 100
    again = throttle.check("wang", "10.0.0.1")
    assert again is not None and again.retry_after_s == 200 and not again.first
    assert throttle.check("li", "10.0.0.1") is None  # another name from the same desk still logs in
    clock.now += 200
    assert throttle.check("wang", "10.0.0.1") is None


def test_failures_spread_over_the_window_do_not_lock_out() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_name=5, per_address=20, window_s=300, lockout_s=300, clock=clock)
    for _ in range(10):
        throttle.failed("wang", "10.0.0.1")
        clock.now += 80  # never five within 300 s
        assert throttle.check("wang", "10.0.0.1") is None


def test_many_names_from_one_address_lock_the_address_out() -> None:
    throttle = LoginThrottle(per_name=5, per_address=20, window_s=300, lockout_s=300, clock=Clock())
    for i in range(20):
        throttle.failed(f"user-{i}", "10.0.0.9")
    refusal = throttle.check("someone-else", "10.0.0.9")
    assert refusal is not None and refusal.retry_after_s == 300
    assert throttle.check("someone-else", "10.0.0.8") is None


def test_a_success_forgets_the_names_failures_from_that_address() -> None:
    throttle = LoginThrottle(per_name=5, per_address=20, window_s=300, lockout_s=300, clock=Clock())
    for _ in range(4):
        throttle.failed("wang", "10.0.0.1")
    throttle.succeeded("wang", "10.0.0.1")
    for _ in range(4):
        throttle.failed("wang", "10.0.0.1")
    assert throttle.check("wang", "10.0.0.1") is None


def test_memory_is_bounded_whatever_the_number_of_names_and_addresses() -> None:
    throttle = LoginThrottle(per_name=5, per_address=20, window_s=300, lockout_s=300, max_keys=100, clock=Clock())
    for i in range(10_000):
        throttle.failed(f"user-{i}", f"10.{i // 256 % 256}.{i % 256}.1")
    assert len(throttle) <= 100


async def _app(service: TicketService, engine: AsyncEngine, clock: Clock) -> tuple[TestClient, dict[str, str]]:
    throttle = LoginThrottle(per_name=5, per_address=20, window_s=300, lockout_s=300, clock=clock)
    auth = AuthService(engine, scrypt_n=TEST_SCRYPT_N, throttle=throttle)
    await auth.add_user("wang", PASSWORD, Role.CALL_TAKER)
    admin = await login_headers(engine, Role.ADMIN)
    return TestClient(TestServer(make_app(service, health={}, auth=auth))), admin


async def test_the_sixth_log_in_after_five_failures_is_429_with_retry_after(
    service: TicketService, engine: AsyncEngine
) -> None:
    clock = Clock()
    client, _admin = await _app(service, engine, clock)
    async with client:
        for _ in range(5):
            resp = await client.post("/api/login", json={"username": "wang", "password": "wrong password"})
            assert resp.status == 401
        resp = await client.post("/api/login", json={"username": "wang", "password": PASSWORD})
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "300"
        body = await resp.json()
        assert body["error_id"] == "too-many-log-ins" and body["details"] == {"retry_after_s": 300}
        clock.now += 300
        resp = await client.post("/api/login", json={"username": "wang", "password": PASSWORD})
        assert resp.status == 200, await resp.text()


async def test_a_lock_out_writes_one_audit_row_not_one_per_refused_attempt(
    service: TicketService, engine: AsyncEngine
) -> None:
    client, admin = await _app(service, engine, Clock())
    async with client:
        for _ in range(5):
            await client.post("/api/login", json={"username": "wang", "password": "wrong password"})
        for _ in range(30):
            assert (await client.post("/api/login", json={"username": "wang", "password": "x"})).status == 429
        entries = (await (await client.get("/api/audit", params={"limit": "1000"}, headers=admin)).json())["entries"]
    logins = [(e["who"], e["status"]) for e in entries if e["path"] == "/api/login"]
    assert sorted(logins) == [("wang", 401)] * 5 + [("wang", 429)]
