"""Retention: old tickets and recordings deleted, the expiry journaled, verification still clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.journal import KIND_EXPIRY, Journaler, verify
from core.lifecycle import Step
from core.quality_store import JournalEntry
from core.retention import expire
from core.store import Recording, Ticket, TicketStep
from core.tickets import TicketService

T0 = 1_795_951_800.0
DAY = 86400.0


async def _count(engine: AsyncEngine, model: type) -> int:
    async with async_sessionmaker(engine)() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_expiry_is_journaled_and_verification_accepts_it(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    old = await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="agi")
    await service.record_step("1.1", Step.ABANDONED, at=T0 + 5, source="ami")
    await service.close(old.number, disposition="无效", by="seat-01")
    wav = tmp_path / "old.wav"
    wav.write_bytes(b"old call audio")
    await service.bind_recording(old.number, str(wav))
    live_old = await service.open_call(uniqueid="1.2", caller_id="13800000000", at=T0, source="agi")  # still up
    clock.now = T0 + 200 * DAY
    recent = await service.open_call(uniqueid="1.3", caller_id="13800000000", at=clock.now, source="agi")
    new_wav = tmp_path / "new.wav"
    new_wav.write_bytes(b"new call audio")
    await service.bind_recording(recent.number, str(new_wav))
    journaler = Journaler(engine, clock=clock)
    await journaler.catch_up()

    with pytest.raises(ValueError):
        await expire(engine, journaler, older_than_days=0, clock=clock)
    result = await expire(engine, journaler, older_than_days=180, clock=clock)
    assert (result.tickets, result.recordings, result.files_removed) == (1, 1, 1)
    assert not wav.exists()
    async with async_sessionmaker(engine)() as session:
        numbers = set((await session.scalars(select(Ticket.number))).all())
        entry = await session.scalar(select(JournalEntry).where(JournalEntry.kind == KIND_EXPIRY))
    assert numbers == {live_old.number, recent.number}
    assert entry is not None and entry.seq == result.entries[0]
    payload = json.loads(entry.payload)
    assert payload["tickets"] == [old.number] and payload["recordings"][0]["path"] == str(wav)
    assert new_wav.exists()
    assert await _count(engine, Recording) == 1 and await _count(engine, TicketStep) == 2

    report = await verify(engine)
    assert report.ok, report.findings  # gone by rule, not by tampering
    assert (await expire(engine, journaler, older_than_days=180, clock=clock)).tickets == 0


async def test_deletion_without_expiry_entry_is_still_caught(
    service: TicketService, engine: AsyncEngine, clock: Any
) -> None:
    a = await service.open_call(uniqueid="1.1", caller_id="1", at=T0, source="agi")
    await service.record_step("1.1", Step.ABANDONED, at=T0 + 5, source="ami")
    await service.close(a.number, disposition="无效", by="seat-01")
    journaler = Journaler(engine, clock=clock)
    await journaler.catch_up()
    clock.now = T0 + 200 * DAY
    # It holds the newest step: expiring it would let SQLite hand its id to the next step.
    assert (await expire(engine, journaler, older_than_days=180, clock=clock)).tickets == 0
    b = await service.open_call(uniqueid="1.2", caller_id="1", at=clock.now, source="agi")
    assert (await expire(engine, journaler, older_than_days=180, clock=clock)).tickets == 1
    # A later ticket's step deleted by hand is not covered by the expiry entry.
    async with engine.begin() as conn:
        await conn.execute(TicketStep.__table__.delete())
    report = await verify(engine)
    assert [(f.kind, f.ref) for f in report.findings] == [("row_deleted", "step 4")]
    assert b.number in report.findings[0].message
