"""The store: SQLite settings on every connection, the health probe, ticket numbering."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.numbering import TicketNumbering, format_number, looks_like_number
from core.calls.tables import Ticket, TicketCounter, TicketStep
from core.store import check, make_engine
from core.tables import init_schema

# 2026-11-29 11:30:00 UTC, 19:30 in Shanghai.
T0 = 1_795_951_800.0


async def test_sqlite_file_gets_its_folder_and_pragmas(tmp_path: Path) -> None:
    db_file = tmp_path / "a" / "b" / "jiejing.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db_file}")
    try:
        await init_schema(engine)
        assert db_file.exists()
        # Two connections at once: the pragmas must hold on each, not only the first.
        async with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                got = {
                    name: (await conn.execute(text(f"PRAGMA {name}"))).scalar_one()
                    for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
                }
                assert got == {
                    "journal_mode": "wal",
                    "synchronous": 1,
                    "busy_timeout": 5000,
                    "foreign_keys": 1,
                }
    finally:
        await engine.dispose()


async def test_in_memory_sqlite_needs_no_folder() -> None:
    engine = make_engine("sqlite+aiosqlite://")
    try:
        await init_schema(engine)
        assert (await check(engine))["ok"] is True
    finally:
        await engine.dispose()


async def test_foreign_keys_are_enforced(engine: AsyncEngine) -> None:
    async with async_sessionmaker(engine)() as session:
        session.add(
            TicketStep(
                ticket_id=999,
                seq=1,
                step="received",
                state_after="received",
                at_us=1,
                source="agi",
                detail={},
            )
        )
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_check_reports_latency(engine: AsyncEngine) -> None:
    result = await check(engine)
    assert result["ok"] is True
    assert result["backend"] == "sqlite"
    assert 0 <= result["latency_ms"] < 5000


async def test_check_reports_failure_without_raising(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    # A folder cannot be opened as a database file.
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}")
    try:
        result = await check(engine)
    finally:
        await engine.dispose()
        # aiosqlite stops the worker of a failed connect without waiting for it;
        # left running it would report to an event loop already closed.
        for thread in set(threading.enumerate()) - threads_before:
            await asyncio.to_thread(thread.join, 5)
    assert result["ok"] is False
    assert "OperationalError" in result["error"]


async def test_a_write_cancelled_mid_statement_leaves_no_lock_behind(tmp_path: Path) -> None:
    """A task cancelled while its INSERT runs (a request timed out, a shutdown) must not keep the write lock.

    SQLAlchemy invalidates such a connection and closes it, but SQLite closes a connection whose statement is
    still referenced only lazily: without a rollback first, its open transaction kept the write lock for the
    process's whole life, and every later write failed with "database is locked".
    """
    db_file = tmp_path / "jiejing.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db_file}")
    other = make_engine(f"sqlite+aiosqlite:///{db_file}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (a INTEGER, b TEXT)"))
        started = asyncio.Event()

        async def long_write() -> None:
            async with async_sessionmaker(engine)() as session, session.begin():
                started.set()
                # a second of work inside SQLite's thread, as one executemany (how the ORM inserts a batch)
                await session.execute(text("INSERT INTO t VALUES (:a, :b)"),
                                      [{"a": i, "b": "x" * 100} for i in range(2, 300_000)])

        task = asyncio.create_task(long_write())
        await started.wait()
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with other.begin() as conn:
            await conn.execute(text("PRAGMA busy_timeout = 1000"))
            await conn.execute(text("INSERT INTO t VALUES (1, '')"))
        async with other.connect() as conn:
            # the cancelled transaction is gone whole, the later one is kept
            assert (await conn.execute(text("SELECT a FROM t ORDER BY a"))).scalars().all() == [1]
    finally:
        await other.dispose()
        await engine.dispose()


def test_day_is_the_centers_day() -> None:
    numbering = TicketNumbering(tz="Asia/Shanghai")
    # 16:30 UTC on the 28th is 00:30 on the 29th in Shanghai.
    assert numbering.day_of(T0 - 19 * 3600) == "20261129"
    assert numbering.day_of(T0 - 19 * 3600 - 3600) == "20261128"
    assert TicketNumbering(tz="UTC").day_of(T0 - 19 * 3600) == "20261128"


def test_number_format() -> None:
    assert format_number("110", "20261129", 42) == "110-20261129-000042"
    assert format_number("110", "20261129", 1_234_567) == "110-20261129-1234567"
    assert looks_like_number("110-20261129-000042")
    assert looks_like_number("JJ1-20261129-1234567")
    for bad in (
        "110-2026112-000042",
        "110-20261129-42",
        "../110-20261129-000042",
        "110-20261129-000042\n",
        "",
    ):
        assert not looks_like_number(bad), bad


@pytest.mark.parametrize("prefix", ["", "1-1", "110 ", "报警", "x" * 17])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        TicketNumbering(prefix=prefix)


async def test_counter_moves_in_the_callers_transaction(engine: AsyncEngine) -> None:
    numbering = TicketNumbering(prefix="JJ")
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        assert await numbering.next_number(session, T0) == "JJ-20261129-000001"
        assert await numbering.next_number(session, T0) == "JJ-20261129-000002"
    # A transaction that rolls back gives its number back with everything else.
    async with sessions() as session:
        async with session.begin():
            assert await numbering.next_number(session, T0) == "JJ-20261129-000003"
            await session.rollback()
    async with sessions() as session, session.begin():
        assert await numbering.next_number(session, T0) == "JJ-20261129-000003"
        assert await numbering.next_number(session, T0 + 86400) == "JJ-20261130-000001"
    async with sessions() as session:
        rows = (
            await session.execute(select(TicketCounter.day, TicketCounter.last).order_by(TicketCounter.day))
        ).all()
    assert rows == [("20261129", 3), ("20261130", 1)]


async def test_ticket_number_and_uniqueid_are_unique_in_the_schema(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine)

    def ticket(number: str, uniqueid: str) -> Ticket:
        return Ticket(
            number=number,
            uniqueid=uniqueid,
            caller_id="1",
            state="received",
            created_at_us=1,
            updated_at_us=1,
        )

    async with sessions() as session, session.begin():
        session.add(ticket("110-20261129-000001", "1.1"))
    for clash in (ticket("110-20261129-000001", "1.2"), ticket("110-20261129-000002", "1.1")):
        async with sessions() as session:
            session.add(clash)
            with pytest.raises(IntegrityError):
                await session.commit()


async def test_concurrent_readers_while_writing(engine: AsyncEngine) -> None:
    # WAL: the web API's reads proceed while the intake writes.
    sessions = async_sessionmaker(engine)
    numbering = TicketNumbering()

    async def write() -> None:
        for _ in range(20):
            async with sessions() as session, session.begin():
                await numbering.next_number(session, T0)

    async def read() -> int:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT COUNT(*) FROM ticket_counters"))).scalar_one()

    results = await asyncio.gather(write(), *(read() for _ in range(10)))
    assert all(n in (0, 1) for n in results[1:])
