"""Surge alerts: one alert per surge that updates while it lasts and resolves after; threshold and growth; config."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.alerts.board import Alert
from core.calls.tables import Ticket
from core.calls.tickets import TicketService
from core.dispatch.planner import IncidentRow
from core.triage.desk import default_files
from core.triage.surge import (
    SurgeConfig,
    SurgeError,
    SurgeSettings,
    SurgeWatch,
    load_surge_config,
    parse_surge_config,
)
from tests.dispatch_city import CENTER, answered_call, load, point_in
from tests.unit.conftest import T0, FakeClock

T0_US = round(T0 * 1_000_000)


async def _surge_alerts(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Alert).where(Alert.kind == "surge").order_by(Alert.id))).all())


def _watch(engine: AsyncEngine, clock: FakeClock, published: list[tuple[dict[str, Any], str | None]],
           **settings: Any) -> SurgeWatch:
    config = SurgeConfig(SurgeSettings(**{"cell_threshold": 0, "baseline_days": 0, **settings}), {})
    return SurgeWatch(engine, config, clock=clock, publish=lambda m, s: published.append((m, s)))


async def test_a_surge_is_one_alert_that_updates_then_resolves(engine: AsyncEngine, clock: FakeClock) -> None:
    published: list[tuple[dict[str, Any], str | None]] = []
    watch = _watch(engine, clock, published, station_threshold=3, window_min=15)
    for i in range(2):
        await watch.observe(f"n{i}", "east", CENTER, T0_US + i)
    assert await _surge_alerts(engine) == []
    await watch.observe("n2", "east", CENTER, T0_US + 2)
    [alert] = await _surge_alerts(engine)
    assert alert.ref == "station:east" and alert.resolved_at_us is None
    assert "3 incidents in 15 min (threshold 3)" in alert.message
    for i in range(3, 6):
        clock.now += 60
        await watch.observe(f"n{i}", "east", CENTER, round(clock.now * 1e6))
    [alert] = await _surge_alerts(engine)  # no storm: the same row, updated
    assert "6 incidents" in alert.message and alert.resolved_at_us is None
    await watch.observe("w1", "west", None, round(clock.now * 1e6))  # another station: below its threshold
    assert len(await _surge_alerts(engine)) == 1
    # The window slides past the first calls; 3 remain (≥ 0.7 × 3): still a surge, quietly.
    clock.now = T0 + 15 * 60 + 30
    await watch.tick()
    [alert] = await _surge_alerts(engine)
    assert alert.resolved_at_us is None
    clock.now = T0 + 30 * 60
    await watch.tick()
    [alert] = await _surge_alerts(engine)
    assert alert.resolved_at_us == round(clock.now * 1e6) and "ended" in alert.message and "peak 6" in alert.message
    kinds = [m["type"] for m, _ in published]
    assert kinds[0] == "surge_started" and kinds[-1] == "surge_ended"
    assert set(kinds[1:-1]) == {"surge_updated"}
    assert {s for _, s in published} == {"east"}  # told to that station (and the bureau views)
    # A later surge at the same place reopens the row.
    for i in range(3):
        await watch.observe(f"m{i}", "east", CENTER, round(clock.now * 1e6))
    [alert] = await _surge_alerts(engine)
    assert alert.resolved_at_us is None and alert.created_at_us == round(clock.now * 1e6)


async def test_a_corrected_location_moves_the_ticket(engine: AsyncEngine, clock: FakeClock) -> None:
    watch = _watch(engine, clock, [], station_threshold=2)
    await watch.observe("a", "east", None, T0_US)
    await watch.observe("a", "west", None, T0_US + 5)  # corrected, not a second incident
    assert (watch.count("station:east"), watch.count("station:west")) == (0, 1)
    await watch.observe("b", "west", None, T0_US + 6)
    assert [a.ref for a in await _surge_alerts(engine)] == ["station:west"]


async def test_growth_over_the_baseline_of_previous_days(engine: AsyncEngine, clock: FakeClock) -> None:
    # Yesterday and the day before, same quarter hour: one incident each in this cell.
    async with engine.begin() as conn:
        for day in (1, 2):
            number, at = f"110-2026112{day}-000001", T0_US - day * 86_400_000_000 - 60_000_000
            await conn.execute(insert(Ticket).values(number=number, uniqueid=f"old{day}", caller_id="1", state="closed",
                                                     created_at_us=at, updated_at_us=at))
            await conn.execute(insert(IncidentRow).values(number=number, lat=31.0, lon=121.0, cell=CENTER,
                                                          station_id="east", located_at_us=at))
    watch = _watch(engine, clock, [], station_threshold=0, cell_threshold=0, baseline_days=2, growth=3.0,
                   min_count=3)
    for i in range(2):
        await watch.observe(f"g{i}", "east", CENTER, T0_US)
    assert await _surge_alerts(engine) == []  # 2 < min_count
    assert await watch.baseline(f"cell:{CENTER}") == 1.0
    await watch.observe("g2", "east", CENTER, T0_US)
    refs = [a.ref for a in await _surge_alerts(engine)]
    assert refs == [f"cell:{CENTER}", "station:east"]
    assert "3.0× the usual 1.0" in (await _surge_alerts(engine))[0].message


async def test_the_listener_counts_located_tickets(service: TicketService, clock: FakeClock) -> None:
    from tests.triage_setup import planner_for

    planner = planner_for(service, clock)
    await load(planner.officers)
    watch = _watch(service.engine, clock, [], station_threshold=2)
    remove = service.add_listener(watch.on_step)
    await watch.start()
    try:
        for uniqueid in ("1.1", "1.2"):
            ticket = await answered_call(service, uniqueid)
            await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
        await watch.flush()
    finally:
        remove()
        await watch.stop()
    assert [a.ref for a in await _surge_alerts(service.engine)] == ["station:east"]


def test_configuration_per_region_and_its_errors() -> None:
    config = load_surge_config(default_files()["surge"])
    assert config.for_station("east").station_threshold == 60
    assert config.for_station("west") == config.default
    assert config.for_station(None) == config.default
    with pytest.raises(SurgeError, match="unknown key 'treshold'"):
        parse_surge_config("[default]\ntreshold = 3\n")
    with pytest.raises(SurgeError, match=r"\[region.east\]: growth must be a number from 1 to 1000"):
        parse_surge_config("[region.east]\ngrowth = 0.5\n")
    with pytest.raises(SurgeError, match="window_min"):
        parse_surge_config("[default]\nwindow_min = 0\n")


async def test_located_tickets_left_out_of_a_full_queue_are_counted_from_the_store(
    service: TicketService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.triage import surge as surge_module
    from tests.triage_setup import planner_for, repaired

    monkeypatch.setattr(surge_module, "WORK_MAX", 1)
    planner = planner_for(service, clock)
    await load(planner.officers)
    watch = _watch(service.engine, clock, [], station_threshold=2)
    remove = service.add_listener(watch.on_step)
    try:
        for uniqueid in ("9.1", "9.2"):  # the worker is not running: the second finds no room
            ticket = await answered_call(service, uniqueid)
            await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
        assert watch.overflow.dropped == 1 and watch.health()["ok"] is False
        await watch.start()
        await repaired(watch.overflow)
        assert watch.health()["ok"] is True
    finally:
        remove()
        await watch.stop()
    assert [a.ref for a in await _surge_alerts(service.engine)] == ["station:east"]
