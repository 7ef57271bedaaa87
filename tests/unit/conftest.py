"""Shared fixtures for the core tests: a ticket store on a temporary SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tickets import TicketService
from core.store import make_engine
from core.tables import init_schema
from telephony.ami.client import AMIClient
from tests.ami_fake import FakeAsterisk

# 2026-11-29 11:30:00 UTC, 19:30 in Shanghai.
T0 = 1_795_951_800.0


class FakeClock:
    """Wall clock under test control, so stored times are predictable."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'jiejing.db'}"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    await init_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(engine: AsyncEngine, clock: FakeClock) -> TicketService:
    return TicketService(engine, clock=clock)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAsterisk]:
    """An AMI server speaking as Asterisk does, scripted by each test's handlers."""
    server = FakeAsterisk()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def ami(fake: FakeAsterisk) -> AsyncIterator[AMIClient]:
    """Our AMI client, logged in to ``fake``."""
    client = AMIClient("127.0.0.1", fake.port, fake.username, fake.secret, connect_timeout=0.5)
    await client.start()
    await client.wait_connected(2.0)
    yield client
    await client.stop()
