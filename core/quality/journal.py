"""The tamper-evident journal: every ticket step and every recording's digest in one hash chain.

Each entry holds the canonical JSON of what it records (sorted keys, no
spaces) and ``hash = sha256(prev_hash + payload)``, so changing, removing,
reordering or inserting an entry breaks every link after it. ``verify`` walks
the chain and compares each entry with the row it records and each recording
file with its digest. A database administrator could still rewrite the whole
chain consistently; anchors — HMAC-signed head hashes appended to a file kept
outside the database, with a key kept outside the database — catch that.

Retention deletes rows and says so in an ``expiry`` entry, which excuses
their absence. So that an entry cannot pass a deletion off as retention, an
expiry is signed with the anchor key, and verification checks it against
the retention rule and the tickets' own journaled steps (see ``verify``).

What the journal does not cover: columns of ``tickets`` that change without a
step (``seat``, ``queue``, ``updated_at_us``), and the caller's number, which
lives only on the ticket row so that retention can erase it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.calls.lifecycle import (
    CALL_LIVE_STATES,
    IllegalTransition,
    State,
    Step,
    advance,
)
from core.calls.recordings import file_sha256
from core.calls.tables import Recording, Ticket, TicketStep
from core.quality.tables import JournalEntry
from core.tasks import stop_task

log = logging.getLogger(__name__)

GENESIS = "0" * 64
KIND_STEP = "step"
KIND_RECORDING = "recording"
KIND_EXPIRY = "expiry"
KIND_ANCHOR = "anchor"
KIND_ACCESS = "access"  # someone played a recording (core/quality/playback.py)

# Tickets retention never takes: calls still up, and text reports nobody has closed yet.
STILL_OPEN: frozenset[State] = frozenset({*CALL_LIVE_STATES, State.REPORTED, State.TAKEN})

# Anchors of version 2 also say "expiry entries from here on are signed"; version 1 (no "v" in the
# line) is what releases before signed expiries wrote. The version is inside the signature.
ANCHOR_VERSION = 2
_DAY_US = 86_400_000_000
# An expiry's run time may be this far ahead of the verifying machine's clock.
_CLOCK_SLACK_US = 300_000_000

# Rows are picked up by id, but on PostgreSQL a transaction holding a lower id
# may commit after a higher one was journaled; looking this far back catches it.
_LOOKBACK_IDS = 1000
_BATCH = 500
_APPEND_ATTEMPTS = 5
# Verification reports at most this many rows of one kind, then a count.
_REPORT_MAX = 100


def canonical(payload: dict[str, Any]) -> str:
    """The exact text that is hashed: sorted keys, no whitespace, UTF-8 kept readable."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def link_hash(prev_hash: str, payload: str) -> str:
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


def anchor_mac(key: bytes, seq: int, head_hash: str, at_us: int, version: int = ANCHOR_VERSION) -> str:
    signed = f"{seq}:{head_hash}:{at_us}" if version == 1 else f"v{version}:{seq}:{head_hash}:{at_us}"
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).hexdigest()


def expiry_mac(key: bytes, payload: dict[str, Any]) -> str:
    """The signature of an expiry entry: its canonical payload without ``mac``, under the anchor key."""
    unsigned = {k: v for k, v in payload.items() if k != "mac"}
    return hmac.new(key, ("expiry:" + canonical(unsigned)).encode("utf-8"), hashlib.sha256).hexdigest()


def read_key(path: str | os.PathLike[str]) -> bytes:
    """The anchor key from its file; surrounding whitespace is not part of it."""
    key = Path(path).read_bytes().strip()
    if len(key) < 16:
        raise ValueError(f"anchor key in {path} is shorter than 16 bytes")
    return key


def step_payload(row: TicketStep, number: str) -> dict[str, Any]:
    return {
        "kind": KIND_STEP,
        "id": row.id,
        "ticket": number,
        "seq": row.seq,
        "step": row.step,
        "state_after": row.state_after,
        "at_us": row.at_us,
        "source": row.source,
        "detail": dict(row.detail or {}),
    }


def recording_payload(row: Recording, number: str) -> dict[str, Any]:
    return {
        "kind": KIND_RECORDING,
        "id": row.id,
        "ticket": number,
        "path": row.path,
        "size_bytes": row.size_bytes,
        "duration_s": row.duration_s,
        "sha256": row.sha256,
        "bound_at_us": row.bound_at_us,
    }


async def _head(session: AsyncSession) -> tuple[int, str]:
    row = (
        await session.execute(select(JournalEntry.seq, JournalEntry.hash).order_by(JournalEntry.seq.desc()).limit(1))
    ).first()
    return (0, GENESIS) if row is None else (row[0], row[1])


async def append_entries(
    session: AsyncSession,
    entries: Iterable[tuple[str, int | None, dict[str, Any]]],
    *,
    at_us: int,
) -> list[JournalEntry]:
    """Link ``(kind, ref_id, payload)`` entries onto the head, inside the caller's transaction.

    Used by the journaler and by retention, whose expiry entry must commit in
    the same transaction as the deletion it records.
    """
    seq, prev = await _head(session)
    rows = []
    for kind, ref_id, payload in entries:
        text = canonical(payload)
        seq += 1
        digest = link_hash(prev, text)
        rows.append(
            JournalEntry(seq=seq, kind=kind, ref_id=ref_id, payload=text, prev_hash=prev, hash=digest, at_us=at_us)
        )
        prev = digest
    session.add_all(rows)
    await session.flush()
    return rows


async def append_entry(
    sessions: async_sessionmaker[AsyncSession], kind: str, ref_id: int | None, payload: dict[str, Any], *,
    at_us: int,
) -> None:
    """Link one entry onto the head in a transaction of its own; if another process appended first (the head
    moved), link onto the new head, up to ``_APPEND_ATTEMPTS`` times, then raise: never left out silently."""
    for attempt in range(1, _APPEND_ATTEMPTS + 1):
        try:
            async with sessions() as session, session.begin():
                await append_entries(session, [(kind, ref_id, payload)], at_us=at_us)
            return
        except IntegrityError:
            if attempt == _APPEND_ATTEMPTS:
                raise


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    hash: str
    at_us: int
    mac: str
    version: int = ANCHOR_VERSION

    def line(self) -> str:
        fields: dict[str, Any] = {"seq": self.seq, "hash": self.hash, "at_us": self.at_us, "mac": self.mac}
        if self.version != 1:
            fields["v"] = self.version
        return canonical(fields)


class Journaler:
    """Journals every step and recording not yet in the chain; owns its background task.

    ``attach`` makes each committed step wake it; it also catches up every
    ``interval_s`` (recordings are bound without a step), at start (rows
    written while it was down), and at stop. With an anchor key and file it
    signs the head every ``anchor_interval_s``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        interval_s: float = 5.0,
        batch_delay_s: float = 0.5,
        anchor_key: bytes | None = None,
        anchor_file: str | os.PathLike[str] | None = None,
        anchor_interval_s: float = 3600.0,
    ) -> None:
        if (anchor_key is None) != (anchor_file is None):
            raise ValueError("anchors need both a key and a file")
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._interval_s = interval_s
        self._batch_delay_s = batch_delay_s
        self._anchor_key = anchor_key
        self._anchor_file = Path(anchor_file) if anchor_file is not None else None
        self._anchor_interval_s = anchor_interval_s
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.appended = 0  # step and recording entries this process appended: /metrics
        self.anchored = 0  # anchors it signed
        self._task: asyncio.Task[None] | None = None

    @property
    def lock(self) -> asyncio.Lock:
        """Held while appending; retention holds it to link its expiry entries."""
        return self._lock

    def sign_expiry(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` with its ``mac`` when there is an anchor key; without a key, as it is."""
        if self._anchor_key is None:
            return payload
        return {**payload, "mac": expiry_mac(self._anchor_key, payload)}

    # -- wiring ------------------------------------------------------------------

    def attach(self, service: Any) -> Callable[[], None]:
        """Wake on every committed step of ``service`` (a TicketService); returns a remover."""
        return service.add_listener(self._on_step)

    def _on_step(self, _ticket: Any, _step: Any) -> None:
        self._wake.set()  # listeners must not do I/O; the owned task does the writing

    async def start(self) -> None:
        if self._task is not None:
            return
        await self.catch_up()
        self._task = asyncio.create_task(self._run(), name="journaler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        await self.catch_up()  # steps of the last moments before shutdown

    async def _run(self) -> None:
        # A center's first anchor is not an interval away: until one exists, `journal verify` cannot prove the
        # chain against it (and says so), so the first round after the start writes one when the file is new.
        fresh = self._anchor_file is not None and not Path(self._anchor_file).exists()
        last_anchor = -math.inf if fresh else time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            # Gather the steps of a busy moment into one batch: a journal
            # transaction per step would cost the event loop, which also
            # answers Asterisk, far more than it buys.
            await asyncio.sleep(self._batch_delay_s)
            try:
                await self.catch_up()
                if self._anchor_key is not None and time.monotonic() - last_anchor >= self._anchor_interval_s:
                    await self.anchor()
                    last_anchor = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The rows stay unjournaled and are picked up on the next round.
                log.exception("journal catch-up failed; retrying in %.0f s", self._interval_s)

    # -- writing -------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Journal every step and recording that has no entry yet, in id order; returns how many."""
        async with self._lock:
            total = 0
            for kind in (KIND_STEP, KIND_RECORDING):
                while True:
                    added = await self._journal_batch(kind)
                    total += added
                    if added < _BATCH:
                        break
            return total

    async def _journal_batch(self, kind: str) -> int:
        model = TicketStep if kind == KIND_STEP else Recording
        make = step_payload if kind == KIND_STEP else recording_payload
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                async with self._sessions() as session, session.begin():
                    newest = await session.scalar(
                        select(func.max(JournalEntry.ref_id)).where(JournalEntry.kind == kind)
                    )
                    low = max(0, (newest or 0) - _LOOKBACK_IDS)
                    journaled = exists().where(and_(JournalEntry.kind == kind, JournalEntry.ref_id == model.id))
                    rows = (
                        await session.execute(
                            select(model, Ticket.number)
                            .join(Ticket, Ticket.id == model.ticket_id)
                            .where(model.id > low, ~journaled)
                            .order_by(model.id)
                            .limit(_BATCH)
                        )
                    ).all()
                    if not rows:
                        return 0
                    await append_entries(
                        session,
                        ((kind, row.id, make(row, number)) for row, number in rows),
                        at_us=round(self._clock() * 1_000_000),
                    )
                self.appended += len(rows)
                return len(rows)
            except IntegrityError:
                # Another process appended first; link onto its head instead.
                if attempt == _APPEND_ATTEMPTS:
                    raise
                log.warning("journal head moved during append; retrying")
        return 0

    async def anchor(self) -> Anchor:
        """Sign the current head, append it to the anchor file, then record it in the chain.

        The file line is written first: if the process dies before the chain
        entry commits, the line still signs a head that exists.
        """
        if self._anchor_key is None or self._anchor_file is None:
            raise RuntimeError("no anchor key and file configured")
        async with self._lock:
            async with self._sessions() as session:
                seq, head = await _head(session)
            at_us = round(self._clock() * 1_000_000)
            signed = Anchor(seq, head, at_us, anchor_mac(self._anchor_key, seq, head, at_us))
            await asyncio.to_thread(_append_line, self._anchor_file, signed.line())
            payload = {"kind": KIND_ANCHOR, "head_seq": seq, "head_hash": head, "at_us": at_us, "mac": signed.mac,
                       "v": signed.version}
            await append_entry(self._sessions, KIND_ANCHOR, None, payload, at_us=at_us)
            self.anchored += 1
            log.info("journal anchored at entry %d", seq)
            return signed


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND: a line is never written over an earlier one; fsync before the chain entry commits.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


# -- verification --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing verification found wrong; ``seq`` names the journal entry when there is one."""

    kind: str  # see the verify docstring
    message: str
    seq: int | None = None
    ref: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "ref": self.ref, "message": self.message}


@dataclass(slots=True)
class Report:
    entries: int = 0
    anchors_checked: int = 0
    recordings_checked: int = 0
    pending: int = 0  # rows newer than anything journaled: the journaler has not reached them yet
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "anchors_checked": self.anchors_checked,
            "recordings_checked": self.recordings_checked,
            "pending": self.pending,
            "findings": [f.to_json() for f in self.findings],
            "notes": list(self.notes),
        }


def read_anchors(
    path: str | os.PathLike[str], key: bytes | None, report: Report, legacy: set[int] | None = None
) -> dict[int, str]:
    """Anchored heads by seq; a line whose signature fails is a finding and is not trusted.

    The seqs of valid version-1 lines (written by a release before signed expiries) go into ``legacy``.
    """
    anchors: dict[int, str] = {}
    try:
        lines = Path(path).read_text("ascii").splitlines()
    except FileNotFoundError:
        report.findings.append(Finding("anchor_file_missing", f"anchor file {path} does not exist"))
        return anchors
    except (OSError, UnicodeDecodeError) as exc:
        report.findings.append(Finding("anchor_file_unreadable", f"anchor file {path}: {exc}"))
        return anchors
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            seq, head, at_us, mac = int(item["seq"]), str(item["hash"]), int(item["at_us"]), str(item["mac"])
            version = int(item.get("v", 1))
        except (ValueError, KeyError, TypeError, AttributeError):
            report.findings.append(Finding("anchor_forged", f"anchor file line {number} is malformed"))
            continue
        if key is not None and not hmac.compare_digest(anchor_mac(key, seq, head, at_us, version), mac):
            report.findings.append(
                Finding("anchor_forged", f"anchor file line {number} (entry {seq}) has a bad signature", seq=seq)
            )
            continue
        anchors[seq] = head
        if version == 1 and key is not None and legacy is not None:
            legacy.add(seq)
    return anchors


async def verify(
    engine: AsyncEngine,
    *,
    recordings: bool = True,
    anchor_file: str | os.PathLike[str] | None = None,
    anchor_key: bytes | None = None,
    retention_days: int | None = None,
    clock: Callable[[], float] = time.time,
) -> Report:
    """Walk the chain and compare it with the tickets' rows, the recording files and the anchors.

    Finding kinds: ``deleted`` (an entry is missing from the sequence),
    ``altered`` (an entry's content no longer matches its hash), ``broken_link``
    (an entry does not follow the one before it: reordered, inserted, or its
    predecessor rewritten), ``row_altered`` / ``row_deleted`` (a journaled
    step or recording row changed or vanished without an expiry entry),
    ``inserted`` (a row older than the journal's newest entry of its kind has
    no entry: it was added behind the journal's back), ``recording_changed`` /
    ``recording_missing`` (a file no longer matches its digest), and the
    ``anchor_*`` kinds (the chain no longer matches a signed head).

    An ``expiry`` entry excuses the rows it names only if it holds up; if it
    does not, those rows are ``row_deleted`` as well. ``expiry_forged``: its
    signature is wrong. ``expiry_unsigned``: with the key given, it has no
    signature and no anchor of an older release (which wrote expiries
    unsigned) covers it. ``expiry_premature``: it breaks the retention rule —
    a named ticket's last journaled step is not older than the entry's
    cutoff, or the ticket was still open, or the entry's run time is after
    ``clock()``, or (when its signature is not checked) it used fewer days
    than ``retention_days``, the period configured now. ``expiry_mismatch``:
    it names a ticket the journal never recorded or that has steps after it,
    or a recording of a ticket it does not name.
    """
    report = Report()
    anchors: dict[int, str] = {}
    legacy_anchors: set[int] = set()
    if anchor_file is not None:
        if anchor_key is None:
            report.notes.append("anchor signatures not checked: no key given")
        anchors = read_anchors(anchor_file, anchor_key, report, legacy_anchors)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        expiries = await _expiries(session)
        expired_tickets = {n: e.seq for e in expiries for n in e.tickets}
        expired_recordings = {r: e.seq for e in expiries for r in e.recordings}
        if expiries and anchor_key is None:
            report.notes.append("expiry signatures not checked: no key given")
        facts = _ExpiryFacts(expired_tickets, expired_recordings)
        excused: dict[int, list[Finding]] = {}
        expected_seq, prev = 1, GENESIS
        anchor_entries: list[tuple[int, dict[str, Any]]] = []
        max_ref: dict[str, int] = {KIND_STEP: 0, KIND_RECORDING: 0}
        after_seq = 0
        lifecycle = _LifecycleCheck(expired_tickets)
        while True:
            batch = (
                await session.scalars(
                    select(JournalEntry).where(JournalEntry.seq > after_seq).order_by(JournalEntry.seq).limit(5000)
                )
            ).all()
            if not batch:
                break
            after_seq = batch[-1].seq
            for entry in batch:
                report.entries += 1
                if entry.seq != expected_seq:
                    gap = f"{expected_seq}" if entry.seq == expected_seq + 1 else f"{expected_seq}-{entry.seq - 1}"
                    report.findings.append(
                        Finding("deleted", f"journal entry {gap} is missing (deleted)", seq=expected_seq)
                    )
                if link_hash(entry.prev_hash, entry.payload) != entry.hash:
                    report.findings.append(
                        Finding("altered", f"journal entry {entry.seq} was altered: its content does not match its hash",
                                seq=entry.seq, ref=_ref(entry))
                    )
                elif entry.prev_hash != prev and entry.seq == expected_seq:
                    report.findings.append(
                        Finding("broken_link",
                                f"journal entry {entry.seq} does not follow entry {entry.seq - 1}: "
                                "entries were reordered or inserted, or the one before was rewritten",
                                seq=entry.seq, ref=_ref(entry))
                    )
                if entry.seq in anchors and anchors[entry.seq] != entry.hash:
                    report.findings.append(
                        Finding("anchor_mismatch",
                                f"journal entry {entry.seq} differs from the signed anchor: the chain was rewritten",
                                seq=entry.seq)
                    )
                if entry.kind in max_ref and entry.ref_id is not None:
                    max_ref[entry.kind] = max(max_ref[entry.kind], entry.ref_id)
                if entry.kind == KIND_STEP:
                    lifecycle.feed(entry, report)
                facts.feed(entry)
                if entry.kind == KIND_ANCHOR:
                    payload = _loads(entry.payload)
                    if payload is not None:
                        anchor_entries.append((entry.seq, payload))
                expected_seq, prev = entry.seq + 1, entry.hash
            await _compare_rows(session, batch, expired_tickets, expired_recordings, recordings, report, excused)
        last = expected_seq - 1
        report.anchors_checked = sum(1 for seq in anchors if seq <= last)
        for seq in sorted(anchors):
            if seq > last:
                report.findings.append(
                    Finding("anchor_truncated", f"the signed anchor names entry {seq} but the chain ends at {last}",
                            seq=seq)
                )
        if anchor_file is not None and anchor_key is not None:
            for seq, payload in anchor_entries:
                if anchors.get(payload.get("head_seq")) != payload.get("head_hash"):
                    report.findings.append(
                        Finding("anchor_unfiled", f"anchor entry {seq} has no matching line in the anchor file",
                                seq=seq)
                    )
        await _unjournaled(session, max_ref, report)
    now_us = round(clock() * 1_000_000)
    for expiry in expiries:
        found = _check_expiry(expiry, facts, anchor_key, legacy_anchors, retention_days, now_us)
        if found:
            report.findings.extend(found)
            report.findings.extend(excused.get(expiry.seq, ()))
    return report


class _LifecycleCheck:
    """Replays each ticket's journaled steps through the lifecycle table.

    A step inserted into the tickets' table while the journaler runs is
    journaled like any other; what gives it away is that it does not follow
    its ticket's previous step (a step after ``closed``, a repeated seq …).
    Only tickets not yet closed are remembered, so memory stays small.
    """

    def __init__(self, expired: set[str]) -> None:
        self._open: dict[str, tuple[int, State]] = {}
        self._expired = expired

    def feed(self, entry: JournalEntry, report: Report) -> None:
        payload = _loads(entry.payload)
        if payload is None:
            return  # already reported as altered
        number = str(payload.get("ticket"))
        last_seq, state = self._open.get(number, (0, None))
        try:
            step = Step(payload.get("step"))
            if payload.get("seq") != last_seq + 1:
                raise IllegalTransition(state, step)
            new_state = advance(state, step)
            if str(new_state) != payload.get("state_after"):
                raise IllegalTransition(state, step)
        except (ValueError, IllegalTransition):
            report.findings.append(
                Finding("illegal_step",
                        f"journal entry {entry.seq}: step {payload.get('seq')} '{payload.get('step')}' of ticket "
                        f"{number} does not follow its previous step (after seq {last_seq}, state {state}): "
                        "inserted or reordered",
                        seq=entry.seq, ref=_ref(entry))
            )
            return
        if new_state is State.CLOSED:
            self._open.pop(number, None)
        else:
            self._open[number] = (last_seq + 1, new_state)


def _ref(entry: JournalEntry) -> str | None:
    return None if entry.ref_id is None else f"{entry.kind} {entry.ref_id}"


def _loads(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(slots=True)
class _Expiry:
    seq: int
    payload: dict[str, Any]
    tickets: list[str]
    recordings: list[int]


async def _expiries(session: AsyncSession) -> list[_Expiry]:
    found = []
    rows = await session.execute(
        select(JournalEntry.seq, JournalEntry.payload)
        .where(JournalEntry.kind == KIND_EXPIRY)
        .order_by(JournalEntry.seq)
    )
    for seq, text in rows:
        payload = _loads(text) or {}
        tickets = payload.get("tickets")
        recordings = payload.get("recordings")
        found.append(_Expiry(
            seq,
            payload,
            [str(n) for n in tickets] if isinstance(tickets, list) else [],
            [r["id"] for r in recordings if isinstance(r, dict) and isinstance(r.get("id"), int)]
            if isinstance(recordings, list) else [],
        ))
    return found


class _ExpiryFacts:
    """What the chain says about the tickets and recordings that expiry entries name.

    Per ticket: the time and state of its last journaled step and that step's entry; per recording:
    its ticket. Only what expiries name is kept.
    """

    def __init__(self, tickets: dict[str, int], recordings: dict[int, int]) -> None:
        self._tickets = tickets
        self._recordings = recordings
        self.last_step: dict[str, tuple[int, str, int]] = {}  # number -> (at_us, state_after, entry seq)
        self.recording_ticket: dict[int, str] = {}

    def feed(self, entry: JournalEntry) -> None:
        if entry.kind == KIND_STEP and self._tickets:
            payload = _loads(entry.payload) or {}
            number = str(payload.get("ticket"))
            at_us = payload.get("at_us")
            if number in self._tickets and isinstance(at_us, int):
                latest = self.last_step.get(number)
                self.last_step[number] = (
                    max(at_us, latest[0]) if latest else at_us, str(payload.get("state_after")), entry.seq
                )
        elif entry.kind == KIND_RECORDING and entry.ref_id in self._recordings:
            payload = _loads(entry.payload) or {}
            self.recording_ticket[entry.ref_id] = str(payload.get("ticket"))


_REASONS_SHOWN = 5


def _check_expiry(
    expiry: _Expiry,
    facts: _ExpiryFacts,
    key: bytes | None,
    legacy_anchors: set[int],
    configured_days: int | None,
    now_us: int,
) -> list[Finding]:
    """What is wrong with one expiry entry; empty when it holds up."""
    found: list[Finding] = []
    payload, seq = expiry.payload, expiry.seq

    def finding(kind: str, what: str, reasons: list[str]) -> None:
        if reasons:
            shown = "; ".join(reasons[:_REASONS_SHOWN])
            more = f"; and {len(reasons) - _REASONS_SHOWN} more" if len(reasons) > _REASONS_SHOWN else ""
            names = ", ".join(expiry.tickets[:_REASONS_SHOWN])
            if len(expiry.tickets) > _REASONS_SHOWN:
                names += f" and {len(expiry.tickets) - _REASONS_SHOWN} more"
            found.append(Finding(kind, f"expiry entry {seq} {what}: {shown}{more} (it names tickets {names or 'none'})",
                                 seq=seq))

    signed = False
    if key is not None:
        mac = payload.get("mac")
        if mac is None:
            if not any(anchored >= seq for anchored in legacy_anchors):
                found.append(Finding(
                    "expiry_unsigned",
                    f"expiry entry {seq} is not signed and no anchor of an earlier release covers it: "
                    "this release signs every expiry", seq=seq))
        elif isinstance(mac, str) and hmac.compare_digest(expiry_mac(key, payload), mac):
            signed = True
        else:
            found.append(Finding("expiry_forged", f"expiry entry {seq} has a bad signature", seq=seq))

    premature: list[str] = []
    days, before_us = payload.get("retention_days"), payload.get("before_us")
    if type(days) is not int or type(before_us) is not int or days < 1:
        premature.append(f"no valid retention rule (retention_days {days!r}, before_us {before_us!r})")
        before_us = None
    else:
        run_us = before_us + days * _DAY_US
        if run_us > now_us + _CLOCK_SLACK_US:
            premature.append(f"dated {_iso(run_us)}, after this verification")
        if not signed and configured_days and days < configured_days:
            premature.append(f"used {days} days, fewer than the {configured_days} days configured")
    mismatch: list[str] = []
    for number in expiry.tickets:
        last = facts.last_step.get(number)
        if last is None:
            mismatch.append(f"ticket {number} has no journaled step")
            continue
        at_us, state, step_seq = last
        if step_seq > seq:
            mismatch.append(f"ticket {number} has a step journaled after it (entry {step_seq})")
        if state in STILL_OPEN:
            premature.append(f"ticket {number} was still open ({state})")
        if before_us is not None and at_us >= before_us:
            premature.append(
                f"ticket {number}'s last step at {_iso(at_us)} is within the {days} days before the expiry"
            )
    named = set(expiry.tickets)
    for recording in expiry.recordings:
        owner = facts.recording_ticket.get(recording)
        if owner is not None and owner not in named:
            mismatch.append(f"recording {recording} belongs to ticket {owner}, which it does not name")
    finding("expiry_premature", "breaks the retention rule", premature)
    finding("expiry_mismatch", "does not match the journal", mismatch)
    return found


def _iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1_000_000, UTC).isoformat(timespec="seconds")


async def _compare_rows(
    session: AsyncSession,
    batch: Sequence[JournalEntry],
    expired_tickets: dict[str, int],
    expired_recordings: dict[int, int],
    check_files: bool,
    report: Report,
    excused: dict[int, list[Finding]],
) -> None:
    """Compare journaled rows with the store; a missing row an expiry names goes into ``excused`` under the
    expiry's seq (a finding only if that expiry does not hold up)."""
    for kind, model, make in (
        (KIND_STEP, TicketStep, step_payload),
        (KIND_RECORDING, Recording, recording_payload),
    ):
        entries = [e for e in batch if e.kind == kind and e.ref_id is not None]
        if not entries:
            continue
        rows = {
            row.id: (row, number)
            for row, number in (
                await session.execute(
                    select(model, Ticket.number)
                    .join(Ticket, Ticket.id == model.ticket_id)
                    .where(model.id.in_([e.ref_id for e in entries]))
                )
            ).all()
        }
        for entry in entries:
            recorded = _loads(entry.payload) or {}
            found = rows.get(entry.ref_id)
            what = f"{kind} {entry.ref_id} (ticket {recorded.get('ticket', '?')})"
            if found is None:
                expiry = (
                    expired_recordings.get(entry.ref_id)
                    if kind == KIND_RECORDING
                    else expired_tickets.get(str(recorded.get("ticket")))
                )
                deleted = Finding("row_deleted", f"{what} journaled in entry {entry.seq} was deleted",
                                  seq=entry.seq, ref=f"{kind} {entry.ref_id}")
                if expiry is None:
                    report.findings.append(deleted)
                else:
                    excused.setdefault(expiry, []).append(deleted)
                continue
            row, number = found
            current = make(row, number)
            if canonical(current) != entry.payload:
                fields = sorted(k for k in set(current) | set(recorded) if current.get(k) != recorded.get(k))
                report.findings.append(
                    Finding("row_altered",
                            f"{what} differs from journal entry {entry.seq} in: {', '.join(fields) or 'encoding'}",
                            seq=entry.seq, ref=f"{kind} {entry.ref_id}")
                )
            if kind == KIND_RECORDING and check_files:
                report.recordings_checked += 1
                digest = await asyncio.to_thread(_file_sha256, recorded.get("path") or row.path)
                if digest is None:
                    report.findings.append(
                        Finding("recording_missing", f"recording file {recorded.get('path')} of {what} is gone",
                                seq=entry.seq, ref=f"{kind} {entry.ref_id}")
                    )
                elif digest != recorded.get("sha256"):
                    report.findings.append(
                        Finding("recording_changed",
                                f"recording file {recorded.get('path')} of {what} no longer matches its sha256",
                                seq=entry.seq, ref=f"{kind} {entry.ref_id}")
                    )


def _file_sha256(path: str) -> str | None:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        return None


async def _unjournaled(session: AsyncSession, max_ref: dict[str, int], report: Report) -> None:
    for kind, model in ((KIND_STEP, TicketStep), (KIND_RECORDING, Recording)):
        journaled = exists().where(and_(JournalEntry.kind == kind, JournalEntry.ref_id == model.id))
        behind = (
            await session.scalars(
                select(model.id).where(model.id <= max_ref[kind], ~journaled).order_by(model.id).limit(_REPORT_MAX + 1)
            )
        ).all()
        for ref_id in behind[:_REPORT_MAX]:
            report.findings.append(
                Finding("inserted", f"{kind} {ref_id} has no journal entry although later ones do: "
                        "it was inserted behind the journal's back", ref=f"{kind} {ref_id}")
            )
        if len(behind) > _REPORT_MAX:
            report.notes.append(f"more than {_REPORT_MAX} unjournaled {kind} rows; only the first are listed")
        report.pending += (
            await session.scalar(select(func.count()).select_from(model).where(model.id > max_ref[kind], ~journaled))
        ) or 0
