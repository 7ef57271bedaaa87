"""The patrol grid: H3 cells, neighbour rings, distances and travel-time estimates.

Dispatch reasons in H3 hexagons (https://h3geo.org). Every cell has six
neighbours at the same centre distance, so "the incident's cell, then ring 1,
then ring 2" widens the search evenly in every direction — square grids have
corner neighbours ~41 % farther than edge neighbours.

Resolution 8 is the default for a city patrol grid: cells of ~0.74 km² and
~0.53 km edges on average over the globe (H3's own figures), ~0.56 km² and
~0.46 km edges at 31° N where H3 cells run smaller. One cell is a few city
blocks, a minute or two for a patrol car; ring 3 reaches 2.5-3 km, about an
urban station's district radius. Resolution 7 (~5.2 km²) suits rural counties,
resolution 9 (~0.1 km²) is finer than GPS fixes in urban canyons warrant.

Distances are great-circle (haversine) metres; travel time multiplies them by
a detour factor for the street grid and divides by a configurable speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h3

from core.errors import DomainError

__all__ = [
    "DEFAULT_RESOLUTION",
    "EARTH_RADIUS_M",
    "GeoError",
    "Grid",
    "check_lat_lon",
    "eta_s",
    "haversine_m",
]

DEFAULT_RESOLUTION = 8
# IUGG mean Earth radius; the error against the ellipsoid (<0.5 %) is far below GPS noise in a city.
EARTH_RADIUS_M = 6_371_008.8
# Urban patrol speed with lights and siren, averaged over junctions: 30 km/h.
DEFAULT_SPEED_KMH = 30.0
# Streets are not straight lines; 1.3 is a common urban detour index.
DEFAULT_DETOUR = 1.3


class GeoError(DomainError, ValueError):
    """A coordinate, cell or grid parameter that is out of range."""

    status = 400
    error_id = "invalid-position"


def check_lat_lon(lat: float, lon: float) -> tuple[float, float]:
    """``(lat, lon)`` as floats, or ``GeoError`` naming the bad one."""
    for name, value, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GeoError(f"{name} must be a finite number, got {value!r}")
        if not -limit <= value <= limit:
            raise GeoError(f"{name} must be between {-limit:g} and {limit:g}, got {value!r}")
    return float(lat), float(lon)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def eta_s(distance_m: float, *, speed_kmh: float = DEFAULT_SPEED_KMH, detour: float = DEFAULT_DETOUR) -> float:
    """Estimated travel time in seconds for a straight-line distance."""
    if not speed_kmh > 0 or not math.isfinite(speed_kmh):
        raise GeoError(f"speed must be a positive number of km/h, got {speed_kmh!r}")
    if not detour >= 1 or not math.isfinite(detour):
        raise GeoError(f"detour factor must be at least 1, got {detour!r}")
    return distance_m * detour / (speed_kmh / 3.6)


@dataclass(frozen=True, slots=True)
class Grid:
    """The patrol grid at one H3 resolution; all cells the center stores are at this resolution."""

    resolution: int = DEFAULT_RESOLUTION

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or not 0 <= self.resolution <= 15:
            raise GeoError(f"H3 resolution must be an integer from 0 to 15, got {self.resolution!r}")

    def cell_of(self, lat: float, lon: float) -> str:
        lat, lon = check_lat_lon(lat, lon)
        return h3.latlng_to_cell(lat, lon, self.resolution)

    def center_of(self, cell: str) -> tuple[float, float]:
        return h3.cell_to_latlng(self.check_cell(cell))

    def check_cell(self, cell: str) -> str:
        """``cell`` if it is a valid H3 cell at this grid's resolution, else ``GeoError``."""
        if not isinstance(cell, str) or not h3.is_valid_cell(cell):
            raise GeoError(f"not an H3 cell: {cell!r}")
        if h3.get_resolution(cell) != self.resolution:
            raise GeoError(f"cell {cell} is at resolution {h3.get_resolution(cell)}, the grid at {self.resolution}")
        return cell

    def grid_disk(self, cell: str, k: int) -> set[str]:
        """The cell and every cell within ``k`` steps of it."""
        return set(h3.grid_disk(self.check_cell(cell), _k(k)))

    def grid_ring(self, cell: str, k: int) -> set[str]:
        """The cells exactly ``k`` steps from ``cell`` (``{cell}`` for k=0)."""
        return set(h3.grid_ring(self.check_cell(cell), _k(k)))

    def ring_of(self, origin: str, cell: str) -> int | None:
        """Grid steps from ``origin`` to ``cell``; None when H3 cannot tell (cells far apart)."""
        try:
            return int(h3.grid_distance(origin, cell))
        except h3.H3BaseException:
            return None


def _k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise GeoError(f"ring size must be a non-negative integer, got {k!r}")
    return k
