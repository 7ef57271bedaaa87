"""TicketService's live-call views: equal to the database, lean writes, other writers noticed.

A second TicketService on the same SQLite file plays a second backend process:
it has its own in-memory views and writes the same tickets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, false, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

import core.calls.tickets
from core.calls.lifecycle import IllegalTransition, State, Step
from core.calls.tables import TicketStep
from core.calls.tickets import TicketService, TicketView

T0 = 1_795_951_800.0  # 2026-11-29 11:30:00 UTC


async def _open(service: TicketService, uniqueid: str = "1.1") -> TicketView:
    return await service.open_call(uniqueid=uniqueid, caller_id="13800000000", at=T0, source="ami")


async def _stored(engine: AsyncEngine, uniqueid: str = "1.1") -> TicketView | None:
    # A service with no views of its own reads the database.
    return await TicketService(engine).find_by_uniqueid(uniqueid)


async def _seqs(engine: AsyncEngine) -> list[int]:
    async with async_sessionmaker(engine)() as session:
        return list((await session.scalars(select(TicketStep.seq).order_by(TicketStep.id))).all())


def _targets(statements: list[str]) -> list[str]:
    """Each statement as its verb and table: ``UPDATE tickets``, ``SELECT ticket_steps``."""
    out = []
    for statement in statements:
        words = statement.split(" ")
        verb = words[0]
        if verb == "SELECT":
            table = words[words.index("FROM") + 1]
        else:
            table = words[1] if verb == "UPDATE" else words[2]  # UPDATE t / INSERT INTO t
        out.append(f"{verb} {table}")
    return out


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """SQL statements the engine sends, for as long as the test runs."""
    sent: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        sent.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_every_returned_view_equals_what_the_database_gives(
    service: TicketService, engine: AsyncEngine, clock, tmp_path: Path
) -> None:
    opened = await service.open_call(
        uniqueid="1.1",
        caller_id="13800000000",
        caller_name="张三",
        at=T0 + 0.25,
        source="agi",
        queue="intake",
        priority=5,
    )
    assert await _stored(engine) == opened
    clock.now += 1
    # Detail as the database gives it back: lists for tuples, string keys.
    queued = await service.record_step(
        "1.1", Step.QUEUED, at=T0 + 1, source="ami", queue="intake-north", position=(1, 2), extra={3: "三"}
    )
    assert queued.steps[-1].detail == {"queue": "intake-north", "position": [1, 2], "extra": {"3": "三"}}
    assert await _stored(engine) == queued == await service.find_by_uniqueid("1.1")
    wav = tmp_path / "early.wav"
    wav.write_bytes(b"not yet audio")
    clock.now += 1
    await service.bind_recording("1.1", str(wav))  # while the call is still up
    for step, seat in ((Step.SEAT_RINGING, "seat-03"), (Step.ANSWERED, "seat-03"), (Step.HUNG_UP, None)):
        clock.now += 1
        detail = {} if seat is None else {"seat": seat}
        view = await service.record_step("1.1", step, at=clock.now, source="ami", **detail)
        assert [r.path for r in view.recordings] == [str(wav)]
        assert await _stored(engine) == view == await service.find_by_uniqueid("1.1")
    assert (view.state, view.seat, view.queue) == (State.ENDED, "seat-03", "intake-north")
    assert [s.seq for s in view.steps] == [1, 2, 3, 4, 5]


async def test_a_live_call_is_written_without_reading_it(
    service: TicketService, statements: list[str]
) -> None:
    statements.clear()
    await _open(service)
    # New ticket: an existence check on the unique index, the day's counter
    # (created: the day's first call), the ticket and its first step.
    assert _targets(statements) == [
        "SELECT tickets",
        "UPDATE ticket_counters",
        "INSERT ticket_counters",
        "INSERT tickets",
        "INSERT ticket_steps",
    ]
    statements.clear()
    await _open(service, "1.2")
    assert _targets(statements) == [
        "SELECT tickets",
        "UPDATE ticket_counters",
        "INSERT tickets",
        "INSERT ticket_steps",
    ]
    statements.clear()
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.SEAT_RINGING, at=T0 + 2, source="ami", seat="seat-01")
    assert _targets(statements) == ["UPDATE tickets", "INSERT ticket_steps"] * 2
    statements.clear()
    assert (await service.find_by_uniqueid("1.1")).state is State.RINGING
    assert (await _open(service)).state is State.RINGING
    assert statements == []
    await service.record_step("1.1", Step.ABANDONED, at=T0 + 3, source="ami")
    statements.clear()
    # An ended call leaves the memory; the database answers for it.
    assert (await service.find_by_uniqueid("1.1")).state is State.ABANDONED
    assert "SELECT tickets" in _targets(statements)


async def test_a_step_another_process_wrote_is_noticed_and_built_upon(
    service: TicketService, engine: AsyncEngine, clock, caplog: pytest.LogCaptureFixture
) -> None:
    other = TicketService(engine, clock=clock)
    await _open(service)
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    clock.now += 1
    await other.record_step("1.1", Step.SEAT_RINGING, at=T0 + 2, source="ami", seat="seat-01")
    clock.now += 1
    # This process still sees "queued": its UPDATE matches no row, it re-reads and appends after.
    with caplog.at_level(logging.WARNING, logger="core.calls.tickets"):
        answered = await service.record_step("1.1", Step.ANSWERED, at=T0 + 3, source="ami", seat="seat-01")
    assert [s.step for s in answered.steps] == [Step.RECEIVED, Step.QUEUED, Step.SEAT_RINGING, Step.ANSWERED]
    assert answered == await _stored(engine)
    assert await _seqs(engine) == [1, 2, 3, 4]
    assert any("changed by another writer" in r.getMessage() for r in caplog.records)


async def test_a_step_the_memory_refuses_is_checked_against_the_database(
    service: TicketService, engine: AsyncEngine, clock
) -> None:
    other = TicketService(engine, clock=clock)
    await _open(service)  # remembered as "received"
    clock.now += 1
    await other.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    ringing = await service.record_step("1.1", Step.SEAT_RINGING, at=T0 + 2, source="ami", seat="seat-01")
    assert ringing.state is State.RINGING
    assert await _seqs(engine) == [1, 2, 3]


async def test_a_step_the_database_refuses_writes_nothing_and_drops_the_stale_view(
    service: TicketService, engine: AsyncEngine, clock
) -> None:
    other = TicketService(engine, clock=clock)
    await _open(service)
    clock.now += 1
    await other.record_step("1.1", Step.ABANDONED, at=T0 + 1, source="ami")
    heard = []
    service.add_listener(lambda t, s: heard.append(s))
    # "queued" follows "received" (the memory) but not "abandoned" (the database).
    with pytest.raises(IllegalTransition, match="abandoned"):
        await service.record_step("1.1", Step.QUEUED, at=T0 + 2, source="ami")
    assert await _seqs(engine) == [1, 2]
    assert heard == []
    assert (await service.find_by_uniqueid("1.1")).state is State.ABANDONED


async def test_the_same_seq_from_two_processes_is_refused_by_the_index(engine: AsyncEngine) -> None:
    # A frozen clock: the other process's step leaves state and updated_at as
    # they were, so only the unique (ticket_id, seq) index can tell.
    one = TicketService(engine, clock=lambda: T0)
    two = TicketService(engine, clock=lambda: T0)
    await _open(one)
    await one.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await one.record_step("1.1", Step.SEAT_RINGING, at=T0 + 2, source="ami", seat="seat-01")
    await _open(two)  # remembers the ticket as it is now
    await one.record_step("1.1", Step.SEAT_RINGING, at=T0 + 3, source="ami", seat="seat-02")
    view = await two.record_step("1.1", Step.SEAT_RINGING, at=T0 + 4, source="ami", seat="seat-03")
    assert [s.seq for s in view.steps] == [1, 2, 3, 4, 5]
    assert [s.detail.get("seat") for s in view.steps[2:]] == ["seat-01", "seat-02", "seat-03"]
    assert view == await _stored(engine)
    assert await _seqs(engine) == [1, 2, 3, 4, 5]


async def test_a_ticket_that_keeps_changing_fails_after_one_reread(
    service: TicketService, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _open(service)
    heard = []
    service.add_listener(lambda t, s: heard.append(s))
    # An UPDATE that never matches: as if another writer always got there first.
    monkeypatch.setattr(core.calls.tickets, "_ADVANCE", core.calls.tickets._ADVANCE.where(false()))
    with pytest.raises(RuntimeError, match="changed since it was read"):
        await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    assert await _seqs(engine) == [1]
    assert heard == []
    monkeypatch.undo()
    queued = await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    assert [s.seq for s in queued.steps] == [1, 2]


async def test_list_recent_reads_the_children_of_the_tickets_it_lists(service: TicketService, clock) -> None:
    for i in range(3):
        clock.now = T0 + i
        await _open(service, f"1.{i}")
        await service.record_step(f"1.{i}", Step.QUEUED, at=T0 + i, source="ami")
    recent = await service.list_recent(2)
    assert [t.uniqueid for t in recent] == ["1.2", "1.1"]
    assert recent == [await service.get(t.number) for t in recent]
    assert all([s.seq for s in t.steps] == [1, 2] for t in recent)


async def test_a_write_cancelled_anywhere_leaves_memory_and_database_agreeing(
    service: TicketService, engine: AsyncEngine
) -> None:
    # The AMI adapter's task may be cancelled (shutdown) at any await of a
    # write, the commit included: the next read and write must still agree
    # with what the database holds.
    for i in range(30):
        uniqueid = f"1.{i}"
        await _open(service, uniqueid)
        task = asyncio.create_task(service.record_step(uniqueid, Step.QUEUED, at=T0 + 1, source="ami"))
        await asyncio.sleep(i * 0.0001)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await service.find_by_uniqueid(uniqueid) == await _stored(engine, uniqueid)
        step = Step.SEAT_RINGING if (await _stored(engine, uniqueid)).state is State.QUEUED else Step.QUEUED
        view = await service.record_step(uniqueid, step, at=T0 + 2, source="ami", seat="seat-01")
        assert view == await _stored(engine, uniqueid)
        assert [s.seq for s in view.steps] == list(range(1, len(view.steps) + 1))
