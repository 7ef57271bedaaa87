"""The call-taker's desk: which seat a user holds, which calls are theirs, and what each open desk is told.

A call-taker logs in to a seat (``SeatBoard.login``); from then on the seat's
calls are theirs. The hub follows the seat board and the ticket steps and
tells each open desk of its user, in order:

- ``seat``: the user's seat changed (logged in, ringing, on a call, wrap-up, paused …);
- ``pop``: a call rings or is answered on that seat — the whole ticket, built
  at once (the screen pop);
- ``ticket``: a step of a ticket the desk works on (its calls, the reports it
  took) — the dispatch ladder, hand-overs and notes appear live;
- ``reports``: a text report came in or was taken anywhere, so desks refresh
  the waiting list.

Two desks never share a call: pops go only to the user who holds the seat the
call rings on, and ``owns`` is what the API's scope asks before a call-taker
acts on a ticket. The hub keeps nothing of its own beyond who holds which
seat (the board's state) and which tickets each open desk watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.calls.lifecycle import Step
from core.calls.tickets import StepView, TicketService, TicketView
from core.seats.board import SeatBoard, SeatState, SeatView

log = logging.getLogger(__name__)

Render = Callable[[TicketView], Awaitable[dict[str, Any]]]
QUEUE_MAX = 200
POP_STEPS = (Step.SEAT_RINGING, Step.ANSWERED, Step.AUTO_CALLBACK_CONNECTED)  # a called-back caller pops too
REPORT_STEPS = (Step.REPORTED, Step.TAKEN, Step.CLOSED)


class DeskSubscription:
    """One open desk: the messages for it, in order; closed when it falls too far behind."""

    def __init__(self, username: str, maxsize: int = QUEUE_MAX) -> None:
        self.username = username
        self.watching: set[str] = set()
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)
        self.closed: str | None = None

    def offer(self, message: dict[str, Any]) -> None:
        if self.closed is not None:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            # A desk that does not read is told to reload rather than shown a gap.
            self.close("too far behind")

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None once closed."""
        return await self._queue.get()


class DeskHub:
    def __init__(self, board: SeatBoard, service: TicketService, render: Render) -> None:
        self.board = board
        self.service = service
        self.render = render
        self._holders: dict[str, str] = {}  # seat → username holding it
        self._subs: set[DeskSubscription] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        for view in board.seats():
            if view.operator and view.state is not SeatState.LOGGED_OUT:
                self._holders[view.seat] = view.operator

    # -- who holds what --------------------------------------------------------------

    def seat_of(self, username: str) -> SeatView | None:
        """The seat ``username`` is logged in to, or None."""
        for seat, holder in self._holders.items():
            if holder == username:
                return self.board.get(seat)
        return None

    def holder_of(self, seat: str) -> str | None:
        return self._holders.get(seat)

    def owns(self, username: str, ticket: TicketView) -> bool:
        """Whether the ticket is the user's: a call on (or rung on) the seat they hold, or a report they took."""
        seat = self.seat_of(username)
        if seat is not None and (ticket.seat == seat.seat or seat.ticket == ticket.number):
            return True
        return any(s.step is Step.TAKEN and s.detail.get("by") == username for s in ticket.steps)

    # -- open desks -------------------------------------------------------------------

    def subscribe(self, username: str) -> DeskSubscription:
        sub = DeskSubscription(username)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: DeskSubscription, reason: str = "gone") -> None:
        self._subs.discard(sub)
        sub.close(reason)

    def watch(self, sub: DeskSubscription, ticket: TicketView) -> bool:
        """Follow a ticket's steps on this desk, if it is the desk user's."""
        if not self.owns(sub.username, ticket):
            return False
        sub.watching.add(ticket.number)
        return True

    def close_all(self, reason: str = "shutdown") -> None:
        for sub in list(self._subs):
            self.unsubscribe(sub, reason)

    async def stop(self) -> None:
        self.close_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _of(self, username: str | None) -> list[DeskSubscription]:
        return [s for s in self._subs if s.username == username] if username else []

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- listeners --------------------------------------------------------------------

    def on_seat(self, view: SeatView) -> None:
        """Seat board listener: tell the holder's desks."""
        previous = self._holders.get(view.seat)
        if view.state is SeatState.LOGGED_OUT:
            self._holders.pop(view.seat, None)
            holder = previous
        else:
            holder = view.operator or previous
            if holder:
                self._holders[view.seat] = holder
        for sub in self._of(holder):
            sub.offer({"type": "seat", "seat": view.to_json()})

    async def _send(self, subs: list[DeskSubscription], ticket: TicketView, message: dict[str, Any]) -> None:
        """Render the ticket once and send it to ``subs`` in ``message``; a pop also makes them watch it."""
        try:
            rendered = await self.render(ticket)
        except Exception:
            log.exception("%s: the desk %s could not be built", ticket.number, message["type"])
            return
        for sub in subs:
            if message["type"] == "pop":
                sub.watching.add(ticket.number)
            sub.offer({**message, "ticket": rendered})

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        """Ticket listener: the screen pop when the holder's seat rings or answers, the steps of watched
        tickets, and a nudge when the waiting reports change."""
        if step.step in REPORT_STEPS and ticket.steps and ticket.steps[0].step is Step.REPORTED:
            for sub in self._subs:
                sub.offer({"type": "reports", "number": ticket.number, "step": str(step.step)})
        if step.step in POP_STEPS:
            # The screen pop: straight from the step's own ticket view, no read of the store.
            subs = self._of(self._holders.get(step.detail.get("seat") or ""))
            if subs:
                event = "ringing" if step.step is Step.SEAT_RINGING else "answered"
                self._spawn(self._send(subs, ticket, {"type": "pop", "event": event}), f"desk pop {ticket.number}")
                return
        watchers = [s for s in self._subs if ticket.number in s.watching]
        if watchers:
            self._spawn(self._send(watchers, ticket, {"type": "ticket", "step": step.to_json()}),
                        f"desk update {ticket.number}")
