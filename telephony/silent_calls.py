"""Silent calls on the Asterisk side: the caller's speech and keys watched, the prompt played on the line.

When a seat answers a 110 call (``AgentConnect``), talk detection is set on
the caller's channel (AMI ``Setvar`` of ``TALK_DETECT(set)``): Asterisk then
sends ``ChannelTalkingStart`` when the caller starts talking. A caller with no
talk ``after_s`` seconds after the answer is flagged ``caller_silent``
(``core.calls.silent`` is the rule); once he has talked, detection is removed
again (``TALK_DETECT(remove)``), so a talking city costs two actions and one
event per call. A silent call is never hung up by anything here.

The caller's keys (``DTMFEnd``, direction ``Received``, on his channel) are
steps ``caller_key`` with the question in force and their meaning (yes, no,
``55``: "I cannot speak"). The caller's channel goes through the core (its
MixMonitor and the seat's feature codes keep the bridge off native RTP), so
Asterisk sees his digits.

The prompt ("if you cannot speak, press 5 twice") is played to the caller
while he stays bridged to the seat: one Originate of a Local channel whose
``;2`` half plays the sound (``[silent-prompt]`` ``play``, the sound named in
the dialplan's ``JIEJING_SILENT_PROMPT``) and whose ``;1`` half runs
``ChanSpy`` on the caller's uniqueid in barge mode: caller and call-taker hear
it, nobody is moved out of the call, and it ends with the sound. The step
``prompt_played`` says whether Asterisk put the spy on the caller's channel
(``ChanSpyStart``) and how the playback ended (the dialplan's
``UserEvent(JiejingPrompt)``).

One owned task per watched call applies its events in order; the AMI listener
only hands events over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.calls.lifecycle import CALL_CONNECTED_STATES, IllegalTransition, Step
from core.calls.numbering import looks_like_number
from core.calls.silent import (
    KEYS,
    KeyReader,
    NotSilentCallable,
    SilenceWatch,
    question_in_force,
)
from core.calls.tickets import Source, TicketService, UnknownCall, UnknownTicket
from core.errors import DomainError
from telephony import channel_vars
from telephony.ami.client import NotConnected, OriginateOutcomeUnknown

log = logging.getLogger("jiejing.silent_calls")

PROMPT_CONTEXT = "silent-prompt"
PROMPT_EVENT = "JiejingPrompt"  # the dialplan's UserEvent once the sound has played
# How long a prompt may take from the Originate to the dialplan's event (the sound is a few seconds).
PROMPT_WAIT_S = 30.0
# Events lost (an AMI reconnect): stop following a call after this long without a word of it.
IDLE_S = 4 * 3600.0
# Asterisk's talk detection: this long below the silence threshold ends a burst of talk (its default).
TALK_SILENCE_MS = 2500
_UNIQUEID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PromptBusy(DomainError):
    """The prompt is already playing to this caller."""

    status = 409
    error_id = "prompt-busy"


class PromptNotPlayed(DomainError):
    """Asterisk could not be asked to play the prompt (AMI down, Originate refused or unanswered)."""

    status = 503
    error_id = "prompt-not-played"


@dataclass
class _Prompt:
    by: str
    spy_id: str  # the Local channel's ;1 half, running ChanSpy on the caller
    play_id: str  # its ;2 half, playing the sound
    spied: str | None = None  # the caller's channel, once ChanSpyStart names it
    status: str | None = None  # PLAYBACKSTATUS from the dialplan
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Call:
    uniqueid: str
    channel: str
    watch: SilenceWatch | None  # None: talk detection could not be set, or the rule is off
    keys: KeyReader = field(default_factory=KeyReader)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    prompt: _Prompt | None = None


class SilentCalls:
    """Answered 110 calls watched for silence and keys; ``on_event`` is the AMI listener."""

    def __init__(self, ami, service: TicketService, *, after_s: float, clock: Callable[[], float] = time.time,
                 prompt_wait_s: float = PROMPT_WAIT_S, idle_s: float = IDLE_S) -> None:
        self.ami = ami
        self.service = service
        self.after_s = after_s  # 0: no silence watch (keys and the prompt still work)
        self.clock = clock
        self.prompt_wait_s = prompt_wait_s
        self.idle_s = idle_s
        self._calls: dict[str, _Call] = {}  # caller uniqueid → watched call
        self._prompts: dict[str, _Call] = {}  # a prompt's channel uniqueids (;1 and ;2) → the call it plays to
        self._tasks: set[asyncio.Task] = set()
        self.flagged = 0
        self.not_watched = 0  # talk detection refused: such a call is never flagged (it would be a guess)

    # -- AMI events (listener: cheap, never blocks the reader) ---------------------------
    def on_event(self, event) -> None:
        name = event.name
        uid = event.get("Uniqueid") or ""
        if name == "AgentConnect":
            if uid and uid not in self._calls and _UNIQUEID.fullmatch(uid) and event.get("Channel"):
                call = _Call(uid, event.get("Channel"), None)
                self._calls[uid] = call
                self._spawn(self._run(call, event.timestamp or self.clock()), f"silent-watch {uid}")
        elif name in ("ChannelTalkingStart", "DTMFEnd") and uid in self._calls:
            if name == "DTMFEnd" and event.get("Direction") != "Received":
                return
            self._calls[uid].events.put_nowait(event)
        elif name == "ChanSpyStart":
            call = self._prompts.get(event.get("SpyerUniqueid") or "")
            if call is not None and call.prompt is not None and event.get("SpyeeUniqueid") == call.uniqueid:
                call.prompt.spied = event.get("SpyeeChannel") or call.channel
        elif name == "UserEvent" and event.get("UserEvent") == PROMPT_EVENT:
            call = self._prompts.get(uid)
            if call is not None and call.prompt is not None:
                call.prompt.status = event.get("Status") or "UNKNOWN"
                call.prompt.done.set()
        elif name == "Hangup":
            call = self._prompts.get(uid)
            if call is not None and call.prompt is not None and uid == call.prompt.spy_id:
                call.prompt.done.set()
            if uid in self._calls:
                self._calls[uid].events.put_nowait(event)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def watching(self, uniqueid: str) -> bool:
        return uniqueid in self._calls

    # -- one call ---------------------------------------------------------------------
    async def _talk_detect(self, call: _Call, verb: str) -> bool:
        try:
            resp = await self.ami.action("Setvar", {"Channel": call.channel, "Variable": f"TALK_DETECT({verb})",
                                                    "Value": str(TALK_SILENCE_MS) if verb == "set" else ""})
        except Exception as exc:
            log.warning("%s: talk detection %s not done: %r", call.uniqueid, verb, exc)
            return False
        if not resp.ok:
            log.warning("%s: talk detection %s refused: %s", call.uniqueid, verb, resp.message)
        return resp.ok

    async def _step(self, call: _Call, step: Step, at: float, **detail) -> None:
        try:
            await self.service.record_step(call.uniqueid, step, at=at, source=Source.AMI, **detail)
        except (UnknownCall, IllegalTransition) as exc:
            log.warning("%s: %s not recorded: %s", call.uniqueid, step, exc)
        except Exception:
            log.exception("%s: %s not recorded", call.uniqueid, step)

    async def _run(self, call: _Call, answered_at: float) -> None:
        try:
            if self.after_s > 0:
                if await self._talk_detect(call, "set"):
                    call.watch = SilenceWatch(answered_at, self.after_s)
                else:
                    self.not_watched += 1
            while True:
                watch = call.watch
                waiting = watch is not None and watch.flagged_at is None and not watch.done
                timeout = max(0.0, watch.due_at - self.clock()) if waiting else self.idle_s
                try:
                    async with asyncio.timeout(timeout):
                        event = await call.events.get()
                except TimeoutError:
                    event = None
                if event is None:
                    if not waiting:
                        break  # nothing heard of the call for hours: its Hangup was lost
                    if watch.check(self.clock()):
                        self.flagged += 1
                        await self._step(call, Step.CALLER_SILENT, watch.flagged_at, after_s=self.after_s,
                                         channel=call.channel)
                    continue
                at = event.timestamp or self.clock()
                if event.name == "Hangup":
                    break
                if event.name == "ChannelTalkingStart":
                    if watch is None or watch.done:
                        continue
                    cleared = watch.talked(at)
                    if cleared:
                        await self._step(call, Step.CALLER_SPOKE, at, silent_for_s=round(at - watch.answered_at, 3))
                    await self._talk_detect(call, "remove")  # nothing more to learn from his voice
                elif event.name == "DTMFEnd":
                    await self._key(call, event.get("Digit") or "", at)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: silent-call watch ended early", call.uniqueid)
        finally:
            self._calls.pop(call.uniqueid, None)

    async def _key(self, call: _Call, key: str, at: float) -> None:
        if key not in KEYS:
            log.warning("%s: DTMF %r is not a telephone key; ignored", call.uniqueid, key[:8])
            return
        ticket = await self.service.find_by_uniqueid(call.uniqueid)
        question = question_in_force(ticket.steps) if ticket is not None else None
        await self._step(call, Step.CALLER_KEY, at, **call.keys.press(key, at, question=question))

    # -- the prompt ---------------------------------------------------------------------
    async def play_prompt(self, number: str, *, by: str) -> dict:
        """Play the prompt to the caller of ticket ``number`` on the line; 202-style answer once Asterisk took it.

        Refusals: UnknownTicket, NotSilentCallable (the call is not connected to a seat here), PromptBusy,
        PromptNotPlayed.
        """
        if not looks_like_number(number):
            raise UnknownTicket("no such ticket", details={"number": number[:64]})
        ticket = await self.service.get(number)
        if ticket is None:
            raise UnknownTicket(f"no ticket {number!r}", details={"number": number})
        call = self._calls.get(ticket.uniqueid)
        if call is None or ticket.state not in CALL_CONNECTED_STATES:
            raise NotSilentCallable(f"the caller of {number} is not on the line with a seat",
                                    details={"number": number, "state": str(ticket.state)})
        if call.prompt is not None:
            raise PromptBusy(f"the prompt is already playing to the caller of {number}", details={"number": number})
        base = f"prompt-{int(self.clock())}-{secrets.token_hex(5)}"
        prompt = _Prompt(by, base, base + "-p")
        call.prompt = prompt
        self._prompts[prompt.spy_id] = self._prompts[prompt.play_id] = call
        try:
            resp = await self.ami.originate(
                Channel=f"Local/play@{PROMPT_CONTEXT}/n", Context=PROMPT_CONTEXT, Exten="spy", Priority=1,
                Timeout=5000, ChannelId=prompt.spy_id, OtherChannelId=prompt.play_id,
                CallerID=f'"{number}" <110>', Variable={channel_vars.SPY_ON: call.uniqueid},
            )
        except OriginateOutcomeUnknown as exc:
            log.warning("%s: prompt Originate outcome unknown: %r; following it", number, exc)
            self._spawn(self._follow(call, prompt), f"silent-prompt {number}")
            raise PromptNotPlayed("Asterisk did not confirm the prompt; it may still play",
                                  details={"number": number}) from None
        except Exception as exc:
            self._end_prompt(call, prompt)
            await self._step(call, Step.PROMPT_PLAYED, self.clock(), by=by, outcome="not_played",
                             reason="ami_down" if isinstance(exc, NotConnected) else "failed")
            raise PromptNotPlayed("the telephone system is not reachable now", details={"number": number}) from None
        if not resp.ok:
            self._end_prompt(call, prompt)
            await self._step(call, Step.PROMPT_PLAYED, self.clock(), by=by, outcome="not_played",
                             reason=(resp.message or "refused")[:200])
            raise PromptNotPlayed(f"Asterisk refused the prompt: {resp.message}", details={"number": number})
        self._spawn(self._follow(call, prompt), f"silent-prompt {number}")
        return {"number": number, "playing": True}

    def _end_prompt(self, call: _Call, prompt: _Prompt) -> None:
        self._prompts.pop(prompt.spy_id, None)
        self._prompts.pop(prompt.play_id, None)
        if call.prompt is prompt:
            call.prompt = None

    async def _follow(self, call: _Call, prompt: _Prompt) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.prompt_wait_s):
                    await prompt.done.wait()
            if prompt.status == "SUCCESS" and prompt.spied:
                outcome = "played"
            elif prompt.status is None and not prompt.spied:
                outcome = "unknown" if not prompt.done.is_set() else "not_played"
            else:
                outcome = "not_played"
            await self._step(call, Step.PROMPT_PLAYED, self.clock(), by=prompt.by, outcome=outcome,
                             heard_on=prompt.spied, playback=prompt.status)
        finally:
            self._end_prompt(call, prompt)
