"""The patrol grid: cells, rings, distances, travel times, and refused input."""

from __future__ import annotations

import math

import h3
import pytest

from core.dispatch.geo import (
    DEFAULT_RESOLUTION,
    GeoError,
    Grid,
    check_lat_lon,
    eta_s,
    haversine_m,
)

LAT0, LON0 = 31.2304, 121.4737


def test_default_resolution_is_the_city_patrol_grid() -> None:
    grid = Grid()
    assert grid.resolution == DEFAULT_RESOLUTION == 8
    cell = grid.cell_of(LAT0, LON0)
    assert h3.get_resolution(cell) == 8
    # ~0.74 km² on average; cells shrink away from the icosahedron's faces'
    # centres, to ~0.56 km² at the lab city's latitude.
    assert 0.4 < h3.cell_area(cell, "km^2") < 1.0


def test_resolution_is_configurable() -> None:
    coarse, fine = Grid(7).cell_of(LAT0, LON0), Grid(9).cell_of(LAT0, LON0)
    assert (h3.get_resolution(coarse), h3.get_resolution(fine)) == (7, 9)
    assert h3.cell_area(coarse) > h3.cell_area(Grid(8).cell_of(LAT0, LON0)) > h3.cell_area(fine)


@pytest.mark.parametrize("resolution", [-1, 16, 8.0, True, "8"])
def test_bad_resolution_is_refused(resolution: object) -> None:
    with pytest.raises(GeoError, match="resolution"):
        Grid(resolution)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_disk_and_ring_sizes(k: int) -> None:
    grid = Grid()
    cell = grid.cell_of(LAT0, LON0)
    disk = grid.grid_disk(cell, k)
    ring = grid.grid_ring(cell, k)
    assert len(disk) == 1 + 3 * k * (k + 1)
    assert len(ring) == (1 if k == 0 else 6 * k)
    assert ring <= disk
    assert all(grid.ring_of(cell, other) == k for other in ring)


def test_rings_partition_the_disk() -> None:
    grid = Grid()
    cell = grid.cell_of(LAT0, LON0)
    union = set().union(*(grid.grid_ring(cell, k) for k in range(4)))
    assert union == grid.grid_disk(cell, 3)


def test_cells_of_another_resolution_are_refused() -> None:
    grid = Grid(8)
    with pytest.raises(GeoError, match="resolution 9"):
        grid.grid_disk(Grid(9).cell_of(LAT0, LON0), 1)
    with pytest.raises(GeoError, match="not an H3 cell"):
        grid.check_cell("not-a-cell")
    with pytest.raises(GeoError, match="ring size"):
        grid.grid_ring(grid.cell_of(LAT0, LON0), -1)


def test_ring_of_far_apart_cells_is_unknown_or_large() -> None:
    grid = Grid()
    here = grid.cell_of(LAT0, LON0)
    antipode = grid.cell_of(-LAT0, LON0 - 180)
    distance = grid.ring_of(here, antipode)
    assert distance is None or distance > 1000


def test_haversine_known_distances() -> None:
    # One degree of latitude is 111.2 km on the mean sphere.
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-4)
    assert haversine_m(LAT0, LON0, LAT0, LON0) == 0
    # Half the circumference between antipodes, without a domain error.
    assert haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * 6_371_008.8)
    # Symmetric.
    assert haversine_m(LAT0, LON0, 31.24, 121.48) == pytest.approx(haversine_m(31.24, 121.48, LAT0, LON0))


def test_eta_uses_speed_and_detour() -> None:
    # 1 km straight, 1.3 km by road at 30 km/h: 156 s.
    assert eta_s(1000) == pytest.approx(156.0)
    assert eta_s(1000, speed_kmh=60, detour=1.0) == pytest.approx(60.0)
    with pytest.raises(GeoError, match="speed"):
        eta_s(1000, speed_kmh=0)
    with pytest.raises(GeoError, match="detour"):
        eta_s(1000, detour=0.5)


@pytest.mark.parametrize(
    ("lat", "lon", "message"),
    [
        (90.1, 0, "lat must be between -90 and 90"),
        (0, -180.5, "lon must be between -180 and 180"),
        (float("nan"), 0, "lat must be a finite number"),
        (0, float("inf"), "lon must be a finite number"),
        ("31", 121, "lat must be a finite number"),
        (True, 121, "lat must be a finite number"),
    ],
)
def test_bad_coordinates_are_refused(lat: object, lon: object, message: str) -> None:
    with pytest.raises(GeoError, match=message):
        check_lat_lon(lat, lon)  # type: ignore[arg-type]
    with pytest.raises(GeoError):
        Grid().cell_of(lat, lon)  # type: ignore[arg-type]


def test_edges_of_the_range_are_accepted() -> None:
    assert check_lat_lon(-90, 180) == (-90.0, 180.0)
    assert check_lat_lon(90, -180) == (90.0, -180.0)
