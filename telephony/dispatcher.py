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

from core.calls.lifecycle import IllegalTransition, State
from core.calls.tickets import TicketService, UnknownTicket
from core.dispatch.planner import DispatchPlanner, NotLocated, Rung
from core.errors import DomainError
from telephony.ami.client import AMIClientError
from telephony.ami.codec import dialplan_escape

log = logging.getLogger("jiejing.dispatch")

ROOM_CONTEXT = "dispatch-room"
# A text report has no caller to conference: the officer's phone is rung into this context, his answer is his
# acknowledgment, and the incident is pushed to his page (dialplan/extensions.conf).
NOTICE_CONTEXT = "dispatch-notice"
JOIN_TIMEOUT_S = 5.0
# OriginateResponse Reason (Asterisk's AST_CONTROL_* code) → the ticket's outcome of a rung.
ORIGINATE_OUTCOMES = {3: "no_answer", 5: "busy", 8: "unreachable", 1: "unreachable", 0: "failed"}


class DispatchError(DomainError):
    """The call cannot be dispatched now (not answered, already dispatching, no channels)."""

    status = 409
    error_id = "dispatch-refused"


class _Waiters:
    """AMI events a dispatch waits for, matched by key; fed by the AMI listener.

    An OriginateResponse can arrive before the code that sent the Originate
    has its ActionID back (a phone that fails at once), so an event nobody
    waits for yet is kept for a while and handed to the first ``expect``.
    """

    EARLY_KEEP = 256

    def __init__(self) -> None:
        self._futures: dict[tuple, asyncio.Future] = {}
        self._early: dict[tuple, object] = {}

    def expect(self, key: tuple) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if key in self._early:
            fut.set_result(self._early.pop(key))
        else:
            self._futures[key] = fut
        return fut

    def resolve(self, key: tuple, value, *, keep_early: bool = False) -> None:
        fut = self._futures.pop(key, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(value)
        elif keep_early:
            self._early[key] = value
            while len(self._early) > self.EARLY_KEEP:
                self._early.pop(next(iter(self._early)))

    def forget(self, key: tuple) -> None:
        self._futures.pop(key, None)


class Dispatcher:
    def __init__(self, ami, service: TicketService, planner: DispatchPlanner,
                 channels: Callable[[str], dict | None]) -> None:
        self.ami = ami
        self.service = service
        self.planner = planner  # chooses, reserves and records every step of the ladder
        self.channels = channels  # caller uniqueid -> {"caller": channel, "seat": channel}
        self._waiters = _Waiters()
        self._tasks: dict[str, asyncio.Task] = {}
        self._rooms: set[str] = set()  # calls whose caller and seat are already in their room
        # Support mobilised for a major incident (core.dispatch.mobilise): each officer's phone rung alone,
        # as a text report's officer is.
        planner.ring_alone = self.call_phone

    # -- AMI events (listener: cheap, never blocks the reader) -----------------
    def on_event(self, event) -> None:
        name = event.name
        if name == "ConfbridgeJoin":
            self._waiters.resolve(("join", event.get("Conference"), event.get("Uniqueid")), event)
            self._waiters.resolve(("join-channel", event.get("Conference"), event.get("Channel")), event)
        elif name == "Hangup":
            self._rooms.discard(event.get("Uniqueid"))
        elif name == "OriginateResponse" and event.action_id:
            self._waiters.resolve(("originate", event.action_id), event, keep_early=True)

    # -- API ---------------------------------------------------------------------
    def busy(self, number: str) -> bool:
        task = self._tasks.get(number)
        return task is not None and not task.done()

    async def dispatch(self, number: str, *, by: str, settle_s: float = 0.0) -> asyncio.Task:
        """Start dispatching ``number``; returns the owned task (the API does not wait for it).

        ``settle_s``: wait before moving the call. The seat's feature code runs
        in a Gosub on the seat's channel; redirecting that channel before the
        Gosub has returned breaks it ("an async goto just messed up our
        execution location") and the seat never reaches the room — found in
        the lab with baresip.
        """
        if self.busy(number):
            raise DispatchError(f"{number} is already being dispatched")
        ticket = await self.service.get(number)
        if ticket is None:
            raise DispatchError(f"no ticket {number}")
        text_report = ticket.state is State.TAKEN
        legs = None if text_report else self.channels(ticket.uniqueid)
        if not text_report and (not legs or not legs.get("caller") or not legs.get("seat")):
            raise DispatchError(f"{number}: the call is not connected to a seat")
        try:
            plan = await self.planner.begin(number, by=by)
        except NotLocated as exc:
            raise DispatchError(str(exc)) from None
        except (IllegalTransition, UnknownTicket) as exc:
            raise DispatchError(f"{number} cannot be dispatched now: {exc}") from None
        task = asyncio.create_task(self._run(number, ticket.uniqueid, legs, list(plan.rungs), settle_s),
                                   name=f"dispatch-{number}")
        if text_report:
            log.info("%s: a text report: the ladder rings phones alone", number)
        self._tasks[number] = task
        task.add_done_callback(lambda t: self._tasks.pop(number, None) if self._tasks.get(number) is t else None)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # -- the work ------------------------------------------------------------------
    async def _record(self, what, *args, **kwargs) -> None:
        try:
            await what(*args, **kwargs)
        except Exception:
            # The trail must not stop the dispatch; the failure is logged loudly.
            log.exception("dispatch step %s not recorded", getattr(what, "__name__", what))

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

    async def ensure_room(self, uid: str, legs: dict) -> bool:
        """Caller and seat in the call's conference room (moved there once)."""
        if uid in self._rooms:
            return True
        if await self._into_room(uid, legs):
            self._rooms.add(uid)
            return True
        return False

    async def _ring(self, uid: str, number: str, rung: Rung, *, room: bool = True) -> tuple[bool, str]:
        await self._record(self.planner.ringing, number, rung)
        if not room:
            return await self.call_phone(number, rung.endpoint, rung.timeout_s)
        return await self.call_into_room(uid, number, rung.endpoint, rung.timeout_s)

    async def call_into_room(self, uid: str, number: str, endpoint: str, timeout_s: float) -> tuple[bool, str]:
        """Originate ``endpoint`` into the call's room; (answered, outcome). Never sent twice."""
        return await self._originate(number, endpoint, timeout_s, Application="ConfBridge",
                                     Data=f"{dialplan_escape(uid)},jiejing-room,jiejing-officer")

    async def call_phone(self, number: str, endpoint: str, timeout_s: float) -> tuple[bool, str]:
        """Ring ``endpoint`` alone (a text report's officer); (answered, outcome). Never sent twice."""
        return await self._originate(number, endpoint, timeout_s, Context=NOTICE_CONTEXT, Exten="s", Priority="1")

    async def _originate(self, number: str, endpoint: str, timeout_s: float, **target: str) -> tuple[bool, str]:
        action_id = None
        try:
            resp = await self.ami.originate(
                Channel=endpoint,
                **target,
                Timeout=int(timeout_s * 1000),
                CallerID=f'"110 {number}" <110>',
                Variable={"JIEJING_TICKET": number},
            )
            action_id = resp.action_id
            if not resp.ok:
                log.warning("%s: originate to %s refused: %s", number, endpoint, resp.message)
                return False, "failed"
            event = await asyncio.wait_for(self._waiters.expect(("originate", action_id)), timeout_s + 10)
        except asyncio.TimeoutError:
            log.warning("%s: no OriginateResponse for %s", number, endpoint)
            return False, "failed"
        except AMIClientError as exc:
            # Outcome unknown: never originate the same phone twice, go on.
            log.warning("%s: originate to %s: %r; not retried", number, endpoint, exc)
            return False, "failed"
        finally:
            if action_id:
                self._waiters.forget(("originate", action_id))
        if event.get("Response") == "Success":
            return True, "answered"
        try:
            return False, ORIGINATE_OUTCOMES.get(int(event.get("Reason") or 0), "failed")
        except ValueError:
            return False, "failed"

    async def _run(self, number: str, uid: str, legs: dict | None, rungs: list[Rung], settle_s: float = 0.0) -> None:
        try:
            if settle_s:
                await asyncio.sleep(settle_s)
            await self._ladder(number, uid, legs, rungs)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Whatever broke, the officers held for this ticket are freed and
            # supervisors hear of it; the call-taker still has the caller.
            log.exception("%s: dispatch failed", number)
            await self._record(self.planner.exhausted, number, reason="internal_error")

    async def _ladder(self, number: str, uid: str, legs: dict | None, rungs: list[Rung]) -> None:
        started = time.monotonic()
        if legs is None:  # a text report: each rung's phone alone
            for rung in rungs:
                joined, outcome = await self._ring(uid, number, rung, room=False)
                if joined:
                    await self._record(self.planner.joined, number, rung)
                    return
                await self._record(self.planner.no_answer, number, rung, outcome=outcome)
            await self._record(self.planner.exhausted, number, reason="no_answer" if rungs else "nobody_to_ring")
            return
        if not await self.ensure_room(uid, legs):
            await self._record(self.planner.exhausted, number, reason="room_move_failed")
            return
        log.info("%s: caller and seat in the room after %.1f ms", number, (time.monotonic() - started) * 1000)
        for rung in rungs:
            joined, outcome = await self._ring(uid, number, rung)
            if joined:
                await self._record(self.planner.joined, number, rung)
                return
            await self._record(self.planner.no_answer, number, rung, outcome=outcome)
        # The planner alerts supervisors; the call-taker keeps the caller in the room.
        await self._record(self.planner.exhausted, number, reason="no_answer" if rungs else "nobody_to_ring")
