"""Asterisk's events in, ticket steps out.

Asterisk tells us what happens to every 110 call: the channel is created
(received), joins the queue, a seat rings, a seat answers, the caller hangs
up or gives up. This adapter turns that into ticket steps in ``core``, from
one of two sources:

* Asterisk's channel event log (CEL, ``telephony/cel.py``), the default of a
  center: a file Asterisk writes whatever the backend does, followed within
  50 ms and replayed from a checkpoint after a restart, a reconnect or a
  stall (``reconcile``). Its steps carry Asterisk's own times; AMI then only
  keeps the live channel names a dispatch needs.
* The AMI events (``steps_from_ami``), when no log is configured; after an AMI
  reconnect ``resync`` then reconciles tickets with the channels Asterisk
  reports, which is all it can do for what happened meanwhile.

The ticket is born here, not at the intake (``telephony/intake.py``): from the
log's ``CHAN_START`` (or AMI's ``Newchannel``), so a call gets its ticket
whether or not any of our processes was up when it came. The handset's
position and the calls queued without the intake's answer are marks the
dialplan writes into the same log.

The reader of the AMI connection must never stall (Asterisk drops a manager
session that does not read within 100 ms), so ``on_event`` only enqueues;
one owned task applies the events in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from core.calls.lifecycle import CALL_CONNECTED_STATES, IllegalTransition, State, Step
from core.calls.tickets import Source, TicketService, UnknownCall
from telephony.cel import (
    CelCall,
    DerivedStep,
    call_position,
    derive_steps,
    fallback_at,
    major_pressed,
)
from telephony.channel_vars import recording_name
from telephony.recording_files import OpenFiles

log = logging.getLogger("jiejing.call_events")

OVERFLOW_EVENT = "JiejingOverflow"  # the dialplan's UserEvent before it rings JIEJING_OVERFLOW
WAITING_STATES = {State.RECEIVED, State.QUEUED, State.RINGING}
# After arrival the call no longer decides the ticket's state, but its end is
# still part of the trail (the lifecycle records it without a state change).
LATE_HANGUP_STATES = {State.ON_SCENE, State.CLEARED}
# MixMonitor closes its file right after the caller's channel is gone; give it
# a moment, then wait until the size stops changing.
RECORDING_SETTLE_S = 0.3
RECORDING_WAIT_S = 10.0
# The located step of a position the network sent with the call.
NETWORK_ADDRESS = "network position (PIDF-LO)"
# What the step says of where that position came from (an AML fix may replace it: core/triage/aml_service.py).
NETWORK_FIX = {"source": "network", "method": "pidf-lo"}
# /healthz says "not ok" for this long after a call took the dialplan's fallback (no intake answer).
FALLBACK_WINDOW_S = 60.0
# AMI events waiting to be applied; past it an event is left out (counted, logged), never the reader stalled.
EVENTS_MAX = 100_000
# Calls remembered as already counted or located (a call is reconciled several times while it lasts).
NOTED_MAX = 10_000


@dataclass(frozen=True, slots=True)
class _Reconcile:
    call: CelCall
    final: bool
    done: asyncio.Future


def _duration_seconds(text: str) -> float:
    try:
        h, m, s = (int(x) for x in text.split(":"))
        return h * 3600 + m * 60 + s
    except ValueError:
        return 0.0


def _uniqueids(channels) -> set[str]:
    """The uniqueids of a ``CoreShowChannels`` answer's channels."""
    return {ch.get("Uniqueid") for ch in channels if ch.get("Uniqueid")}


class CallEvents:
    def __init__(
        self,
        service: TicketService,
        *,
        intake_contexts: Iterable[str],
        emergency_numbers: Iterable[str],
        recordings_dir: Path | None,
        clock=time.time,
        steps_from_ami: bool = True,
        open_files: OpenFiles | None = None,
    ) -> None:
        self.service = service
        # False when Asterisk's log (CEL) is followed: it alone gives the call's steps, at its own times
        # (telephony/cel.py); AMI then only keeps the live channel names a dispatch needs.
        self.steps_from_ami = steps_from_ami
        # Whether Asterisk's log has the call (set by the assembly to the follower's ``speaks_for``).
        self.speaks_for = lambda uid: False
        self.intake_contexts = frozenset(intake_contexts)
        self.emergency_numbers = frozenset(emergency_numbers)
        self.recordings_dir = recordings_dir
        self.open_files = open_files or OpenFiles()
        self._open_files_unknown_logged = False
        self.clock = clock
        self._queue: asyncio.Queue = asyncio.Queue(EVENTS_MAX)
        self.dropped_events = 0
        self._task: asyncio.Task | None = None
        self._recording_tasks: set[asyncio.Task] = set()
        # caller channels we hold a ticket for (uniqueid → recording name)
        self._calls: dict[str, str | None] = {}
        # caller uniqueid → channel names of the caller and the answering seat,
        # for moving both into a conference room at dispatch
        self._legs: dict[str, dict[str, str]] = {}
        # QueueCallerAbandon also comes when the caller leaves the queue for the dialplan's overflow
        # (Queue's timeout): kept until the call's Hangup says the caller really gave up.
        self._left_queue: dict[str, tuple[float, dict[str, str | None]]] = {}
        # Callers the dialplan sent to its overflow (UserEvent JiejingOverflow): their next answered
        # Dial is the overflow's. app_queue's own Dial to a seat sends DialEnd too.
        self._overflowing: set[str] = set()
        self.applied = 0
        self.rejected = 0
        # Where a position from the log goes (the dispatch planner's ``locate``), set by the assembly.
        self.locate: Callable[..., Awaitable[object]] | None = None
        # Where a caller who pressed 1 for a declared major incident goes (``MajorIncidents.link_caller``).
        self.major_pressed: Callable[..., Awaitable[object]] | None = None
        self._noted: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._fallbacks: deque[float] = deque(maxlen=NOTED_MAX)  # when calls took the fallback (the log's times)
        self.fallbacks = 0

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call-events")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._recording_tasks):
            task.cancel()
        await asyncio.gather(*self._recording_tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every queued event has been applied (tests, shutdown)."""
        await self._queue.join()

    def on_event(self, event) -> None:
        """AMI listener: cheap, never blocks the reader.

        With Asterisk's log followed, AMI only keeps the live channel names, done here at once; only a
        hang-up of a call the log does not have goes into the queue. Otherwise every event is queued.
        """
        if not self.steps_from_ami and not self._keep_legs(event):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Only without Asterisk's log can this cost a step; the next AMI log-in's resync reconciles.
            self.dropped_events += 1
            if self.dropped_events == 1 or self.dropped_events % 1000 == 0:
                log.error("%d AMI events left out: %d waiting to be applied", self.dropped_events, EVENTS_MAX)

    def _keep_legs(self, event) -> bool:
        """With the log followed: keep the live channel names a dispatch needs. True for the one event that
        must still be applied, the hang-up of a call the log does not have."""
        uid = event.get("Uniqueid")
        if not uid:
            return False
        if event.name == "AgentConnect":
            self._legs[uid] = {"caller": event.get("Channel"), "seat": event.get("DestChannel")}
        elif event.name == "Hangup":
            self._legs.pop(uid, None)
            return uid in self._calls and not self.speaks_for(uid)
        return False

    async def reconcile(self, call: CelCall, final: bool) -> None:
        """Apply what Asterisk's log (CEL) says of one call, in turn with the live events; wait until done."""
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(_Reconcile(call, final, done))  # the follower waits for room, nothing is left out
        await done

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if isinstance(event, _Reconcile):
                    try:
                        await self._reconcile(event.call, event.final)
                    except BaseException as exc:
                        if not event.done.done():
                            event.done.set_exception(exc)
                        raise
                    else:
                        if not event.done.done():
                            event.done.set_result(None)
                    continue
                await self.apply(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad event must not stop the ticket trail of every other call.
                log.exception("event %s could not be applied", getattr(event, "name", "?"))
            finally:
                self._queue.task_done()

    # -- events --------------------------------------------------------------
    def is_intake(self, context: str | None, exten: str | None) -> bool:
        return context in self.intake_contexts and exten in self.emergency_numbers

    async def apply(self, event) -> None:
        name = event.name
        uid = event.get("Uniqueid")
        if not uid:
            return
        at = event.timestamp or self.clock()
        if not self.steps_from_ami:
            if self._keep_legs(event):
                # A call the log does not have (it began before the store first followed the log, its
                # ticket came from the channel snapshot): its end comes from here.
                await self._hangup(uid, at, source="ami", cause=event.get("Cause"),
                                   cause_text=event.get("Cause-txt"))
            return
        if name == "Newchannel":
            if self.is_intake(event.get("Context"), event.get("Exten")):
                await self._open(event, at, source="ami")
            return
        if name == "QueueCallerJoin":
            self._left_queue.pop(uid, None)
            if uid not in self._calls:
                await self._open(event, at, source="ami")
            await self._step(uid, Step.QUEUED, at, queue=event.get("Queue"), position=event.get("Position"))
        elif name == "AgentCalled" and uid in self._calls:
            await self._step(uid, Step.SEAT_RINGING, at, seat=event.get("MemberName"),
                             interface=event.get("Interface"))
        elif name == "AgentRingNoAnswer" and uid in self._calls:
            await self._step(uid, Step.SEAT_NO_ANSWER, at, seat=event.get("MemberName"),
                             ring_ms=event.get("RingTime"))
        elif name == "AgentConnect" and uid in self._calls:
            self._legs[uid] = {"caller": event.get("Channel"), "seat": event.get("DestChannel")}
            await self._step(uid, Step.ANSWERED, at, seat=event.get("MemberName"),
                             interface=event.get("Interface"), hold_s=event.get("HoldTime"))
        elif name == "UserEvent" and event.get("UserEvent") == OVERFLOW_EVENT and uid in self._calls:
            self._overflowing.add(uid)
        elif (name == "DialEnd" and uid in self._overflowing
              and (event.get("DialStatus") or "").upper() == "ANSWER"):
            # The dialplan's overflow: no seat took the caller and the supervisors' desk (or a back-up
            # center) answered. Only a call still waiting is answered so; a hand-over's Dial comes later.
            ticket = await self.service.find_by_uniqueid(uid)
            if ticket is not None and ticket.state in WAITING_STATES:
                self._left_queue.pop(uid, None)
                dest = event.get("DestChannel") or ""
                await self._step(uid, Step.ANSWERED, at, overflow_to=dest.rsplit("-", 1)[0] or None)
        elif name == "QueueCallerAbandon" and uid in self._calls:
            self._left_queue[uid] = (at, {"queue": event.get("Queue"), "hold_s": event.get("HoldTime")})
        elif name == "Hangup" and uid in self._calls:
            await self._hangup(uid, at, source="ami", cause=event.get("Cause"), cause_text=event.get("Cause-txt"))

    async def _open(self, event, at: float, *, source: str) -> None:
        ticket = await self.service.open_call(
            uniqueid=event.get("Uniqueid"),
            caller_id=event.get("CallerIDNum") or "",
            caller_name=event.get("CallerIDName"),
            at=at,
            source=source,
        )
        self._calls[ticket.uniqueid] = ticket.number

    async def _step(self, uid: str, step: Step, at: float, *, source: str = "ami", **detail) -> bool:
        detail = {k: v for k, v in detail.items() if v is not None}
        try:
            await self.service.record_step(uid, step, at=at, source=source, **detail)
        except IllegalTransition as exc:
            # Duplicates after a resync, or events of a ticket already closed:
            # the trail keeps what it has; we only note it.
            self.rejected += 1
            log.info("%s: %s", uid, exc)
            return False
        except UnknownCall:
            self.rejected += 1
            log.warning("%s: step %s for a call without ticket", uid, step)
            return False
        self.applied += 1
        return True

    def legs(self, uid: str) -> dict[str, str] | None:
        """Channel names of a connected call's caller and seat, or None."""
        return self._legs.get(uid)

    async def _hangup(self, uid: str, at: float, *, source: str, **detail) -> None:
        self._legs.pop(uid, None)
        left = self._left_queue.pop(uid, None)
        self._overflowing.discard(uid)
        ticket = await self.service.find_by_uniqueid(uid)
        if ticket is None:
            self._calls.pop(uid, None)
            return
        if ticket.state in CALL_CONNECTED_STATES or ticket.state in LATE_HANGUP_STATES:
            await self._step(uid, Step.HUNG_UP, at, source=source, **detail)
        elif ticket.state in WAITING_STATES:
            if left is not None:  # abandoned when the caller left the queue, as Asterisk stamped it
                await self._step(uid, Step.ABANDONED, left[0], source=source, **left[1])
            else:
                await self._step(uid, Step.ABANDONED, at, source=source, **detail)
        self._calls.pop(uid, None)
        self._bind_recording_later(uid, ticket.number)

    # -- Asterisk's log (CEL) -------------------------------------------------
    async def _reconcile(self, call: CelCall, final: bool) -> None:
        """Give the ticket every step of ``call`` it lacks, in order, at Asterisk's times.

        The n-th step of a kind (per seat for ``seat_ringing``) in the log is
        the n-th of that kind on the ticket: those the live stream already
        recorded are skipped. A step the lifecycle refuses where it stands (a
        ring recorded after the answer came live) is only counted. A call
        whose caller hung up has its end and its recording, whichever path
        got there first.
        """
        steps = derive_steps(call)
        if not steps or steps[0].step is not Step.RECEIVED:
            return
        uid = call.uniqueid
        ticket = await self.service.find_by_uniqueid(uid)
        if ticket is None:
            first = steps[0]
            ticket = await self.service.open_call(uniqueid=uid, caller_id=first.detail.get("caller") or "",
                                                  caller_name=first.detail.get("caller_name") or None,
                                                  at=first.at, source=Source.CEL)
        if ticket.state is State.CLOSED:
            return
        self._calls.setdefault(uid, ticket.number)
        await self._marks(call, ticket)
        have = Counter(DerivedStep(s.step, 0.0, dict(s.detail)).key for s in ticket.steps)
        ended = any(s.step in (Step.HUNG_UP, Step.ABANDONED) for s in ticket.steps)
        seen: Counter = Counter()
        for d in steps[1:]:
            if d.step is Step.HUNG_UP:
                if not ended:
                    self._calls.setdefault(uid, ticket.number)
                    await self._hangup(uid, d.at, source=Source.CEL, **d.detail)
                elif not ticket.recordings:
                    self._bind_recording_later(uid, ticket.number)
                break
            seen[d.key] += 1
            if have[d.key] >= seen[d.key]:
                continue
            await self._step(uid, d.step, d.at, source=Source.CEL, **d.detail)
        if final:
            self._calls.pop(uid, None)
            self._legs.pop(uid, None)

    def _note(self, what: str, uid: str) -> bool:
        """True the first time (``what``, ``uid``) is noted."""
        if (what, uid) in self._noted:
            return False
        self._noted[(what, uid)] = None
        while len(self._noted) > NOTED_MAX:
            self._noted.popitem(last=False)
        return True

    async def _marks(self, call: CelCall, ticket) -> None:
        """The dialplan's marks in the log: the network's position (the incident's first location), a call
        queued without the intake's answer (counted for /healthz)."""
        uid = call.uniqueid
        fell_back = fallback_at(call)
        if fell_back is not None and self._note("fallback", uid):
            self.fallbacks += 1
            self._fallbacks.append(fell_back)
        pressed = major_pressed(call)
        if pressed is not None and self.major_pressed is not None and self._note("major", uid):
            try:
                await self.major_pressed(uid, pressed[0], at=pressed[1])
            except Exception:
                log.exception("%s: the press of 1 for major incident %s was not linked", ticket.number, pressed[0])
        position = call_position(call)
        if position is None or self.locate is None or not self._note("located", uid):
            return
        if any(s.step is Step.LOCATED and s.detail.get("address") == NETWORK_ADDRESS for s in ticket.steps):
            return  # recorded before a restart
        try:
            await self.locate(ticket.number, lat=position[0], lon=position[1], address=NETWORK_ADDRESS,
                              at=position[2], fix=NETWORK_FIX)
        except Exception:
            log.exception("%s: network position %.5f,%.5f not recorded", ticket.number, *position[:2])

    def fallback_health(self, *, window_s: float = FALLBACK_WINDOW_S) -> dict:
        """Not ok while calls took the dialplan's fallback within ``window_s``: the intake did not answer them."""
        now = self.clock()  # Asterisk's times: a call replayed after a restart counts from when it came
        recent = sum(1 for t in self._fallbacks if now - t < window_s)
        return {"ok": not recent, "fallbacks": self.fallbacks,
                "reason": (f"{recent} calls in the last {window_s:.0f} s were queued without the intake's answer "
                           "(the dialplan's fallback)") if recent else None}

    # -- recordings ----------------------------------------------------------
    def bind_recording_of(self, uid: str, number: str) -> None:
        """Bind the recording of channel ``uid`` to ticket ``number`` once written (a call-back's call)."""
        self._bind_recording_later(uid, number)

    def _bind_recording_later(self, uid: str, number: str) -> None:
        if self.recordings_dir is None:
            return
        task = asyncio.create_task(self._bind_recording(uid, number), name=f"recording-{number}")
        self._recording_tasks.add(task)
        task.add_done_callback(self._recording_tasks.discard)

    def recording_candidates(self, uid: str, number: str) -> list[Path]:
        # Named after the channel's uniqueid (the dialplan's); after the ticket as well on a call-back, and on
        # a 110 call of a release whose intake gave the ticket number.
        assert self.recordings_dir is not None
        return [self.recordings_dir / f"{uid}.wav", self.recordings_dir / f"{recording_name(number, uid)}.wav"]

    async def _bind_recording(self, uid: str, number: str) -> None:
        """Bind the file once Asterisk no longer has it open: MixMonitor has finished it, so its hash is final."""
        ended = time.monotonic()  # any look at Asterisk's open files from now on shows the file if still open
        await asyncio.sleep(RECORDING_SETTLE_S)
        deadline = time.monotonic() + RECORDING_WAIT_S
        while time.monotonic() < deadline:
            for path in self.recording_candidates(uid, number):
                if not path.is_file():
                    continue
                still = await asyncio.to_thread(self.open_files.is_open, path, seen_after=ended)
                if still:
                    break  # still written: look again
                if still is None and not self._open_files_unknown_logged:
                    self._open_files_unknown_logged = True
                    log.warning("Asterisk's open files cannot be read (run the backend as Asterisk's user or "
                                "root): recordings are bound once their call has ended")
                try:
                    await self.service.bind_recording(number, path)
                except Exception:
                    log.exception("recording %s of %s could not be bound", path, number)
                return
            await asyncio.sleep(0.2)
        log.warning("no finished recording for ticket %s (%s) within %.0f s", number, uid, RECORDING_WAIT_S)

    async def wait_recordings(self) -> None:
        await asyncio.gather(*list(self._recording_tasks), return_exceptions=True)

    # -- reconciliation after (re)connect --------------------------------------
    async def live_channels(self, ami) -> set[str]:
        """The uniqueids of every channel Asterisk has now: a 110 caller may be in any context by then (a
        dispatch's conference room, a hand-over)."""
        _, channels = await ami.list_action("CoreShowChannels")
        return _uniqueids(channels)

    async def resync(self, ami, *, speaks_for=None) -> dict:
        """Bring live state in line with the channels Asterisk really has.

        ``speaks_for(uniqueid)`` says whether Asterisk's log (CEL), replayed
        just before, has the call: then the log alone gives its steps and
        times, and the snapshot only tells which calls are live. For the
        others (no log configured, or calls older than its checkpoint) the
        snapshot is all there is: it opens, answers and ends their tickets at
        the snapshot's time. It never ends a ticket opened after the snapshot
        was taken (a call that arrived meanwhile is simply not in it).
        """
        await self.drain()
        logged = speaks_for or (lambda uid: False)
        snapshot_us = int(self.clock() * 1_000_000)
        _, channels = await ami.list_action("CoreShowChannels")
        now = self.clock()
        live: set[str] = set()
        opened = closed = 0
        by_linked: dict[str, list] = {}
        for ch in channels:
            by_linked.setdefault(ch.get("Linkedid") or "", []).append(ch)
        for ch in channels:
            uid = ch.get("Uniqueid")
            if not uid or ch.get("Context") not in self.intake_contexts:
                continue
            live.add(uid)
            seat_channel = next(
                (o.get("Channel", "") for o in by_linked.get(uid, [])
                 if o.get("Uniqueid") != uid and ch.get("BridgeId") and o.get("BridgeId") == ch.get("BridgeId")),
                None,
            )
            if seat_channel:
                self._legs.setdefault(uid, {"caller": ch.get("Channel"), "seat": seat_channel})
            if logged(uid):
                ticket = await self.service.find_by_uniqueid(uid)
                if ticket is not None:
                    self._calls.setdefault(uid, ticket.number)
                continue
            if uid not in self._calls:
                before = await self.service.find_by_uniqueid(uid)
                at = now - _duration_seconds(ch.get("Duration") or "0:0:0")
                ticket = await self.service.open_call(
                    uniqueid=uid, caller_id=ch.get("CallerIDNum") or "", caller_name=ch.get("CallerIDName"),
                    at=at, source="resync",
                )
                self._calls[uid] = ticket.number
                opened += before is None
            ticket = await self.service.find_by_uniqueid(uid)
            if ticket and seat_channel and ticket.state in WAITING_STATES:
                seat = seat_channel.split("/", 1)[-1].rsplit("-", 1)[0]
                if ticket.state == State.RECEIVED:
                    await self._step(uid, Step.QUEUED, now, source="resync")
                await self._step(uid, Step.ANSWERED, now, source="resync", seat=seat)
        _, entries = await ami.list_action("QueueStatus")
        for entry in entries:
            uid = entry.get("Uniqueid")
            if entry.name == "QueueEntry" and uid in self._calls and not logged(uid):
                ticket = await self.service.find_by_uniqueid(uid)
                if ticket and ticket.state == State.RECEIVED:
                    await self._step(uid, Step.QUEUED, now, source="resync", queue=entry.get("Queue"))
        # Tickets whose channel disappeared while we were not listening, and the log cannot tell. A caller
        # moved to another context (a dispatch's conference room, a hand-over) is still there.
        present = _uniqueids(channels)  # the intake's live channels among them
        for uid in await self.service.open_uniqueids():
            if uid in present or logged(uid):
                continue
            ticket = await self.service.find_by_uniqueid(uid)
            if ticket is None or not ticket.steps or ticket.steps[0].at_us >= snapshot_us:
                continue  # arrived after the snapshot: its own events will end it
            self._calls.setdefault(uid, None)
            await self._hangup(uid, now, source="resync", reconciled=True)
            closed += 1
        result = {"channels": len(live), "opened": opened, "ended": closed}
        log.info("resync: %s", result)
        return result
