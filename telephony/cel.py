"""Asterisk's own record of every call (CEL), read back after any gap.

Asterisk writes one CSV line per channel event to ``cel-custom/jiejing.csv``
(``dialplan/cel.conf``, ``dialplan/cel_custom.conf``) whether or not the
backend is up, quick or connected. The AMI stream stays the live source of
ticket steps; this log is the source of truth for what the backend missed:

* ``CelFile`` reads whole lines from a byte offset (a line still being
  written waits for its newline; a file that shrank was rotated and is read
  from its start).
* ``CallLog`` groups the events by call -- an intake channel (110 in an
  intake context) and every channel linked to it -- and holds each call
  until its caller's channel has hung up and a settling time has passed.
* ``derive_steps`` turns one call's events into the ticket steps AMI would
  have given: received, queued, seat_ringing, answered (seat or overflow),
  and the end (``hung_up`` or ``abandoned``, decided by the ticket's state).
* ``CelFollower`` tails the file, hands each finished call to
  ``CallEvents`` (which applies only the steps the ticket lacks, in order,
  with Asterisk's times) and keeps a checkpoint in the store: the offset
  before the oldest call not yet reconciled. After a restart or an AMI
  reconnect ``catch_up`` replays from that checkpoint to the end of the file
  at once, calls still in progress included.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from core.calls.lifecycle import Step
from core.errors import DomainError

log = logging.getLogger("jiejing.cel")

# The columns of dialplan/cel_custom.conf, in order.
CEL_COLUMNS = ("event", "at", "uniqueid", "linkedid", "channel", "context", "exten", "caller", "app", "appdata",
               "peer", "user_type", "extra", "caller_name")
# A log written before the caller's name was a column has the others.
_OLD_COLUMNS = CEL_COLUMNS[:-1]
NAME_MAX = 200
# A store's first start looks this far back in the file for calls still in progress.
FIRST_TAIL = 16 << 20
# One read takes at most this much of the file (a long gap is replayed in slices).
READ_CHUNK = 4 << 20
# A line longer than this is not one Asterisk wrote for us.
LINE_MAX = 16 << 10
# Calls held at once (live calls plus those settling); past it the oldest is reconciled as it stands.
CALLS_MAX = 20_000
# After the caller's channel hung up, the call is held this long (seconds) before it is let go.
SETTLE_S = 0.0
# A pass over the log running longer than this (seconds) means the store is behind Asterisk: /healthz says so.
BEHIND_S = 2.0
# How often the file is looked at: the delay a step can have after Asterisk wrote it.
POLL_S = 0.05


# The dialplan's own marks in the log (CELGenUserEvent): the network's position of the handset, and a call
# whose intake request got no answer.
LOCATION_EVENT = "jiejing_location"
FALLBACK_EVENT = "jiejing_fallback"
MAJOR_EVENT = "jiejing_major"  # the caller pressed 1 for a declared major incident (its id)
# location_info of a GML point as Asterisk renders it: shape="Point",crs="2d",pos="31.2304 121.4737"
_POS = re.compile(r'pos="?\s*(-?\d{1,3}(?:\.\d+)?)\s+(-?\d{1,3}(?:\.\d+)?)')
_SHAPE = re.compile(r'shape="?Point"?', re.IGNORECASE)
LOCATION_MAX = 1000


class CelFormatError(ValueError):
    """A line that is not a CEL record in our columns."""


@dataclass(frozen=True, slots=True)
class CelEvent:
    event: str
    at: float  # epoch seconds, microsecond precision
    uniqueid: str
    linkedid: str
    channel: str
    context: str
    exten: str
    caller: str
    app: str
    appdata: str
    peer: str
    user_type: str
    extra: dict[str, Any]
    offset: int = 0  # byte offset of the line's start in the file
    caller_name: str = ""


def parse_line(line: bytes, offset: int = 0) -> CelEvent:
    """One line of the CEL file; ``CelFormatError`` for anything else."""
    if len(line) > LINE_MAX:
        raise CelFormatError(f"line of {len(line)} bytes")
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise CelFormatError(str(exc)) from None
    if len(rows) != 1 or len(rows[0]) not in (len(CEL_COLUMNS), len(_OLD_COLUMNS)):
        raise CelFormatError(f"expected {len(CEL_COLUMNS)} columns")
    values = dict(zip(CEL_COLUMNS if len(rows[0]) == len(CEL_COLUMNS) else _OLD_COLUMNS, rows[0], strict=True))
    try:
        at = float(values["at"])
    except ValueError:
        raise CelFormatError(f"event time {values['at']!r}") from None
    if not values["event"] or not values["uniqueid"] or not (0 < at < 1e11):
        raise CelFormatError("event, time and uniqueid are required")
    extra: dict[str, Any] = {}
    if values["extra"]:
        try:
            loaded = json.loads(values["extra"])
        except ValueError:
            loaded = None
        extra = loaded if isinstance(loaded, dict) else {"text": values["extra"]}
    return CelEvent(
        event=values["event"], at=at, uniqueid=values["uniqueid"], linkedid=values["linkedid"] or values["uniqueid"],
        channel=values["channel"], context=values["context"], exten=values["exten"], caller=values["caller"],
        app=values["app"], appdata=values["appdata"], peer=values["peer"], user_type=values["user_type"],
        extra=extra, offset=offset, caller_name=unquote(values.get("caller_name", "")[:3 * NAME_MAX])[:NAME_MAX],
    )


@dataclass
class ReadResult:
    events: list[CelEvent]
    offset: int  # where the next read starts
    inode: int
    malformed: int = 0
    rotated: bool = False
    at_end: bool = True


class CelFile:
    """Whole lines of the CEL file from a byte offset."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def tail_start(self, tail: int) -> tuple[int, int]:
        """(inode, offset of the first whole line in the last ``tail`` bytes); (0, 0) without a file."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_size <= tail:
                    return st.st_ino, 0
                f.seek(st.st_size - tail - 1)
                f.readline()  # the rest of a line cut by the seek (or the newline just before the tail)
                return st.st_ino, f.tell()
        except FileNotFoundError:
            return 0, 0

    def read(self, inode: int | None, offset: int, *, limit: int = READ_CHUNK) -> ReadResult:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                rotated = False
                if (inode is not None and inode != st.st_ino) or st.st_size < offset:
                    # Another file under the name (log rotation) or one cut short: read it from its start.
                    rotated, offset = True, 0
                f.seek(offset)
                data = f.read(limit)
                size = st.st_size
        except FileNotFoundError:
            return ReadResult([], 0, 0, rotated=inode is not None and inode != 0)
        end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
        if end == 0 and len(data) >= limit:
            end = len(data)  # a whole chunk without a newline: not ours; skip it as malformed
        events: list[CelEvent] = []
        malformed = 0
        pos = 0
        while pos < end:
            nl = data.find(b"\n", pos, end)
            stop = end if nl < 0 else nl + 1
            line = data[pos:stop]
            if line.strip():
                try:
                    events.append(parse_line(line, offset + pos))
                except CelFormatError as exc:
                    malformed += 1
                    if malformed == 1:  # one line in the log per read, the rest counted
                        log.warning("CEL line at offset %d skipped: %s", offset + pos, exc)
            pos = stop
        if malformed > 1:
            log.warning("%d more CEL lines skipped as malformed", malformed - 1)
        return ReadResult(events, offset + end, st.st_ino, malformed, rotated, at_end=offset + end >= size)


# -- one call's events → ticket steps ------------------------------------------

@dataclass
class CelCall:
    """The events of one 110 call: its intake channel and every channel linked to it."""

    uniqueid: str
    start_offset: int
    events: list[CelEvent] = field(default_factory=list)
    ended: float | None = None  # monotonic time the caller's channel hung up

    @property
    def caller_ended(self) -> bool:
        return self.ended is not None


@dataclass(frozen=True, slots=True)
class DerivedStep:
    step: Step  # Step.HUNG_UP stands for the call's end: hung_up or abandoned, by the ticket's state
    at: float
    detail: dict[str, Any]

    @property
    def key(self) -> tuple[str, str | None]:
        """What makes two steps the same kind for matching against the ticket's own."""
        if self.step in (Step.SEAT_RINGING, Step.SEAT_NO_ANSWER):
            return (self.step.value, self.detail.get("seat"))
        return (self.step.value, None)


def _endpoint(channel: str) -> tuple[str, str]:
    """``PJSIP/seat-07-0000001a`` → (``PJSIP/seat-07``, ``seat-07``)."""
    interface = channel.rsplit("-", 1)[0] if "-" in channel else channel
    return interface, interface.split("/", 1)[-1]


def derive_steps(call: CelCall) -> list[DerivedStep]:
    """The ticket steps of one call so far, in Asterisk's order, with Asterisk's times.

    A seat rings when a channel linked to the caller starts while the caller
    is in Queue(); it did not answer when that channel hangs up unanswered
    before any seat answered (also when the caller gave up meanwhile). The
    caller is answered when it enters a bridge from Queue() (the seat) or from
    Dial() (the dialplan's overflow); later bridges (a conference, a
    hand-over) are not the answer.
    """
    uid = call.uniqueid
    steps: list[DerivedStep] = []
    in_app: str | None = None  # the caller's current application (Queue, Dial)
    answered = False
    queued_at: float | None = None
    ringing: dict[str, tuple[str, str, float]] = {}  # seat channel uniqueid → (seat, interface, rang at)
    for e in call.events:
        own = e.uniqueid == uid
        if own and e.event == "CHAN_START":
            steps.append(DerivedStep(Step.RECEIVED, e.at, {"caller": e.caller, "caller_name": e.caller_name}))
        elif own and e.event == "APP_START":
            in_app = e.app
            if e.app == "Queue" and not answered:
                queue = e.appdata.split(",", 1)[0] or None
                queued_at = queued_at or e.at
                steps.append(DerivedStep(Step.QUEUED, e.at, {"queue": queue} if queue else {}))
        elif own and e.event == "APP_END":
            in_app = None
        elif own and e.event == "BRIDGE_ENTER" and not answered and in_app in ("Queue", "Dial"):
            interface, seat = _endpoint(e.peer.split(",", 1)[0])
            answered = True
            ringing.clear()
            if in_app == "Queue":
                detail: dict[str, Any] = {"seat": seat, "interface": interface}
                if queued_at is not None:
                    detail["hold_s"] = round(e.at - queued_at)
                steps.append(DerivedStep(Step.ANSWERED, e.at, detail))
            else:  # the dialplan's overflow
                steps.append(DerivedStep(Step.ANSWERED, e.at, {"overflow_to": interface}))
        elif own and e.event == "HANGUP":
            cause = e.extra.get("hangupcause")
            steps.append(DerivedStep(Step.HUNG_UP, e.at, {"cause": str(cause)} if cause is not None else {}))
            break
        elif not own and e.event == "CHAN_START" and in_app == "Queue" and not answered:
            interface, seat = _endpoint(e.channel)
            ringing[e.uniqueid] = (seat, interface, e.at)
            steps.append(DerivedStep(Step.SEAT_RINGING, e.at, {"seat": seat, "interface": interface}))
        elif not own and e.event == "ANSWER" and e.uniqueid in ringing:
            ringing.clear()  # a seat picked up: the others app_queue hangs up now did not "not answer"
        elif not own and e.event == "HANGUP" and e.uniqueid in ringing and not answered:
            seat, interface, rang = ringing.pop(e.uniqueid)
            steps.append(DerivedStep(Step.SEAT_NO_ANSWER, e.at,
                                     {"seat": seat, "interface": interface, "ring_ms": round((e.at - rang) * 1000)}))
    return steps


def network_position(info: str | None) -> tuple[float, float] | None:
    """(lat, lon) from the network's ``location_info`` (as is or URI-encoded), or None (absent, not a point,
    out of range)."""
    if not info or not isinstance(info, str):
        return None
    info = unquote(info[:3 * LOCATION_MAX])[:LOCATION_MAX]
    if not _SHAPE.search(info):
        return None  # circles, polygons, civic addresses: left to the call-taker for now
    m = _POS.search(info)
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def call_position(call: CelCall) -> tuple[float, float, float] | None:
    """(lat, lon, when) of the handset's position the dialplan wrote into the log for this call, if the network
    sent one."""
    for e in call.events:
        if e.uniqueid == call.uniqueid and e.user_type == LOCATION_EVENT:
            position = network_position(e.extra.get("extra"))
            return None if position is None else (*position, e.at)
    return None


def fallback_at(call: CelCall) -> float | None:
    """When the dialplan marked this call as queued without the intake's answer (epoch seconds), if it did."""
    return next((e.at for e in call.events if e.uniqueid == call.uniqueid and e.user_type == FALLBACK_EVENT), None)


def major_pressed(call: CelCall) -> tuple[int, float] | None:
    """(incident id, when) if the caller pressed 1 for a declared major incident ([queue-keys] of the dialplan)."""
    for e in call.events:
        if e.uniqueid == call.uniqueid and e.user_type == MAJOR_EVENT:
            value = str(e.extra.get("extra", "")).strip()
            if value.isdigit():
                return int(value), e.at
    return None


class CallLog:
    """Groups CEL events by 110 call and says which calls have news to reconcile."""

    def __init__(self, *, intake_contexts: Iterable[str], emergency_numbers: Iterable[str],
                 settle_s: float = SETTLE_S, calls_max: int = CALLS_MAX, clock=time.monotonic) -> None:
        self.intake_contexts = frozenset(intake_contexts)
        self.emergency_numbers = frozenset(emergency_numbers)
        self.settle_s = settle_s
        self.calls_max = calls_max
        self.clock = clock
        self.calls: OrderedDict[str, CelCall] = OrderedDict()
        self._touched: set[str] = set()
        self.evicted = 0

    def feed(self, event: CelEvent) -> None:
        call = self.calls.get(event.linkedid)
        if call is None:
            if not (event.event == "CHAN_START" and event.uniqueid == event.linkedid
                    and event.context in self.intake_contexts and event.exten in self.emergency_numbers):
                return  # not a 110 call (a seat's own call, an officer's, a call-back)
            call = CelCall(event.uniqueid, event.offset)
            self.calls[event.uniqueid] = call
        if call.ended is not None:
            return  # after the caller's hang-up nothing changes the ticket's call steps
        call.events.append(event)
        self._touched.add(call.uniqueid)
        if event.uniqueid == call.uniqueid and event.event == "HANGUP":
            call.ended = self.clock()

    def due(self, *, everything: bool = False) -> list[tuple[CelCall, bool]]:
        """(call, final) to reconcile now: every call with new events (all calls for a catch-up).

        ``final``: the caller has hung up (and ``settle_s`` has passed); ``done`` lets it go once it
        has been reconciled. Past ``calls_max`` held calls the oldest is let go as it stands (its
        ticket keeps what it has).
        """
        now = self.clock()
        out: list[tuple[CelCall, bool]] = []
        for uid, call in list(self.calls.items()):
            final = call.ended is not None and now - call.ended >= self.settle_s
            if everything or uid in self._touched or final:
                out.append((call, final))
        while len(self.calls) > self.calls_max:
            uid, oldest = self.calls.popitem(last=False)
            self._touched.discard(uid)
            self.evicted += 1
            out.append((oldest, False))
        return out

    def done(self, call: CelCall, final: bool) -> None:
        """``call`` has been reconciled: nothing new until its next event, and a final one is let go."""
        self._touched.discard(call.uniqueid)
        if final:
            self.calls.pop(call.uniqueid, None)

    def forget_ended(self) -> None:
        """Drop the calls whose caller has hung up (history before a store's first start).

        The others wait, untouched, for a catch-up that knows which of them Asterisk still has.
        """
        for uid in [uid for uid, call in self.calls.items() if call.ended is not None]:
            del self.calls[uid]
        self._touched.clear()

    def drop_dead(self, live: set[str], before: float) -> list[str]:
        """Let go of calls that have no end in the log, started before ``before`` and are not among the
        ``live`` channels Asterisk reported then: Asterisk stopped without logging their end (a crash, a
        restart). Their uniqueids; the log cannot speak for how they ended."""
        dead = [uid for uid, call in self.calls.items()
                if call.ended is None and uid not in live and call.events and call.events[0].at < before]
        for uid in dead:
            del self.calls[uid]
            self._touched.discard(uid)
        return dead

    def checkpoint(self, read_offset: int) -> int:
        """The offset a restart must read from: the start of the oldest call still held, else the read offset."""
        return min((c.start_offset for c in self.calls.values()), default=read_offset)


# -- the follower -------------------------------------------------------------

@dataclass
class FollowerStats:
    reads: int = 0
    events: int = 0
    malformed: int = 0
    rotations: int = 0
    calls_reconciled: int = 0
    unrecordable: int = 0
    dead_calls: int = 0
    catch_ups: int = 0
    last_read: float | None = None  # epoch seconds of the last successful read
    behind_bytes: int = 0
    last_error: str | None = None


class CelFollower:
    """Tails the CEL file, hands calls to the reconciler, keeps the checkpoint in the store."""

    def __init__(
        self,
        path: Path,
        calls: CallLog,
        reconcile: Callable[[CelCall, bool], Awaitable[None]],
        checkpoints,
        *,
        name: str = "cel",
        poll_s: float = POLL_S,
    ) -> None:
        self.file = CelFile(path)
        self.calls = calls
        self.reconcile = reconcile  # (call, final) → applied in order with every other ticket step
        self.checkpoints = checkpoints
        self.name = name
        self.poll_s = poll_s
        self.stats = FollowerStats()
        self._inode: int | None = None
        self._offset = 0
        self._loaded = False
        self._fresh = False
        self._busy_since: float | None = None  # monotonic start of the pass in progress
        self._saved: tuple[int, int] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        # uniqueids of every call read since the checkpoint (the log speaks for them), bounded
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cel-follower")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def speaks_for(self, uniqueid: str) -> bool:
        """Whether the log, read since the checkpoint, has this call (then only the log may end its ticket)."""
        return uniqueid in self._seen

    async def _load(self) -> None:
        if self._loaded:
            return
        saved = await self.checkpoints.load(self.name)
        if saved is not None:
            self._inode, self._offset = saved
            self._saved = saved
        else:
            # A store that has never followed this log (a new installation, a new database) takes the calls
            # still in progress and every later one; calls that ended before are not this store's. It reads
            # the file's tail for the calls in progress (``_fresh``: the ended ones are then dropped).
            self._inode, self._offset = await asyncio.to_thread(self.file.tail_start, FIRST_TAIL)
            self._fresh = True
            log.info("CEL %s followed from offset %d on (no checkpoint in the store)", self.file.path, self._offset)
        self._loaded = True

    async def catch_up(self, live: set[str] | None = None, snapshot_at: float | None = None) -> int:
        """Read to the end of the file now and reconcile every call in it, finished or not.

        With ``live`` (the intake channels Asterisk has, as of ``snapshot_at``), held calls that have no
        end in the log and are not live are let go first: Asterisk stopped without logging their end.
        """
        self.stats.catch_ups += 1
        return await self._pass(everything=True, live=live, snapshot_at=snapshot_at)

    async def poll(self) -> int:
        return await self._pass(everything=False)

    async def _pass(self, *, everything: bool, live: set[str] | None = None,
                    snapshot_at: float | None = None) -> int:
        async with self._lock:
            self._busy_since = time.monotonic()
            try:
                return await self._pass_locked(everything=everything, live=live, snapshot_at=snapshot_at)
            finally:
                self._busy_since = None

    async def _pass_locked(self, *, everything: bool, live: set[str] | None,
                           snapshot_at: float | None) -> int:
        await self._load()
        handled = 0
        while True:  # one slice of the file at a time: a long gap is applied (and checkpointed) as it is read
            result = await asyncio.to_thread(self.file.read, self._inode, self._offset)
            self.stats.reads += 1
            if result.rotated:
                self.stats.rotations += 1
                log.warning("CEL file %s was rotated or cut short: reading it from its start", self.file.path)
            self.stats.malformed += result.malformed
            self.stats.events += len(result.events)
            for event in result.events:
                self.calls.feed(event)
                if event.uniqueid == event.linkedid and event.linkedid in self.calls.calls:
                    self._remember(event.linkedid)
            self._inode, self._offset = result.inode or self._inode, result.offset
            if self._fresh and not result.at_end:
                continue  # a first start: only the calls still in progress at the end are this store's
            if self._fresh:
                self.calls.forget_ended()
                self._fresh = False
            if live is not None and result.at_end:
                for uid in self.calls.drop_dead(live, snapshot_at if snapshot_at is not None else time.time()):
                    self._seen.pop(uid, None)  # the channel snapshot may now end its ticket
                    self.stats.dead_calls += 1
                    log.warning("CEL call %s has no end in the log and Asterisk no longer has it", uid)
            elif everything and not result.at_end:
                continue  # a catch-up reconciles once it has read everything
            due = self.calls.due(everything=everything)
            for call, final in due:
                try:
                    await self.reconcile(call, final)  # a store that refuses raises: the call stays held
                except (ValueError, DomainError):
                    # This call's record cannot be written as the log has it (a uniqueid the store refuses):
                    # counted and logged; it must not hold up every later call.
                    self.stats.unrecordable += 1
                    log.exception("CEL call %s could not be recorded", call.uniqueid)
                self.calls.done(call, final)
                self.stats.calls_reconciled += final
            handled += len(due)
            mark = (self._inode or 0, self.calls.checkpoint(self._offset))
            if mark != self._saved:
                await self.checkpoints.save(self.name, *mark)
                self._saved = mark
            if result.at_end:
                self.stats.last_read = time.time()
                return handled

    def _remember(self, uid: str) -> None:
        self._seen[uid] = None
        self._seen.move_to_end(uid)
        while len(self._seen) > 4 * CALLS_MAX:
            self._seen.popitem(last=False)

    async def _run(self) -> None:
        while True:
            try:
                # The first pass reads from the checkpoint: what happened while the backend was down. The
                # AMI log-in's catch-up (with the live channels) settles the calls Asterisk no longer has.
                await self.poll()
                self.stats.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store that refuses: keep the file offset's checkpoint, try again
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("CEL follow-up failed; retrying")
            await asyncio.sleep(self.poll_s)

    def health(self) -> dict[str, Any]:
        try:
            size = self.file.path.stat().st_size
        except OSError:
            size = None
        behind = None if size is None else max(0, size - self._offset)
        busy = 0.0 if self._busy_since is None else time.monotonic() - self._busy_since
        reasons = []
        if self.stats.last_error is not None:
            reasons.append(f"the store refused the log's steps: {self.stats.last_error}")
        if busy > BEHIND_S or (behind is not None and behind >= READ_CHUNK):
            reasons.append(f"catching up with Asterisk's log: {len(self.calls.calls)} calls held, "
                           f"{behind} bytes unread, this pass running {busy:.1f} s")
        return {"ok": not reasons, "reason": "; ".join(reasons) or None,
                "file": str(self.file.path), "exists": size is not None, "behind_bytes": behind,
                "held_calls": len(self.calls.calls), "reconciled": self.stats.calls_reconciled,
                "malformed": self.stats.malformed, "rotations": self.stats.rotations,
                "unrecordable": self.stats.unrecordable,
                "last_error": self.stats.last_error}
