"""Browser tests: the backend in-process on 127.0.0.1 (port chosen by the OS) and headless Chromium.

Each test saves a screenshot under ``artifacts/screenshots/``. Without the
``chromium`` package (``sip-lab/bootstrap.sh`` installs it) they are skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.store import make_engine
from core.tables import init_schema
from tests.browser.cdp import Browser, chromium_path

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # In CI the bootstrap installs Chromium: a missing browser there must fail, not skip.
    if chromium_path() is None and not os.environ.get("CI"):
        skip = pytest.mark.skip(reason="chromium is not installed (sip-lab/bootstrap.sh installs it)")
        for item in items:
            if "tests/browser" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'jiejing.db'}")
    await init_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with Browser() as browser:
        yield browser


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
