"""The step stream: every ticket step, pushed at once to the bureaus, stations and officers watching.

``StepBroadcaster.on_step`` is a ``TicketService`` listener: it runs on the
event loop inside the writer's path, so it only serialises the step once and
drops it on each matching subscriber's bounded queue. A subscriber whose
queue is full is cut off (``reason == "slow"``) instead of holding up the
others or growing without bound; it can reconnect and re-read the tickets.

Filtering. A step belongs to the station of its ticket's incident: dispatch
steps carry ``station`` in their detail, and the broadcaster remembers the
last one seen per ticket for steps that do not (a hang-up from Asterisk). A
subscriber with a station sees only that station's steps; one without (the
city and county bureau views) sees every step, including those of tickets
with no station yet.

Officers. A subscriber with a badge (an officer's own stream) sees only the
messages of tickets that badge is currently held by: rung for, joined, on
scene. The broadcaster learns this from the badge in the detail of
``officer_ringing``, ``officer_joined`` and ``arrived`` steps (and a mobilised
officer's ``support_ringing``, ``support_joined``), and forgets it on that
badge's ``officer_no_answer`` or ``support_no_answer``, on ``ladder_exhausted``
and ``support_stood_down`` (the badges they released), on ``cleared`` and on
``closed`` -- after delivering that step, so
the officer learns why his stream went quiet. Messages that are not steps
reach him when they carry the ticket's ``number``.

Transport-free: the WebSocket endpoint lives in ``core.dispatch.views``.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from core.calls.lifecycle import Step
from core.calls.tickets import StepView, TicketView, iso_utc

__all__ = ["QUEUE_DEFAULT", "StepBroadcaster", "Subscription", "step_message"]

QUEUE_DEFAULT = 256
# Tickets whose station is remembered; older ones fall back to unfiltered views only.
REMEMBER_MAX = 50_000
# Steps whose ``badge`` puts that officer on the ticket.
_HOLDING = frozenset({Step.OFFICER_RINGING, Step.OFFICER_JOINED, Step.ARRIVED, Step.SUPPORT_RINGING,
                      Step.SUPPORT_JOINED})


def step_message(ticket: TicketView, step: StepView, station: str | None) -> dict[str, Any]:
    """The JSON pushed for one step."""
    return {
        "type": "step",
        "number": ticket.number,  # the ticket number, as in the REST API
        "seq": step.seq,
        "step": str(step.step),
        "state": str(step.state_after),
        "at": iso_utc(step.at_us),
        "at_us": step.at_us,
        "source": step.source,
        "station": station,
        "detail": dict(step.detail),
    }


class Subscription:
    """One subscriber's queue of serialised messages."""

    def __init__(self, station: str | None, maxsize: int, badge: str | None = None) -> None:
        self.station = station
        # An officer's subscription: filtered by the tickets holding this badge, not by station.
        self.badge = badge
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize)
        self.closed = asyncio.Event()
        self.reason: str | None = None
        self.dropped = 0

    def offer(self, message: str) -> bool:
        if self.closed.is_set():
            return False
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close("slow")
            return False
        return True

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.reason = reason
        # Nothing queued is sent after a close; free the memory now.
        while not self._queue.empty():
            self._queue.get_nowait()
            self.dropped += 1
        self.closed.set()

    async def next(self) -> str:
        """The next message; waits as long as it takes (the caller watches ``closed``)."""
        return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()


class StepBroadcaster:
    """Fans ticket steps out to subscribers, filtered by station."""

    def __init__(self, *, queue_size: int = QUEUE_DEFAULT) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}")
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._stations: OrderedDict[str, str | None] = OrderedDict()
        self._officers: OrderedDict[str, set[str]] = OrderedDict()
        self.slow_disconnects = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def prime(self, stations: Mapping[str, str | None]) -> None:
        """Remember the stations of open tickets (after a restart, before their next dispatch step)."""
        for number, station in stations.items():
            self._remember(number, station)

    def prime_officers(self, held: Mapping[str, Iterable[str]]) -> None:
        """Remember which badges hold open tickets (after a restart, before their next step)."""
        for number, badges in held.items():
            for badge in badges:
                self._hold(number, badge)

    def officers_of(self, number: str) -> frozenset[str]:
        return frozenset(self._officers.get(number, ()))

    def subscribe(self, station: str | None = None, *, badge: str | None = None) -> Subscription:
        subscription = Subscription(station, self._queue_size, badge)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription, reason: str = "gone") -> None:
        self._subscribers.discard(subscription)
        subscription.close(reason)

    def close_all(self, reason: str = "shutdown") -> None:
        for subscription in list(self._subscribers):
            self.unsubscribe(subscription, reason)

    def station_of(self, number: str) -> str | None:
        return self._stations.get(number)

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        """The ``TicketService`` listener: synchronous, no I/O."""
        if "station" in step.detail:
            station = step.detail["station"]
            station = station if isinstance(station, str) else None
            self._remember(ticket.number, station)
        else:
            station = self._stations.get(ticket.number)
        if step.step is Step.CLOSED:
            self._stations.pop(ticket.number, None)
        badge = step.detail.get("badge")
        if step.step in _HOLDING and isinstance(badge, str):
            self._hold(ticket.number, badge)
        try:
            if not self._subscribers:
                return
            message = json.dumps(step_message(ticket, step, station), ensure_ascii=False)
            for subscription in list(self._subscribers):
                if not self._wants(subscription, ticket.number, station):
                    continue
                if not subscription.offer(message):
                    self._subscribers.discard(subscription)
                    if subscription.reason == "slow":
                        self.slow_disconnects += 1
        finally:
            # After delivery: the officer released by this step still hears of it.
            self._release(ticket.number, step)

    def publish(self, message: Mapping[str, Any], station: str | None, *, badge: str | None = None) -> int:
        """Push a message that is not a step (a briefing, a surge, a flag) to the subscribers of ``station``.

        Same filtering and back-pressure as steps; officers get it when it
        names (``number``) a ticket they hold. With ``badge``, only that
        officer's subscriptions get it (a briefing on joining, which the
        station has had already). Returns how many subscribers took it.
        """
        if not self._subscribers:
            return 0
        text = json.dumps(dict(message), ensure_ascii=False)
        number = message.get("number")
        number = number if isinstance(number, str) else None
        taken = 0
        for subscription in list(self._subscribers):
            if badge is not None and subscription.badge != badge:
                continue
            if not self._wants(subscription, number, station):
                continue
            if subscription.offer(text):
                taken += 1
            else:
                self._subscribers.discard(subscription)
                if subscription.reason == "slow":
                    self.slow_disconnects += 1
        return taken

    def _wants(self, subscription: Subscription, number: str | None, station: str | None) -> bool:
        if subscription.badge is not None:
            return number is not None and subscription.badge in self._officers.get(number, ())
        return subscription.station is None or subscription.station == station

    def _hold(self, number: str, badge: str) -> None:
        self._officers.setdefault(number, set()).add(badge)
        self._officers.move_to_end(number)
        while len(self._officers) > REMEMBER_MAX:
            self._officers.popitem(last=False)

    def _release(self, number: str, step: StepView) -> None:
        if step.step in (Step.CLEARED, Step.CLOSED):
            self._officers.pop(number, None)
            return
        if step.step in (Step.OFFICER_NO_ANSWER, Step.SUPPORT_NO_ANSWER):
            gone = [step.detail.get("badge")]
        elif step.step in (Step.LADDER_EXHAUSTED, Step.SUPPORT_STOOD_DOWN):
            released = step.detail.get("released")
            gone = list(released) if isinstance(released, list) else []
        else:
            return
        held = self._officers.get(number)
        if held is None:
            return
        held.difference_update(b for b in gone if isinstance(b, str))
        if not held:
            del self._officers[number]

    def _remember(self, number: str, station: str | None) -> None:
        self._stations[number] = station
        self._stations.move_to_end(number)
        while len(self._stations) > REMEMBER_MAX:
            self._stations.popitem(last=False)
