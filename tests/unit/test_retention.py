"""Retention: old tickets and recordings deleted, the expiry journaled, verification still clean; the daily task."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.lifecycle import Step
from core.calls.tables import Recording, Ticket, TicketStep
from core.calls.tickets import TicketService
from core.dispatch.planner import IncidentRow
from core.quality import retention
from core.quality.journal import KIND_EXPIRY, Journaler, verify
from core.quality.journal_status import JournalWatch
from core.quality.retention import RetentionSchedule, expire
from core.quality.tables import JournalEntry
from core.triage.aml_service import AmlMessageRow
from core.triage.classify import (
    TriageRow,
    read_hourly_counts,
    rebuild_hourly_counts,
    upsert_query_copy,
)
from core.triage.push import PushRow
from core.triage.queries import hourly_series
from core.triage.repeat import TicketLinkRow
from tests.unit.test_journal import KEY

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
    result = await expire(engine, journaler, older_than_days=180, clock=clock, recordings_dir=tmp_path)
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

    report = await verify(engine, clock=clock)
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
    report = await verify(engine, clock=clock)
    assert [(f.kind, f.ref) for f in report.findings] == [("row_deleted", "step 4")]
    assert b.number in report.findings[0].message


async def _old_call(service: TicketService, clock: Any, uid: str, at: float, wav: Path) -> str:
    clock.now = at  # the ticket's creation time comes from the service's clock
    ticket = await service.open_call(uniqueid=uid, caller_id="13800000000", at=at, source="agi")
    await service.record_step(uid, Step.ABANDONED, at=at + 5, source="ami")
    await service.close(ticket.number, disposition="无效", by="seat-01")
    wav.write_bytes(b"call audio " + uid.encode())
    await service.bind_recording(ticket.number, str(wav))
    return ticket.number


async def _numbers(engine: AsyncEngine) -> set[str]:
    async with async_sessionmaker(engine)() as session:
        return set((await session.scalars(select(Ticket.number))).all())


async def _until(condition: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_the_daily_task_expires_once_a_day_and_spares_newer_tickets(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = await _old_call(service, clock, "1.1", T0, tmp_path / "old.wav")
    middle = await _old_call(service, clock, "1.2", T0 + 100 * DAY, tmp_path / "middle.wav")
    recent = await _old_call(service, clock, "1.3", T0 + 181 * DAY, tmp_path / "recent.wav")
    journaler = Journaler(engine, clock=clock)
    schedule = RetentionSchedule(engine, journaler, days=180, clock=clock, poll_s=0.01, recordings_dir=tmp_path)
    assert schedule.status()["last_run_at"] is None
    with caplog.at_level(logging.INFO, logger="core.quality.retention"):
        await schedule.start()
        try:
            # The first run comes at start: only the ticket older than 180 days goes.
            await _until(lambda: schedule.status()["runs"] == 1)
            assert await _numbers(engine) == {middle, recent}
            assert not (tmp_path / "old.wav").exists() and (tmp_path / "middle.wav").exists()
            status = schedule.status()
            assert status["last_result"]["tickets"] == 1 and status["last_result"]["recordings"] == 1
            assert status["last_run_at"].startswith("2027-05-29") and status["next_run_at"].startswith("2027-05-30")
            assert any("daily run expired 1 tickets" in r.getMessage() for r in caplog.records)

            # Half a day later many polls pass, none runs.
            clock.now += DAY / 2
            await asyncio.sleep(0.1)
            assert schedule.status()["runs"] == 1

            # A day after the first run: runs again, the 82-day-old ticket is still kept.
            clock.now += DAY / 2
            await _until(lambda: schedule.status()["runs"] == 2)
            assert schedule.status()["last_result"]["tickets"] == 0
            assert await _numbers(engine) == {middle, recent}

            # A hundred days on, that ticket is past the period; the newest still stays.
            clock.now += 100 * DAY
            await _until(lambda: schedule.status()["runs"] == 3)
            assert await _numbers(engine) == {recent}
            assert (tmp_path / "recent.wav").exists() and not (tmp_path / "middle.wav").exists()
        finally:
            await schedule.stop()
    report = await verify(engine, clock=clock)
    assert report.ok, report.findings
    assert old not in await _numbers(engine)


async def test_zero_days_keeps_everything_and_starts_no_task(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    await _old_call(service, clock, "1.1", T0, tmp_path / "old.wav")
    clock.now = T0 + 4000 * DAY
    await service.open_call(uniqueid="1.2", caller_id="1", at=clock.now, source="agi")
    schedule = RetentionSchedule(engine, Journaler(engine, clock=clock), days=0, clock=clock, poll_s=0.01)
    await schedule.start()
    assert await schedule.run_due() is None
    await schedule.stop()
    assert schedule.status() == {"enabled": False, "retention_days": 0, "runs": 0, "last_run_at": None,
                                 "next_run_at": None, "last_error": None, "last_result": None}
    assert len(await _numbers(engine)) == 2


async def test_journal_status_reports_the_walk_and_retention_and_is_cached(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    number = await _old_call(service, clock, "1.1", T0, tmp_path / "old.wav")
    journaler = Journaler(engine, clock=clock)
    await journaler.catch_up()
    schedule = RetentionSchedule(engine, journaler, days=30, clock=clock)
    watch = JournalWatch(engine, retention=schedule, clock=clock, max_age_s=60)
    (tmp_path / "old.wav").write_bytes(b"changed")  # files are not re-hashed here: the CLI does that
    status = await watch.status()
    journal = status["journal"]
    assert journal["ok"] and journal["entries"] == 4 and journal["recordings_checked"] == 0
    assert journal["recordings_rehashed"] is False and journal["checked_at"].startswith("2026-11-29T11:30")
    assert status["retention"]["enabled"] and status["retention"]["runs"] == 0

    async with engine.begin() as conn:  # a step rewritten behind the journal's back
        await conn.execute(TicketStep.__table__.update().values(source="forged"))
    assert (await watch.status())["journal"]["ok"]  # still the minute-old walk
    clock.now += 60
    journal = (await watch.status())["journal"]
    assert not journal["ok"] and journal["findings_total"] == 3
    assert {f["kind"] for f in journal["findings"]} == {"row_altered"} and number in journal["findings"][0]["message"]


async def test_expiry_takes_the_tickets_copies_and_counts_with_it(
    service: TicketService, engine: AsyncEngine, clock: Any
) -> None:
    """A ticket with an incident location, a query copy, a repeat link and a push expires whole.

    Found on a store with the query copies: the rows referring to the ticket
    by foreign key made the delete fail (SQLite enforces them here, as
    PostgreSQL does), so nothing ever expired. The hourly count of an expired
    ticket goes with it: /api/stats counts the tickets on record.
    """
    first = await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="agi")
    again = await service.open_call(uniqueid="1.2", caller_id="13800000000", at=T0 + 60, source="agi")
    for uid, number in (("1.1", first.number), ("1.2", again.number)):
        await service.record_step(uid, Step.ABANDONED, at=T0 + 90, source="ami")
        await service.close(number, disposition="无效", by="seat-01")
    clock.now = T0 + 200 * DAY
    recent = await service.open_call(uniqueid="1.3", caller_id="13800000000", at=clock.now, source="agi")
    for number, created in ((first.number, first.created_at_us), (again.number, again.created_at_us),
                            (recent.number, recent.created_at_us)):
        await upsert_query_copy(engine, number, created, type="dispute", station_id="east", cell="88309a4f2bfffff",
                                updated_at_us=created)
    async with engine.begin() as conn:
        await conn.execute(insert(IncidentRow), [
            {"number": n, "address": "人民路1号", "lat": 31.23, "lon": 121.47, "cell": "88309a4f2bfffff",
             "station_id": "east", "located_at_us": first.created_at_us} for n in (first.number, recent.number)])
        await conn.execute(insert(TicketLinkRow).values(number=again.number, linked_to=first.number,
                                                        linked_at_us=again.created_at_us))
        await conn.execute(insert(PushRow).values(
            number=first.number, target="anti_fraud", url="http://desk.invalid/", payload={"caller": "138"},
            state="sent", attempts=1, next_at_us=0, created_at_us=0))
    journaler = Journaler(engine, clock=clock)
    await journaler.catch_up()

    result = await expire(engine, journaler, older_than_days=180, clock=clock)

    assert result.tickets == 2
    assert await _numbers(engine) == {recent.number}
    async with engine.connect() as conn:
        assert (await conn.execute(select(TriageRow.number))).scalars().all() == [recent.number]
        assert (await conn.execute(select(IncidentRow.number))).scalars().all() == [recent.number]
        assert (await conn.execute(select(func.count()).select_from(TicketLinkRow))).scalar_one() == 0
        assert (await conn.execute(select(func.count()).select_from(PushRow))).scalar_one() == 0
    async def counted() -> dict[tuple[str, str | None], int]:
        around_old = await hourly_series(engine, first.created_at_us - 3600_000_000, first.created_at_us + 7200_000_000)
        around_new = await hourly_series(engine, recent.created_at_us, recent.created_at_us + 1)
        assert around_old.total == 0
        return {key: sum(series) for key, series in around_new.counts.items()}

    assert await counted() == {("dispute", "east"): 1}
    async with engine.connect() as conn:
        assert sum((await read_hourly_counts(conn)).values()) == 1
    assert await rebuild_hourly_counts(engine) >= 1  # a rebuild from the copies agrees
    assert await counted() == {("dispute", "east"): 1}
    assert (await verify(engine, clock=clock)).ok


async def test_retention_removes_files_only_inside_the_recordings_folder(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A recording path is data in the store: one that points outside the recordings folder (a forged row,
    a ``..``, a symlink out of it) is never unlinked by the retention, only reported."""
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    precious = elsewhere / "passwd"
    precious.write_bytes(b"root:x:0:0")
    (monitor / "link.wav").symlink_to(precious)
    inside = await _old_call(service, clock, "1.1", T0, monitor / "inside.wav")
    for uid, path in (("1.2", precious), ("1.3", monitor / ".." / "etc" / "passwd"), ("1.4", monitor / "link.wav")):
        clock.now = T0
        ticket = await service.open_call(uniqueid=uid, caller_id="13800000000", at=T0, source="ami")
        await service.record_step(uid, Step.ABANDONED, at=T0 + 5, source="ami")
        await service.close(ticket.number, disposition="无效", by="seat-01")
        await service.bind_recording(ticket.number, str(path))
    # a newer call holds the newest step and recording ids (the ticket holding them waits for a later run)
    recent = await _old_call(service, clock, "1.5", T0 + 200 * DAY, monitor / "recent.wav")
    journaler = Journaler(engine, clock=clock)
    result = await expire(engine, journaler, older_than_days=180, clock=clock, recordings_dir=monitor)
    assert (result.tickets, result.recordings, result.files_removed, result.files_left) == (4, 4, 1, 3)
    assert inside and recent and not (monitor / "inside.wav").exists() and (monitor / "recent.wav").exists()
    assert precious.read_bytes() == b"root:x:0:0" and (monitor / "link.wav").is_symlink()
    assert "outside the recordings folder" in caplog.text
    # without a recordings folder, nothing is removed at all
    await _old_call(service, clock, "1.6", T0 + 300 * DAY, monitor / "newest.wav")
    clock.now = T0 + 300 * DAY
    late = await expire(engine, journaler, older_than_days=90, clock=clock)
    assert (late.tickets, late.files_removed, late.files_left) == (1, 0, 1)
    assert (monitor / "recent.wav").exists()


def _age(path: Path, at: float) -> None:
    os.utime(path, ns=(round(at * 1e9), round(at * 1e9)), follow_symlinks=False)


async def test_recording_files_no_ticket_names_expire_after_the_period_and_are_journaled(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    """The fallback ``<uniqueid>.wav`` of a call whose file was never bound (the backend was down, the file came
    too late) goes once it is older than the period, in a signed expiry entry of its own; every file a recording
    row names stays, however old, and so does anything that is not a recording directly in the folder."""
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    alias = tmp_path / "spool"
    alias.symlink_to(monitor)  # the folder as the backend once reached it: a row's path is as it was bound
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.wav").write_bytes(b"not ours")
    await _old_call(service, clock, "1.1", T0, monitor / "1.1.wav")  # expires with its ticket
    live = await service.open_call(uniqueid="1.2", caller_id="13800000000", at=T0, source="agi")  # still up
    (monitor / f"{live.number}_1.2.wav").write_bytes(b"a long call")
    await service.bind_recording(live.number, str(alias / f"{live.number}_1.2.wav"))
    await _old_call(service, clock, "1.3", T0 + 200 * DAY, monitor / "1.3.wav")  # recent: the newest ids
    unbound = {"1.4.wav": T0, "1.5.WAV": T0 + 10 * DAY, "1.6.wav": T0 + 190 * DAY, ".1.7.wav": T0,
               "notes.txt": T0, "jiejing.db": T0}
    for name, at in unbound.items():
        (monitor / name).write_bytes(b"RIFF fallback " + name.encode())
    (monitor / "sub").mkdir()
    (monitor / "sub" / "1.8.wav").write_bytes(b"kept in a folder of its own")
    (monitor / "link.wav").symlink_to(elsewhere / "precious.wav")
    for path in [*monitor.iterdir(), monitor / "sub" / "1.8.wav", elsewhere / "precious.wav"]:
        _age(path, unbound.get(path.name, T0))
    _age(monitor / "1.3.wav", T0 + 200 * DAY)
    journaler = Journaler(engine, clock=clock, anchor_key=KEY, anchor_file=tmp_path / "anchors")
    schedule = RetentionSchedule(engine, journaler, days=180, clock=clock, recordings_dir=monitor)

    result = await schedule.run_due()

    assert result is not None
    assert (result.tickets, result.files_removed, result.unbound_files, len(result.entries)) == (1, 1, 2, 2)
    assert sorted(p.name for p in monitor.iterdir()) == [".1.7.wav", "1.3.wav", "1.6.wav",
                                                         f"{live.number}_1.2.wav", "jiejing.db", "link.wav",
                                                         "notes.txt", "sub"]
    assert (monitor / "sub" / "1.8.wav").exists() and (elsewhere / "precious.wav").read_bytes() == b"not ours"
    async with async_sessionmaker(engine)() as session:
        entry = await session.get(JournalEntry, result.entries[1])
    assert entry is not None and entry.kind == KIND_EXPIRY
    payload = json.loads(entry.payload)
    assert (payload["tickets"], payload["recordings"], payload["retention_days"]) == ([], [], 180)
    contents = {name: b"RIFF fallback " + name.encode() for name in ("1.4.wav", "1.5.WAV")}
    assert payload["unbound_files"] == [
        {"path": str(monitor / name), "size": len(data), "modified_us": round(unbound[name] * 1e6),
         "sha256": hashlib.sha256(data).hexdigest()} for name, data in contents.items()]
    assert payload["mac"] and payload["before_us"] == round((T0 + 20 * DAY) * 1e6)
    report = await verify(engine, anchor_key=KEY, clock=clock)
    assert report.ok, report.findings
    assert schedule.status()["last_result"]["unbound_files"] == 2 and schedule.expired["unbound_files"] == 2

    # The next day: nothing more to remove, and no entry for nothing.
    clock.now += DAY
    again = await schedule.run_due()
    assert again is not None and (again.unbound_files, again.entries) == (0, [])
    # Once the file modified 10 days before the first run is past the period too, it goes.
    clock.now = T0 + 371 * DAY
    later = await schedule.run_due()
    assert later is not None and later.unbound_files == 1 and not (monitor / "1.6.wav").exists()
    assert (monitor / f"{live.number}_1.2.wav").exists() and (monitor / "1.3.wav").exists()


def test_a_file_changed_after_it_was_hashed_is_left(tmp_path: Path) -> None:
    wav = tmp_path / "1.1.wav"
    wav.write_bytes(b"first")
    _age(wav, T0)
    (listed,) = retention._old_files(tmp_path, round((T0 + DAY) * 1e6))
    assert [about["sha256"] for _, about in retention._describe([listed])] == [hashlib.sha256(b"first").hexdigest()]
    wav.write_bytes(b"other")  # same size, new content and time: not the file the entry names
    assert retention._remove_unbound([listed]) == 0 and wav.exists()
    assert retention._old_files(tmp_path / "missing", 0) == []


async def _call_with_photos(service: TicketService, clock: Any, uid: str, at: float, *photos: bytes) -> str:
    clock.now = at
    ticket = await service.open_call(uniqueid=uid, caller_id="13800000000", at=at, source="agi")
    for index, data in enumerate(photos):
        await service.record_step(uid, Step.ATTACHMENT_KEPT, at=at + 1, source="api", index=index, kind="photo",
                                  url=f"https://gateway.invalid/{uid}/{index}.jpg",
                                  sha256=hashlib.sha256(data).hexdigest(), size=len(data), content_type="image/jpeg")
    await service.record_step(uid, Step.ABANDONED, at=at + 5, source="ami")
    await service.close(ticket.number, disposition="无效", by="seat-01")
    return ticket.number


async def test_kept_attachments_expire_with_their_ticket_unless_another_ticket_names_them(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    photos = tmp_path / "attachments"
    photos.mkdir()
    only_old, shared = b"\xff\xd8\xff only the old report's", b"\xff\xd8\xff sent to both"
    names = {data: f"{hashlib.sha256(data).hexdigest()}.jpg" for data in (only_old, shared)}
    for data, name in names.items():
        (photos / name).write_bytes(data)
    (photos / "notes.txt").write_text("named by no step")
    old = await _call_with_photos(service, clock, "1.1", T0, only_old, shared)
    middle = await _call_with_photos(service, clock, "1.2", T0 + 100 * DAY, shared)  # the same photo again
    await _call_with_photos(service, clock, "1.3", T0 + 250 * DAY)  # the newest ids
    journaler = Journaler(engine, clock=clock, anchor_key=KEY, anchor_file=tmp_path / "anchors")
    schedule = RetentionSchedule(engine, journaler, days=180, clock=clock, attachments_dir=photos)

    result = await schedule.run_due()

    assert result is not None and (result.tickets, result.attachments, result.attachment_files_removed) == (1, 1, 1)
    assert old not in await _numbers(engine)
    assert sorted(p.name for p in photos.iterdir()) == sorted([names[shared], "notes.txt"])
    async with async_sessionmaker(engine)() as session:
        entry = await session.get(JournalEntry, result.entries[0])
    assert entry is not None
    payload = json.loads(entry.payload)
    assert payload["tickets"] == [old] and payload["attachments"] == [
        {"sha256": hashlib.sha256(only_old).hexdigest(), "file": names[only_old]}]
    assert schedule.status()["last_result"]["attachments"] == 1 and schedule.expired["attachments"] == 1

    # Once the other ticket naming the shared photo expires too, its file goes.
    clock.now = T0 + 290 * DAY
    later = await schedule.run_due()
    assert later is not None and later.tickets == 1 and later.attachment_files_removed == 1
    assert middle not in await _numbers(engine)
    assert [p.name for p in photos.iterdir()] == ["notes.txt"]
    report = await verify(engine, anchor_key=KEY, clock=clock)
    assert report.ok, report.findings


async def test_kept_attachment_files_are_removed_only_inside_the_attachments_folder(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    photos, elsewhere = tmp_path / "attachments", tmp_path / "elsewhere"
    photos.mkdir()
    elsewhere.mkdir()
    data = b"\xff\xd8\xff a photo"
    name = f"{hashlib.sha256(data).hexdigest()}.jpg"
    (elsewhere / name).write_bytes(data)
    (photos / name).symlink_to(elsewhere / name)  # a link out of the folder: left, the target too
    await _call_with_photos(service, clock, "1.1", T0, data)
    await _call_with_photos(service, clock, "1.2", T0 + 250 * DAY)
    journaler = Journaler(engine, clock=clock)
    result = await expire(engine, journaler, older_than_days=180, clock=clock, attachments_dir=photos)
    assert (result.tickets, result.attachments, result.attachment_files_removed) == (1, 1, 0)
    assert (elsewhere / name).read_bytes() == data and (photos / name).is_symlink()
    # Without the folder no attachment file is removed, but the entry still names it.
    other = b"\xff\xd8\xff another photo"
    await _call_with_photos(service, clock, "1.3", T0 + 10 * DAY, other)
    await _call_with_photos(service, clock, "1.4", T0 + 260 * DAY)
    (photos / f"{hashlib.sha256(other).hexdigest()}.jpg").write_bytes(other)
    result = await expire(engine, journaler, older_than_days=180, clock=clock)
    assert (result.tickets, result.attachments, result.attachment_files_removed) == (1, 1, 0)
    assert (photos / f"{hashlib.sha256(other).hexdigest()}.jpg").exists()


async def test_aml_messages_older_than_the_period_are_deleted_and_counted(
    service: TicketService, engine: AsyncEngine, clock: Any, tmp_path: Path
) -> None:
    number = await _old_call(service, clock, "1.1", T0, tmp_path / "1.1.wav")
    await _old_call(service, clock, "1.2", T0 + 200 * DAY, tmp_path / "1.2.wav")  # the newest ids
    received = {"old-bound": (T0, number), "old-unbound": (T0 + 10 * DAY, None),
                "recent": (T0 + 150 * DAY, number)}
    async with engine.begin() as conn:
        for raw, (at, ticket) in received.items():
            await conn.execute(insert(AmlMessageRow).values(
                received_at_us=round(at * 1e6), channel="sms", msisdn="13800000000", raw=raw,
                verdict="refused" if ticket is None else "located", ticket_number=ticket))
    journaler = Journaler(engine, clock=clock, anchor_key=KEY, anchor_file=tmp_path / "anchors")
    schedule = RetentionSchedule(engine, journaler, days=180, clock=clock, recordings_dir=tmp_path)

    result = await schedule.run_due()

    assert result is not None and (result.tickets, result.aml_messages, len(result.entries)) == (1, 2, 2)
    async with async_sessionmaker(engine)() as session:
        assert (await session.scalars(select(AmlMessageRow.raw))).all() == ["recent"]
        entry = await session.get(JournalEntry, result.entries[1])
    assert entry is not None and entry.kind == KIND_EXPIRY
    payload = json.loads(entry.payload)
    assert (payload["tickets"], payload["recordings"], payload["aml_messages"]) == ([], [], 2) and payload["mac"]
    assert schedule.status()["last_result"]["aml_messages"] == 2 and schedule.expired["aml_messages"] == 2
    report = await verify(engine, anchor_key=KEY, clock=clock)
    assert report.ok, report.findings

    clock.now += DAY  # nothing left that old: no entry for nothing
    again = await schedule.run_due()
    assert again is not None and (again.aml_messages, again.entries) == (0, [])
