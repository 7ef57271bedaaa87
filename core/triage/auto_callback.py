"""The center calls back the 110 callers it lost: one owner of every call-back due, from the hang-up to its end.

A caller who hangs up before a seat answers, whose call ends within seconds of the answer, or whose call a
failure cuts may be the most urgent caller of the day. ``AutoCallbacks`` follows the ticket steps (a
``TicketService`` listener that only queues) and, in one owned task, decides from the admins' rules
(``core.triage.callback_rules``, ``dialplan/callback.toml``) whether and when to ring him back:

* ``auto_callback_due`` (why, the number, when) or ``auto_callback_skipped`` (a withheld number, the prank rule);
* each attempt is placed by the telephony side's dialer (``telephony/auto_callback.py``), which writes the
  attempt's own steps (started, ringing, answered or failed with its outcome, connected to a seat, ended);
* an unanswered attempt is followed by the next one on the schedule; after the last one an SMS through the
  outbox and an alert to the supervisors, then ``auto_callback_gave_up``;
* a located ticket classified urgent gets a ``dispatch_proposed`` step (the planner's preview: who would go);
* the caller ringing 110 again first: the new call's ticket gets ``auto_callback_redialled`` naming the old
  one, the old one ``auto_callback_cancelled`` naming the new one, and a ringing attempt is hung up. A ticket
  is one call in the store (its key is the call's uniqueid), so the two are linked both ways rather than
  merged (docs/design.md).

Nothing lives only in memory: what is owed is read back from the store when the backend starts (tickets whose
call ended, with no final call-back step), and each ticket's own steps say how far its call-back got.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from core.alerts.board import AlertBoard
from core.calls.callback import NoCallbackNumber, callback_number
from core.calls.lifecycle import IllegalTransition, State, Step
from core.calls.tables import Ticket
from core.calls.tickets import Source, StepView, TicketService, TicketView
from core.dispatch.planner import DispatchPlanner
from core.tasks import stop_task
from core.triage.callback_rules import (
    CallbackRules,
    Plan,
    call_end,
    next_action,
    progress,
    reason_for,
    urgent_priority,
)

__all__ = ["ALERT_KIND", "Attempt", "AutoCallbacks", "Dialer"]

log = logging.getLogger(__name__)

ALERT_KIND = "callback"
PROPOSAL_ALERT_KIND = "dispatch_proposal"
# Tickets whose call ended this way may still owe a call-back (the lifecycle's states after a call's end).
ENDED_STATES = (State.ABANDONED, State.ENDED, State.DISPATCHING_ENDED, State.EN_ROUTE)
WORK_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Attempt:
    number: str  # the ticket
    uniqueid: str  # the ticket's key (its call's uniqueid)
    to: str  # the number rung, checked by ``callback_number``
    attempt: int  # 1-based
    ring_s: float


class Dialer(Protocol):
    """The telephony side: rings the caller and writes the attempt's steps."""

    async def ring(self, attempt: Attempt) -> str:
        """Place the attempt; its outcome once decided: ``answered``, ``no_answer``, ``busy``, ``unreachable``,
        ``failed``, ``cancelled``, ``not_placed`` or ``unknown`` (never placed again blindly)."""
        ...

    def hang_up(self, number: str) -> bool:
        """Hang up the ticket's attempt if it still rings; whether there was one."""
        ...


SendSms = Callable[..., Awaitable[Any]]  # Outbox.enqueue(key=, kind=, to=, body=, ticket_number=)
IsPrank = Callable[[str], Awaitable[bool]]


@dataclass(slots=True)
class _Owed:
    number: str
    uniqueid: str
    to: str
    ended_at_us: int
    sms_only: bool
    task: asyncio.Task[None] | None = None  # the attempt ringing now


class AutoCallbacks:
    def __init__(
        self, tickets: TicketService, *, rules: Callable[[], CallbackRules], alerts: AlertBoard,
        is_prank: IsPrank, send_sms: SendSms | None = None, planner: DispatchPlanner | None = None,
        tz: str = "Asia/Shanghai", clock: Callable[[], float] = time.time,
    ) -> None:
        self.tickets = tickets
        self.rules = rules  # the running rules (the triage desk reloads the file when admins change it)
        self.alerts = alerts
        self.is_prank = is_prank
        self.send_sms = send_sms
        self.planner = planner
        self.tz = ZoneInfo(tz)
        self.clock = clock
        self.dialer: Dialer | None = None
        self._sessions = async_sessionmaker(tickets.engine, expire_on_commit=False)
        self._work: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue(WORK_MAX)
        self._owed: dict[str, _Owed] = {}  # ticket number → its call-back
        self._by_phone: dict[str, set[str]] = {}  # number rung → tickets owed a call-back
        self._timers: list[tuple[int, str]] = []  # (due, ticket number), a heap; stale entries are skipped
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()  # every attempt still followed, owed or not any more
        self._remove: Callable[[], None] | None = None
        self.left_out = 0
        self.started = 0  # attempts placed since start (for /healthz)

    def set_dialer(self, dialer: Dialer) -> None:
        self.dialer = dialer

    # -- the listener: quick, only queues ------------------------------------------------------------

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        if step.step in (Step.ABANDONED, Step.HUNG_UP):
            self._put(("ended", ticket.number, None))
        elif step.step is Step.RECEIVED and ticket.caller_id in self._by_phone:
            self._put(("redial", ticket.number, ticket.caller_id))
        elif step.step is Step.CALLBACK_REQUESTED and ticket.number in self._owed:
            self._put(("cancel", ticket.number, {"reason": "call_taker", "by": step.detail.get("by")}))
        elif step.step is Step.CLOSED and ticket.number in self._owed:
            self._put(("closed", ticket.number, None))

    def _put(self, item: tuple[str, str, Any]) -> None:
        try:
            self._work.put_nowait(item)
        except asyncio.QueueFull:
            # Only an end can be lost this way, and the next start reads it back from the store.
            self.left_out += 1
            log.error("call-back work queue full: %s of %s left for the next start", item[0], item[1])

    # -- start and stop --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._remove = self.tickets.add_listener(self.on_step)
        self._task = asyncio.create_task(self._run(), name="auto-callbacks")

    async def stop(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None
        task, self._task = self._task, None
        await stop_task(task)
        attempts = list(self._attempts)
        for t in attempts:
            t.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)
        # What is owed is in the store: a later start (this backend holding the duty again) reads it back.
        self._owed.clear()
        self._by_phone.clear()
        self._timers.clear()
        while not self._work.empty():
            self._work.get_nowait()
            self._work.task_done()

    async def cleanup_ctx(self, _app: Any):
        await self.start()
        yield
        await self.stop()

    def health(self) -> dict[str, Any]:
        reason = (f"{self.left_out} call-back decisions left out (queue full); read back at the next start"
                  if self.left_out else None)
        return {"ok": reason is None, "reason": reason, "owed": len(self._owed),
                "ringing": sum(1 for o in self._owed.values() if o.task is not None), "attempts": self.started}

    def owed(self) -> dict[str, dict[str, Any]]:
        return {n: {"to": o.to, "ringing": o.task is not None} for n, o in self._owed.items()}

    async def flush(self) -> None:
        """Wait until every queued step has been looked at (tests)."""
        await self._work.join()

    # -- the owner task ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self.recover()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call-backs owed could not be read from the store; new ones are still taken")
        while True:
            now_us = self._now_us()
            while self._timers and self._timers[0][0] <= now_us:
                _, number = heapq.heappop(self._timers)
                await self._guard(self._due, number)
            wait = None if not self._timers else max(0.0, (self._timers[0][0] - now_us) / 1e6)
            try:
                item = await asyncio.wait_for(self._work.get(), wait) if wait is not None else await self._work.get()
            except TimeoutError:
                continue
            try:
                kind, number, arg = item
                handler = {"ended": self._ended, "redial": self._redial, "cancel": self._cancel,
                           "closed": self._closed, "done": self._due}[kind]
                await self._guard(handler, number, *(() if arg is None else (arg,)))
            finally:
                self._work.task_done()

    async def _guard(self, handler, *args) -> None:
        try:
            await handler(*args)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call-back work %s%r failed", getattr(handler, "__name__", handler), args)

    def _now_us(self) -> int:
        return round(self.clock() * 1_000_000)

    def _schedule(self, number: str, at_us: int) -> None:
        heapq.heappush(self._timers, (at_us, number))

    async def recover(self) -> int:
        """Every call-back still owed, from the store: tickets whose call ended recently, no final step."""
        rules = self.rules()
        since = self._now_us() - round(2 * rules.max_age_s * 1_000_000)
        async with self._sessions() as session:
            numbers = list(await session.scalars(
                select(Ticket.number).where(Ticket.state.in_([str(s) for s in ENDED_STATES]),
                                            Ticket.created_at_us >= since).order_by(Ticket.created_at_us)))
        for number in numbers:
            await self._guard(self._ended, number)
        log.info("call-backs: %d owed after reading %d recent tickets", len(self._owed), len(numbers))
        return len(numbers)

    # -- decisions ------------------------------------------------------------------------------------------

    async def _record(self, uniqueid: str, step: Step, **detail: Any) -> bool:
        try:
            await self.tickets.record_step(uniqueid, step, at=self.clock(), source=Source.API,
                                           **{k: v for k, v in detail.items() if v is not None})
        except IllegalTransition as exc:  # closed meanwhile: closed stays final
            log.info("%s: %s not recorded: %s", uniqueid, step, exc)
            return False
        return True

    async def _ended(self, number: str) -> None:
        if number in self._owed:
            return
        ticket = await self.tickets.get(number)
        if ticket is None or ticket.state is State.CLOSED:
            return
        end = call_end(ticket)
        if end is None:
            return
        rules = self.rules()
        p = progress(ticket.steps)
        if p.final is not None:
            return
        if p.due is None:
            reason = reason_for(ticket, end, rules)
            if reason is None:
                return
            if self._now_us() - end.at_us > rules.max_age_s * 1_000_000:
                await self._record(ticket.uniqueid, Step.AUTO_CALLBACK_SKIPPED, reason="too_old", call=reason)
                return
            try:
                to = callback_number(number, ticket.caller_id)
            except NoCallbackNumber:
                shown = ticket.caller_id[:40] if ticket.caller_id else None
                await self._record(ticket.uniqueid, Step.AUTO_CALLBACK_SKIPPED, call=reason,
                                   reason="withheld_number" if not shown or shown.lower() in (
                                       "anonymous", "unknown", "restricted", "private") else "not_a_phone_number",
                                   caller_id=shown)
                return
            prank = await self.is_prank(to)
            if prank and rules.prank == "none":
                await self._record(ticket.uniqueid, Step.AUTO_CALLBACK_SKIPPED, call=reason, reason="prank_rule_none",
                                   to=to)
                return
            sms_only = prank and rules.prank == "sms_only"
            first = end.at_us + round(rules.first_after_s * 1_000_000)
            if not await self._record(ticket.uniqueid, Step.AUTO_CALLBACK_DUE, call=reason, to=to, prank=prank,
                                      sms_only=sms_only or None, attempts=0 if sms_only else rules.attempts,
                                      first_at=_iso(first) if not sms_only else None):
                return
            ticket = await self.tickets.get(number) or ticket
            p = progress(ticket.steps)
        else:
            to = str(p.due.detail.get("to"))
            sms_only = bool(p.due.detail.get("sms_only"))
        self._owed[number] = _Owed(number, ticket.uniqueid, to, end.at_us, sms_only)
        self._by_phone.setdefault(to, set()).add(number)
        if not p.proposed:
            await self._propose(ticket, rules)
        await self._due(number)

    async def _due(self, number: str) -> None:
        owed = self._owed.get(number)
        if owed is None or owed.task is not None:
            return
        ticket = await self.tickets.get(number)
        if ticket is None or ticket.state is State.CLOSED:
            self._forget(number)
            return
        rules = self.rules()
        p = progress(ticket.steps)
        if p.final is not None:
            self._forget(number)
            return
        plan = next_action(p, rules, ended_at_us=owed.ended_at_us, sms_only=owed.sms_only)
        now_us = self._now_us()
        if plan.action == "wait":
            # An attempt started before a restart, with no outcome: nobody follows it now. Once it has surely
            # stopped ringing it is recorded as unknown, and never rung again blindly.
            if plan.at_us > now_us:
                self._schedule(number, plan.at_us)
                return
            await self._record(ticket.uniqueid, Step.AUTO_CALLBACK_FAILED, attempt=p.attempts, outcome="unknown",
                               why="the backend restarted while it rang")
            self._schedule(number, now_us)
            return
        if plan.action == "give_up":
            await self._give_up(ticket, owed, plan, p.attempts, rules)
            return
        if plan.at_us > now_us:
            self._schedule(number, plan.at_us)
            return
        if self.dialer is None:
            log.error("%s: a call-back is due but no dialer is wired", number)
            return
        attempt = Attempt(number, owed.uniqueid, owed.to, plan.attempt, rules.ring_s)
        owed.task = asyncio.create_task(self._ring(owed, attempt), name=f"auto-callback-{number}")
        self._attempts.add(owed.task)
        owed.task.add_done_callback(self._attempts.discard)
        self.started += 1

    async def _ring(self, owed: _Owed, attempt: Attempt) -> None:
        try:
            assert self.dialer is not None
            outcome = await self.dialer.ring(attempt)
            log.info("%s: call-back attempt %d: %s", owed.number, attempt.attempt, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: call-back attempt %d failed", owed.number, attempt.attempt)
        finally:
            owed.task = None
            self._put(("done", owed.number, None))

    async def _give_up(self, ticket: TicketView, owed: _Owed, plan: Plan, attempts: int, rules: CallbackRules) -> None:
        sms_key = None
        if plan.why != "outcome_unknown" and self.send_sms is not None:
            sms_key = f"auto-callback:{ticket.number}"
            call_time = datetime.fromtimestamp(ticket.created_at_us / 1e6, UTC).astimezone(self.tz).strftime("%H:%M")
            await self.send_sms(key=sms_key, kind="auto_callback", to=owed.to, body=rules.sms_for(call_time),
                                ticket_number=ticket.number)
        what = {"no_answer": f"{attempts} call-back attempts to {owed.to} were not answered",
                "outcome_unknown": f"the call-back of {owed.to} has an unknown outcome: check whether the caller "
                                   "was reached",
                "prank_sms_only": f"{owed.to} is on the prank list: no call-back, an SMS only"}[plan.why or "no_answer"]
        self.alerts.raise_alert(ALERT_KIND, ticket.number, f"{what}; " + (
            "an SMS was sent" if sms_key else "no SMS was sent") + f" (ticket {ticket.number})")
        await self._record(ticket.uniqueid, Step.AUTO_CALLBACK_GAVE_UP, why=plan.why, attempts=attempts,
                           sms=sms_key, alerted=True)
        self._forget(ticket.number)
        refreshed = await self.tickets.get(ticket.number)
        if refreshed is not None and not progress(refreshed.steps).proposed:
            await self._propose(refreshed, rules)  # a classification may have come since

    async def _propose(self, ticket: TicketView, rules: CallbackRules) -> None:
        """A located, urgent ticket whose caller is gone: who the planner would send, as a step and an alert."""
        if self.planner is None or not rules.dispatch_priority:
            return
        priority = urgent_priority(ticket)
        if priority is None or priority > rules.dispatch_priority:
            return
        if await self.planner.incident(ticket.number) is None:
            return
        plan = await self.planner.preview(ticket.number)
        choice = plan.choice.to_json()
        officer = choice.get("officer") or {}
        if await self._record(ticket.uniqueid, Step.DISPATCH_PROPOSED, priority=priority, station=choice.get("station"),
                              officer=officer.get("badge"), distance_m=officer.get("distance_m"),
                              eta_s=officer.get("eta_s"), ladder=[r.to_json() for r in plan.rungs]):
            who = (f"officer {officer.get('badge')} ({officer.get('distance_m')} m, ETA {officer.get('eta_s')} s)"
                   if officer else f"the desks of station {choice.get('station')}")
            self.alerts.raise_alert(PROPOSAL_ALERT_KIND, ticket.number,
                                    f"priority {priority} incident, caller lost: dispatch proposed to {who}")

    # -- ends of a call-back ------------------------------------------------------------------------------

    async def _redial(self, new_number: str, phone: str) -> None:
        for old in sorted(self._by_phone.get(phone, ())):
            if old == new_number or old not in self._owed:
                continue
            owed = self._owed[old]
            new = await self.tickets.get(new_number)
            if new is None:
                return
            rang = self.dialer.hang_up(old) if self.dialer is not None else False
            await self._record(owed.uniqueid, Step.AUTO_CALLBACK_CANCELLED, reason="redialled", ticket=new_number,
                               attempt_hung_up=rang or None)
            await self._record(new.uniqueid, Step.AUTO_CALLBACK_REDIALLED, of=old)
            self._forget(old)

    async def _cancel(self, number: str, detail: dict[str, Any]) -> None:
        owed = self._owed.get(number)
        if owed is None:
            return
        if self.dialer is not None:
            self.dialer.hang_up(number)
        await self._record(owed.uniqueid, Step.AUTO_CALLBACK_CANCELLED, **detail)
        self._forget(number)

    async def _closed(self, number: str) -> None:
        if self.dialer is not None:
            self.dialer.hang_up(number)
        self._forget(number)

    def _forget(self, number: str) -> None:
        owed = self._owed.pop(number, None)
        if owed is None:
            return
        numbers = self._by_phone.get(owed.to)
        if numbers is not None:
            numbers.discard(number)
            if not numbers:
                self._by_phone.pop(owed.to, None)


def _iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
