"""Flattened dispatch on the Asterisk side: caller, call-taker and officer in one room.

``dispatch(number)`` (from the API or the seat's feature code) runs one owned
task per ticket:

1. move caller and seat from the queue's bridge into ConfBridge(<caller
   uniqueid>) with one dual AMI Redirect (the caller's MixMonitor goes along,
   so the recording has no gap), and wait for both ConfbridgeJoin events;
2. walk the ladder the planner gives (nearest officer, unit duty desk, unit's
   superior): Originate each phone into the room with its ring timeout, wait
   for OriginateResponse; answered → officer joined; no answer, busy or
   unreachable → next rung; every attempt is a ticket step;
3. ladder exhausted → step ``ladder_exhausted`` and a supervisor alert; the
   call-taker keeps the caller in the room.

An Originate is never repeated for the same rung: the AMI client fails a
pending action with OriginateOutcomeUnknown instead of resending it, and then
the rung counts as unanswered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.lifecycle import Step
from core.tickets import TicketService
from telephony.ami.client import AMIClientError
from telephony.ami.codec import dialplan_escape

log = logging.getLogger("jiejing.dispatch")

ROOM_CONTEXT = "dispatch-room"
JOIN_TIMEOUT_S = 5.0
# OriginateResponse Reason codes (Asterisk's AST_CONTROL_*): why a phone did not join.
ORIGINATE_REASONS = {0: "failed", 1: "hung up", 3: "no answer", 4: "answered", 5: "busy", 8: "congestion"}


class DispatchError(Exception):
    """The call cannot be dispatched now (not answered, already dispatching, no channels)."""


@dataclass(frozen=True)
class Rung:
    kind: str  # officer | duty_desk | superior
    endpoint: str  # e.g. PJSIP/officer007
    timeout_s: float
    officer: str | None = None  # badge, when the rung is an officer


class Planner(Protocol):
    async def plan(self, number: str) -> list[Rung]: ...
    async def outcome(self, number: str, rung: Rung, joined: bool) -> None: ...


class AlertSink(Protocol):
    def raise_alert(self, kind: str, ref: str, message: str) -> None: ...


class _Waiters:
    """AMI events a dispatch waits for, matched by key; fed by the AMI listener."""

    def __init__(self) -> None:
        self._futures: dict[tuple, asyncio.Future] = {}

    def expect(self, key: tuple) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._futures[key] = fut
        return fut

    def resolve(self, key: tuple, value) -> None:
        fut = self._futures.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def forget(self, key: tuple) -> None:
        self._futures.pop(key, None)


class Dispatcher:
    def __init__(self, ami, service: TicketService, planner: Planner, channels: Callable[[str], dict | None],
                 *, alerts: AlertSink | None = None, clock=time.time) -> None:
        self.ami = ami
        self.service = service
        self.planner = planner
        self.channels = channels  # caller uniqueid -> {"caller": channel, "seat": channel}
        self.alerts = alerts
        self.clock = clock
        self._waiters = _Waiters()
        self._tasks: dict[str, asyncio.Task] = {}

    # -- AMI events (listener: cheap, never blocks the reader) -----------------
    def on_event(self, event) -> None:
        name = event.name
        if name == "ConfbridgeJoin":
            self._waiters.resolve(("join", event.get("Conference"), event.get("Uniqueid")), event)
            self._waiters.resolve(("join-channel", event.get("Conference"), event.get("Channel")), event)
        elif name == "OriginateResponse" and event.action_id:
            self._waiters.resolve(("originate", event.action_id), event)

    # -- API ---------------------------------------------------------------------
    def busy(self, number: str) -> bool:
        task = self._tasks.get(number)
        return task is not None and not task.done()

    async def dispatch(self, number: str, *, by: str) -> asyncio.Task:
        """Start dispatching ``number``; returns the owned task (the API does not wait for it)."""
        if self.busy(number):
            raise DispatchError(f"{number} is already being dispatched")
        ticket = await self.service.get(number)
        if ticket is None:
            raise DispatchError(f"no ticket {number}")
        legs = self.channels(ticket.uniqueid)
        if not legs or not legs.get("caller") or not legs.get("seat"):
            raise DispatchError(f"{number}: the call is not connected to a seat")
        await self.service.record_step(ticket.uniqueid, Step.DISPATCH_REQUESTED, at=self.clock(), source="api",
                                       by=by)
        task = asyncio.create_task(self._run(number, ticket.uniqueid, legs), name=f"dispatch-{number}")
        self._tasks[number] = task
        task.add_done_callback(lambda t: self._tasks.pop(number, None) if self._tasks.get(number) is t else None)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # -- the work ------------------------------------------------------------------
    async def _step(self, uid: str, step: Step, **detail) -> None:
        try:
            await self.service.record_step(uid, step, at=self.clock(), source="ami", **detail)
        except Exception:
            # The trail must not stop the dispatch; the failure is logged loudly.
            log.exception("%s: step %s not recorded", uid, step)

    async def _into_room(self, uid: str, legs: dict) -> bool:
        caller_join = self._waiters.expect(("join", uid, uid))
        seat_join = self._waiters.expect(("join-channel", uid, legs["seat"]))
        try:
            resp = await self.ami.action("Redirect", {
                "Channel": legs["caller"], "Context": ROOM_CONTEXT, "Exten": "caller", "Priority": "1",
                "ExtraChannel": legs["seat"], "ExtraContext": ROOM_CONTEXT, "ExtraExten": "seat",
                "ExtraPriority": "1",
            })
            if not resp.ok:
                log.warning("%s: redirect into the room refused: %s", uid, resp.message)
                return False
            await asyncio.wait_for(asyncio.gather(caller_join, seat_join), JOIN_TIMEOUT_S)
            return True
        except (asyncio.TimeoutError, AMIClientError) as exc:
            log.warning("%s: caller and seat not in the room: %r", uid, exc)
            return False
        finally:
            self._waiters.forget(("join", uid, uid))
            self._waiters.forget(("join-channel", uid, legs["seat"]))

    async def _ring(self, uid: str, number: str, rung: Rung) -> tuple[bool, str]:
        await self._step(uid, Step.OFFICER_RINGING, kind=rung.kind, endpoint=rung.endpoint, officer=rung.officer)
        action_id = f"dispatch-{uid}-{rung.endpoint}-{time.monotonic_ns()}"
        response = self._waiters.expect(("originate", action_id))
        try:
            resp = await self.ami.originate(
                ActionID=action_id,
                Channel=rung.endpoint,
                Application="ConfBridge",
                Data=f"{dialplan_escape(uid)},jiejing-room,jiejing-officer",
                Timeout=int(rung.timeout_s * 1000),
                CallerID=f'"110 {number}" <110>',
                Variable=f"JIEJING_TICKET={number}",
            )
            if not resp.ok:
                return False, f"originate refused: {resp.message}"
            event = await asyncio.wait_for(response, rung.timeout_s + 10)
        except asyncio.TimeoutError:
            return False, "no answer from Asterisk about the call"
        except AMIClientError as exc:
            return False, f"outcome unknown ({type(exc).__name__}); not retried"
        finally:
            self._waiters.forget(("originate", action_id))
        if event.get("Response") == "Success":
            return True, "answered"
        try:
            reason = ORIGINATE_REASONS.get(int(event.get("Reason") or 0), event.get("Reason"))
        except ValueError:
            reason = event.get("Reason")
        return False, str(reason)

    async def _run(self, number: str, uid: str, legs: dict) -> None:
        started = time.monotonic()
        if not await self._into_room(uid, legs):
            await self._step(uid, Step.LADDER_EXHAUSTED, reason="caller and seat could not be moved into the room")
            self._alert(number, "dispatch failed: the call could not be moved into a conference room")
            return
        await self._step(uid, Step.ROOM_JOINED, room=uid, move_ms=round((time.monotonic() - started) * 1000, 1))
        rungs = await self.planner.plan(number)
        for rung in rungs:
            joined, why = await self._ring(uid, number, rung)
            await self.planner.outcome(number, rung, joined)
            if joined:
                await self._step(uid, Step.OFFICER_JOINED, kind=rung.kind, endpoint=rung.endpoint,
                                 officer=rung.officer)
                return
            await self._step(uid, Step.OFFICER_NO_ANSWER, kind=rung.kind, endpoint=rung.endpoint,
                             officer=rung.officer, reason=why)
        await self._step(uid, Step.LADDER_EXHAUSTED, tried=len(rungs))
        self._alert(number, f"nobody answered the dispatch ladder ({len(rungs)} phones tried)")

    def _alert(self, number: str, message: str) -> None:
        log.error("%s: %s", number, message)
        if self.alerts is not None:
            try:
                self.alerts.raise_alert("dispatch", number, message)
            except Exception:
                log.exception("alert for %s not raised", number)

