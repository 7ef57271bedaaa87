"""The forecast area: the patrol grid's H3 cells on a flat map in metres, and Gaussian mass per cell.

The models reason in metres on a local plane (equirectangular around the
area's centre: over a city the error is far below a GPS fix), and answer per
H3 cell of the dispatch grid (``core.dispatch.geo``). A cell is one number
per forecast, but a near-repeat kernel of a few hundred metres is narrower
than a resolution-8 cell (~0.8 km between centres), so what a Gaussian puts
into a cell is summed over the cell's children two resolutions down (49
points, ~90 m apart): the midpoint rule over the cell's centre alone would
give one cell more than the whole kernel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import h3
import numpy as np
from scipy.spatial import cKDTree

from core.dispatch.geo import EARTH_RADIUS_M, GeoError

__all__ = ["AreaGrid", "SUB_LEVELS"]

SUB_LEVELS = 2  # children this many resolutions down carry a cell's area (7**2 = 49 points)
KERNEL_REACH = 4.0  # a Gaussian's mass beyond 4 sigma (0.03 %) is left out


@dataclass(frozen=True)
class AreaGrid:
    """Cells in a fixed order (the index every forecast array uses), their centres and areas in metres."""

    cells: tuple[str, ...]
    lat0: float
    lon0: float
    xy: np.ndarray = field(repr=False)  # (n, 2) centres
    area_m2: np.ndarray = field(repr=False)  # (n,)
    sub_xy: np.ndarray = field(repr=False)  # (m, 2) children's centres
    sub_cell: np.ndarray = field(repr=False)  # (m,) index of the cell each child belongs to
    sub_area_m2: np.ndarray = field(repr=False)  # (m,)
    index: dict[str, int] = field(repr=False)
    resolution: int = 8

    @classmethod
    def of(cls, cells: Iterable[str]) -> AreaGrid:
        ordered = tuple(sorted(set(cells)))
        if not ordered:
            raise GeoError("a forecast area needs at least one cell")
        resolutions = {h3.get_resolution(c) for c in ordered if h3.is_valid_cell(c)}
        if len(resolutions) != 1 or not all(h3.is_valid_cell(c) for c in ordered):
            raise GeoError("a forecast area's cells must be valid H3 cells of one resolution")
        res = resolutions.pop()
        centres = np.array([h3.cell_to_latlng(c) for c in ordered])
        lat0, lon0 = float(centres[:, 0].mean()), float(centres[:, 1].mean())
        xy = _project(centres[:, 0], centres[:, 1], lat0, lon0)
        area = np.array([h3.cell_area(c, unit="m^2") for c in ordered])
        sub_ll, sub_cell, sub_area = [], [], []
        for i, cell in enumerate(ordered):
            children = h3.cell_to_children(cell, min(15, res + SUB_LEVELS))
            sub_ll.extend(h3.cell_to_latlng(ch) for ch in children)
            sub_cell.extend([i] * len(children))
            sub_area.extend([area[i] / len(children)] * len(children))
        sub = np.array(sub_ll)
        return cls(ordered, lat0, lon0, xy, area, _project(sub[:, 0], sub[:, 1], lat0, lon0),
                   np.array(sub_cell, dtype=np.int64), np.array(sub_area), {c: i for i, c in enumerate(ordered)}, res)

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def total_area_m2(self) -> float:
        return float(self.area_m2.sum())

    def project(self, lat: Sequence[float] | np.ndarray, lon: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(n, 2)`` metres east and north of the area's centre."""
        return _project(np.asarray(lat, float), np.asarray(lon, float), self.lat0, self.lon0)

    def unproject(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat = self.lat0 + np.degrees(xy[:, 1] / EARTH_RADIUS_M)
        lon = self.lon0 + np.degrees(xy[:, 0] / (EARTH_RADIUS_M * math.cos(math.radians(self.lat0))))
        return lat, lon

    def cell_index(self, cells: Iterable[str]) -> np.ndarray:
        """Each cell's index in this grid, -1 for a cell outside it."""
        return np.array([self.index.get(c, -1) for c in cells], dtype=np.int64)

    def locate(self, xy: np.ndarray) -> np.ndarray:
        """The index of the cell holding each point (-1 outside the area), by H3 itself."""
        lat, lon = self.unproject(np.asarray(xy, float).reshape(-1, 2))
        return self.cell_index(h3.latlng_to_cell(a, b, self.resolution) for a, b in zip(lat, lon, strict=True))

    @property
    def _tree(self) -> cKDTree:
        tree = self.__dict__.get("_sub_tree")
        if tree is None:
            tree = cKDTree(self.sub_xy)
            object.__setattr__(self, "_sub_tree", tree)
        return tree

    def _kernel(self, xy: np.ndarray, sigma_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(point, child, mass): what an isotropic Gaussian at each point puts on each child's area."""
        near = cKDTree(xy).sparse_distance_matrix(self._tree, KERNEL_REACH * sigma_m, output_type="ndarray")
        point = near["i"].astype(np.int64)
        child = near["j"].astype(np.int64)
        norm = 1.0 / (2.0 * math.pi * sigma_m * sigma_m)
        mass = norm * np.exp(-(near["v"] ** 2) / (2 * sigma_m * sigma_m)) * self.sub_area_m2[child]
        return point, child, mass

    def gaussian_mass(self, xy: np.ndarray, weights: np.ndarray, sigma_m: float) -> np.ndarray:
        """``(cells,)``: Σ_j weights_j × the mass of an isotropic Gaussian (σ metres) at xy_j inside each cell.

        A kernel near the area's edge puts part of its mass outside: that part is not in any cell.
        """
        out = np.zeros(len(self.cells))
        xy = np.asarray(xy, float).reshape(-1, 2)
        weights = np.asarray(weights, float)
        keep = weights > 0
        if not keep.any():
            return out
        xy, weights = xy[keep], weights[keep]
        for start in range(0, len(xy), 5000):  # bounded memory for a long history
            point, child, mass = self._kernel(xy[start:start + 5000], sigma_m)
            out += np.bincount(self.sub_cell[child], weights=mass * weights[start + point], minlength=len(self.cells))
        return out

    def smoothing(self, bandwidth_m: float) -> np.ndarray:
        """``(cells, cells)``: row c is where a Gaussian (bandwidth) at cell c's centre puts its mass."""
        cache = self.__dict__.setdefault("_smoothing", {})
        key = round(bandwidth_m, 1)
        if key not in cache:
            point, child, mass = self._kernel(self.xy, bandwidth_m)
            matrix = np.zeros((len(self.cells), len(self.cells)))
            np.add.at(matrix, (point, self.sub_cell[child]), mass)
            cache[key] = matrix
        return cache[key]

    def kept_share(self, cell_of_point: np.ndarray, sigma_m: float) -> np.ndarray:
        """Per point, the share of a Gaussian (σ) at its cell's centre that stays inside the area.

        Taken at the cell's centre rather than at the point itself: cells well inside the area keep all of
        it, and only those within reach of the edge are computed.
        """
        cache = self.__dict__.setdefault("_kept", {})
        key = round(sigma_m, 0)
        if key not in cache:
            shares = np.ones(len(self.cells))
            edge = self._edge_cells(sigma_m)
            if len(edge):
                point, _, mass = self._kernel(self.xy[edge], sigma_m)
                shares[edge] = np.minimum(1.0, np.bincount(point, weights=mass, minlength=len(edge)))
            cache[key] = shares
        return cache[key][np.asarray(cell_of_point, dtype=np.int64)]

    def _edge_cells(self, sigma_m: float) -> np.ndarray:
        """Cells a Gaussian (σ) at whose centre reaches beyond the area."""
        ring = self.__dict__.get("_ring")
        if ring is None:
            # Grid steps from each cell to the nearest cell outside the area.
            inside = set(self.cells)
            ring = np.zeros(len(self.cells), dtype=np.int64)
            frontier = {c for c in self.cells if any(n not in inside for n in h3.grid_ring(c, 1))}
            seen, k = set(frontier), 1
            while frontier:
                for c in frontier:
                    ring[self.index[c]] = k
                nxt = {n for c in frontier for n in h3.grid_ring(c, 1) if n in inside and n not in seen}
                seen |= nxt
                frontier, k = nxt, k + 1
            object.__setattr__(self, "_ring", ring)
        reach_steps = (KERNEL_REACH * sigma_m) / _spacing(self) + 1.0
        return np.flatnonzero(ring <= reach_steps)

    def boundary(self, i: int) -> list[list[float]]:
        return [[round(a, 6), round(b, 6)] for a, b in h3.cell_to_boundary(self.cells[i])]


def _spacing(grid: AreaGrid) -> float:
    """Distance between neighbouring cell centres (metres): √3 × the edge of a hexagon of this area."""
    area = float(np.median(grid.area_m2))
    return math.sqrt(3) * math.sqrt(2 * area / (3 * math.sqrt(3)))


def _project(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    k = math.cos(math.radians(lat0))
    x = np.radians(np.asarray(lon, float) - lon0) * EARTH_RADIUS_M * k
    y = np.radians(np.asarray(lat, float) - lat0) * EARTH_RADIUS_M
    return np.column_stack([x, y])
