"""Stations, cells, officers and roster: loading a city, officers' reports, reservations."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h3
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.dispatch.officers import (
    CityError,
    OfficerBusy,
    OfficerService,
    OfficerStatus,
    StationSpec,
    UnknownOfficer,
    UnknownStation,
    load_city_file,
    parse_city,
)
from tests.dispatch_city import (
    CENTER,
    EAST,
    SHIFT,
    T0,
    city,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.unit.conftest import FakeClock

LAB_CITY = Path(__file__).resolve().parents[2] / "sip-lab" / "city.json"


@pytest.fixture
def officers(engine: AsyncEngine, clock: FakeClock) -> OfficerService:
    return OfficerService(engine, clock)


# -- the lab city file ---------------------------------------------------------------------


async def test_lab_city_loads_and_every_cell_has_one_station(officers: OfficerService) -> None:
    lab = load_city_file(LAB_CITY)
    counts = await officers.load_city(lab)
    # officers 013-040 stand on rings around the centre for dispatch storms
    assert counts == {"stations": 3, "cells": 37, "officers": 40}
    assert lab.center is not None
    disk = h3.grid_disk(h3.latlng_to_cell(*lab.center, 8), 3)
    assert set((await officers.stations_of_cells(disk))) == set(disk)
    listed = await officers.list()
    assert [o.endpoint for o in listed] == [f"PJSIP/officer{i:03d}" for i in range(1, 41)]
    assert all(o.cell in disk for o in listed)


async def test_lab_city_roster_covers_now_except_the_two_planted_exceptions(
    officers: OfficerService, clock: FakeClock
) -> None:
    await officers.load_city(load_city_file(LAB_CITY))
    on = {o.badge for o in await officers.list() if await officers.on_duty(o.badge, clock.now)}
    assert on == {f"officer{i:03d}" for i in range(1, 41)} - {"officer011", "officer012"}


def test_city_as_toml(tmp_path: Path) -> None:
    path = tmp_path / "city.toml"
    path.write_text(
        'name = "t"\nresolution = 8\n'
        '[[stations]]\nid = "east"\nname = "东区"\nbureau = "分局"\nduty_desk = "PJSIP/d"\nsuperior = "PJSIP/s"\n'
        f'cells = ["{CENTER}"]\n'
        '[[officers]]\nbadge = "o1"\nname = "n"\nstation = "east"\nendpoint = "PJSIP/o1"\n'
        '[[officers.shifts]]\nstart = "2026-11-29T08:00:00+08:00"\nend = "2026-11-29T20:00:00+08:00"\n',
        encoding="utf-8",
    )
    parsed = load_city_file(path)
    assert parsed.stations[0].cells == (CENTER,)
    assert parsed.stations[0].ladder == ("officer", "duty_desk", "superior")
    assert parsed.officers[0].shifts == ((1_795_910_400.0, 1_795_953_600.0),)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["stations"][0].update(ladder=["officer", "radio"]), "ladder must list distinct rungs"),
        (lambda d: d["stations"][0].update(ladder=["officer", "officer"]), "ladder must list distinct rungs"),
        (lambda d: d["stations"][0].update(answer_timeout_s=1), "answer_timeout_s must be 5-120"),
        (lambda d: d["stations"][0].pop("duty_desk"), "ladder has duty_desk but the station has no duty_desk"),
        (lambda d: d["officers"][0].pop("badge"), "missing field 'badge'"),
        (lambda d: d["officers"][0].update(lat=95.0), "lat must be between -90 and 90"),
        (lambda d: d["officers"][0].update(status="ringing"), "configured status must be available or off_duty"),
        (
            lambda d: d["officers"][0].update(shifts=[{"start": "2026-11-29T08:00:00", "end": "2026-11-29T09:00:00"}]),
            "needs a UTC offset",
        ),
        (lambda d: d["officers"][0].update(endpoint="P" * 200), "endpoint must be a non-empty string"),
    ],
)
def test_bad_city_files_name_the_problem(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(LAB_CITY.read_text(encoding="utf-8"))
    mutate(data)
    with pytest.raises(CityError, match=message):
        parse_city(data)


async def test_cross_checks_refuse_the_whole_load(officers: OfficerService) -> None:
    lab = load_city_file(LAB_CITY)
    doubled = replace(lab, stations=(lab.stations[0], replace(lab.stations[1], cells=lab.stations[0].cells[:1])))
    with pytest.raises(CityError, match="is assigned to both 'east' and 'west'"):
        await officers.load_city(doubled)
    stray = replace(lab, officers=(replace(lab.officers[0], station="north"),))
    with pytest.raises(CityError, match="unknown station 'north'"):
        await officers.load_city(stray)
    with pytest.raises(CityError, match="resolution 7"):
        await officers.load_city(replace(lab, resolution=7))
    assert await officers.list() == []  # nothing half-loaded
    assert await officers.stations() == []


async def test_reloading_updates_but_keeps_a_dispatch_in_progress(officers: OfficerService) -> None:
    await load(officers, officer("o1", "east", point_in(CENTER)), officer("o2", "east", point_in(CENTER)))
    assert await officers.reserve("o1", "110-20261129-000001")
    await officers.load_city(city(officer("o1", "west", point_in(CENTER)), officer("o2", "east", point_in(CENTER))))
    o1 = await officers.get("o1")
    assert o1.station == "west"
    assert o1.status is OfficerStatus.RINGING
    assert o1.ticket == "110-20261129-000001"


# -- stations and cells --------------------------------------------------------------------


async def test_station_upsert_and_cell_moves(officers: OfficerService) -> None:
    await officers.upsert_station(EAST)
    await officers.upsert_station(replace(EAST, id="west", name="西区"))
    assert await officers.assign_cells("east", [CENTER, ring_cell(1)]) == 2
    await officers.assign_cells("west", [ring_cell(1)])
    assert await officers.stations_of_cells([CENTER, ring_cell(1), ring_cell(2)]) == {
        CENTER: "east",
        ring_cell(1): "west",
    }
    changed = await officers.upsert_station(replace(EAST, answer_timeout_s=30, ladder=("duty_desk",)))
    assert (changed.answer_timeout_s, changed.ladder) == (30.0, ("duty_desk",))
    with pytest.raises(UnknownStation):
        await officers.assign_cells("north", [CENTER])
    with pytest.raises(CityError, match="resolution 9"):
        await officers.assign_cells("east", [h3.cell_to_children(CENTER, 9)[0]])


def test_station_spec_refuses_a_ladder_without_phones() -> None:
    with pytest.raises(CityError, match="ladder has superior"):
        StationSpec(id="x", name="x", bureau="b", duty_desk="PJSIP/d", ladder=("officer", "superior")).checked()


# -- what officers report ------------------------------------------------------------------


async def test_location_updates_keep_the_newest_fix(officers: OfficerService, clock: FakeClock) -> None:
    await load(officers, officer("o1", "east", None))
    assert (await officers.get("o1")).cell is None
    here = point_in(ring_cell(1))
    view = await officers.update_location("o1", *here, at=T0 + 10)
    assert (view.lat, view.lon, view.cell) == (*here, ring_cell(1))
    assert view.located_at_us == round((T0 + 10) * 1e6)
    # A fix delayed on the mobile network arrives after a newer one: ignored.
    stale = await officers.update_location("o1", *point_in(CENTER), at=T0 + 5)
    assert stale.cell == ring_cell(1)
    with pytest.raises(UnknownOfficer):
        await officers.update_location("nobody", *here)


async def test_on_duty_needs_both_sign_on_and_roster(officers: OfficerService) -> None:
    await load(
        officers,
        officer("o1", "east", None),
        officer("o2", "east", None, status=OfficerStatus.OFF_DUTY),
        officer("o3", "east", None, shifts=((T0 - 7200, T0 - 3600),)),
    )
    assert await officers.on_duty("o1", T0)
    assert not await officers.on_duty("o1", SHIFT[1])  # the shift's end is exclusive
    assert not await officers.on_duty("o2", T0)
    assert not await officers.on_duty("o3", T0)
    assert await officers.on_duty("o3", T0 - 3601)
    await officers.set_roster("o3", [(T0 - 60, T0 + 60)])
    assert await officers.on_duty("o3", T0)


async def test_status_changes_by_the_officer(officers: OfficerService, clock: FakeClock) -> None:
    await load(officers, officer("o1", "east", None))
    clock.now = T0 + 30
    view = await officers.set_status("o1", "off_duty")
    assert view.status is OfficerStatus.OFF_DUTY
    assert view.status_changed_at_us == round((T0 + 30) * 1e6)
    with pytest.raises(ValueError, match="only set himself available or off_duty"):
        await officers.set_status("o1", "dispatched")
    await officers.set_status("o1", "available")
    assert await officers.reserve("o1", "110-20261129-000001")
    # Signing off while his phone rings would undo the reservation behind the dispatch's back.
    with pytest.raises(OfficerBusy, match="ringing for ticket 110-20261129-000001"):
        await officers.set_status("o1", "off_duty")


# -- reservations --------------------------------------------------------------------------


async def test_reservation_is_taken_once_and_released_only_by_its_ticket(officers: OfficerService) -> None:
    await load(officers, officer("o1", "east", point_in(CENTER)))
    assert await officers.reserve("o1", "A")
    assert not await officers.reserve("o1", "B")
    assert not await officers.release("o1", "B")  # a late outcome of another ticket
    assert (await officers.get("o1")).ticket == "A"
    assert await officers.mark_dispatched("o1", "A")
    assert not await officers.release("o1", "A")  # joined: no longer just ringing
    assert await officers.mark_on_scene("o1", "A")
    assert not await officers.mark_on_scene("o1", "B")
    assert await officers.free_ticket("A") == ["o1"]
    freed = await officers.get("o1")
    assert (freed.status, freed.ticket) == (OfficerStatus.AVAILABLE, None)
    with pytest.raises(UnknownOfficer):
        await officers.reserve("nobody", "A")


async def test_available_in_filters_status_roster_and_cells(officers: OfficerService) -> None:
    await load(
        officers,
        officer("o1", "east", point_in(CENTER)),
        officer("o2", "east", point_in(ring_cell(1))),
        officer("o3", "east", point_in(CENTER), status=OfficerStatus.OFF_DUTY),
        officer("o4", "east", point_in(CENTER), shifts=((T0 + 3600, T0 + 7200),)),
        officer("o5", "east", None),
    )
    await officers.reserve("o2", "A")
    assert [o.badge for o in await officers.available_in([CENTER, ring_cell(1)], T0)] == ["o1"]
    assert [o.badge for o in await officers.available_in([CENTER], T0 + 3700)] == ["o1", "o4"]
