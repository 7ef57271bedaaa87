"""The situation service and API over a store with eight weeks of incidents: forecast kept, report, roles."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.situation.history import ForecastRow
from core.situation.incidents import DAY_S
from core.situation.service import SituationService
from core.store import make_engine
from core.tables import init_schema
from core.web.app import make_app
from tests.situation_city import BURST, DAY0, NOW, TZ, build
from tests.unit.conftest import FakeClock
from tests.web_login import login_headers

PAST_DAYS = 4


@pytest.fixture(scope="module")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The city's store, built once: eight weeks of incidents and the forecasts the daily task kept on the
    last days before today."""
    path = tmp_path_factory.mktemp("situation") / "jiejing.db"

    async def make() -> dict:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await init_schema(engine)
        city = await build(engine)
        clock = FakeClock(NOW - PAST_DAYS * DAY_S)
        service = SituationService(engine, tz=TZ, clock=clock)
        for _ in range(PAST_DAYS):
            await service.run_due()
            clock.now += DAY_S
        await engine.dispose()
        return city

    return path, asyncio.run(make())


@pytest.fixture
async def engine(city_db: tuple[Path, dict], tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    copy = tmp_path / "jiejing.db"
    shutil.copy(city_db[0], copy)
    engine = make_engine(f"sqlite+aiosqlite:///{copy}")
    yield engine
    await engine.dispose()


@pytest.fixture
def city(city_db: tuple[Path, dict]) -> dict:
    return city_db[1]


@pytest.fixture
async def situation(engine: AsyncEngine) -> SituationService:
    service = SituationService(engine, tz=TZ, clock=FakeClock(NOW))
    await service.run_due()
    return service


@pytest.fixture
async def client(engine: AsyncEngine, situation: SituationService) -> AsyncIterator[TestClient]:
    situation._poll_s = 3600.0  # the app's own task finds today's forecast made and waits
    app = make_app(TicketService(engine), health={}, situation=situation)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_each_day_has_its_forecast_kept_once_per_model(engine: AsyncEngine, situation: SituationService) -> None:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(ForecastRow.day, func.count()).group_by(ForecastRow.day))).all()
    assert len(rows) == PAST_DAYS + 1 and all(n == 2 for _, n in rows)  # sepp and kde, each day
    assert situation.current is not None and situation.current.day == "2026-11-30"
    assert await situation.run_due() is None  # made already today: not again
    params = situation.current.params["sepp"]
    assert set(params) == {"", "property", "dispute", "traffic"}
    assert params["property"]["theta"] > params["traffic"]["theta"]


async def test_the_supervisor_sees_the_city_and_the_burst_as_an_anomaly_tied_to_its_surge(
    client: TestClient, engine: AsyncEngine, city: dict
) -> None:
    headers = await login_headers(engine, Role.SUPERVISOR)
    resp = await client.get("/api/situation?cold_km=1.5", headers=headers)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert report["ready"] and report["day"] == "2026-11-30"
    assert len(report["cells"]) == 61
    assert sum(c["hot"] for c in report["cells"]) == report["hot_cells"] == 3
    assert {s["station"] for s in report["stations"]} == {"north", "south", "east", "west"}
    burst = f"cell:{city['burst']}"
    anomaly = next(a for a in report["anomalies"] if a["place"] == burst)
    assert anomaly["today"] == BURST and anomaly["p"] < 0.01 and anomaly["surge"] == burst
    surge = next(s for s in report["surges"] if s["ref"] == burst)
    assert surge["anomaly"] and surge["forecast_hot"] is False  # unforeseen by the map
    burst_cell = next(c for c in report["cells"] if c["cell"] == city["burst"])
    assert burst_cell["cold"] and burst_cell["nearest_available_km"] > 1.5  # and no officer near it
    everything = report["types"][0]
    assert everything["type"] == "all" and everything["today"] > 0
    assert 0.5 < report["elapsed_share"] < 0.8  # 15:00, with the evening still to come
    trend = report["trend"]
    assert len(trend["days"]) == 28 and trend["days"][-1] == "2026-11-29"
    kept = trend["series"]["all"]["sepp"]
    assert None not in kept[-PAST_DAYS:] and kept[0] is None
    # The kept forecasts are near what came: within a factor of two on each of those days.
    for expected, actual in zip(kept[-PAST_DAYS:], trend["series"]["all"]["actual"][-PAST_DAYS:], strict=True):
        assert actual / 2 < expected < actual * 2
    track = report["track"]
    assert track["days"] == PAST_DAYS and set(track["models"]) == {"sepp", "kde"}
    assert all(t["incidents"] > 0 for t in track["models"]["sepp"])


async def test_a_station_sees_its_own_only(client: TestClient, engine: AsyncEngine, city: dict) -> None:
    headers = await login_headers(engine, Role.STATION, station="west")
    assert (await client.get("/api/situation", headers=headers)).status == 403
    refused = await client.get("/api/situation?station=east", headers=headers)
    assert refused.status == 403 and (await refused.json())["error_id"] == "own-station-only"
    resp = await client.get("/api/situation?station=west", headers=headers)
    report = await resp.json()
    assert {c["station"] for c in report["cells"]} == {"west"}
    assert [s["station"] for s in report["stations"]] == ["west"]
    assert {s["ref"] for s in report["surges"]} == {f"cell:{city['burst']}"}
    assert all(o["station"] == "west" for o in report["officers"])
    east = await login_headers(engine, Role.STATION, station="east")
    other = await (await client.get("/api/situation?station=east", headers=east)).json()
    assert other["surges"] == [] and not any(a["place"] == f"cell:{city['burst']}" for a in other["anomalies"])
    assert (await client.post("/api/situation/refresh", headers=headers)).status == 403
    for role in (Role.CALL_TAKER, Role.OFFICER):
        assert (await client.get("/api/situation", headers=await login_headers(engine, role))).status == 403


async def test_the_printable_report_is_html_with_its_charts(client: TestClient, engine: AsyncEngine,
                                                          city: dict) -> None:
    headers = await login_headers(engine, Role.SUPERVISOR)
    resp = await client.get("/api/situation/report?cold_km=1.5", headers=headers)
    assert resp.status == 200 and resp.content_type == "text/html"
    html = await resp.text()
    assert html.startswith("<!doctype html>") and "<script" not in html
    assert html.count("<svg") >= 3  # the trend, per-type trends, the map
    assert html.count('class="hot"') == 3 and 'class="ice"' in html
    assert f"cell:{city['burst']}" in html and "2026-11-30" in html


async def test_bad_query_and_refresh(client: TestClient, engine: AsyncEngine) -> None:
    headers = await login_headers(engine, Role.SUPERVISOR)
    bad = await client.get("/api/situation?cold_km=zero", headers=headers)
    assert bad.status == 400 and (await bad.json())["error_id"] == "invalid-situation-query"
    resp = await client.post("/api/situation/refresh", headers=headers)
    assert resp.status == 200 and (await resp.json())["day"] == "2026-11-30"


async def test_without_history_the_report_says_so(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    await init_schema(engine)
    try:
        service = SituationService(engine, tz=TZ, clock=FakeClock(DAY0))
        assert await service.refresh() is None
        app = make_app(TicketService(engine), health={}, situation=service)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/api/situation", headers=await login_headers(engine, Role.SUPERVISOR))
            assert (await resp.json())["ready"] is False
    finally:
        await engine.dispose()
