"""Users and bearer tokens for tests of the HTTP API: one user per role, logged in directly in the store."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import AuthService, Role

# Cheap scrypt for tests: the cost parameter is stored with each hash, so
# the app (with the default cost) still checks these passwords correctly.
TEST_SCRYPT_N = 2**4
PASSWORD = "correct horse battery"
_serial = itertools.count(1)


async def login_headers(
    engine: AsyncEngine, role: Role | str = Role.ADMIN, *, station: str | None = None, username: str | None = None
) -> dict[str, str]:
    """``Authorization`` headers of a new user with ``role`` (tables must exist)."""
    auth = AuthService(engine, scrypt_n=TEST_SCRYPT_N)
    role = Role(role)
    if role is Role.STATION and station is None:
        station = "S1"
    name = username or f"{role.value}-{next(_serial)}"
    await auth.add_user(name, PASSWORD, role, station)
    token, _expires, _principal = await auth.login(name, PASSWORD)
    return {"Authorization": f"Bearer {token}"}


async def on_seat(client: Any, headers: dict[str, str], seat: str = "seat-05") -> None:
    """Log the call-taker of ``headers`` in to ``seat``: a call-taker acts only on their own seat's calls."""
    resp = await client.post(f"/api/seats/{seat}/login", json={}, headers=headers)
    assert resp.status == 200, await resp.text()
