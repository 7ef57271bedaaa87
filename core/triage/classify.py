"""Triage: what kind of incident a call is, how urgent, and the call-taker's notes on it.

The call-taker classifies a ticket with one of ten incident types and a
priority from 1 (most urgent) to 4. Each classification is a ``classified``
step on the ticket, so a re-classification adds a step and the history shows
who changed what when; the current classification is the latest such step.
A copy of it is kept in ``ticket_triage`` (one row per ticket, written right
after the step, with the ticket's time and place) because queries over a
million tickets filter and count by type, priority, station and time, which
a scan of step details and joins could not answer in time.

Notes are ``note_added`` steps; the major-incident keyword scan
(``core.triage.keywords``) runs on their text before the step is written, and the
step records which keywords matched.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    CompoundSelect,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import Step, advance
from core.calls.tables import Ticket
from core.calls.tickets import Source, TicketService, TicketView, UnknownTicket
from core.store import Base

log = logging.getLogger(__name__)

__all__ = [
    "NOTE_MAX",
    "DAY_US",
    "HOUR_US",
    "Classification",
    "HOURLY_COUNTS",
    "HOUR_COLUMNS",
    "IncidentType",
    "Priority",
    "TriageRow",
    "TriageService",
    "current_classification",
    "ensure_hourly_counts",
    "forget_query_copies",
    "hour_of",
    "or_none",
    "read_hourly_counts",
    "rebuild_hourly_counts",
    "upsert_counts",
]

NOTE_MAX = 2000
BY_MAX = 255
HOUR_US = 3_600 * 1_000_000
DAY_US = 24 * HOUR_US
NONE = ""  # "no station" / "not classified" in the hourly counts, where a primary key column cannot be NULL


class IncidentType(StrEnum):
    """The ten incident types of the intake center; each has a Chinese label for screens and reports."""

    PERSON = "person"  # crimes against persons
    PROPERTY = "property"  # property crime
    FRAUD = "fraud"  # telecom and online fraud
    TRAFFIC = "traffic"
    DISPUTE = "dispute"
    FIRE_MEDICAL = "fire_medical"  # relayed to 119 / 120
    PUBLIC_SERVICE = "public_service"  # not a police matter: the 12345 hotline
    SILENT = "silent"  # silent call or hang-up
    PRANK = "prank"  # prank or harassment
    OTHER = "other"

    @property
    def label(self) -> str:
        return _TYPE_LABELS[self]


_TYPE_LABELS = {
    IncidentType.PERSON: "侵犯人身",
    IncidentType.PROPERTY: "侵犯财产",
    IncidentType.FRAUD: "电信网络诈骗",
    IncidentType.TRAFFIC: "交通事故",
    IncidentType.DISPUTE: "纠纷",
    IncidentType.FIRE_MEDICAL: "火警医疗转接",
    IncidentType.PUBLIC_SERVICE: "非警务求助",
    IncidentType.SILENT: "无声电话",
    IncidentType.PRANK: "骚扰恶作剧",
    IncidentType.OTHER: "其他",
}


class Priority(IntEnum):
    """1 is the most urgent: life in danger now."""

    CRITICAL = 1  # 紧急: life or safety in danger now
    HIGH = 2  # 较急: a crime in progress or just happened
    NORMAL = 3  # 一般
    LOW = 4  # 非紧急: advice, no police attendance needed

    @property
    def label(self) -> str:
        return _PRIORITY_LABELS[self]


_PRIORITY_LABELS = {
    Priority.CRITICAL: "紧急", Priority.HIGH: "较急", Priority.NORMAL: "一般", Priority.LOW: "非紧急",
}


class TriageRow(Base):
    """The query copy of a ticket: when it came in, where it is, what it is. One row per ticket.

    The steps are the record; this row is what queries over a million tickets
    filter, sort and count on, with no join: the ticket's creation time (it
    never changes), the incident's station and cell (``located``), and the
    current type and priority (``classified``). ``core.queries.QueryIndex``
    writes it as steps come in; ``classify`` writes type and priority itself,
    right after the step.
    """

    __tablename__ = "ticket_triage"
    __table_args__ = (
        # Time ranges, and the counts by type × station × hour (covering: no table look-up).
        Index("ix_ticket_triage_created_type_station", "created_at_us", "type", "station_id"),
        Index("ix_ticket_triage_station_created", "station_id", "created_at_us"),
        Index("ix_ticket_triage_cell_created", "cell", "created_at_us"),
        Index("ix_ticket_triage_type_created", "type", "created_at_us"),
        Index("ix_ticket_triage_type_priority", "type", "priority", "created_at_us"),
        Index("ix_ticket_triage_priority_created", "priority", "created_at_us"),
    )

    number: Mapped[str] = mapped_column(ForeignKey(Ticket.number), primary_key=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)  # the ticket's
    type: Mapped[str | None] = mapped_column(String(32))  # None: not classified yet
    priority: Mapped[int | None] = mapped_column(Integer)
    station_id: Mapped[str | None] = mapped_column(String(32))  # None: not located, or nobody's cell
    cell: Mapped[str | None] = mapped_column(String(16))
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


HOUR_COLUMNS = tuple(f"h{hour:02d}" for hour in range(24))

# How many tickets were created in each UTC hour of one UTC day, per station and current type:
# the rollup of ``ticket_triage``, one row per (day, type, station) with a column per hour.
#
# Counts over a month of a large center (a million tickets) read at most
# days × stations × types rows here instead of every ticket: ~7,400 rows of 24
# counts for a month where one row per hour would be ~170,000 (reading those
# cost more than the 200 ms ``/api/stats`` has). A ticket is counted once, in
# its creation hour, under its current type and station (``NONE`` for none
# yet): ``upsert_query_copy`` moves the count in the same transaction that
# changes the ticket's row, and ``rebuild_hourly_counts`` recomputes the table
# from ``ticket_triage``. Rows whose counts fell to 0 are kept (the next ticket
# reuses them).
HOURLY_COUNTS = Table(
    "ticket_daily_counts",
    Base.metadata,
    Column("day_us", BigInteger, primary_key=True),  # UTC day start, epoch µs
    Column("type", String(32), primary_key=True),
    Column("station", String(32), primary_key=True),
    *(Column(name, Integer, nullable=False, server_default="0") for name in HOUR_COLUMNS),
    # SQLite: the primary key is the table, so a day range reads one b-tree range.
    sqlite_with_rowid=False,
)


def hour_of(created_at_us: ColumnElement[int]) -> ColumnElement[int]:
    """The UTC hour start of a time column, as SQL.

    The hour length is written into the statement, not bound: PostgreSQL
    refuses a GROUP BY whose expression differs from the selected one, and
    two binds of the same value are two different parameters to it.
    """
    hour = literal_column(str(HOUR_US), BigInteger)
    return (created_at_us // hour) * hour  # integer columns: SQLite and PostgreSQL both render a plain /


def or_none(column: ColumnElement[str | None]) -> ColumnElement[str]:
    # The sentinel is written in, not bound, for the same GROUP BY reason as in ``hour_of``.
    return func.coalesce(column, literal_column("''", String))  # NONE


def _by_day(rows: Select[Any] | CompoundSelect[Any]) -> Select[Any]:
    """(hour_us, station, type, count) rows as (day_us, station, type, h00 … h23) rows, one per day, station, type."""
    src = rows.subquery()
    hour_us, station, kind, count = src.c
    day = literal_column(str(DAY_US), BigInteger)
    hour = literal_column(str(HOUR_US), BigInteger)
    day_us = (hour_us // day) * day
    hour_in_day = (hour_us - day_us) // hour
    return (
        select(day_us, station, kind, *(
            func.sum(case((hour_in_day == literal_column(str(h), Integer), count), else_=literal_column("0")))
            for h in range(24)
        ))
        .where(hour_us.is_not(None))  # also keeps SQLite's upsert-after-SELECT parse unambiguous
        .group_by(day_us, station, kind)
        # Every writer locks count rows in this one order, so two moves in opposite
        # directions wait for each other instead of deadlocking (PostgreSQL).
        .order_by(day_us, station, kind)
    )


def _upsert_statement(dialect_name: str, rows: Select[Any] | CompoundSelect[Any]) -> Any:
    table = HOURLY_COUNTS
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(dialect_name)
    if dialect is None:
        raise NotImplementedError(f"hourly counts need an upsert, not written for {dialect_name}")
    statement = dialect.insert(table).from_select(["day_us", "station", "type", *HOUR_COLUMNS], _by_day(rows))
    return statement.on_conflict_do_update(
        index_elements=[table.c.day_us, table.c.type, table.c.station],
        set_={name: table.c[name] + statement.excluded[name] for name in HOUR_COLUMNS},
    )


async def upsert_counts(conn: AsyncConnection, rows: Select[Any] | CompoundSelect[Any]) -> None:
    """Add (hour_us, station, type, count) rows to the counts already there (``INSERT … SELECT … ON CONFLICT``)."""
    await conn.execute(_upsert_statement(conn.dialect.name, rows))


async def read_hourly_counts(conn: AsyncConnection) -> dict[tuple[int, str, str], int]:
    """The whole rollup as {(hour_us, station, type): count} for the non-zero counts (checks, repairs, tests)."""
    counts = {}
    for day_us, station, kind, *hours in await conn.execute(
        select(HOURLY_COUNTS.c.day_us, HOURLY_COUNTS.c.station, HOURLY_COUNTS.c.type,
               *(HOURLY_COUNTS.c[name] for name in HOUR_COLUMNS))
    ):
        for hour, count in enumerate(hours):
            if count:
                counts[(day_us + hour * HOUR_US, station, kind)] = count
    return counts


# The two upserts of every new or moved ticket, built once per shape with the ticket's values as bound
# parameters: building the 24-hour statement afresh took more of the backend's time than running it.
@functools.cache
def _count_ticket_statement(dialect_name: str) -> Any:
    copy = TriageRow
    return _upsert_statement(dialect_name, select(
        hour_of(copy.created_at_us), or_none(copy.station_id), or_none(copy.type), bindparam("delta", type_=Integer),
    ).where(copy.number == bindparam("number")))  # the WHERE also keeps SQLite's upsert-after-SELECT parse unambiguous


async def _count_ticket(conn: AsyncConnection, number: str, delta: int) -> None:
    """Add ``delta`` to the count of the ticket's (hour, station, type) as its query copy now stands."""
    await conn.execute(_count_ticket_statement(conn.dialect.name), {"number": number, "delta": delta})


async def _lock_copies_for_writing(conn: AsyncConnection) -> None:
    """PostgreSQL: the copies' write lock before any count row is touched, as the rebuild takes it first too.

    ``ROW EXCLUSIVE`` is what the UPDATE of the copy would take anyway; taken
    before the counts, a writer waits for a running rebuild or backfill
    (``EXCLUSIVE``) instead of holding count rows they need while waiting for
    the table (a deadlock).
    """
    await conn.execute(text("LOCK TABLE ticket_triage IN ROW EXCLUSIVE MODE"))


@functools.cache
def _move_statement(dialect_name: str, shape: tuple[tuple[str, bool], ...]) -> Any:
    """The upsert of a ticket's count rows before (-1) and after (+1) a change; ``shape`` says which counted
    columns change and which of them to None (bound as ``number`` and ``new_<column>``)."""
    copy = TriageRow
    changed = dict(shape)

    def after(name: str, column: ColumnElement[Any]) -> ColumnElement[Any]:
        if name not in changed:
            return column
        return null() if changed[name] else cast(bindparam(f"new_{name}", type_=String), String)

    hour = hour_of(copy.created_at_us)
    number = bindparam("number")
    return _upsert_statement(dialect_name, union_all(
        select(hour, or_none(copy.station_id), or_none(copy.type), literal(-1, Integer)).where(copy.number == number),
        select(hour, or_none(after("station_id", copy.station_id)), or_none(after("type", copy.type)),
               literal(1, Integer)).where(copy.number == number),
    ))


async def _move(conn: AsyncConnection, number: str, values: dict[str, Any]) -> None:
    """Take the ticket out of its count rows and into those ``values`` give it, in the caller's transaction."""
    shape = tuple(sorted((name, values[name] is None) for name in _COUNTED if name in values))
    params = {"number": number, **{f"new_{name}": values[name] for name, is_none in shape if not is_none}}
    await conn.execute(_move_statement(conn.dialect.name, shape), params)


# Query-copy columns that decide which hourly count a ticket is in (its creation time never changes).
_COUNTED = frozenset({"type", "station_id"})


async def upsert_query_copy(engine: AsyncEngine, number: str, created_at_us: int, **values: Any) -> None:
    """Set ``values`` on the ticket's query copy (created if missing) and keep the hourly counts, in one transaction.

    Update first, insert if there was nothing to update; when another writer
    inserted the row in between, the insert fails, nothing is kept, and the
    second round updates the row that is now there.

    A change of type or station takes the ticket's count out of its old
    (type, station) and adds it to the new one, in one statement before the
    row changes, in this transaction. That statement writes, so SQLite holds
    the write lock before the old values are read, and it locks the two count
    rows in key order, as every writer does, so opposite moves cannot
    deadlock on PostgreSQL; on PostgreSQL every writer of
    one ticket's copy first takes a transaction-scoped advisory lock on the
    ticket number — a row lock is not enough, as the row may not exist yet
    (a PostgreSQL test found a ticket counted twice that way).
    """
    table = TriageRow.__table__
    moves = not _COUNTED.isdisjoint(values)
    for attempt in range(2):
        try:
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Serialises the writers of this ticket's copy, whether the row exists or not.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:number))"), {"number": number})
                    await _lock_copies_for_writing(conn)
                if moves:  # out of the old count and into the new one in one statement (nothing if no row yet)
                    await _move(conn, number, values)
                result = await conn.execute(update(table).where(table.c.number == number).values(**values))
                created = not result.rowcount
                if created:
                    await conn.execute(insert(table).values(number=number, created_at_us=created_at_us, **values))
                    await _count_ticket(conn, number, +1)
            return
        except IntegrityError:
            if attempt:
                raise


async def forget_query_copies(conn: AsyncConnection, numbers: Sequence[str]) -> None:
    """Delete the query copies of these tickets and take them out of the hourly counts, in the caller's transaction.

    For retention: a deleted ticket is no longer counted. On PostgreSQL the
    per-ticket advisory locks of ``upsert_query_copy`` are taken first, so a
    writer moving one of these copies between counts is not half undone.
    """
    if not numbers:
        return
    copy = TriageRow
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(n)) FROM unnest(CAST(:numbers AS text[])) AS n"),
                           {"numbers": list(numbers)})
        await _lock_copies_for_writing(conn)
    hour, station, kind = hour_of(copy.created_at_us), or_none(copy.station_id), or_none(copy.type)
    await upsert_counts(conn, select(hour, station, kind, -func.count())
                        .where(copy.number.in_(numbers)).group_by(hour, station, kind))
    await conn.execute(delete(copy).where(copy.number.in_(numbers)))


async def rebuild_hourly_counts(engine: AsyncEngine) -> int:
    """Recompute the hourly counts from ``ticket_triage`` in one transaction; returns the rows written.

    For start-up on a database that has tickets but no counts yet (an upgrade,
    a restore), for bulk loads that bypass ``upsert_query_copy``, and to
    repair counts after a hand edit. One ``INSERT … SELECT … GROUP BY``: about
    a second per million tickets on SQLite.
    """
    copy = TriageRow
    hour, station, kind = hour_of(copy.created_at_us), or_none(copy.station_id), or_none(copy.type)
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Writers wait until the new counts are in, so none is counted twice or lost;
            # readers go on. (On SQLite the DELETE below takes the write lock.)
            await conn.execute(text("LOCK TABLE ticket_triage IN EXCLUSIVE MODE"))
        await conn.execute(delete(HOURLY_COUNTS))
        result = await conn.execute(insert(HOURLY_COUNTS).from_select(
            ["day_us", "station", "type", *HOUR_COLUMNS],
            _by_day(select(hour, station, kind, func.count()).group_by(hour, station, kind)),
        ))
    return max(0, result.rowcount or 0)


async def ensure_hourly_counts(engine: AsyncEngine) -> bool:
    """Rebuild the hourly counts when there are none but there are tickets; True when it did.

    A database from before the counts were kept a day per row still has the
    old rollup (one row per hour): derived data, dropped here at start.
    """
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS ticket_hourly_counts"))
    except Exception:  # e.g. owned by another database user: harmless where it is, the new counts go on
        log.warning("the old hourly counts table could not be dropped", exc_info=True)
    async with engine.connect() as conn:
        if (await conn.execute(select(HOURLY_COUNTS.c.day_us).limit(1))).first() is not None:
            return False
        if (await conn.execute(select(TriageRow.number).limit(1))).first() is None:
            return False
    await rebuild_hourly_counts(engine)
    return True


@dataclass(frozen=True, slots=True)
class Classification:
    type: IncidentType
    priority: Priority
    by: str | None
    at_us: int

    def to_json(self) -> dict[str, Any]:
        return {
            "type": str(self.type),
            "type_label": self.type.label,
            "priority": int(self.priority),
            "priority_label": self.priority.label,
            "by": self.by,
            "at_us": self.at_us,
        }


def current_classification(ticket: TicketView) -> Classification | None:
    """The latest ``classified`` step of the ticket, or None if it was never classified."""
    for step in reversed(ticket.steps):
        if step.step is Step.CLASSIFIED:
            detail = step.detail
            try:
                return Classification(
                    IncidentType(detail["type"]), Priority(detail["priority"]), detail.get("by"), step.at_us
                )
            except (KeyError, ValueError):
                continue  # a step written by an older version with other codes; look further back
    return None


def classification_history(ticket: TicketView) -> list[Classification]:
    found = []
    for step in ticket.steps:
        if step.step is Step.CLASSIFIED:
            try:
                found.append(Classification(
                    IncidentType(step.detail["type"]), Priority(step.detail["priority"]),
                    step.detail.get("by"), step.at_us,
                ))
            except (KeyError, ValueError):
                continue
    return found


def parse_type(value: Any) -> IncidentType:
    try:
        return IncidentType(value)
    except ValueError:
        raise ValueError(f"type must be one of {', '.join(IncidentType)}, got {value!r}") from None


def parse_priority(value: Any) -> Priority:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"priority must be an integer from 1 to 4, got {value!r}")
    try:
        return Priority(value)
    except ValueError:
        raise ValueError(f"priority must be an integer from 1 to 4, got {value!r}") from None


def _by(by: str | None) -> str | None:
    if by is None:
        return None
    if not isinstance(by, str) or not by.strip() or len(by) > BY_MAX:
        raise ValueError(f"by must be a non-empty string of at most {BY_MAX} characters")
    return by


class TriageService:
    """Classification and notes of tickets, written as steps through ``TicketService``."""

    def __init__(self, tickets: TicketService, *, clock: Callable[[], float] = time.time) -> None:
        self.tickets = tickets
        self._clock = clock
        self._sessions = async_sessionmaker(tickets.engine, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        return self.tickets.engine

    def now(self) -> float:
        return self._clock()

    async def ticket(self, number: str) -> TicketView:
        ticket = await self.tickets.get(number)
        if ticket is None:
            raise UnknownTicket(f"no ticket {number!r}")
        return ticket

    async def classify(
        self, number: str, type: IncidentType | str, priority: Priority | int, *, by: str | None = None,
        at: float | None = None,
    ) -> tuple[TicketView, Classification]:
        """Record a ``classified`` step and keep the ticket's current classification for queries.

        Raises ``UnknownTicket``, ``ValueError`` for a bad type or priority, and
        ``IllegalTransition`` for a closed ticket (nothing written then).
        """
        kind = parse_type(type)
        level = parse_priority(int(priority) if isinstance(priority, Priority) else priority)
        by = _by(by)
        ticket = await self.ticket(number)
        advance(ticket.state, Step.CLASSIFIED)  # refuse before anything is written
        at = self._clock() if at is None else at
        detail: dict[str, Any] = {"type": str(kind), "priority": int(level)}
        if by is not None:
            detail["by"] = by
        view = await self.tickets.record_step(ticket.uniqueid, Step.CLASSIFIED, at=at, source=Source.API, **detail)
        classification = Classification(kind, level, by, view.steps[-1].at_us)
        await self._store(view, classification)
        return view, classification

    async def _store(self, ticket: TicketView, classification: Classification) -> None:
        # The step is the record; this row is its index. Should this write be
        # lost (a crash in between), ``reindex`` rebuilds it from the steps.
        await upsert_query_copy(self.engine, ticket.number, ticket.created_at_us, type=str(classification.type),
                                priority=int(classification.priority), updated_at_us=classification.at_us)

    async def reindex(self, numbers: Iterable[str]) -> int:
        """Rewrite the ``ticket_triage`` rows of these tickets from their steps; returns how many were written."""
        written = 0
        for number in numbers:
            ticket = await self.tickets.get(number)
            if ticket is None:
                continue
            current = current_classification(ticket)
            if current is not None:
                await self._store(ticket, current)
                written += 1
        return written

    async def add_note(
        self, number: str, text: str, *, by: str | None = None, keywords: Iterable[str] = (), at: float | None = None,
        source: str = "note",
    ) -> TicketView:
        """Record a ``note_added`` step with the note and the major-incident keywords found in it."""
        if not isinstance(text, str) or not text.strip() or len(text) > NOTE_MAX:
            raise ValueError(f"a note must be a non-empty text of at most {NOTE_MAX} characters")
        by = _by(by)
        ticket = await self.ticket(number)
        advance(ticket.state, Step.NOTE_ADDED)
        detail: dict[str, Any] = {"text": text}
        if by is not None:
            detail["by"] = by
        found = list(keywords)
        if found:
            detail["keywords"] = found
        if source != "note":  # a text report pasted in, …: the call-taker's own notes carry no source
            detail["source"] = source
        at = self._clock() if at is None else at
        return await self.tickets.record_step(ticket.uniqueid, Step.NOTE_ADDED, at=at, source=Source.API, **detail)

    async def stored(self, numbers: Iterable[str]) -> dict[str, tuple[str, int]]:
        """``{number: (type, priority)}`` from the query copy, for list views."""
        numbers = list(numbers)
        found: dict[str, tuple[str, int]] = {}
        async with self._sessions() as session:
            for start in range(0, len(numbers), 500):
                rows = await session.execute(
                    select(TriageRow.number, TriageRow.type, TriageRow.priority).where(
                        TriageRow.number.in_(numbers[start : start + 500])
                    )
                )
                found.update({n: (t, p) for n, t, p in rows if t is not None})
        return found
