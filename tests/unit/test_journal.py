"""The journal: catch-up, listener wake-up, and each kind of tampering detected and named."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.lifecycle import Step
from core.calls.tables import Recording, TicketStep
from core.calls.tickets import TicketService
from core.quality.journal import (
    GENESIS,
    KIND_RECORDING,
    Journaler,
    canonical,
    link_hash,
    verify,
)
from core.quality.tables import JournalEntry
from core.store import make_engine
from core.tables import init_schema
from telephony import cli

T0 = 1_795_951_800.0
KEY = b"k" * 32


async def _call(service: TicketService, uid: str, seat: str = "seat-01", close: bool = True) -> str:
    ticket = await service.open_call(uniqueid=uid, caller_id="13800000000", at=T0, source="agi")
    await service.record_step(uid, Step.QUEUED, at=T0 + 1, source="ami", queue="q110")
    await service.record_step(uid, Step.ANSWERED, at=T0 + 2, source="ami", seat=seat)
    await service.record_step(uid, Step.HUNG_UP, at=T0 + 60, source="ami")
    if close:
        await service.close(ticket.number, disposition="纠纷", by="seat-01")
    return ticket.number


async def _entries(engine: AsyncEngine) -> list[JournalEntry]:
    async with async_sessionmaker(engine)() as session:
        return list((await session.scalars(select(JournalEntry).order_by(JournalEntry.seq))).all())


async def _exec(engine: AsyncEngine, *statements: object) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)  # type: ignore[arg-type]


async def _two_calls_journaled(service: TicketService, engine: AsyncEngine, tmp_path: Path) -> Journaler:
    await _call(service, "1.1")
    number = await _call(service, "1.2", seat="seat-02")
    wav = tmp_path / "rec.wav"
    wav.write_bytes(b"RIFF-not-really" * 100)
    await service.bind_recording(number, str(wav))
    journaler = Journaler(engine, anchor_key=KEY, anchor_file=tmp_path / "anchors" / "journal.anchors")
    assert await journaler.catch_up() == 11  # 10 steps and 1 recording
    return journaler


def _kinds(report: object) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in report.findings]  # type: ignore[attr-defined]


async def test_catch_up_journals_every_step_and_recording_once(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    journaler = await _two_calls_journaled(service, engine, tmp_path)
    assert await journaler.catch_up() == 0  # nothing twice
    entries = await _entries(engine)
    assert [e.seq for e in entries] == list(range(1, 12))
    assert [e.kind for e in entries].count(KIND_RECORDING) == 1
    assert entries[0].prev_hash == GENESIS
    for before, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == before.hash
        assert entry.hash == link_hash(entry.prev_hash, entry.payload)
    first = json.loads(entries[0].payload)
    assert first["step"] == "received" and first["ticket"].startswith("110-20261129-")
    assert entries[0].payload == canonical(first)  # sorted keys, the exact hashed text
    closed = json.loads(entries[4].payload)
    assert closed["detail"] == {"by": "seat-01", "disposition": "纠纷"}
    report = await verify(engine)
    assert report.ok, report.findings
    assert report.entries == 11 and report.recordings_checked == 1 and report.pending == 0


async def test_started_journaler_follows_the_service_and_catches_up_rows_written_while_down(
    service: TicketService, engine: AsyncEngine
) -> None:
    await _call(service, "0.9")  # before the journaler exists: found by the start-up catch-up
    journaler = Journaler(engine, interval_s=30)  # long interval: only the listener can wake it
    remove = journaler.attach(service)
    await journaler.start()
    try:
        assert len(await _entries(engine)) == 5
        await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="agi")
        for _ in range(200):
            if len(await _entries(engine)) == 6:
                break
            await asyncio.sleep(0.01)
        assert len(await _entries(engine)) == 6
    finally:
        remove()
        await journaler.stop()
    assert (await verify(engine)).ok


async def test_altered_step_row_is_named(service: TicketService, engine: AsyncEngine, tmp_path: Path) -> None:
    await _two_calls_journaled(service, engine, tmp_path)
    await _exec(engine, update(TicketStep).where(TicketStep.id == 5).values(detail={"disposition": "误报", "by": "x"}))
    report = await verify(engine)
    assert _kinds(report) == [("row_altered", 5)]
    assert report.findings[0].ref == "step 5"
    assert "detail" in report.findings[0].message


async def test_altered_journal_entry_is_named(service: TicketService, engine: AsyncEngine, tmp_path: Path) -> None:
    await _two_calls_journaled(service, engine, tmp_path)
    entry = (await _entries(engine))[2]
    forged = entry.payload.replace('"seat-01"', '"seat-99"')
    await _exec(engine, update(JournalEntry).where(JournalEntry.seq == 3).values(payload=forged))
    report = await verify(engine)
    assert ("altered", 3) in _kinds(report)
    # Re-hashing the forged entry moves the break to the link after it.
    await _exec(
        engine, update(JournalEntry).where(JournalEntry.seq == 3).values(hash=link_hash(entry.prev_hash, forged))
    )
    report = await verify(engine)
    assert _kinds(report)[0] == ("broken_link", 4)


async def test_deleted_step_row_and_deleted_entry_are_named(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    await _two_calls_journaled(service, engine, tmp_path)
    await _exec(engine, delete(TicketStep).where(TicketStep.id == 7))
    report = await verify(engine)
    assert _kinds(report) == [("row_deleted", 7)]
    assert report.findings[0].ref == "step 7"

    await _exec(engine, delete(JournalEntry).where(JournalEntry.seq == 4))
    report = await verify(engine)
    assert _kinds(report)[0] == ("deleted", 4)
    assert "journal entry 4 is missing" in report.findings[0].message


async def test_swapped_entries_and_swapped_rows_are_named(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    await _two_calls_journaled(service, engine, tmp_path)
    # Two journal entries trade places (seq numbers exchanged).
    await _exec(
        engine,
        update(JournalEntry).where(JournalEntry.seq == 6).values(seq=-6),
        update(JournalEntry).where(JournalEntry.seq == 7).values(seq=6),
        update(JournalEntry).where(JournalEntry.seq == -6).values(seq=7),
    )
    report = await verify(engine)
    assert _kinds(report)[0] == ("broken_link", 6)

    # Swap back, then swap the times of two step rows instead.
    await _exec(
        engine,
        update(JournalEntry).where(JournalEntry.seq == 6).values(seq=-6),
        update(JournalEntry).where(JournalEntry.seq == 7).values(seq=6),
        update(JournalEntry).where(JournalEntry.seq == -6).values(seq=7),
    )
    assert (await verify(engine)).ok
    await _exec(
        engine,
        update(TicketStep).where(TicketStep.id == 2).values(at_us=round((T0 + 2) * 1e6)),
        update(TicketStep).where(TicketStep.id == 3).values(at_us=round((T0 + 1) * 1e6)),
    )
    report = await verify(engine)
    assert _kinds(report) == [("row_altered", 2), ("row_altered", 3)]
    assert all("at_us" in f.message for f in report.findings)


async def test_step_inserted_while_the_journaler_runs_breaks_the_lifecycle(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    journaler = await _two_calls_journaled(service, engine, tmp_path)
    # A forged step appended to the first (closed) ticket; the journaler cannot tell it from a real one.
    await _exec(
        engine,
        text(
            "INSERT INTO ticket_steps (ticket_id, seq, step, state_after, at_us, source, detail) "
            "VALUES (1, 6, 'hung_up', 'ended', 1, 'api', '{}')"
        ),
    )
    assert await journaler.catch_up() == 1
    report = await verify(engine)
    assert _kinds(report) == [("illegal_step", 12)]
    assert "step 6 'hung_up'" in report.findings[0].message


async def test_row_inserted_behind_the_journal_is_named(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    journaler = await _two_calls_journaled(service, engine, tmp_path)
    await _call(service, "1.3", close=False)
    # Ids the journal has passed without a row, as rolled-back transactions leave on PostgreSQL.
    await _exec(engine, update(TicketStep).where(TicketStep.id >= 11).values(id=TicketStep.id + 100))
    await journaler.catch_up()
    await _exec(
        engine,
        text(
            "INSERT INTO ticket_steps (id, ticket_id, seq, step, state_after, at_us, source, detail) "
            "VALUES (50, 3, 5, 'closed', 'closed', 1, 'api', '{}')"
        ),
    )
    report = await verify(engine)
    assert [(f.kind, f.ref) for f in report.findings] == [("inserted", "step 50")]


async def test_entry_inserted_into_the_chain_is_named(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    await _two_calls_journaled(service, engine, tmp_path)
    entries = await _entries(engine)
    await _exec(engine, delete(JournalEntry))
    # The forged entry links onto entry 2, and the entry it displaces is re-linked
    # onto the forgery (``prev_hash`` is unique, so it cannot simply share a parent).
    forged = canonical({"kind": "step", "id": 999, "ticket": "110-20261129-000001",
                        "seq": 3, "step": "answered", "state_after": "answered"})
    forged_hash = link_hash(entries[1].hash, forged)
    rows = []
    for entry in entries:
        prev_hash, digest = entry.prev_hash, entry.hash
        if entry.seq == 3:
            rows.append(dict(seq=3, kind="step", ref_id=999, payload=forged, prev_hash=entries[1].hash,
                             hash=forged_hash, at_us=0))
            prev_hash, digest = forged_hash, link_hash(forged_hash, entry.payload)
        shift = 1 if entry.seq >= 3 else 0
        rows.append(dict(seq=entry.seq + shift, kind=entry.kind, ref_id=entry.ref_id, payload=entry.payload,
                         prev_hash=prev_hash, hash=digest, at_us=entry.at_us))
    async with engine.begin() as conn:
        await conn.execute(JournalEntry.__table__.insert(), rows)
    report = await verify(engine)
    assert ("broken_link", 5) in _kinds(report)
    assert ("row_deleted", 3) in _kinds(report)  # it names a step that never existed
    assert ("illegal_step", 4) in _kinds(report)  # the real step 3 now repeats seq 3


async def test_edited_recording_file_is_named(service: TicketService, engine: AsyncEngine, tmp_path: Path) -> None:
    await _two_calls_journaled(service, engine, tmp_path)
    wav = tmp_path / "rec.wav"
    data = bytearray(wav.read_bytes())
    data[100] ^= 0x01  # one bit, same size
    wav.write_bytes(bytes(data))
    report = await verify(engine)
    assert _kinds(report) == [("recording_changed", 11)]
    assert report.findings[0].ref == "recording 1"
    assert str(wav) in report.findings[0].message
    assert (await verify(engine, recordings=False)).ok  # the row itself is untouched

    # Changing the stored digest to match the edited file is caught too.
    import hashlib

    await _exec(
        engine, update(Recording).values(sha256=hashlib.sha256(bytes(data)).hexdigest())
    )
    assert ("row_altered", 11) in _kinds(await verify(engine))
    wav.unlink()
    assert ("recording_missing", 11) in _kinds(await verify(engine))


async def test_anchor_catches_a_consistently_rewritten_chain(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    journaler = await _two_calls_journaled(service, engine, tmp_path)
    anchor_file = tmp_path / "anchors" / "journal.anchors"
    anchor = await journaler.anchor()
    assert anchor.seq == 11
    assert (await _entries(engine))[-1].kind == "anchor"
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY)
    assert report.ok and report.anchors_checked == 1, report.findings

    # Rewrite step 5's row and its entry, and re-link the whole chain after it.
    await _exec(engine, update(TicketStep).where(TicketStep.id == 5).values(source="resync"))
    prev = GENESIS
    for entry in await _entries(engine):
        payload = entry.payload
        if entry.seq == 5:
            payload = payload.replace('"source":"api"', '"source":"resync"')
        new = link_hash(prev, payload)
        await _exec(
            engine,
            update(JournalEntry).where(JournalEntry.seq == entry.seq).values(payload=payload, prev_hash=prev, hash=new),
        )
        prev = new
    assert (await verify(engine)).ok  # without the anchor the rewrite is invisible
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY)
    assert ("anchor_mismatch", 11) in _kinds(report)


async def test_forged_anchor_line_and_truncated_chain(
    service: TicketService, engine: AsyncEngine, tmp_path: Path
) -> None:
    journaler = await _two_calls_journaled(service, engine, tmp_path)
    anchor_file = tmp_path / "anchors" / "journal.anchors"
    await journaler.anchor()
    line = json.loads(anchor_file.read_text().splitlines()[0])
    line["hash"] = "f" * 64
    with anchor_file.open("a") as f:
        f.write(canonical(line) + "\n")
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY)
    assert [f.kind for f in report.findings] == ["anchor_forged"]
    assert "line 2" in report.findings[0].message

    await _exec(engine, delete(JournalEntry).where(JournalEntry.seq >= 10))
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY)
    assert "anchor_truncated" in [f.kind for f in report.findings]


def test_cli_verify_exits_non_zero_and_names_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    key_file = tmp_path / "journal.key"
    key_file.write_bytes(KEY + b"\n")
    os.chmod(key_file, 0o600)

    async def prepare() -> None:
        engine = make_engine(db_url)
        await init_schema(engine)
        service = TicketService(engine)
        await _call(service, "1.1")
        journaler = Journaler(engine, anchor_key=KEY, anchor_file=tmp_path / "journal.anchors")
        await journaler.catch_up()
        await journaler.anchor()
        await engine.dispose()

    async def tamper() -> None:
        engine = make_engine(db_url)
        await _exec(engine, update(TicketStep).where(TicketStep.id == 2).values(step="abandoned"))
        await engine.dispose()

    asyncio.run(prepare())
    monkeypatch.setenv("JIEJING_DB_URL", db_url)
    monkeypatch.setenv("JIEJING_JOURNAL_KEY_FILE", str(key_file))
    monkeypatch.setenv("JIEJING_JOURNAL_ANCHOR_FILE", str(tmp_path / "journal.anchors"))
    assert cli.main(["journal", "verify"]) == 0
    assert "journal: intact" in capsys.readouterr().out
    asyncio.run(tamper())
    assert cli.main(["journal", "verify"]) == 1
    out = capsys.readouterr().out
    assert "FOUND row_altered: entry 2: step 2" in out
    assert cli.main(["journal", "verify", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["findings"][0]["seq"] == 2



async def test_a_new_center_gets_its_first_anchor_at_once(service: TicketService, engine: AsyncEngine,
                                                         tmp_path: Path) -> None:
    """Found installing a center: `journal verify` failed (anchor file missing) for the first hour, and
    `jiejing backup` refused, until the first interval's anchor."""
    await _call(service, "1.1")
    anchor_file = tmp_path / "anchors" / "journal.anchors"
    journaler = Journaler(engine, interval_s=0.05, batch_delay_s=0, anchor_key=KEY, anchor_file=anchor_file)
    await journaler.start()
    try:
        for _ in range(300):  # the line is written first, the chain entry (and the count) after it
            if journaler.anchored:
                break
            await asyncio.sleep(0.01)
        assert anchor_file.exists() and journaler.anchored == 1
        await asyncio.sleep(0.2)
        assert journaler.anchored == 1  # then once per interval (an hour here), not every round
    finally:
        await journaler.stop()
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY)
    assert report.ok and report.anchors_checked == 1, report.findings
