"""Incident queries over the whole ticket history: filtered lists with paging, and counts by type × station × hour.

Queries run on ``ticket_triage``, the query copy of each ticket (creation
time, station, cell, type, priority in one row, see ``core.triage.classify``), so a
filter, its order and a count use one index and no join; the tickets table
is read only for the page's rows (and for the state, which changes too
often to copy). Counts read the copy's hourly rollup, ``ticket_daily_counts``,
for the whole hours of a range and the copy itself for the partial hours at
its two ends, so they are exact to the microsecond. ``QueryIndex`` keeps the copy as steps come in — a
``received`` (or a text report's ``reported``) step creates the row, a ``located`` step sets the place — and
fills in rows missing after a crash or an upgrade when it starts.

A list is newest first (``oldest``: oldest first, for a waiting list) and pages by a keyset cursor (the last row's creation
time and number), so page 500 costs what page 1 costs; an offset ``page`` is
accepted too, bounded, for screens that number their pages.

``ensure_indexes`` creates any query index an older database lacks
(``create_all`` adds indexes only with new tables). ``sip-lab/bench_queries.py``
measures these queries over a million tickets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Index, Select, and_, func, insert, null, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.lifecycle import Step
from core.calls.tables import Ticket
from core.calls.tickets import StepView, TicketView, iso_utc
from core.dispatch.planner import IncidentRow
from core.errors import DomainError
from core.tasks import WORK_MAX, Overflow, stop_task
from core.triage.classify import (
    DAY_US,
    HOUR_COLUMNS,
    HOUR_US,
    HOURLY_COUNTS,
    IncidentType,
    TriageRow,
    ensure_hourly_counts,
    hour_of,
    or_none,
    upsert_counts,
    upsert_query_copy,
)
from core.triage.repeat import TICKETS_CALLER_INDEX, TicketLinkRow

log = logging.getLogger(__name__)

__all__ = [
    "PAGE_MAX", "STATS_HOURS_MAX", "BadCursor", "HourlySeries", "QueryIndex", "TicketQuery", "ensure_indexes", "hourly_series", "search",
]

LIMIT_MAX = 1000
STATS_HOURS_MAX = 92 * 24  # a quarter; longer reports are exports, not screens
PAGE_MAX = 1000  # offset paging beyond this is what the cursor is for
UNCLASSIFIED = "unclassified"

# Briefings look up earlier incidents in the same cell or at the same address;
# a state filter on its own reads tickets by state, newest first.
INCIDENTS_CELL_INDEX = Index("ix_incidents_cell_located", IncidentRow.cell, IncidentRow.located_at_us)
INCIDENTS_ADDRESS_INDEX = Index("ix_incidents_address", IncidentRow.address)
TICKETS_STATE_CREATED_INDEX = Index("ix_tickets_state_created", Ticket.state, Ticket.created_at_us)

_OWN_INDEXES = (
    TICKETS_CALLER_INDEX,
    TICKETS_STATE_CREATED_INDEX,
    INCIDENTS_CELL_INDEX,
    INCIDENTS_ADDRESS_INDEX,
    *TriageRow.__table__.indexes,  # type: ignore[attr-defined]
    *TicketLinkRow.__table__.indexes,  # type: ignore[attr-defined]
)


async def ensure_indexes(engine: AsyncEngine) -> None:
    """Create the query indexes a database made by an older version lacks; existing ones are left alone."""

    def create(sync_conn: Any) -> None:
        for index in _OWN_INDEXES:
            index.create(sync_conn, checkfirst=True)

    async with engine.begin() as conn:
        await conn.run_sync(create)


class BadCursor(DomainError, ValueError):
    """A cursor this server did not hand out."""

    status = 400
    error_id = "bad-cursor"


def encode_cursor(created_at_us: int, number: str, *, oldest: bool = False) -> str:
    raw = f"{created_at_us}:{number}" + (":oldest" if oldest else "")
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, bool]:
    """(creation time, number, whether the list runs oldest first) of the last row of a page."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        created, sep, rest = raw.partition(":")
        number, _, order = rest.partition(":")
        if not sep or not number or order not in ("", "oldest"):
            raise ValueError(raw)
        return int(created), number, order == "oldest"
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("cursor is not one this server handed out") from None


@dataclass(frozen=True, slots=True)
class TicketQuery:
    from_us: int | None = None
    to_us: int | None = None  # exclusive
    station: str | None = None
    cell: str | None = None
    type: IncidentType | str | None = None  # or "unclassified"
    priority: int | None = None
    states: tuple[str, ...] = ()
    limit: int = 50
    cursor: str | None = None
    page: int = 1  # offset paging, when no cursor is given
    oldest: bool = False  # oldest first: a waiting list (text reports) is worked from its oldest end

    @property
    def filters(self) -> bool:
        return any(v is not None for v in (self.from_us, self.to_us, self.station, self.cell, self.type,
                                           self.priority, self.cursor)) or bool(self.states) or self.page > 1 \
            or self.oldest


def _select(query: TicketQuery) -> Select[Any]:
    copy = TriageRow
    by_copy = any(v is not None for v in (query.station, query.cell, query.type, query.priority))
    # A state filter alone is answered from the tickets' own (state, time) index;
    # everything else from the query copy's.
    created, number = (
        (Ticket.created_at_us, Ticket.number) if query.states and not by_copy else (copy.created_at_us, copy.number)
    )
    statement = (
        select(
            Ticket.number, Ticket.caller_id, Ticket.state, Ticket.seat, Ticket.created_at_us, Ticket.updated_at_us,
            copy.type, copy.priority, copy.station_id, copy.cell,
        )
        .select_from(copy)
        .join(Ticket, Ticket.number == copy.number)
    )
    where = []
    if query.from_us is not None:
        where.append(created >= query.from_us)
    if query.to_us is not None:
        where.append(created < query.to_us)
    if query.station is not None:
        where.append(copy.station_id == query.station)
    if query.cell is not None:
        where.append(copy.cell == query.cell)
    if query.type == UNCLASSIFIED:
        where.append(copy.type.is_(None))
    elif query.type is not None:
        where.append(copy.type == str(query.type))
    if query.priority is not None:
        where.append(copy.priority == query.priority)
    if query.states:
        where.append(Ticket.state.in_(query.states))
    if query.cursor is not None:
        at, last, oldest = decode_cursor(query.cursor)
        if oldest != query.oldest:
            raise BadCursor("the cursor belongs to a list in the other order")
        if oldest:
            where.append(or_(created > at, and_(created == at, number > last)))
        else:
            where.append(or_(created < at, and_(created == at, number < last)))
    if query.oldest:
        return statement.where(*where).order_by(created.asc(), number.asc())
    return statement.where(*where).order_by(created.desc(), number.desc())


def _summary(row: Any) -> dict[str, Any]:
    return {
        "number": row.number,
        "caller_id": row.caller_id,
        "state": row.state,
        "seat": row.seat,
        "created_at": iso_utc(row.created_at_us),
        "created_at_us": row.created_at_us,
        "updated_at_us": row.updated_at_us,
        "type": row.type,
        "priority": row.priority,
        "station": row.station_id,
        "cell": row.cell,
    }


async def search(engine: AsyncEngine, query: TicketQuery) -> dict[str, Any]:
    """One page of ticket summaries, newest first, and the cursor of the next page (None on the last)."""
    if not 1 <= query.limit <= LIMIT_MAX:
        raise ValueError(f"limit must be from 1 to {LIMIT_MAX}")
    if not 1 <= query.page <= PAGE_MAX:
        raise ValueError(f"page must be from 1 to {PAGE_MAX}; use the cursor to go further")
    statement = _select(query).limit(query.limit + 1)
    if query.cursor is None and query.page > 1:
        statement = statement.offset((query.page - 1) * query.limit)
    async with engine.connect() as conn:
        rows: Sequence[Any] = (await conn.execute(statement)).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = (encode_cursor(rows[-1].created_at_us, rows[-1].number, oldest=query.oldest)
                   if more and rows else None)
    return {"tickets": [_summary(r) for r in rows], "next_cursor": next_cursor, "limit": query.limit,
            "page": None if query.cursor is not None else query.page}


@dataclass(slots=True)
class HourlySeries:
    """Ticket counts per (type, station) as one dense count per UTC hour from ``first_hour_us``: ``/api/stats``."""

    first_hour_us: int
    hours: int
    counts: dict[tuple[str, str | None], list[int]]  # (type or "unclassified", station or None) → per hour

    def add(self, hour_us: int, kind: str, station: str, count: int) -> None:
        key = (kind or UNCLASSIFIED, station or None)
        series = self.counts.get(key)
        if series is None:
            series = self.counts[key] = [0] * self.hours
        series[(hour_us - self.first_hour_us) // HOUR_US] += count

    @property
    def total(self) -> int:
        return sum(sum(series) for series in self.counts.values())

    def groups(self) -> list[dict[str, Any]]:
        """The non-zero counts as one row per (type, station, hour), by hour, type, station."""
        keys = sorted(self.counts, key=lambda k: (k[0], k[1] or ""))
        return [
            {"type": kind, "station": station, "hour": iso_utc(self.first_hour_us + i * HOUR_US),
             "hour_us": self.first_hour_us + i * HOUR_US, "count": n}
            for i in range(self.hours) for kind, station in keys if (n := self.counts[kind, station][i])
        ]

    def to_json(self) -> dict[str, Any]:
        keys = sorted(self.counts, key=lambda k: (k[0], k[1] or ""))
        return {
            "first_hour_us": self.first_hour_us,
            "hours": [iso_utc(self.first_hour_us + i * HOUR_US) for i in range(self.hours)],
            "total": self.total,
            "series": [{"type": kind, "station": station, "total": sum(self.counts[kind, station]),
                        "counts": self.counts[kind, station]} for kind, station in keys],
        }


async def hourly_series(
    engine: AsyncEngine, from_us: int, to_us: int, *, station: str | None = None
) -> HourlySeries:
    """Ticket counts per (type, station) and UTC hour for tickets created in [from_us, to_us).

    Unclassified tickets count as type ``unclassified``, tickets with no
    location as station None. The hours wholly inside the range come from the
    hourly rollup; a partial hour at either end is counted from
    ``ticket_triage`` over its time index, so a range from 10:20 counts only
    what came in from 10:20.

    A month of a large center is ~170,000 (hour, type, station) counts, read
    as ~7,400 rollup rows of 24 hours each, copied a day at a time into the
    dense per-hour lists.
    """
    first_whole = -(-from_us // HOUR_US) * HOUR_US
    last_whole = to_us // HOUR_US * HOUR_US  # exclusive
    first_hour = from_us // HOUR_US * HOUR_US
    if not 0 < to_us - from_us <= STATS_HOURS_MAX * HOUR_US:
        raise ValueError(f"the range must be from 1 µs to {STATS_HOURS_MAX} hours long")
    result = HourlySeries(first_hour, -(-(to_us - first_hour) // HOUR_US), {})
    async with engine.connect() as conn:
        if first_whole < last_whole:
            rollup = HOURLY_COUNTS.c
            statement = select(rollup.day_us, rollup.type, rollup.station, *(rollup[h] for h in HOUR_COLUMNS)).where(
                rollup.day_us >= first_whole // DAY_US * DAY_US, rollup.day_us < last_whole)
            if station is not None:
                statement = statement.where(rollup.station == station)
            counts, hours, first = result.counts, result.hours, result.first_hour_us
            for day_us, kind, place, *day in await conn.execute(statement):
                # The hours of this day inside the whole hours of the range, and where they go.
                lo = max(0, (first_whole - day_us) // HOUR_US)
                hi = min(24, (last_whole - day_us) // HOUR_US)
                at = (day_us - first) // HOUR_US
                key = (kind or UNCLASSIFIED, place or None)
                series = counts.get(key)
                if series is None:
                    series = counts[key] = [0] * hours
                series[at + lo:at + hi] = day[lo:hi]
            edges = [(from_us, first_whole), (last_whole, to_us)]
        else:  # no whole hour inside
            edges = [(from_us, to_us)]
        for start, stop in edges:
            if start < stop:
                for hour_us, kind, place, count in await conn.execute(_count_copies(start, stop, station)):
                    result.add(hour_us, kind, place, count)
    for key in [k for k, series in result.counts.items() if not any(series)]:
        del result.counts[key]  # rollup rows whose counts fell to 0, and days outside the range
    return result


def _count_copies(from_us: int, to_us: int, station: str | None) -> Select[Any]:
    """Counts straight from the query copies (covering index on creation time, type, station)."""
    copy = TriageRow
    hour, kind, place = hour_of(copy.created_at_us), or_none(copy.type), or_none(copy.station_id)
    statement = (
        select(hour, kind, place, func.count())
        .where(copy.created_at_us >= from_us, copy.created_at_us < to_us)
        .group_by(hour, kind, place)
        .order_by(hour, kind, place)
    )
    if station is not None:
        statement = statement.where(copy.station_id == station)
    return statement


class QueryIndex:
    """Keeps ``ticket_triage`` in step with new tickets and their locations; one owned task writes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pending: asyncio.Queue[tuple[str, int, dict[str, Any]]] = asyncio.Queue(WORK_MAX)
        self.overflow = Overflow("query copies", self._pending, log=log)
        self._task: asyncio.Task[None] | None = None

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        """``TicketService`` listener: queue the change (synchronous, no I/O; bounded: see ``repair``)."""
        if step.step in (Step.RECEIVED, Step.REPORTED):  # a call's ticket, a text report's
            self.overflow.put((ticket.number, ticket.created_at_us, {"updated_at_us": step.at_us}), ticket.created_at_us)
        elif step.step is Step.LOCATED:
            station, cell = step.detail.get("station"), step.detail.get("cell")
            self.overflow.put((ticket.number, ticket.created_at_us, {
                "station_id": station if isinstance(station, str) else None,
                "cell": cell if isinstance(cell, str) else None, "updated_at_us": step.at_us,
            }), ticket.created_at_us)

    def health(self) -> dict[str, Any]:
        return self.overflow.health()

    async def start(self) -> None:
        try:
            # Before the backfill, which adds its tickets to the counts: empty counts
            # next to existing copies are an upgrade or a restore, rebuilt whole.
            if await ensure_hourly_counts(self._engine):
                log.info("hourly ticket counts rebuilt from the query copies")
        except Exception:
            log.exception("hourly ticket counts not rebuilt; /api/stats undercounts until they are")
        try:
            added = await self.backfill()
            if added:
                log.info("query copy: %d tickets added that had none", added)
        except Exception:
            log.exception("query copy backfill failed; queries may miss older tickets until the next start")
        self._task = asyncio.create_task(self._run(), name="query-index")

    async def stop(self) -> None:
        if self._task is not None:
            await self.flush()
        task, self._task = self._task, None
        await stop_task(task)

    async def flush(self) -> None:
        await self._pending.join()

    async def _run(self) -> None:
        while True:
            number, created_at_us, values = await self._pending.get()
            try:
                await upsert_query_copy(self._engine, number, created_at_us, **values)
            except Exception:
                log.exception("query copy of %s not written; the next start fills it in", number)
            finally:
                self._pending.task_done()
            await self.overflow.after_item(self.repair)

    async def repair(self, since_us: int) -> int:
        """After a full queue: every ticket gets its copy, and those located since ``since_us`` their place."""
        added = await self.backfill()
        located = (select(IncidentRow.number, Ticket.created_at_us, IncidentRow.station_id, IncidentRow.cell,
                          IncidentRow.located_at_us)
                   .join(Ticket, Ticket.number == IncidentRow.number)
                   .where(IncidentRow.located_at_us >= since_us))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(located)).all()
        for number, created_at_us, station, cell, at_us in rows:
            await upsert_query_copy(self._engine, number, created_at_us, station_id=station, cell=cell,
                                    updated_at_us=at_us)
        return added + len(rows)

    async def backfill(self) -> int:
        """Add the query copy of every ticket that has none (from the ticket and its incident row), and count it."""
        missing = (
            select(Ticket.number, Ticket.created_at_us, IncidentRow.station_id, IncidentRow.cell,
                   Ticket.updated_at_us)
            .outerjoin(IncidentRow, IncidentRow.number == Ticket.number)
            .where(~select(TriageRow.number).where(TriageRow.number == Ticket.number).exists())
        )
        hour, place = hour_of(Ticket.created_at_us), or_none(IncidentRow.station_id)
        uncounted = (
            select(hour, place, or_none(null()), func.count())  # no copy, so not classified yet
            .select_from(Ticket)
            .outerjoin(IncidentRow, IncidentRow.number == Ticket.number)
            .where(~select(TriageRow.number).where(TriageRow.number == Ticket.number).exists())
            .group_by(hour, place)
        )
        async with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Writers of copies and counts wait until the missing copies are in and counted
                # (they take the copies' write lock before touching counts, see core.triage.classify).
                await conn.execute(text("LOCK TABLE ticket_triage IN EXCLUSIVE MODE"))
            # Counted first, while the rows are still missing; the write also takes SQLite's lock
            # before the insert's SELECT reads.
            await upsert_counts(conn, uncounted)
            result = await conn.execute(
                insert(TriageRow).from_select(
                    ["number", "created_at_us", "station_id", "cell", "updated_at_us"], missing
                )
            )
        return max(0, result.rowcount or 0)
