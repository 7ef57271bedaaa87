"""The step stream: every ticket step, pushed at once to the bureaus and stations watching.

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

Transport-free: the WebSocket endpoint lives in ``core.web_dispatch``.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from core.lifecycle import Step
from core.tickets import StepView, TicketView, iso_utc

__all__ = ["QUEUE_DEFAULT", "StepBroadcaster", "Subscription", "step_message"]

QUEUE_DEFAULT = 256
# Tickets whose station is remembered; older ones fall back to unfiltered views only.
REMEMBER_MAX = 50_000


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

    def __init__(self, station: str | None, maxsize: int) -> None:
        self.station = station
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
        self.slow_disconnects = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def prime(self, stations: Mapping[str, str | None]) -> None:
        """Remember the stations of open tickets (after a restart, before their next dispatch step)."""
        for number, station in stations.items():
            self._remember(number, station)

    def subscribe(self, station: str | None = None) -> Subscription:
        subscription = Subscription(station, self._queue_size)
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
        if not self._subscribers:
            return
        message = json.dumps(step_message(ticket, step, station), ensure_ascii=False)
        for subscription in list(self._subscribers):
            if subscription.station is not None and subscription.station != station:
                continue
            if not subscription.offer(message):
                self._subscribers.discard(subscription)
                if subscription.reason == "slow":
                    self.slow_disconnects += 1

    def publish(self, message: Mapping[str, Any], station: str | None) -> int:
        """Push a message that is not a step (a briefing, a surge, a flag) to the subscribers of ``station``.

        Same filtering and back-pressure as steps; returns how many subscribers took it.
        """
        if not self._subscribers:
            return 0
        text = json.dumps(dict(message), ensure_ascii=False)
        taken = 0
        for subscription in list(self._subscribers):
            if subscription.station is not None and subscription.station != station:
                continue
            if subscription.offer(text):
                taken += 1
            else:
                self._subscribers.discard(subscription)
                if subscription.reason == "slow":
                    self.slow_disconnects += 1
        return taken

    def _remember(self, number: str, station: str | None) -> None:
        self._stations[number] = station
        self._stations.move_to_end(number)
        while len(self._stations) > REMEMBER_MAX:
            self._stations.popitem(last=False)
