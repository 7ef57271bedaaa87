"""The center's own call-backs of lost 110 callers, on the Asterisk side: ring the caller first.

``AutoDialer.ring(attempt)`` is what ``core.triage.auto_callback`` calls when an attempt is due. One AMI
Originate of ``PJSIP/<number>@<carrier trunk>`` into the ``[auto-callback]`` context: the caller's phone
rings, and only once he answers does the dialplan run — recording as on a 110 call, ringing in his ear at
once (never silence) and the 110 queue at a priority above every ordinary call. The steps of the attempt,
on the ticket, from this channel's events:

* ``auto_callback_started`` (attempt, number rung, channel) before the Originate is sent;
* ``auto_callback_ringing`` when his phone rings (``Newstate`` Ringing);
* ``auto_callback_answered`` (OriginateResponse Success) or ``auto_callback_failed`` with the outcome:
  ``no_answer``, ``busy``, ``unreachable``, ``failed``, ``cancelled`` (hung up by us: he rang 110 again),
  ``not_placed`` (Asterisk could not be asked) or ``unknown`` (nothing heard of it);
* ``auto_callback_connected`` (the seat) when a seat takes him (``AgentConnect``), ``auto_callback_ended``
  when his channel hangs up; the recording is bound to the ticket then.

The channel's uniqueid is chosen here (Originate ``ChannelId``), so every event of the attempt is known as
its own before Asterisk says anything. An Originate is never sent twice: the AMI client fails one without an
answer with OriginateOutcomeUnknown, and the attempt is then followed by its channel's events only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.calls.lifecycle import IllegalTransition, Step
from core.calls.tickets import Source, TicketService
from core.triage.auto_callback import Attempt
from telephony import channel_vars
from telephony.ami.client import NotConnected, OriginateOutcomeUnknown
from telephony.dispatcher import ORIGINATE_OUTCOMES

log = logging.getLogger("jiejing.auto_callback")

CONTEXT = "auto-callback"
EXTEN = "caller"
# Beyond the ring time, how long an attempt waits for Asterisk's word on it before its outcome is unknown.
UNDECIDED_S = 30.0
# An answered call-back sends nothing while the caller waits or talks: stop following it after this long.
SILENCE_S = 4 * 3600.0
CONNECT_WAIT_S = 5.0  # for the AMI connection, when an attempt falls due just after a start
RINGING_STATE = "5"  # Newstate ChannelState of a phone that rings (AST_STATE_RINGING)
EARLY_KEEP = 64


@dataclass
class _Call:
    attempt: Attempt
    channel_id: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    channel: str | None = None  # its name, once Asterisk has said it (for a hang-up)
    action_id: str | None = None
    cancelled: bool = False
    hangup_sent: bool = False
    answered: bool = False


class AutoDialer:
    """Rings lost callers back; ``on_event`` is the AMI listener."""

    def __init__(self, ami, service: TicketService, *, trunk: str, cli: str,
                 bind_recording: Callable[[str, str], None] | None = None,
                 undecided_s: float = UNDECIDED_S, silence_s: float = SILENCE_S) -> None:
        self.ami = ami
        self.service = service
        self.trunk = trunk
        self.cli = cli
        self.bind_recording = bind_recording
        self.undecided_s = undecided_s
        self.silence_s = silence_s
        self._by_channel: dict[str, _Call] = {}
        self._by_action: dict[str, _Call] = {}
        self._by_ticket: dict[str, _Call] = {}
        self._early: dict[str, object] = {}
        self._followers: set[asyncio.Task] = set()

    # -- AMI events (listener: cheap, never blocks the reader) ----------------------------------------------
    def on_event(self, event) -> None:
        if event.name == "OriginateResponse":
            if not event.action_id:
                return
            call = self._by_action.get(event.action_id)
            if call is None:
                self._early[event.action_id] = event
                while len(self._early) > EARLY_KEEP:
                    self._early.pop(next(iter(self._early)))
                return
            call.events.put_nowait(event)
        elif event.name in ("Newchannel", "Newstate", "AgentConnect", "Hangup"):
            call = self._by_channel.get(event.get("Uniqueid") or "")
            if call is None:
                return
            if call.channel is None and event.get("Channel"):
                call.channel = event.get("Channel")
            call.events.put_nowait(event)

    # -- the attempt -------------------------------------------------------------------------------------------
    async def ring(self, attempt: Attempt) -> str:
        channel_id = f"autocb-{int(time.time())}-{secrets.token_hex(6)}"
        call = _Call(attempt, channel_id)
        await self._step(call, Step.AUTO_CALLBACK_STARTED, None, to=attempt.to, channel=channel_id,
                         ring_s=attempt.ring_s)
        self._by_channel[channel_id] = call
        self._by_ticket[attempt.number] = call
        try:
            with contextlib.suppress(Exception):  # the Originate below says what is wrong
                await self.ami.wait_connected(CONNECT_WAIT_S)
            try:
                resp = await self.ami.originate(
                    Channel=f"PJSIP/{attempt.to}@{self.trunk}",
                    Context=CONTEXT, Exten=EXTEN, Priority=1,
                    Timeout=int(attempt.ring_s * 1000),
                    ChannelId=channel_id,
                    CallerID=f'"{self.cli}" <{self.cli}>',
                    Variable={
                        channel_vars.TICKET: attempt.number,
                        channel_vars.RECORDING: channel_vars.recording_name(attempt.number, channel_id),
                    },
                )
            except OriginateOutcomeUnknown as exc:
                # Asterisk may be ringing him: follow the channel, never send it again.
                log.warning("%s: call-back Originate outcome unknown: %r; following its channel", attempt.number, exc)
                return await self._decide(call)
            except (NotConnected, ConnectionError, TimeoutError) as exc:
                await self._step(call, Step.AUTO_CALLBACK_FAILED, None, outcome="not_placed", why=str(exc)[:200])
                return "not_placed"
            if not resp.ok:
                await self._step(call, Step.AUTO_CALLBACK_FAILED, None, outcome="failed",
                                 why=(resp.message or "refused")[:200])
                return "failed"
            call.action_id = resp.action_id
            self._by_action[resp.action_id] = call
            early = self._early.pop(resp.action_id, None)
            if early is not None:
                call.events.put_nowait(early)
            return await self._decide(call)
        finally:
            if not call.answered:
                self._forget(call)

    def hang_up(self, number: str) -> bool:
        """Hang up the ticket's attempt if its phone still rings (the caller rang 110 again)."""
        call = self._by_ticket.get(number)
        if call is None or call.answered:
            return False
        call.cancelled = True
        self._maybe_hang_up(call)
        return True

    def _maybe_hang_up(self, call: _Call) -> None:
        """A cancelled attempt's channel is hung up as soon as its name is known (its Newchannel may come later)."""
        if not call.cancelled or call.hangup_sent or not call.channel or call.answered:
            return
        call.hangup_sent = True
        task = asyncio.create_task(self._hangup_channel(call.channel), name=f"auto-callback-hangup-{call.channel_id}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _hangup_channel(self, channel: str) -> None:
        try:
            await self.ami.action("Hangup", [("Channel", channel)])
        except Exception:
            log.exception("call-back channel %s could not be hung up", channel)

    async def stop(self) -> None:
        for task in list(self._followers):
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)

    async def _next(self, call: _Call, timeout: float):
        try:
            async with asyncio.timeout(timeout):
                return await call.events.get()
        except TimeoutError:
            return None

    async def _decide(self, call: _Call) -> str:
        """Follow the attempt until Asterisk says how it ended (its OriginateResponse)."""
        rang = False
        seen: list = []  # a seat's answer or the end, should they come before the OriginateResponse
        deadline = time.monotonic() + call.attempt.ring_s + self.undecided_s
        hung_up = None
        while True:
            event = await self._next(call, max(0.0, deadline - time.monotonic()) if hung_up is None else 2.0)
            if event is None:
                outcome = "cancelled" if call.cancelled and hung_up is not None else "unknown"
                await self._step(call, Step.AUTO_CALLBACK_FAILED, hung_up, outcome=outcome)
                return outcome
            self._maybe_hang_up(call)
            if event.name == "Newstate" and event.get("ChannelState") == RINGING_STATE and not rang:
                rang = True
                await self._step(call, Step.AUTO_CALLBACK_RINGING, event)
            elif event.name == "AgentConnect":
                seen.append(event)  # its OriginateResponse was held up: the call goes on regardless
            elif event.name == "Hangup":
                hung_up = event  # the OriginateResponse that says why follows at once
                seen.append(event)
            elif event.name == "OriginateResponse":
                if event.get("Response") == "Success":
                    call.answered = True
                    await self._step(call, Step.AUTO_CALLBACK_ANSWERED, event)
                    task = asyncio.create_task(self._follow(call, seen),
                                               name=f"auto-callback-call-{call.attempt.number}")
                    self._followers.add(task)
                    task.add_done_callback(self._followers.discard)
                    return "answered"
                if call.cancelled:
                    outcome = "cancelled"
                else:
                    try:
                        outcome = ORIGINATE_OUTCOMES.get(int(event.get("Reason") or 0), "failed")
                    except ValueError:
                        outcome = "failed"
                await self._step(call, Step.AUTO_CALLBACK_FAILED, event, outcome=outcome,
                                 reason=event.get("Reason"))
                return outcome

    async def _follow(self, call: _Call, seen: list) -> None:
        """The answered call-back: which seat takes him, and when it ends (then its recording is bound)."""
        connected = None
        try:
            while True:
                event = seen.pop(0) if seen else await self._next(call, self.silence_s)
                if event is None:
                    log.warning("%s: answered call-back %s not heard of for %.0f s; no longer followed",
                                call.attempt.number, call.channel_id, self.silence_s)
                    return
                if event.name == "AgentConnect" and connected is None:
                    connected = event.get("MemberName") or (event.get("DestChannel") or "").split("/", 1)[-1]
                    await self._step(call, Step.AUTO_CALLBACK_CONNECTED, event, seat=connected,
                                     hold_s=event.get("HoldTime"))
                elif event.name == "Hangup":
                    await self._step(call, Step.AUTO_CALLBACK_ENDED, event, seat=connected,
                                     connected=connected is not None, cause=event.get("Cause"))
                    if self.bind_recording is not None:
                        self.bind_recording(call.channel_id, call.attempt.number)
                    return
        finally:
            self._forget(call)

    def _forget(self, call: _Call) -> None:
        self._by_channel.pop(call.channel_id, None)
        if call.action_id:
            self._by_action.pop(call.action_id, None)
        if self._by_ticket.get(call.attempt.number) is call:
            self._by_ticket.pop(call.attempt.number, None)

    async def _step(self, call: _Call, step: Step, event, **detail) -> None:
        at = (event.timestamp if event is not None else None) or self.service.clock()
        detail = {k: v for k, v in detail.items() if v is not None}
        try:
            await self.service.record_step(call.attempt.uniqueid, step, at=at, source=Source.AMI,
                                           attempt=call.attempt.attempt, **detail)
        except IllegalTransition as exc:
            log.warning("%s: call-back step %s not recorded: %s", call.attempt.number, step, exc)
        except Exception:
            log.exception("%s: call-back step %s not recorded", call.attempt.number, step)
