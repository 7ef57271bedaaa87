"""The city's gazetteer: named places (streets and numbers, landmarks, estates) with their position.

A caller says an address, not a coordinate. The call-taker types it; the desk offers the places
whose name contains what was typed (``search``), and locating a ticket by an address alone takes
the position of the place of exactly that name (``resolve``). Names are compared after Unicode
NFKC folding, case folding and without white space, so that full-width digits, ``Ｎｏ. 1`` and
``no.1`` are the same name.

The places come from the city file (``places``: name, lat, lon) and are replaced as a whole each
time it is loaded. They live in the store, not in memory: a city's address list has hundreds of
thousands of entries, and every backend of the center reads the same one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, String, case, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.dispatch.geo import Grid, check_lat_lon
from core.errors import DomainError
from core.store import Base, _Id

PLACE_NAME_MAX = 500  # as an incident's address
SEARCH_MAX = 20
INSERT_BATCH = 1000


class PlaceRow(Base):
    __tablename__ = "places"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(PLACE_NAME_MAX))
    key: Mapped[str] = mapped_column(String(PLACE_NAME_MAX), index=True)  # fold(name)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    cell: Mapped[str] = mapped_column(String(16))


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    lat: float
    lon: float
    cell: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "lat": self.lat, "lon": self.lon, "cell": self.cell}


class AddressNotFound(DomainError):
    """No place of the gazetteer has exactly this name; ``details.candidates`` are the nearest names."""

    status = 422
    error_id = "address-not-found"


def fold(text: str) -> str:
    """The form names are compared in: NFKC, case-folded, without white space."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def check_place(name: Any, lat: Any, lon: Any) -> Place:
    if not isinstance(name, str) or not fold(name) or len(name) > PLACE_NAME_MAX:
        raise ValueError(f"a place needs a name of 1..{PLACE_NAME_MAX} characters, got {name!r:.80}")
    lat, lon = check_lat_lon(lat, lon)
    return Place(name.strip(), lat, lon)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Gazetteer:
    """Places of the city in the store: ``replace`` (the city file), ``search`` and ``resolve``."""

    def __init__(self, engine: AsyncEngine, grid: Grid) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.grid = grid

    async def replace(self, places: Iterable[Place]) -> int:
        """The gazetteer becomes ``places``, in one transaction; returns their count."""
        rows = [{"name": p.name, "key": fold(p.name), "lat": p.lat, "lon": p.lon,
                 "cell": self.grid.cell_of(p.lat, p.lon)} for p in places]
        async with self._sessions() as session, session.begin():
            await session.execute(delete(PlaceRow))
            for start in range(0, len(rows), INSERT_BATCH):
                await session.execute(insert(PlaceRow), rows[start:start + INSERT_BATCH])
        return len(rows)

    async def search(self, query: str, *, limit: int = 8) -> list[Place]:
        """Places whose name contains ``query``: the exact name first, then names that start with it,
        then shorter names before longer ones."""
        key = fold(query)
        if not key:
            return []
        limit = max(1, min(limit, SEARCH_MAX))
        rank = case((PlaceRow.key == key, 0), (PlaceRow.key.like(_like_escape(key) + "%", escape="\\"), 1), else_=2)
        stmt = (select(PlaceRow)
                .where(PlaceRow.key.like("%" + _like_escape(key) + "%", escape="\\"))
                .order_by(rank, func.length(PlaceRow.key), PlaceRow.name, PlaceRow.id)
                .limit(limit))
        async with self._sessions() as session:
            return [Place(r.name, r.lat, r.lon, r.cell) for r in await session.scalars(stmt)]

    async def resolve(self, address: str) -> Place:
        """The place named exactly ``address`` (after folding); ``AddressNotFound`` with candidates otherwise.

        Two places of one name (the same street number in two districts) are not guessed between:
        the call-taker picks one on the map or types the longer name.
        """
        key = fold(address)
        async with self._sessions() as session:
            rows = list(await session.scalars(select(PlaceRow).where(PlaceRow.key == key).limit(2))) if key else []
        if len(rows) == 1:
            r = rows[0]
            return Place(r.name, r.lat, r.lon, r.cell)
        candidates = [p.name for p in await self.search(address, limit=5)]
        why = "names more than one place" if rows else "is not a place of the city's gazetteer"
        raise AddressNotFound(f"the address {address[:80]!r} {why}: pick it on the map or choose a listed place",
                              details={"address": address[:PLACE_NAME_MAX], "candidates": candidates})

    async def count(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(PlaceRow)) or 0)
