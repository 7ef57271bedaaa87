"""Calling the reporter back from a seat, on the Asterisk side.

``call_back(number, seat=…)`` rings the call-taker's own phone first and the
reporter only once he has picked up: one AMI Originate of ``PJSIP/<seat>``
into the ``[callback]`` context, which starts the recording and dials the
reporter through the carrier trunk. The reporter never answers a call with
nobody on the center's side, and a seat that does not pick up costs the
reporter nothing.

The channel's uniqueid is chosen here (Originate ``ChannelId``), so the
recording's name (``recording_name(ticket, uniqueid)``) and every event of
the call-back are known before Asterisk says anything. One owned task per
ticket follows the call and writes its steps:

* ``callback_requested`` (by, seat, number, channel) before the Originate is
  sent, so the trail shows what the call-taker asked even if it fails;
* ``callback_answered`` when the Dial to the reporter ends answered
  (``DialEnd``), then ``callback_ended`` when the seat's channel hangs up;
  ``callback_failed`` with its outcome otherwise: the seat
  did not answer (``seat_no_answer``, ``seat_busy``, ``seat_unreachable``,
  ``seat_failed``), the reporter did not (``no_answer``, ``busy``,
  ``unreachable``), the seat hung up first (``cancelled``,
  ``seat_hung_up``), the Originate was not sent (``not_placed``) or nothing
  was heard of the call (``unknown``);
* when the seat's channel hangs up, its recording is bound to the ticket.

One call-back at a time per ticket, and an Originate is never repeated: the
AMI client fails an unanswered Originate with OriginateOutcomeUnknown, and
then the call-back is followed by its channel's events, not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.calls.callback import callback_number
from core.calls.lifecycle import IllegalTransition, Step, advance
from core.calls.numbering import looks_like_number
from core.calls.tickets import Source, TicketService, UnknownTicket
from core.errors import DomainError
from core.seats.board import check_seat
from telephony import channel_vars
from telephony.ami.client import NotConnected, OriginateOutcomeUnknown
from telephony.dispatcher import ORIGINATE_OUTCOMES

log = logging.getLogger("jiejing.callback")

CONTEXT = "callback"
EXTEN = "reporter"
SEAT_RING_S = 20.0  # the call-taker just pressed the key: his phone rings at once
# How long the API waits for a sign of the seat's phone (its channel, or an
# immediate failure) before answering 202 anyway.
PLACED_WAIT_S = 1.0
# After the seat's channel is gone, how long to wait for the OriginateResponse that says why.
REASON_WAIT_S = 2.0
# Events lost (an AMI reconnect): stop following a call-back after this long without a word of it,
# beyond the seat's ring time while undecided (the reporter rings JIEJING_CALLBACK_RING_S at most),
# or at all once the reporter answered (a call sends no events while it lasts).
UNDECIDED_S = 120.0
SILENCE_S = 4 * 3600.0
EARLY_KEEP = 64
# DialEnd DialStatus of the reporter's leg → the outcome recorded.
DIAL_OUTCOMES = {"NOANSWER": "no_answer", "BUSY": "busy", "CHANUNAVAIL": "unreachable",
                 "CONGESTION": "unreachable", "CANCEL": "cancelled"}


class CallbackBusy(DomainError):
    """A call-back of this ticket is already under way."""

    status = 409
    error_id = "callback-busy"


class SeatNotReachable(DomainError):
    """Asterisk refused to ring the seat, or the seat's phone failed at once."""

    status = 409
    error_id = "seat-not-reachable"


class CallbackNotPlaced(DomainError):
    """Asterisk could not be asked (AMI down), or did not say whether it rings the seat."""

    status = 503
    error_id = "callback-not-placed"


@dataclass
class _Callback:
    number: str
    uniqueid: str  # the ticket's (a call's uniqueid, a report's channel:ref)
    seat: str
    to: str
    channel_id: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    placed: asyncio.Future | None = None  # True: the seat's channel exists; False: failed at once
    action_id: str | None = None


class Callbacks:
    """Call-backs from seats; ``on_event`` is the AMI listener, ``call_back`` the API's entry."""

    def __init__(self, ami, service: TicketService, *, bind_recording: Callable[[str, str], None] | None = None,
                 seat_ring_s: float = SEAT_RING_S, placed_wait_s: float = PLACED_WAIT_S,
                 reason_wait_s: float = REASON_WAIT_S, silence_s: float = SILENCE_S) -> None:
        self.ami = ami
        self.service = service
        self.bind_recording = bind_recording  # (channel uniqueid, ticket number): bind its file once written
        self.seat_ring_s = seat_ring_s
        self.placed_wait_s = placed_wait_s
        self.reason_wait_s = reason_wait_s
        self.silence_s = silence_s
        self._active: dict[str, _Callback | None] = {}  # ticket number → its call-back (None while checked)
        self._by_channel: dict[str, _Callback] = {}
        self._by_action: dict[str, _Callback] = {}
        self._early: dict[str, object] = {}  # OriginateResponse seen before its ActionID was known
        self._tasks: dict[str, asyncio.Task] = {}

    # -- AMI events (listener: cheap, never blocks the reader) -----------------
    def on_event(self, event) -> None:
        if event.name == "OriginateResponse":
            if not event.action_id:
                return
            cb = self._by_action.get(event.action_id)
            if cb is None:
                self._early[event.action_id] = event
                while len(self._early) > EARLY_KEEP:
                    self._early.pop(next(iter(self._early)))
                return
            self._deliver(cb, event)
        elif event.name in ("Newchannel", "DialEnd", "Hangup"):
            cb = self._by_channel.get(event.get("Uniqueid") or "")
            if cb is not None:
                self._deliver(cb, event)

    @staticmethod
    def _deliver(cb: _Callback, event) -> None:
        if cb.placed is not None and not cb.placed.done():
            if event.name == "Newchannel":
                cb.placed.set_result(True)
            elif event.name == "OriginateResponse" and event.get("Response") != "Success":
                cb.placed.set_result(False)
        cb.events.put_nowait(event)

    # -- API ---------------------------------------------------------------------
    def busy(self, number: str) -> bool:
        return number in self._active

    async def call_back(self, number: str, *, seat: str, by: str) -> dict:
        """Ring ``seat``, then the ticket's reporter; returns ``{number, seat, to}`` once Asterisk took it.

        Refusals: UnknownTicket, UnknownSeat, IllegalTransition (not in a
        state that allows a call-back), NoCallbackNumber, CallbackBusy,
        SeatNotReachable, CallbackNotPlaced.
        """
        seat = check_seat(seat)
        if not looks_like_number(number):
            raise UnknownTicket("no such ticket", details={"number": number[:64]})
        if self.busy(number):
            raise CallbackBusy(f"{number} is already being called back", details={"number": number})
        self._active[number] = None  # taken before the first await: a second request is refused
        try:
            cb = await self._prepare(number, seat, by)
        except BaseException:
            self._active.pop(number, None)
            raise
        return await self._place(cb)

    async def _prepare(self, number: str, seat: str, by: str) -> _Callback:
        ticket = await self.service.get(number)
        if ticket is None:
            raise UnknownTicket(f"no ticket {number!r}", details={"number": number})
        advance(ticket.state, Step.CALLBACK_REQUESTED)  # refuse before anything is written or rung
        to = callback_number(number, ticket.caller_id)
        cb = _Callback(number, ticket.uniqueid, seat, to, f"callback-{int(time.time())}-{secrets.token_hex(6)}")
        await self.service.record_step(ticket.uniqueid, Step.CALLBACK_REQUESTED, at=self.service.clock(),
                                       source=Source.API, by=by, seat=seat, to=to, channel=cb.channel_id)
        return cb

    async def _place(self, cb: _Callback) -> dict:
        self._active[cb.number] = cb
        self._by_channel[cb.channel_id] = cb
        cb.placed = asyncio.get_running_loop().create_future()
        try:
            resp = await self.ami.originate(
                Channel=f"PJSIP/{cb.seat}",
                Context=CONTEXT, Exten=EXTEN, Priority=1,
                Timeout=int(self.seat_ring_s * 1000),
                ChannelId=cb.channel_id,
                # what the call-taker's phone shows: the ticket and whom he calls
                CallerID=f'"{cb.number}" <{cb.to}>',
                Variable={
                    channel_vars.TICKET: cb.number,
                    channel_vars.RECORDING: channel_vars.recording_name(cb.number, cb.channel_id),
                    channel_vars.CALLBACK_TO: cb.to,
                },
            )
        except OriginateOutcomeUnknown as exc:
            # Asterisk may be ringing the seat: follow the channel, never send it again.
            log.warning("%s: call-back Originate outcome unknown: %r; following its channel", cb.number, exc)
            self._follow(cb)
            raise CallbackNotPlaced("Asterisk did not confirm the call-back; it may still ring the seat",
                                    details={"number": cb.number, "seat": cb.seat}) from None
        except asyncio.CancelledError:
            self._follow(cb)  # whatever Asterisk does now, its events end the call-back
            raise
        except Exception as exc:
            await self._finish_unplaced(cb, "not_placed")
            if isinstance(exc, NotConnected):
                raise CallbackNotPlaced("the telephone system is not reachable now",
                                        details={"number": cb.number}) from None
            raise
        if not resp.ok:
            log.warning("%s: call-back Originate refused: %s", cb.number, resp.message)
            await self._finish_unplaced(cb, "seat_unreachable", reason=resp.message)
            raise SeatNotReachable(f"seat {cb.seat} cannot be rung", details={"seat": cb.seat})
        cb.action_id = resp.action_id
        self._by_action[resp.action_id] = cb
        early = self._early.pop(resp.action_id, None)
        if early is not None:
            self._deliver(cb, early)
        self._follow(cb)
        with contextlib.suppress(asyncio.TimeoutError):
            if not await asyncio.wait_for(asyncio.shield(cb.placed), self.placed_wait_s):
                raise SeatNotReachable(f"seat {cb.seat} cannot be rung", details={"seat": cb.seat})
        return {"number": cb.number, "seat": cb.seat, "to": cb.to}

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # -- the work ------------------------------------------------------------------
    def _follow(self, cb: _Callback) -> None:
        task = asyncio.create_task(self._run(cb), name=f"callback-{cb.number}")
        self._tasks[cb.number] = task

    def _forget(self, cb: _Callback) -> None:
        self._active.pop(cb.number, None)
        self._by_channel.pop(cb.channel_id, None)
        if cb.action_id:
            self._by_action.pop(cb.action_id, None)
        if self._tasks.get(cb.number) is asyncio.current_task():
            self._tasks.pop(cb.number, None)

    async def _finish_unplaced(self, cb: _Callback, outcome: str, **detail) -> None:
        self._forget(cb)
        await self._outcome(cb, Step.CALLBACK_FAILED, None, outcome=outcome, **detail)

    async def _outcome(self, cb: _Callback, step: Step, event, **detail) -> None:
        at = (event.timestamp if event is not None else None) or self.service.clock()
        detail = {k: v for k, v in detail.items() if v is not None}
        try:
            await self.service.record_step(cb.uniqueid, step, at=at, source=Source.AMI, seat=cb.seat, to=cb.to,
                                           **detail)
        except IllegalTransition as exc:
            # Closed while the reporter's phone still rang: closed stays final (lifecycle.py).
            log.warning("%s: call-back outcome %s not recorded: %s", cb.number, step, exc)
        except Exception:
            log.exception("%s: call-back outcome %s not recorded", cb.number, step)

    async def _next(self, cb: _Callback, timeout: float):
        try:
            async with asyncio.timeout(timeout):
                return await cb.events.get()
        except TimeoutError:
            return None

    async def _run(self, cb: _Callback) -> None:
        seat_answered = False  # OriginateResponse Success: the call-taker picked up
        originate_seen = False
        decided = False  # an outcome step is written
        answered = False  # the reporter answered: the call's end is a step too
        hung_up = None
        try:
            while True:
                if hung_up is not None:
                    wait = self.reason_wait_s
                elif decided:
                    wait = self.silence_s  # the call is up: no events until it ends
                else:
                    wait = self.seat_ring_s + UNDECIDED_S
                event = await self._next(cb, wait)
                if event is None:
                    break
                if event.name == "OriginateResponse":
                    originate_seen = True
                    if event.get("Response") == "Success":
                        seat_answered = True
                    elif not decided:
                        try:
                            reason = ORIGINATE_OUTCOMES.get(int(event.get("Reason") or 0), "failed")
                        except ValueError:
                            reason = "failed"
                        await self._outcome(cb, Step.CALLBACK_FAILED, event, outcome=f"seat_{reason}")
                        decided = True
                        break  # the seat never picked up: nothing was recorded, nothing more will come
                elif event.name == "DialEnd" and not decided:
                    # The Dial runs only once the seat picked up, whether or not its
                    # OriginateResponse has come yet (it may overtake it).
                    seat_answered = True
                    status = (event.get("DialStatus") or "").upper()
                    if status == "ANSWER":
                        answered = True
                        await self._outcome(cb, Step.CALLBACK_ANSWERED, event,
                                            reporter_channel=event.get("DestChannel"))
                    else:
                        await self._outcome(cb, Step.CALLBACK_FAILED, event,
                                            outcome=DIAL_OUTCOMES.get(status, "failed"), dial_status=status or None)
                    decided = True
                elif event.name == "Hangup":
                    hung_up = event
                if hung_up is not None and (originate_seen or decided):
                    break
            if answered and hung_up is not None:
                await self._outcome(cb, Step.CALLBACK_ENDED, hung_up)
            if not decided:
                if hung_up is not None and seat_answered:
                    # the seat hung up before the reporter's phone was dialled (or the number was refused)
                    await self._outcome(cb, Step.CALLBACK_FAILED, hung_up, outcome="seat_hung_up")
                else:
                    await self._outcome(cb, Step.CALLBACK_FAILED, hung_up, outcome="unknown")
            if hung_up is not None and seat_answered and self.bind_recording is not None:
                self.bind_recording(cb.channel_id, cb.number)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: call-back not followed to its end", cb.number)
        finally:
            self._forget(cb)
