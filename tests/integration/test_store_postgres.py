"""The store and TicketService on PostgreSQL (asyncpg), including two writers at once.

Runs when JIEJING_TEST_PG_URL names a database, e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/jiejing_test``. Each test works
in a schema of its own, dropped afterwards: the database's other data is left alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.lifecycle import IllegalTransition, State, Step
from core.calls.tables import Ticket, TicketStep
from core.calls.tickets import TicketService
from core.dispatch.geo import Grid
from core.dispatch.places import AddressNotFound, Gazetteer, Place
from core.store import check, make_engine
from core.tables import init_schema

PG_URL = os.environ.get("JIEJING_TEST_PG_URL")
if not PG_URL and os.environ.get("CI"):
    # sip-lab/test.sh starts PostgreSQL and sets the URL: in CI a missing URL is a failure, not a skip.
    raise RuntimeError("JIEJING_TEST_PG_URL is not set in CI: sip-lab/test.sh did not start PostgreSQL")
pytestmark = pytest.mark.skipif(
    not PG_URL, reason="JIEJING_TEST_PG_URL is not set; sip-lab/test.sh sets it after starting PostgreSQL"
)

T0 = 1_795_951_800.0  # 2026-11-29 11:30:00 UTC
DAY = "20261129"


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    schema = f"jiejing_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


def _engine(schema: str) -> AsyncEngine:
    return make_engine(PG_URL, connect_args={"server_settings": {"search_path": schema}})


@pytest.fixture
async def pg_engine(pg_schema: str) -> AsyncIterator[AsyncEngine]:
    engine = _engine(pg_schema)
    await init_schema(engine)
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine, model: type) -> int:
    async with async_sessionmaker(engine)() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_check_and_schema(pg_engine: AsyncEngine) -> None:
    result = await check(pg_engine)
    assert result["ok"] is True
    assert result["backend"] == "postgresql"
    await init_schema(pg_engine)  # a second run leaves the tables alone


async def test_full_call_round_trip(pg_engine: AsyncEngine, tmp_path: Path) -> None:
    service = TicketService(pg_engine, clock=lambda: T0)
    ticket = await service.open_call(
        uniqueid="1795951800.1", caller_id="13800000000", caller_name="李四", at=T0 + 0.000001, source="agi"
    )
    assert ticket.number == f"110-{DAY}-000001"
    await service.record_step("1795951800.1", Step.QUEUED, at=T0 + 0.5, source="ami", queue="intake")
    await service.record_step(
        "1795951800.1", Step.SEAT_RINGING, at=T0 + 0.999999, source="ami", seat="seat-01"
    )
    await service.record_step("1795951800.1", Step.ANSWERED, at=T0 + 2.123456, source="ami", seat="seat-01")
    with pytest.raises(IllegalTransition):
        await service.record_step("1795951800.1", Step.ABANDONED, at=T0 + 3, source="ami")
    await service.record_step("1795951800.1", Step.HUNG_UP, at=T0 + 60, source="ami")
    disposition = "警情：${jndi:ldap://x} 盗窃 '; DROP TABLE tickets; --"
    await service.close(ticket.number, disposition=disposition, by="座席-01", at=T0 + 90)
    wav = tmp_path / "call.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 8000)
    await service.bind_recording(ticket.number, str(wav))
    await service.bind_recording("1795951800.1", str(wav))

    stored = await TicketService(pg_engine).get(ticket.number)
    assert stored is not None
    assert (stored.state, stored.queue, stored.seat, stored.caller_name) == (
        State.CLOSED,
        "intake",
        "seat-01",
        "李四",
    )
    assert [s.at_us for s in stored.steps] == [
        1_795_951_800_000_001,
        1_795_951_800_500_000,
        1_795_951_800_999_999,
        1_795_951_802_123_456,
        1_795_951_860_000_000,
        1_795_951_890_000_000,
    ]
    assert [s.seq for s in stored.steps] == [1, 2, 3, 4, 5, 6]
    assert dict(stored.steps[-1].detail) == {"disposition": disposition, "by": "座席-01"}
    assert len(stored.recordings) == 1
    assert stored.recordings[0].sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()
    assert stored.recordings[0].duration_s == pytest.approx(1.0)
    assert await service.open_uniqueids() == set()


async def test_numbering_under_concurrency_and_restart(pg_schema: str) -> None:
    numbers: list[str] = []
    for round_ in range(2):
        engine = _engine(pg_schema)
        try:
            await init_schema(engine)
            service = TicketService(engine, clock=lambda: T0)
            tickets = await asyncio.gather(
                *(
                    service.open_call(uniqueid=f"{round_}.{i}", caller_id="1", at=T0, source="agi")
                    for i in range(50)
                )
            )
            numbers += [t.number for t in tickets]
            same = await asyncio.gather(
                *(
                    service.open_call(uniqueid=f"{round_}.0", caller_id="1", at=T0, source="ami")
                    for _ in range(10)
                )
            )
            assert {t.number for t in same} == {tickets[0].number}
        finally:
            await engine.dispose()
    assert sorted(numbers) == [f"110-{DAY}-{n:06d}" for n in range(1, 101)]


async def test_two_backends_writing_at_once(pg_schema: str) -> None:
    # Two processes on one database: the day's first counter row and the same
    # uniqueid are both contested; the losing transaction retries.
    engines = [_engine(pg_schema), _engine(pg_schema)]
    try:
        await init_schema(engines[0])
        services = [TicketService(e, clock=lambda: T0) for e in engines]
        distinct = [
            services[i % 2].open_call(uniqueid=f"d.{i}", caller_id="1", at=T0, source="agi")
            for i in range(40)
        ]
        contested = [
            services[i % 2].open_call(uniqueid="same.1", caller_id="1", at=T0, source="agi")
            for i in range(10)
        ]
        results = await asyncio.gather(*distinct, *contested)
        numbers = {t.number for t in results[:40]}
        assert len(numbers) == 40
        assert len({t.number for t in results[40:]}) == 1
        assert await _count(engines[0], Ticket) == 41
        assert await _count(engines[0], TicketStep) == 41
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.parametrize("clock", [lambda: T0, time.time], ids=["frozen-clock", "wall-clock"])
async def test_two_backends_appending_to_one_call(pg_schema: str, clock: Callable[[], float]) -> None:
    # Both processes hold the call in memory and ring seats on it at once. With
    # the wall clock a stale view fails the conditional UPDATE (updated_at has
    # moved); with a frozen one state and updated_at stay as they were and only
    # the (ticket_id, seq) index catches it. Either way the re-read under the
    # row lock appends after the other process's step.
    engines = [_engine(pg_schema), _engine(pg_schema)]
    try:
        await init_schema(engines[0])
        services = [TicketService(e, clock=clock) for e in engines]
        await services[0].open_call(uniqueid="1.1", caller_id="1", at=T0, source="agi")
        await services[0].record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
        await services[1].open_call(uniqueid="1.1", caller_id="1", at=T0, source="ami")  # reads, remembers
        await asyncio.gather(
            *(
                services[i % 2].record_step(
                    "1.1", Step.SEAT_RINGING, at=T0 + 2 + i, source="ami", seat=f"s{i:02d}"
                )
                for i in range(20)
            )
        )
        stored = await TicketService(engines[0]).find_by_uniqueid("1.1")
        assert stored is not None
        assert [s.seq for s in stored.steps] == list(range(1, 23))
        assert sorted(s.detail["seat"] for s in stored.steps[2:]) == [f"s{i:02d}" for i in range(20)]
        # Either process's next write starts from the stored ticket, whatever it last saw.
        answered = await services[1].record_step("1.1", Step.ANSWERED, at=T0 + 30, source="ami", seat="s07")
        assert answered.steps[:-1] == stored.steps
        assert answered == await TicketService(engines[0]).find_by_uniqueid("1.1")
        assert await _count(engines[0], TicketStep) == 23
    finally:
        for engine in engines:
            await engine.dispose()


async def test_the_gazetteer_searches_and_resolves_alike(pg_engine: AsyncEngine) -> None:
    places = Gazetteer(pg_engine, Grid(8))
    at = (31.2304, 121.4737)
    assert await places.replace([Place(n, *at) for n in ("人民路1号", "人民路11号", "新人民路1号", "50%_off 商场",
                                                          "Ｎｏ. 9 Riverside")]) == 5
    assert [p.name for p in await places.search("人民路1")] == ["人民路1号", "人民路11号", "新人民路1号"]
    assert [p.name for p in await places.search("50%_")] == ["50%_off 商场"]
    assert await places.search("人_路") == [] and await places.search("人%号") == []
    assert (await places.resolve("no.9 riverside")).name == "Ｎｏ. 9 Riverside"
    with pytest.raises(AddressNotFound):
        await places.resolve("人民路")
