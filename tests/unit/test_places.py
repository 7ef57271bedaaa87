"""The city's gazetteer: loaded from the city file, searched as the call-taker types, resolved by exact name;
locating a ticket by an address alone over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.dispatch.geo import Grid
from core.dispatch.officers import CityError, OfficerService, load_city_file, parse_city
from core.dispatch.places import AddressNotFound, Gazetteer, Place, check_place, fold
from core.dispatch.planner import DispatchPlanner
from tests.dispatch_city import (
    CENTER,
    answered_call,
    dispatch_app,
    load,
    officer,
    point_in,
    ring_cell,
)
from tests.unit.conftest import FakeClock

LAB_CITY = Path(__file__).resolve().parents[2] / "sip-lab" / "city.json"


def places() -> list[Place]:
    near = point_in(CENTER, 50)
    far = point_in(ring_cell(2), 0)
    return [
        Place("人民路1号", *near),
        Place("人民路11号", *far),
        Place("人民广场", *near),
        Place("新人民路1号", *far),
        Place("和平小区 3 栋", *far),
        Place("Ｎｏ. 9 Riverside", *near),
        Place("50%_off 商场", *far),
        Place("解放路8号", *near),
        Place("解放路8号", *far),  # one name in two districts
    ]


@pytest.fixture
async def gazetteer(engine: AsyncEngine) -> Gazetteer:
    found = Gazetteer(engine, Grid(8))
    assert await found.replace(places()) == len(places())
    return found


def test_names_are_compared_folded() -> None:
    assert fold("Ｎｏ. 9  Riverside") == fold("no.9riverside") == "no.9riverside"
    assert fold("和平小区 3 栋") == fold("和平小区３栋")
    assert fold(" \t ") == ""


@pytest.mark.parametrize("bad", [("", 31.0, 121.0), ("   ", 31.0, 121.0), ("x" * 501, 31.0, 121.0),
                                 (7, 31.0, 121.0), ("a", 91.0, 121.0), ("a", 31.0, "121")])
def test_a_place_needs_a_name_and_a_position(bad: tuple) -> None:
    with pytest.raises(ValueError):
        check_place(*bad)


async def test_search_ranks_exact_then_prefix_then_shorter(gazetteer: Gazetteer) -> None:
    assert [p.name for p in await gazetteer.search("人民路1")] == ["人民路1号", "人民路11号", "新人民路1号"]
    assert [p.name for p in await gazetteer.search("人民路1号")] == ["人民路1号", "新人民路1号"]
    assert [p.name for p in await gazetteer.search("人民", limit=2)] == ["人民广场", "人民路1号"]
    # full-width, spaces and case do not matter; LIKE's wildcards are plain characters
    assert [p.name for p in await gazetteer.search("no.9 riverside")] == ["Ｎｏ. 9 Riverside"]
    assert [p.name for p in await gazetteer.search("和平小区3")] == ["和平小区 3 栋"]
    assert [p.name for p in await gazetteer.search("50%_")] == ["50%_off 商场"]
    assert await gazetteer.search("人_路") == [] and await gazetteer.search("人%号") == []
    assert await gazetteer.search("   ") == []
    found = await gazetteer.search("人民广场")
    assert found[0].cell == CENTER


async def test_resolve_takes_exactly_one_place_of_that_name(gazetteer: Gazetteer) -> None:
    place = await gazetteer.resolve(" 人民广场 ")
    assert (place.name, place.cell) == ("人民广场", CENTER)
    with pytest.raises(AddressNotFound) as unknown:
        await gazetteer.resolve("人民路")
    assert unknown.value.details["candidates"] == ["人民路1号", "人民路11号", "新人民路1号"]
    with pytest.raises(AddressNotFound) as twice:
        await gazetteer.resolve("解放路8号")
    assert "more than one place" in str(twice.value)
    assert twice.value.details["candidates"] == ["解放路8号", "解放路8号"]


async def test_replace_swaps_the_whole_gazetteer(gazetteer: Gazetteer) -> None:
    assert await gazetteer.replace([Place("滨江公园", *point_in(CENTER))]) == 1
    assert await gazetteer.count() == 1
    assert await gazetteer.search("人民") == []


def test_the_city_file_carries_the_gazetteer() -> None:
    city = load_city_file(LAB_CITY)
    assert len(city.places) >= 40 and any(p.name == "人民广场" for p in city.places)
    with pytest.raises(CityError, match="place needs a name"):
        parse_city({"resolution": 8, "places": [{"name": "", "lat": 31.0, "lon": 121.0}]})
    with pytest.raises(CityError, match="lat"):
        parse_city({"resolution": 8, "places": [{"name": "x"}]})


# -- over HTTP -----------------------------------------------------------------------------------


@pytest.fixture
async def client(service: TicketService, clock: FakeClock) -> AsyncIterator[TestClient]:
    planner = DispatchPlanner(service, OfficerService(service.engine, clock), clock=clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 80)))
    await planner.places.replace(places())
    async with TestClient(TestServer(dispatch_app(service, planner))) as client:
        yield client


async def test_a_ticket_is_located_by_an_address_alone(client: TestClient, service: TicketService) -> None:
    ticket = await answered_call(service)
    resp = await client.put(f"/api/tickets/{ticket.number}/location", json={"address": "人民广场"})
    body = await resp.json()
    assert resp.status == 200, body
    lat, lon = point_in(CENTER, 50)
    incident = body["incident"]
    assert (incident["address"], incident["lat"], incident["lon"], incident["cell"], incident["station"]) == (
        "人民广场", lat, lon, CENTER, "east")
    stored = await service.get(ticket.number)
    assert stored is not None and stored.steps[-1].step is Step.LOCATED
    assert stored.steps[-1].detail["via"] == "gazetteer"


async def test_an_unknown_address_is_refused_with_candidates(client: TestClient, service: TicketService) -> None:
    ticket = await answered_call(service)
    resp = await client.put(f"/api/tickets/{ticket.number}/location", json={"address": "人民路"})
    body = await resp.json()
    assert resp.status == 422 and body["error_id"] == "address-not-found", body
    assert body["details"]["candidates"][0] == "人民路1号"
    # an address with half a position is a malformed body, not a lookup
    resp = await client.put(f"/api/tickets/{ticket.number}/location", json={"address": "人民广场", "lat": 31.0})
    assert resp.status == 400 and '"lon" is required' in (await resp.json())["error"]
    resp = await client.put(f"/api/tickets/{ticket.number}/location", json={})
    assert resp.status == 400 and '"lat" is required' in (await resp.json())["error"]
    stored = await service.get(ticket.number)
    assert stored is not None and stored.steps[-1].step is Step.ANSWERED  # nothing written


async def test_places_are_searched_over_http(client: TestClient) -> None:
    resp = await client.get("/api/places", params={"q": "人民路1", "limit": "2"})
    body = await resp.json()
    assert resp.status == 200, body
    assert [p["name"] for p in body["places"]] == ["人民路1号", "人民路11号"]
    assert set(body["places"][0]) == {"name", "lat", "lon", "cell"}
    for bad in ({"q": "x", "limit": "0"}, {"q": "x", "limit": "21"}, {"q": "x", "limit": "many"},
                {"q": "x" * 501}):
        resp = await client.get("/api/places", params=bad)
        assert resp.status == 400 and (await resp.json())["error_id"] == "invalid-places-query"
    resp = await client.get("/api/places")
    assert resp.status == 200 and (await resp.json()) == {"places": []}
