"""The store's located incidents and the forecast area, read for the models; the forecasts kept per day.

An incident is a ticket with a location (``incidents``): its time is the
call's (``created_at_us``), its type what the call-taker or officer recorded
at the end — the ``type`` of its closed/cleared step, else that step's
disposition, as the heat map counts them; a ticket not yet closed has type
"" and counts for all types together only. The area is every cell assigned
to a station; incidents outside it are not forecast.

``situation_forecasts`` holds one row per day and model: the expected count
per type and cell made at the day's start, so the day's incidents are later
set against what was expected of them (trends, the running hit rates) even
after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, UniqueConstraint, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import Step
from core.calls.tables import Ticket, TicketStep
from core.dispatch.officers import CellStationRow
from core.dispatch.planner import IncidentRow
from core.store import Base, _Id

__all__ = ["ForecastRow", "IncidentRecord", "cell_stations", "read_area", "read_forecasts", "read_incidents",
           "save_forecast"]

CHUNK = 500


class ForecastRow(Base):
    """One day's forecast by one model: ``expected`` is ``{type: {cell: incidents}}`` ("" for all types)."""

    __tablename__ = "situation_forecasts"
    __table_args__ = (UniqueConstraint("day", "model"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    day: Mapped[str] = mapped_column(String(10))  # the center's local date, YYYY-MM-DD
    model: Mapped[str] = mapped_column(String(8))  # kde / sepp
    made_at_us: Mapped[int] = mapped_column(BigInteger)
    from_us: Mapped[int] = mapped_column(BigInteger)
    to_us: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(Integer)  # incidents it was trained on
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    expected: Mapped[dict[str, Any]] = mapped_column(JSON)


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    number: str
    at_us: int
    lat: float
    lon: float
    cell: str
    station: str | None
    type: str


async def read_incidents(engine: AsyncEngine, from_us: int, to_us: int) -> list[IncidentRecord]:
    """Located incidents whose call came in ``[from_us, to_us)``, oldest first."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(Ticket.id, Ticket.number, Ticket.created_at_us, IncidentRow.lat, IncidentRow.lon, IncidentRow.cell,
                   IncidentRow.station_id)
            .join(IncidentRow, IncidentRow.number == Ticket.number)
            .where(Ticket.created_at_us >= from_us, Ticket.created_at_us < to_us)
            .order_by(Ticket.created_at_us))).all()
        types: dict[int, str] = {}
        ids = [r.id for r in rows]
        for start in range(0, len(ids), CHUNK):
            steps = await conn.execute(
                select(TicketStep.ticket_id, TicketStep.detail)
                .where(TicketStep.ticket_id.in_(ids[start:start + CHUNK]),
                       TicketStep.step.in_([Step.CLOSED.value, Step.CLEARED.value]))
                .order_by(TicketStep.seq))
            for step in steps:
                detail = step.detail or {}
                kind = detail.get("type") or detail.get("disposition")
                if isinstance(kind, str) and kind:
                    types[step.ticket_id] = kind
    return [IncidentRecord(r.number, r.created_at_us, r.lat, r.lon, r.cell, r.station_id, types.get(r.id, ""))
            for r in rows]


async def cell_stations(engine: AsyncEngine) -> dict[str, str]:
    """``{cell: station}`` of the city's assignment."""
    async with engine.connect() as conn:
        return {cell: station for cell, station in await conn.execute(
            select(CellStationRow.cell, CellStationRow.station_id))}


async def read_area(engine: AsyncEngine) -> set[str]:
    return set(await cell_stations(engine))


async def save_forecast(engine: AsyncEngine, *, day: str, model: str, made_at_us: int, from_us: int, to_us: int,
                        events: int, params: dict[str, Any], expected: dict[str, Any]) -> None:
    """Keep the day's forecast by ``model`` (a later run the same day replaces it)."""
    values = {"day": day, "model": model, "made_at_us": made_at_us, "from_us": from_us, "to_us": to_us,
              "events": events, "params": params, "expected": expected}
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    statement = insert(ForecastRow).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["day", "model"],
        set_={k: statement.excluded[k] for k in values if k not in ("day", "model")})
    async with engine.begin() as conn:
        await conn.execute(statement)


async def read_forecasts(engine: AsyncEngine, first_day: str, last_day: str) -> list[dict[str, Any]]:
    """The kept forecasts (as column dicts) of the days ``first_day``..``last_day`` (inclusive), oldest first."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(ForecastRow).where(ForecastRow.day >= first_day, ForecastRow.day <= last_day)
            .order_by(ForecastRow.day, ForecastRow.model))).all()
    return [dict(r._mapping) for r in rows]
