"""Expiry entries under verification: an expiry is checked against the retention rule and the tickets' own times,
and is signed like an anchor, so a deletion cannot be passed off as retention."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.lifecycle import Step
from core.calls.tables import Recording, Ticket, TicketStep
from core.calls.tickets import TicketService
from core.quality.journal import (
    KIND_EXPIRY,
    Journaler,
    append_entries,
    canonical,
    verify,
)
from core.quality.retention import expire
from core.quality.tables import JournalEntry
from core.store import make_engine
from core.tables import init_schema
from core.triage.classify import forget_query_copies
from telephony import cli
from tests.unit.conftest import FakeClock

T0 = 1_795_951_800.0
DAY = 86400.0
KEY = b"k" * 32


async def _closed_call(
    service: TicketService, clock: Any, uid: str, at: float, *, closed_at: float | None = None
) -> str:
    clock.now = at
    ticket = await service.open_call(uniqueid=uid, caller_id="13800000000", at=at, source="agi")
    await service.record_step(uid, Step.ABANDONED, at=at + 5, source="ami")
    await service.close(ticket.number, disposition="无效", by="seat-01", at=closed_at if closed_at else at + 10)
    return ticket.number


async def _forge_expiry(engine: AsyncEngine, numbers: list[str], *, run_at: float, days: int,
                        mac: str | None = None) -> int:
    """What write access to the store allows: delete tickets and journal an expiry that names them."""
    async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        ids = list((await session.scalars(select(Ticket.id).where(Ticket.number.in_(numbers)))).all())
        recordings = (await session.scalars(select(Recording).where(Recording.ticket_id.in_(ids)))).all()
        payload: dict[str, Any] = {
            "kind": KIND_EXPIRY,
            "before_us": round((run_at - days * DAY) * 1_000_000),
            "retention_days": days,
            "tickets": numbers,
            "recordings": [{"id": r.id, "path": r.path, "sha256": r.sha256} for r in recordings],
        }
        if mac is not None:
            payload["mac"] = mac
        (entry,) = await append_entries(session, [(KIND_EXPIRY, None, payload)], at_us=round(run_at * 1_000_000))
        await forget_query_copies(await session.connection(), numbers)
        await session.execute(delete(Recording).where(Recording.ticket_id.in_(ids)))
        await session.execute(delete(TicketStep).where(TicketStep.ticket_id.in_(ids)))
        await session.execute(delete(Ticket).where(Ticket.id.in_(ids)))
    return entry.seq


def _kinds(report: Any) -> set[str]:
    return {f.kind for f in report.findings}


@pytest.mark.parametrize(
    ("case", "run_at", "days", "configured"),
    [
        # 180 days stated, but the ticket closed 10 days before the expiry
        ("before the period", T0 + 10 * DAY, 180, None),
        # times consistent with the stated 1 day, but the center keeps tickets 180 days
        ("shorter rule than configured", T0 + 10 * DAY, 1, 180),
        # dated 400 days on, while verification runs 10 days after the call
        ("dated after verification", T0 + 400 * DAY, 180, None),
    ],
)
async def test_a_deleted_ticket_is_not_excused_by_an_expiry_that_breaks_the_rule(
    service: TicketService, engine: AsyncEngine, clock: Any, case: str, run_at: float, days: int,
    configured: int | None,
) -> None:
    victim = await _closed_call(service, clock, "1.1", T0)
    await _closed_call(service, clock, "1.2", T0 + 1)  # holds the newest step, as retention requires
    await Journaler(engine, clock=clock).catch_up()
    seq = await _forge_expiry(engine, [victim], run_at=run_at, days=days)
    clock.now = T0 + 10 * DAY

    report = await verify(engine, retention_days=configured, clock=clock)

    premature = [f for f in report.findings if f.kind == "expiry_premature"]
    assert [f.seq for f in premature] == [seq], (case, report.findings)
    assert victim in premature[0].message
    # the rows the entry claims to have expired count as deleted by hand
    deleted = [f for f in report.findings if f.kind == "row_deleted"]
    assert len(deleted) == 3 and all(victim in f.message for f in deleted)


async def test_an_expiry_of_a_ticket_still_open_is_a_finding(
    service: TicketService, engine: AsyncEngine, clock: Any
) -> None:
    clock.now = T0
    live = await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="agi")
    await _closed_call(service, clock, "1.2", T0 + 1)
    await Journaler(engine, clock=clock).catch_up()
    clock.now = T0 + 200 * DAY
    seq = await _forge_expiry(engine, [live.number], run_at=clock.now, days=180)

    report = await verify(engine, clock=clock)

    assert ("expiry_premature", seq) in {(f.kind, f.seq) for f in report.findings}
    assert "row_deleted" in _kinds(report)


async def test_an_expiry_naming_a_recording_of_another_ticket_is_a_finding(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    old = await _closed_call(service, clock, "1.1", T0)
    other = await _closed_call(service, clock, "1.2", T0 + 1)
    wav = tmp_path / "other.wav"
    wav.write_bytes(b"other call")
    await service.bind_recording(other, str(wav))
    await _closed_call(service, clock, "1.3", T0 + 2)
    await Journaler(engine, clock=clock).catch_up()
    clock.now = T0 + 200 * DAY
    # An expiry of the old ticket, stretched to also cover the other ticket's recording.
    async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        recording = await session.scalar(select(Recording))
        assert recording is not None
        payload = {"kind": KIND_EXPIRY, "before_us": round((clock.now - 180 * DAY) * 1e6), "retention_days": 180,
                   "tickets": [old], "recordings": [{"id": recording.id, "path": recording.path,
                                                     "sha256": recording.sha256}]}
        (entry,) = await append_entries(session, [(KIND_EXPIRY, None, payload)], at_us=round(clock.now * 1e6))
        await session.execute(delete(Recording))
    report = await verify(engine, clock=clock)
    assert ("expiry_mismatch", entry.seq) in {(f.kind, f.seq) for f in report.findings}
    assert ("row_deleted", f"recording {recording.id}") in {(f.kind, f.ref) for f in report.findings}


async def test_a_ticket_expires_only_a_retention_period_after_its_last_step(
    service: TicketService, engine: AsyncEngine, clock: Any
) -> None:
    """The period runs from the ticket's closing: a ticket opened long ago but closed lately is kept."""
    late = await _closed_call(service, clock, "1.1", T0, closed_at=T0 + 100 * DAY)
    journaler = Journaler(engine, clock=clock)
    clock.now = T0 + 200 * DAY
    await service.open_call(uniqueid="1.2", caller_id="1", at=clock.now, source="agi")
    assert (await expire(engine, journaler, older_than_days=180, clock=clock)).tickets == 0
    clock.now = T0 + 281 * DAY
    assert (await expire(engine, journaler, older_than_days=180, clock=clock)).tickets == 1
    async with async_sessionmaker(engine)() as session:
        assert await session.scalar(select(Ticket.id).where(Ticket.number == late)) is None
    report = await verify(engine, retention_days=180, clock=clock)
    assert report.ok, report.findings


async def test_expiries_are_signed_and_an_unsigned_or_forged_one_is_a_finding(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    anchor_file = tmp_path / "journal.anchors"
    old = await _closed_call(service, clock, "1.1", T0)
    unsigned_victim = await _closed_call(service, clock, "1.2", T0 + 10 * DAY)
    copied_victim = await _closed_call(service, clock, "1.3", T0 + 10 * DAY + 1)
    await _closed_call(service, clock, "1.4", T0 + 10 * DAY + 2)
    journaler = Journaler(engine, clock=clock, anchor_key=KEY, anchor_file=anchor_file)
    clock.now = T0 + 200 * DAY
    result = await expire(engine, journaler, older_than_days=190, clock=clock)
    assert result.tickets == 1
    async with async_sessionmaker(engine)() as session:
        signed = json.loads(await session.scalar(select(JournalEntry.payload).where(JournalEntry.kind == KIND_EXPIRY)))
    assert signed["tickets"] == [old] and len(signed["mac"]) == 64
    await journaler.anchor()
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY, clock=clock)
    assert report.ok, report.findings

    # Both forgeries are consistent with a 180-day rule; only the signature gives them away.
    unsigned_seq = await _forge_expiry(engine, [unsigned_victim], run_at=clock.now, days=180)
    copied_seq = await _forge_expiry(engine, [copied_victim], run_at=clock.now, days=180, mac=signed["mac"])
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY, clock=clock)
    found = {(f.kind, f.seq) for f in report.findings}
    assert {("expiry_unsigned", unsigned_seq), ("expiry_forged", copied_seq)} <= found, report.findings
    deleted = [f.message for f in report.findings if f.kind == "row_deleted"]
    assert len(deleted) == 6
    assert sum(unsigned_victim in m for m in deleted) == 3 and sum(copied_victim in m for m in deleted) == 3

    # Without the key the signatures cannot be checked, and verification says so.
    report = await verify(engine, clock=clock)
    assert any("expiry signatures not checked" in note for note in report.notes)


def _old_release_anchor_line(key: bytes, seq: int, head: str, at_us: int) -> str:
    """An anchor line as releases before signed expiries wrote it."""
    mac = hmac.new(key, f"{seq}:{head}:{at_us}".encode("ascii"), hashlib.sha256).hexdigest()
    return canonical({"seq": seq, "hash": head, "at_us": at_us, "mac": mac})


async def test_an_unsigned_expiry_is_accepted_only_when_an_older_release_anchored_it(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    """Expiries written before expiries were signed carry no signature; an older release's anchor over them
    shows they were in the chain before this release ran. An unsigned one that no such anchor covers was not
    written by an older release: this one signs every expiry."""
    anchor_file = tmp_path / "journal.anchors"
    await _closed_call(service, clock, "1.1", T0)
    await _closed_call(service, clock, "1.2", T0 + 1)
    clock.now = T0 + 200 * DAY
    old_release = Journaler(engine, clock=clock)  # no key: its expiry entries are unsigned, as before
    assert (await expire(engine, old_release, older_than_days=180, clock=clock)).tickets == 1
    async with async_sessionmaker(engine)() as session:
        expiry_seq, head_seq, head = (await session.execute(
            select(JournalEntry.seq, JournalEntry.seq, JournalEntry.hash).order_by(JournalEntry.seq.desc()).limit(1)
        )).one()
    assert "mac" not in json.loads((await _entry(engine, expiry_seq)).payload)

    # Anchored only by this release: nothing shows the unsigned expiry is older than it.
    await Journaler(engine, clock=clock, anchor_key=KEY, anchor_file=anchor_file).anchor()
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY, clock=clock)
    assert ("expiry_unsigned", expiry_seq) in {(f.kind, f.seq) for f in report.findings}

    # The older release had anchored a head at or after it: accepted.
    with anchor_file.open("a") as f:
        f.write(_old_release_anchor_line(KEY, head_seq, head, round(clock.now * 1e6)) + "\n")
    report = await verify(engine, anchor_file=anchor_file, anchor_key=KEY, clock=clock)
    assert report.ok, report.findings


async def _entry(engine: AsyncEngine, seq: int) -> JournalEntry:
    async with async_sessionmaker(engine)() as session:
        entry = await session.scalar(select(JournalEntry).where(JournalEntry.seq == seq))
    assert entry is not None
    return entry


def test_cli_verify_names_an_expiry_shorter_than_the_configured_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def prepare() -> str:
        engine = make_engine(db_url)
        await init_schema(engine)
        clock = FakeClock(T0)
        service = TicketService(engine, clock=clock)
        victim = await _closed_call(service, clock, "1.1", T0)
        await _closed_call(service, clock, "1.2", T0 + 1)
        await Journaler(engine, clock=clock).catch_up()
        await _forge_expiry(engine, [victim], run_at=T0 + 3 * DAY, days=1)  # times agree with a 1-day rule
        await engine.dispose()
        return victim

    victim = asyncio.run(prepare())
    monkeypatch.setenv("JIEJING_DB_URL", db_url)
    monkeypatch.setenv("JIEJING_RETENTION_DAYS", "180")
    assert cli.main(["journal", "verify"]) == 1
    out = capsys.readouterr().out
    assert "FOUND expiry_premature: entry 7: expiry entry 7 breaks the retention rule: used 1 days" in out
    assert f"FOUND row_deleted: entry 1: step 1 (ticket {victim})" in out
