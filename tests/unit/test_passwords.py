"""Password hashes: scrypt at today's recommended cost, and weaker stored hashes re-hashed at log-in."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.auth import users
from core.auth.users import AuthService, Role, UserRow, verify_password
from tests.web_login import PASSWORD, TEST_SCRYPT_N


def _params(stored: str) -> tuple[int, int, int]:
    kind, n, r, p, _salt, _digest = stored.split("$")
    assert kind == "scrypt"
    return int(n), int(r), int(p)


async def _stored(engine: AsyncEngine, username: str) -> str:
    async with async_sessionmaker(engine)() as session:
        return (await session.scalar(select(UserRow.password_hash).where(UserRow.username == username))) or ""


def test_the_default_cost_is_owasps_recommendation() -> None:
    # OWASP Password Storage Cheat Sheet: scrypt with N=2^17, r=8, p=1 (128 MiB).
    assert (users.SCRYPT_N, users.SCRYPT_R, users.SCRYPT_P) == (2**17, 8, 1)
    assert users.hash_password("x" * 8, n=users.SCRYPT_N).startswith(f"scrypt${2**17}$8$1$")


async def test_a_weaker_stored_hash_is_rehashed_at_log_in(engine: AsyncEngine) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("wang", PASSWORD, Role.CALL_TAKER)
    assert _params(await _stored(engine, "wang"))[0] == TEST_SCRYPT_N
    stronger = AuthService(engine, scrypt_n=TEST_SCRYPT_N * 2)
    await stronger.login("wang", PASSWORD)
    rehashed = await _stored(engine, "wang")
    assert _params(rehashed) == (TEST_SCRYPT_N * 2, users.SCRYPT_R, users.SCRYPT_P)
    assert verify_password(PASSWORD, rehashed)
    await stronger.login("wang", PASSWORD)  # the new hash still lets him in, and is kept as it is
    assert await _stored(engine, "wang") == rehashed


async def test_a_failed_log_in_does_not_rehash(engine: AsyncEngine) -> None:
    await AuthService(engine, scrypt_n=TEST_SCRYPT_N).add_user("wang", PASSWORD, Role.CALL_TAKER)
    before = await _stored(engine, "wang")
    with pytest.raises(users.BadCredentials):
        await AuthService(engine, scrypt_n=TEST_SCRYPT_N * 2).login("wang", "wrong password")
    assert await _stored(engine, "wang") == before
