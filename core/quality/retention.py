"""Retention: tickets and recordings older than the retention period are deleted, and the deletion is journaled.

The period runs from a ticket's last step (its closing): a ticket expires once every step is older
than the period. Only tickets whose call is over (text reports: closed) and whose every step is journaled expire, and
never the ticket holding the newest step or recording (see ``expire``). Each
batch writes one ``expiry`` journal entry — the cutoff and the period, the ticket numbers, and each
recording's id, path and sha256 — in the same transaction that deletes the
rows, so verification knows these rows are gone by rule, not by tampering. With the journal's anchor
key the entry is signed, and verification checks it against the rule and the tickets' journaled steps.
Recording files are removed after the commit; if the process dies in between,
the leftover files are named in the entry (and verification does not look
for them again). The caller's
number leaves with the ticket row, and with it the rows that name the ticket:
its incident location, query copy (and its place in the hourly counts, so
``/api/stats`` counts the tickets on record), its own repeat-caller link
and its pushes (a later ticket's link to it keeps the expired number).
Outbox messages of expired tickets lose their recipient.

A ticket's kept attachments (its ``attachment_kept`` steps: ``<attachments_dir>/<sha256>.<ext>``) go with it,
unless a ticket that stays names the same sha256 (the same photo sent twice): the entry lists each file's
sha256 and name (``attachments``), and the files are removed after the commit, only inside the attachments
folder. AML messages (``aml_messages``) received before the cutoff are deleted by the same run, bound or not,
in a transaction with their own signed ``expiry`` entry that counts them (``aml_messages``); a bound one is
also a step of its ticket, which keeps it as long as the ticket.

Recording files that no recording row names — the fallback ``<uniqueid>.wav`` a call left when its
file was never bound to its ticket (the backend was down, the file came too late), or one whose
row went by hand — expire by the same period: after the tickets, each run removes those
directly in the recordings folder (regular files, not links; names ending as Asterisk's recording
formats do; not hidden) last modified before the cutoff, when no recording row's path, of a ticket
of any age, has the same file name. Each batch writes its own signed ``expiry`` entry first (no
tickets or recordings; ``unbound_files``: each file's path, size, modification time and sha256),
then removes the files it names, unless one changed since it was hashed. A file inside the period
is never looked at, and nothing is archived elsewhere: the backup (``jiejing backup``) is the copy.

``RetentionSchedule`` runs ``expire`` once a day in a background task it
owns, for the retention period of the settings (0: keep forever, nothing
runs), and keeps its last run for the journal status endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.lifecycle import Step
from core.calls.recordings import file_sha256
from core.calls.tables import Recording, Ticket, TicketStep
from core.calls.tickets import iso_utc
from core.dispatch.planner import IncidentRow
from core.quality.journal import (
    KIND_EXPIRY,
    KIND_STEP,
    STILL_OPEN,
    Journaler,
    append_entries,
)
from core.quality.tables import JournalEntry, OutboxMessage
from core.tasks import every, stop_task
from core.triage.aml_service import AmlMessageRow
from core.triage.attachments import EXTENSIONS
from core.triage.classify import forget_query_copies
from core.triage.push import PushRow
from core.triage.repeat import TicketLinkRow

log = logging.getLogger(__name__)

_DAY_US = 86_400_000_000
DAY_S = 86_400.0
_SHA256 = re.compile(r"[0-9a-f]{64}")  # a kept attachment's name; any other detail names no file
# What MixMonitor may write (the dialplan writes .wav): the sweep of unbound files looks at nothing else, so a
# store, key or note kept in the recordings folder by mistake is never removed.
RECORDING_SUFFIXES = (".wav", ".wav49", ".gsm", ".ulaw", ".alaw", ".sln", ".g722")


@dataclass(slots=True)
class ExpiryResult:
    tickets: int = 0
    recordings: int = 0
    files_removed: int = 0
    files_left: int = 0  # paths outside the recordings folder (or no folder given): reported, never removed
    unbound_files: int = 0  # files no recording row names, older than the period, removed from the folder
    attachments: int = 0  # kept attachment files of expired tickets no other ticket names, listed in the entries
    attachment_files_removed: int = 0
    aml_messages: int = 0
    entries: list[int] = field(default_factory=list)  # journal seqs of the expiry entries


async def expire(
    engine: AsyncEngine,
    journaler: Journaler,
    *,
    older_than_days: int,
    clock: Callable[[], float] = time.time,
    batch: int = 1000,
    recordings_dir: str | Path | None = None,
    attachments_dir: str | Path | None = None,
) -> ExpiryResult:
    """Delete tickets whose last step is more than ``older_than_days`` old, with their steps and recordings.

    Recording files are removed only when their real path lies inside ``recordings_dir``: a path is
    data in the store, and one that points elsewhere (a forged row, ``..``, a symlink out of the
    folder) is logged and left. Without ``recordings_dir`` no file is removed. Kept attachment files
    alike, inside ``attachments_dir``. Then the AML messages older than the period go, and the files of
    the recordings folder that no recording row names and that are older than the period (``expire_unbound``).
    """
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    await journaler.catch_up()  # steps not yet journaled would otherwise block their tickets
    now_us = round(clock() * 1_000_000)
    cutoff = now_us - older_than_days * _DAY_US
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    result = ExpiryResult()
    # Calls still up, and text reports nobody has closed yet (however old: they wait for a call-taker).
    live = [str(s) for s in STILL_OPEN]
    # The period runs from the ticket's closing: a step at or after the cutoff keeps it.
    recent_step = exists().where(TicketStep.ticket_id == Ticket.id, TicketStep.at_us >= cutoff)
    unjournaled = exists().where(
        TicketStep.ticket_id == Ticket.id,
        ~exists().where(and_(JournalEntry.kind == KIND_STEP, JournalEntry.ref_id == TicketStep.id)),
    )
    # SQLite hands out max(id)+1, so deleting the newest row would let a new
    # step or recording reuse an id the journal already names; the ticket
    # holding the newest one waits for a later run.
    newest_step = select(func.max(TicketStep.id)).scalar_subquery()
    newest_recording = select(func.max(Recording.id)).scalar_subquery()
    holds_newest = or_(
        exists().where(TicketStep.ticket_id == Ticket.id, TicketStep.id == newest_step),
        exists().where(Recording.ticket_id == Ticket.id, Recording.id == newest_recording),
    )
    while True:
        async with journaler.lock, sessions() as session, session.begin():
            tickets = (
                await session.execute(
                    select(Ticket.id, Ticket.number)
                    .where(Ticket.created_at_us < cutoff, Ticket.state.not_in(live), ~recent_step, ~unjournaled,
                           ~holds_newest)
                    .order_by(Ticket.id)
                    .limit(batch)
                )
            ).all()
            if not tickets:
                break
            ids = [t.id for t in tickets]
            numbers = [t.number for t in tickets]
            recordings = (
                await session.scalars(select(Recording).where(Recording.ticket_id.in_(ids)).order_by(Recording.id))
            ).all()
            files = [r.path for r in recordings]
            attachments = await _kept_attachments(session, ids)
            payload = journaler.sign_expiry({
                "kind": KIND_EXPIRY,
                "before_us": cutoff,
                "retention_days": older_than_days,
                "tickets": numbers,
                "recordings": [{"id": r.id, "path": r.path, "sha256": r.sha256} for r in recordings],
                "attachments": [{"sha256": sha256, "file": name} for sha256, name in attachments],
            })
            (entry,) = await append_entries(session, [(KIND_EXPIRY, None, payload)], at_us=now_us)
            # The rows that name these tickets go first (foreign keys), the query copies with their counts.
            await forget_query_copies(await session.connection(), numbers)
            for table in (IncidentRow, TicketLinkRow, PushRow):
                await session.execute(delete(table).where(table.number.in_(numbers)))
            await session.execute(delete(Recording).where(Recording.ticket_id.in_(ids)))
            await session.execute(delete(TicketStep).where(TicketStep.ticket_id.in_(ids)))
            await session.execute(delete(Ticket).where(Ticket.id.in_(ids)))
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.ticket_number.in_(numbers)).values(to="")
            )
        result.tickets += len(ids)
        result.recordings += len(files)
        result.entries.append(entry.seq)
        removed, left = await asyncio.to_thread(_remove, files, recordings_dir)
        result.files_removed += removed
        result.files_left += left
        result.attachments += len(attachments)
        if attachments_dir is not None:
            paths = [os.path.join(attachments_dir, name) for _, name in attachments]
            removed, _ = await asyncio.to_thread(_remove, paths, attachments_dir, "attachment")
            result.attachment_files_removed += removed
        log.info("retention: expired %d tickets, %d recordings and %d attachment files (journal entry %d)",
                 len(ids), len(files), len(attachments), entry.seq)
    await _expire_aml(sessions, journaler, before_us=cutoff, older_than_days=older_than_days, now_us=now_us,
                      result=result)
    if recordings_dir is not None:
        await expire_unbound(engine, journaler, Path(recordings_dir), before_us=cutoff,
                             older_than_days=older_than_days, now_us=now_us, batch=batch, result=result)
    return result


async def _kept_attachments(session: Any, ids: list[int]) -> list[tuple[str, str]]:
    """(sha256, file name) of the files kept for tickets ``ids`` that no other ticket's step names."""
    kept = select(TicketStep.detail).where(TicketStep.step == Step.ATTACHMENT_KEPT.value)
    files: dict[str, str] = {}
    for detail in (await session.scalars(kept.where(TicketStep.ticket_id.in_(ids)).order_by(TicketStep.id))).all():
        sha256, ext = detail.get("sha256"), EXTENSIONS.get(detail.get("content_type"))
        if isinstance(sha256, str) and _SHA256.fullmatch(sha256) and ext is not None:
            files.setdefault(sha256, f"{sha256}.{ext}")
    if files:
        for detail in (await session.scalars(kept.where(TicketStep.ticket_id.not_in(ids)))).all():
            files.pop(detail.get("sha256"), None)  # the same photo, sent to a ticket that stays
    return list(files.items())


def _no_tickets_expiry(journaler: Journaler, before_us: int, days: int, **what: Any) -> dict[str, Any]:
    """The signed payload of an expiry entry that deletes no ticket (unbound files, AML messages)."""
    return journaler.sign_expiry({"kind": KIND_EXPIRY, "before_us": before_us, "retention_days": days,
                                  "tickets": [], "recordings": [], **what})


async def _expire_aml(
    sessions: async_sessionmaker[Any],
    journaler: Journaler,
    *,
    before_us: int,
    older_than_days: int,
    now_us: int,
    result: ExpiryResult,
) -> None:
    """Delete the AML messages received before ``before_us``, counted in a signed expiry entry of their own."""
    old = AmlMessageRow.received_at_us < before_us
    async with journaler.lock, sessions() as session, session.begin():
        count = (await session.execute(select(func.count()).select_from(AmlMessageRow).where(old))).scalar_one()
        if not count:
            return
        payload = _no_tickets_expiry(journaler, before_us, older_than_days, aml_messages=count)
        (entry,) = await append_entries(session, [(KIND_EXPIRY, None, payload)], at_us=now_us)
        await session.execute(delete(AmlMessageRow).where(old))
    result.aml_messages += count
    result.entries.append(entry.seq)
    log.info("retention: deleted %d AML messages older than %d days (journal entry %d)", count, older_than_days,
             entry.seq)


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    name: str
    size: int
    mtime_ns: int
    key: tuple[int, int]  # (device, inode)

    def unchanged(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return ((st.st_dev, st.st_ino), st.st_size, st.st_mtime_ns) == (self.key, self.size, self.mtime_ns)


def _old_files(folder: Path, before_us: int) -> list[_File]:
    """Recording-like regular files directly in ``folder`` last modified before ``before_us``, oldest first."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        log.warning("retention: the recordings folder %s does not exist", folder)
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.lower().endswith(RECORDING_SUFFIXES):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_mtime_ns // 1000 < before_us:
            found.append(_File(os.path.abspath(entry.path), entry.name, st.st_size, st.st_mtime_ns,
                               (st.st_dev, st.st_ino)))
    return sorted(found, key=lambda f: (f.mtime_ns, f.name))


def _describe(files: list[_File]) -> list[tuple[_File, dict[str, Any]]]:
    """Each file still as it was listed, with what the journal says of it."""
    described = []
    for f in files:
        try:
            digest = file_sha256(f.path)
        except FileNotFoundError:
            continue
        if f.unchanged():
            described.append((f, {"path": f.path, "size": f.size, "modified_us": f.mtime_ns // 1000,
                                  "sha256": digest}))
    return described


def _remove_unbound(files: list[_File]) -> int:
    removed = 0
    for f in files:
        if not f.unchanged():  # written to, or replaced, since it was hashed: the entry is not about this file
            log.warning("retention: %s changed since it was listed; left in place", f.path)
            continue
        try:
            os.remove(f.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


async def expire_unbound(
    engine: AsyncEngine,
    journaler: Journaler,
    folder: Path,
    *,
    before_us: int,
    older_than_days: int,
    now_us: int,
    batch: int = 1000,
    result: ExpiryResult | None = None,
) -> ExpiryResult:
    """Remove the files of ``folder`` older than ``before_us`` that no recording row names, journaled first.

    A row names a file when its path has the file's name: a row's path is as it was bound (the folder
    may since be reached another way), and recording names carry the call's uniqueid, so a name alone
    keeps every bound file and costs one pass over the paths, only when there are old files at all.
    """
    result = ExpiryResult() if result is None else result
    candidates = await asyncio.to_thread(_old_files, folder, before_us)
    if not candidates:
        return result
    names = {f.name for f in candidates}
    named: set[str] = set()
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        paths = await session.stream_scalars(select(Recording.path).execution_options(yield_per=5000))
        async for path in paths:
            name = path.rsplit("/", 1)[-1]
            if name in names:
                named.add(name)
    unbound = [f for f in candidates if f.name not in named]
    for start in range(0, len(unbound), batch):
        described = await asyncio.to_thread(_describe, unbound[start:start + batch])
        if not described:
            continue
        payload = _no_tickets_expiry(journaler, before_us, older_than_days,
                                     unbound_files=[about for _, about in described])
        async with journaler.lock, sessions() as session, session.begin():
            (entry,) = await append_entries(session, [(KIND_EXPIRY, None, payload)], at_us=now_us)
        removed = await asyncio.to_thread(_remove_unbound, [f for f, _ in described])
        result.unbound_files += removed
        result.entries.append(entry.seq)
        log.info("retention: removed %d of %d recording files no ticket names, older than %d days (journal "
                 "entry %d)", removed, len(described), older_than_days, entry.seq)
    return result


def _remove(paths: list[str], folder: str | Path | None, what: str = "recording") -> tuple[int, int]:
    """(removed, left): only files whose real path is inside ``folder``."""
    removed = left = 0
    root = os.path.realpath(folder) if folder else None
    for path in paths:
        real = os.path.realpath(path)
        if root is None or os.path.commonpath([root, real]) != root or real == root:
            log.error("retention: %s %r is outside the %ss folder %r; left in place", what, path, what, folder)
            left += 1
            continue
        try:
            os.remove(real)
            removed += 1
        except FileNotFoundError:
            pass
    return removed, left


class RetentionSchedule:
    """Runs ``expire`` for ``days`` once every ``every_s`` (a day) in an owned task; ``days`` 0: never.

    The task wakes every ``poll_s`` and compares the injected clock with the
    last run rather than sleeping a whole day: a clock stepped forward (or a
    fake one in tests) is noticed within one poll, and stopping never waits.
    The first run comes right after start, so a backend restarted daily
    still expires. A failed run is logged and retried at the next poll.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        journaler: Journaler,
        *,
        days: int,
        clock: Callable[[], float] = time.time,
        every_s: float = DAY_S,
        poll_s: float = 600.0,
        recordings_dir: str | Path | None = None,
        attachments_dir: str | Path | None = None,
    ) -> None:
        if days < 0:
            raise ValueError("retention days must not be negative")
        self._engine = engine
        self._journaler = journaler
        self.days = days
        self._clock = clock
        self._every_s = every_s
        self._poll_s = poll_s
        self._recordings_dir = recordings_dir
        self._attachments_dir = attachments_dir
        self._last_run: float | None = None
        self._last_result: ExpiryResult | None = None
        self._last_error: str | None = None
        self._runs = 0
        # since the start: /metrics
        self.expired = {"tickets": 0, "recordings": 0, "unbound_files": 0, "attachments": 0, "aml_messages": 0}
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.days >= 1

    def due(self) -> bool:
        return self.enabled and (self._last_run is None or self._clock() - self._last_run >= self._every_s)

    async def run_due(self) -> ExpiryResult | None:
        """Run ``expire`` if a day has passed since the last run; the result, or None when not due."""
        if not self.due():
            return None
        started = self._clock()
        try:
            result = await expire(self._engine, self._journaler, older_than_days=self.days, clock=self._clock,
                                  recordings_dir=self._recordings_dir, attachments_dir=self._attachments_dir)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            raise
        self._last_run, self._last_result, self._last_error = started, result, None
        self._runs += 1
        self.expired["tickets"] += result.tickets
        self.expired["recordings"] += result.recordings
        self.expired["unbound_files"] += result.unbound_files
        self.expired["attachments"] += result.attachments
        self.expired["aml_messages"] += result.aml_messages
        log.info("retention: daily run expired %d tickets, %d recordings (%d files removed), %d attachment files, "
                 "%d AML messages and %d recording files no ticket names, older than %d days; journal entries %s",
                 result.tickets, result.recordings, result.files_removed, result.attachments, result.aml_messages,
                 result.unbound_files, self.days, result.entries or "none")
        return result

    async def start(self) -> None:
        if not self.enabled:
            log.info("retention: JIEJING_RETENTION_DAYS is 0 or unset: tickets and recordings are kept forever")
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        await every(self._poll_s, self.run_due, what="retention run", log=log)

    @property
    def runs(self) -> int:
        return self._runs

    @property
    def last_run(self) -> float | None:
        return self._last_run

    def status(self) -> dict[str, Any]:
        def at(seconds: float | None) -> str | None:
            return None if seconds is None else iso_utc(round(seconds * 1_000_000))

        result = self._last_result
        return {
            "enabled": self.enabled,
            "retention_days": self.days,
            "runs": self._runs,
            "last_run_at": at(self._last_run),
            "next_run_at": at(None if not self.enabled or self._last_run is None else self._last_run + self._every_s),
            "last_error": self._last_error,
            "last_result": None if result is None else {
                "tickets": result.tickets, "recordings": result.recordings,
                "files_removed": result.files_removed, "files_left": result.files_left,
                "unbound_files": result.unbound_files, "attachments": result.attachments,
                "attachment_files_removed": result.attachment_files_removed, "aml_messages": result.aml_messages,
                "journal_entries": list(result.entries),
            },
        }
