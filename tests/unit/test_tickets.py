"""TicketService on a temporary SQLite file: numbering, idempotency, steps, recordings, listeners."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import wave
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.lifecycle import IllegalTransition, State, Step
from core.calls.tables import Recording, Ticket, TicketStep
from core.calls.tickets import (
    StepView,
    TicketService,
    TicketView,
    UnknownCall,
    UnknownTicket,
    iso_utc,
)
from core.store import make_engine
from core.tables import init_schema

T0 = 1_795_951_800.0  # 2026-11-29 11:30:00 UTC, 19:30 in Shanghai
DAY = "20261129"


async def _open(service: TicketService, uniqueid: str, at: float = T0, **kw: object) -> TicketView:
    return await service.open_call(uniqueid=uniqueid, caller_id="13800000000", at=at, source="agi", **kw)


async def _count(engine: AsyncEngine, model: type) -> int:
    async with async_sessionmaker(engine)() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


# -- opening calls -------------------------------------------------------------


async def test_open_call_creates_numbered_ticket_with_received_step(service: TicketService) -> None:
    ticket = await service.open_call(
        uniqueid="1795951800.1",
        caller_id="13800000000",
        caller_name="张三",
        at=T0 + 0.123456,
        source="agi",
        queue="intake",
        priority=5,
    )
    assert ticket.number == f"110-{DAY}-000001"
    assert (ticket.uniqueid, ticket.caller_id, ticket.caller_name) == ("1795951800.1", "13800000000", "张三")
    assert (ticket.state, ticket.queue, ticket.priority, ticket.seat) == (State.RECEIVED, "intake", 5, None)
    assert [(s.seq, s.step, s.state_after, s.at_us, s.source) for s in ticket.steps] == [
        (1, Step.RECEIVED, State.RECEIVED, 1_795_951_800_123_456, "agi")
    ]
    assert await service.get(ticket.number) == ticket


async def test_open_call_is_idempotent_and_returns_the_ticket_unchanged(
    service: TicketService, engine: AsyncEngine
) -> None:
    first = await _open(service, "1.1")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami", queue="intake")
    # The AMI side re-opens after a restart with other details: nothing changes.
    again = await service.open_call(uniqueid="1.1", caller_id="other", at=T0 + 5, source="resync")
    assert again.number == first.number
    assert again.caller_id == "13800000000"
    assert [s.step for s in again.steps] == [Step.RECEIVED, Step.QUEUED]
    assert await _count(engine, Ticket) == 1


async def test_numbering_continues_after_a_restart(db_url: str) -> None:
    numbers = []
    for round_ in range(2):
        engine = make_engine(db_url)
        try:
            await init_schema(engine)  # a second create_all leaves the data alone
            service = TicketService(engine, clock=lambda: T0)
            for i in range(3):
                numbers.append((await _open(service, f"{round_}.{i}")).number)
        finally:
            await engine.dispose()
    assert numbers == [f"110-{DAY}-{n:06d}" for n in range(1, 7)]


async def test_each_day_counts_from_one_with_a_configurable_prefix(engine: AsyncEngine) -> None:
    service = TicketService(engine, clock=lambda: T0, prefix="JJ110")
    before_midnight = await _open(service, "a", at=T0 + 4 * 3600 + 29 * 60)  # 23:59 Shanghai
    after_midnight = await _open(service, "b", at=T0 + 4 * 3600 + 31 * 60)  # 00:01 next day
    assert before_midnight.number == f"JJ110-{DAY}-000001"
    assert after_midnight.number == "JJ110-20261130-000001"


async def test_200_concurrent_calls_get_200_distinct_numbers(
    service: TicketService, engine: AsyncEngine
) -> None:
    tickets = await asyncio.gather(*(_open(service, f"1795951800.{i}") for i in range(200)))
    numbers = {t.number for t in tickets}
    assert numbers == {f"110-{DAY}-{n:06d}" for n in range(1, 201)}
    assert len({t.uniqueid for t in tickets}) == 200
    assert await _count(engine, Ticket) == 200
    assert await _count(engine, TicketStep) == 200


async def test_concurrent_open_of_the_same_call_makes_one_ticket(
    service: TicketService, engine: AsyncEngine
) -> None:
    # The intake route and the AMI adapter may both race to open the same call.
    tickets = await asyncio.gather(
        *(
            service.open_call(uniqueid="1.7", caller_id="13800000000", at=T0, source=src)
            for src in ["agi", "ami", "resync"] * 10
        )
    )
    assert {t.number for t in tickets} == {f"110-{DAY}-000001"}
    assert all(len(t.steps) == 1 for t in tickets)
    assert await _count(engine, Ticket) == 1
    assert await _count(engine, TicketStep) == 1


async def test_oversized_caller_name_is_clipped_not_refused(service: TicketService) -> None:
    ticket = await _open(service, "1.1", caller_name="名" * 1000)
    assert ticket.caller_name == "名" * 255


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uniqueid": ""}, "uniqueid"),
        ({"uniqueid": "1" * 151}, "uniqueid"),
        ({"at": float("nan")}, "finite"),
        ({"source": "fax"}, "fax"),
        ({"priority": "5"}, "priority"),
    ],
)
async def test_open_call_refuses_bad_arguments(
    service: TicketService, engine: AsyncEngine, kwargs: dict, message: str
) -> None:
    args = {"uniqueid": "1.1", "caller_id": "1", "at": T0, "source": "agi"} | kwargs
    with pytest.raises(ValueError, match=message):
        await service.open_call(**args)
    assert await _count(engine, Ticket) == 0


# -- steps ---------------------------------------------------------------------


async def test_steps_are_ordered_and_keep_their_microseconds(service: TicketService, db_url: str) -> None:
    await _open(service, "1.1", at=1_795_951_800.000001)
    times = [
        1_795_951_800.5,
        1_795_951_801.999999,
        1_795_951_802.123456,
        1_795_951_830.000001,
        1_795_951_900.654321,
    ]
    steps = [Step.QUEUED, Step.SEAT_RINGING, Step.ANSWERED, Step.HUNG_UP]
    for step, at in zip(steps, times, strict=False):
        await service.record_step("1.1", step, at=at, source="ami", seat="seat-07")
    # Read back through a fresh engine: the values come from the file, not memory.
    engine = make_engine(db_url)
    try:
        ticket = await TicketService(engine).find_by_uniqueid("1.1")
    finally:
        await engine.dispose()
    assert ticket is not None
    assert [s.seq for s in ticket.steps] == [1, 2, 3, 4, 5]
    assert [s.step for s in ticket.steps] == [Step.RECEIVED, *steps]
    assert [s.at_us for s in ticket.steps] == [
        1_795_951_800_000_001,
        1_795_951_800_500_000,
        1_795_951_801_999_999,
        1_795_951_802_123_456,
        1_795_951_830_000_001,
    ]
    assert [s.state_after for s in ticket.steps][-1] is State.ENDED
    assert ticket.state is State.ENDED


async def test_answered_sets_the_seat_and_queued_the_queue(service: TicketService) -> None:
    await _open(service, "1.1")
    queued = await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami", queue="intake-north")
    assert queued.queue == "intake-north"
    await service.record_step("1.1", Step.SEAT_RINGING, at=T0 + 2, source="ami", seat="PJSIP/seat-03")
    ringing = await service.record_step(
        "1.1", Step.SEAT_NO_ANSWER, at=T0 + 17, source="ami", seat="PJSIP/seat-03"
    )
    assert ringing.seat is None  # ringing a seat does not give it the call
    answered = await service.record_step("1.1", Step.ANSWERED, at=T0 + 19, source="ami", seat="PJSIP/seat-11")
    assert (answered.state, answered.seat) == (State.ANSWERED, "PJSIP/seat-11")
    assert answered.steps[-1].detail == {"seat": "PJSIP/seat-11"}


async def test_illegal_step_writes_nothing(service: TicketService, engine: AsyncEngine, clock) -> None:
    await _open(service, "1.1")
    before = await service.find_by_uniqueid("1.1")
    heard = []
    service.add_listener(lambda t, s: heard.append(s))
    clock.now += 10
    with pytest.raises(IllegalTransition, match="step hung_up is not allowed for a ticket in state received"):
        await service.record_step("1.1", Step.HUNG_UP, at=T0 + 3, source="ami")
    with pytest.raises(IllegalTransition):
        await service.record_step("1.1", Step.ANSWERED, at=T0 + 3, source="ami", seat="seat-01")
    assert await service.find_by_uniqueid("1.1") == before  # seat, state, updated_at untouched
    assert await _count(engine, TicketStep) == 1
    assert heard == []


async def test_unknown_call_is_refused(service: TicketService, engine: AsyncEngine) -> None:
    with pytest.raises(UnknownCall, match=r"1\.404"):
        await service.record_step("1.404", Step.QUEUED, at=T0, source="ami")
    assert await _count(engine, TicketStep) == 0


async def test_detail_must_be_json(service: TicketService, engine: AsyncEngine) -> None:
    await _open(service, "1.1")
    with pytest.raises(ValueError, match="JSON"):
        await service.record_step("1.1", Step.QUEUED, at=T0, source="ami", when=object())
    with pytest.raises(ValueError, match="JSON"):
        await service.record_step("1.1", Step.QUEUED, at=T0, source="ami", wait=float("inf"))
    assert await _count(engine, TicketStep) == 1


async def test_a_restarted_backend_continues_calls_in_progress(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await init_schema(engine)
        before = TicketService(engine, clock=lambda: T0)
        await _open(before, "1.1")
        await _open(before, "1.2")
        await before.record_step("1.2", Step.ABANDONED, at=T0 + 4, source="ami")
        await _open(before, "1.3")
        await before.record_step("1.3", Step.QUEUED, at=T0 + 1, source="ami")
        await before.record_step("1.3", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-01")
        # Same file, new service: its map of live calls starts empty.
        after = TicketService(engine, clock=lambda: T0 + 60)
        assert await after.open_uniqueids() == {"1.1", "1.3"}
        ticket = await after.record_step("1.3", Step.HUNG_UP, at=T0 + 50, source="resync")
        assert ticket.state is State.ENDED
        assert await after.open_uniqueids() == {"1.1"}
        # Without the explicit rebuild, an event for a call the map has not seen still lands.
        fresh = TicketService(engine, clock=lambda: T0 + 70)
        queued = await fresh.record_step("1.1", Step.QUEUED, at=T0 + 61, source="ami")
        assert [s.seq for s in queued.steps] == [1, 2]
    finally:
        await engine.dispose()


# -- closing -------------------------------------------------------------------


async def test_close_an_ended_call(service: TicketService, clock) -> None:
    ticket = await _open(service, "1.1")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-01")
    await service.record_step("1.1", Step.HUNG_UP, at=T0 + 90, source="ami")
    clock.now = T0 + 120.5
    closed = await service.close(ticket.number, disposition="警情:盗窃", by="seat-01")
    assert closed.state is State.CLOSED
    last = closed.steps[-1]
    assert (last.seq, last.step, last.source, last.at_us) == (5, Step.CLOSED, "api", 1_795_951_920_500_000)
    assert last.detail == {"disposition": "警情:盗窃", "by": "seat-01"}


async def test_close_refuses_live_unknown_and_empty(service: TicketService) -> None:
    ticket = await _open(service, "1.1")
    with pytest.raises(IllegalTransition):
        await service.close(ticket.number, disposition="x", by="seat-01")
    with pytest.raises(UnknownTicket):
        await service.close("110-20261129-999999", disposition="x", by="seat-01")
    with pytest.raises(ValueError, match="disposition"):
        await service.close(ticket.number, disposition="", by="seat-01")
    assert len((await service.get(ticket.number)).steps) == 1


# -- reads ---------------------------------------------------------------------


async def test_list_recent_is_newest_first(service: TicketService, clock) -> None:
    for i in range(5):
        clock.now = T0 + i
        await _open(service, f"1.{i}")
    recent = await service.list_recent(3)
    assert [t.uniqueid for t in recent] == ["1.4", "1.3", "1.2"]
    assert len(await service.list_recent(1000)) == 5
    with pytest.raises(ValueError, match="limit"):
        await service.list_recent(0)


async def test_get_and_find_unknown_give_none(service: TicketService) -> None:
    assert await service.get("110-20261129-000001") is None
    assert await service.find_by_uniqueid("1.1") is None


async def test_views_serialise_with_iso_milliseconds(service: TicketService) -> None:
    ticket = await _open(service, "1.1", at=T0 + 0.123456)
    data = ticket.to_json()
    assert data["created_at"] == "2026-11-29T11:30:00.000Z"
    assert data["steps"][0] == {
        "seq": 1,
        "step": "received",
        "state_after": "received",
        "at": "2026-11-29T11:30:00.123Z",
        "at_us": 1_795_951_800_123_456,
        "source": "agi",
        "detail": {},
    }
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_795_951_800_999_999) == "2026-11-29T11:30:00.999Z"  # truncated, never rounded up


# -- recordings ----------------------------------------------------------------


def _write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(range(256)) * int(seconds * rate * 2 / 256))


async def test_bind_recording_stores_its_digest(
    service: TicketService, engine: AsyncEngine, tmp_path: Path, clock
) -> None:
    ticket = await _open(service, "1.1")
    wav = tmp_path / "110-20261129-000001.wav"
    _write_wav(wav, 2.56)
    clock.now = T0 + 100
    bound = await service.bind_recording("1.1", str(wav))
    assert bound.sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()
    assert bound.size_bytes == wav.stat().st_size
    assert bound.duration_s == pytest.approx(2.56)
    assert bound.bound_at_us == 1_795_951_900_000_000
    # Again by number: one row, same facts.
    again = await service.bind_recording(ticket.number, str(wav))
    assert again == bound
    other = tmp_path / "notes.txt"
    other.write_text("not audio")
    plain = await service.bind_recording(ticket.number, str(other))
    assert plain.duration_s is None
    stored = await service.get(ticket.number)
    assert [r.path for r in stored.recordings] == [str(wav), str(other)]
    assert stored.recordings[0] == bound
    assert await _count(engine, Recording) == 2
    assert len(stored.steps) == 1  # a recording is not a lifecycle step


async def test_bind_recording_refuses_unknown_ticket_and_missing_file(
    service: TicketService, tmp_path: Path
) -> None:
    wav = tmp_path / "x.wav"
    _write_wav(wav, 0.1)
    with pytest.raises(UnknownTicket):
        await service.bind_recording("1.404", str(wav))
    await _open(service, "1.1")
    with pytest.raises(FileNotFoundError):
        await service.bind_recording("1.1", str(tmp_path / "missing.wav"))


# -- listeners -----------------------------------------------------------------


async def test_listeners_hear_every_committed_step(service: TicketService, engine: AsyncEngine) -> None:
    heard: list[tuple[str, State, int, Step]] = []

    def listener(ticket: TicketView, step: StepView) -> None:
        heard.append((ticket.number, ticket.state, step.seq, step.step))

    remove = service.add_listener(listener)
    ticket = await _open(service, "1.1")
    await _open(service, "1.1")  # idempotent re-open: no new step, nothing to hear
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.ABANDONED, at=T0 + 9, source="ami")
    await service.close(ticket.number, disposition="无效", by="seat-02")
    remove()
    await _open(service, "1.2")
    assert heard == [
        (ticket.number, State.RECEIVED, 1, Step.RECEIVED),
        (ticket.number, State.QUEUED, 2, Step.QUEUED),
        (ticket.number, State.ABANDONED, 3, Step.ABANDONED),
        (ticket.number, State.CLOSED, 4, Step.CLOSED),
    ]


async def test_failing_listener_is_logged_and_others_still_run(
    service: TicketService, caplog: pytest.LogCaptureFixture
) -> None:
    heard = []

    def broken(ticket: TicketView, step: StepView) -> None:
        raise RuntimeError("push failed")

    async def not_synchronous(ticket: TicketView, step: StepView) -> None:
        heard.append("never")

    service.add_listener(broken)
    service.add_listener(not_synchronous)
    service.add_listener(lambda t, s: heard.append(s.step))
    with caplog.at_level(logging.ERROR, logger="core.calls.tickets"):
        ticket = await _open(service, "1.1")
    assert ticket.state is State.RECEIVED  # the call goes on
    assert heard == [Step.RECEIVED]
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed" in m and ticket.number in m for m in messages)
    assert any("must be synchronous" in m for m in messages)
