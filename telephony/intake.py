"""Intake: a 110 call entered the dialplan; give it a ticket.

The dialplan asks the backend over HTTP with Asterisk's own ``CURL()`` and its
own timeouts (``telephony/intake_http.py``, ``dialplan/extensions.conf``): the
request carries the call's uniqueid, caller id and name, the arrival stamp and
the network's position; the answer is the ticket number, the queue, the
priority and the recording's file name. Everything it gives is optional for
the dialplan: if the backend fails, is late or is frozen, Asterisk stops
waiting, queues the call with defaults, and the ticket is completed from AMI.

The position is the handset's as the network sent it with the INVITE (PIDF-LO,
read by Asterisk's geolocation profile): ``location_info`` of a GML Point. It
becomes the incident location (step ``located``) after the answer, in a task
of its own, so the caller's way to a seat never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable

from core.calls.tickets import Source, TicketService
from telephony import channel_vars

log = logging.getLogger("jiejing.intake")

DEFAULT_QUEUE = "emergency-110"
DEFAULT_PRIORITY = 10
# location_info of a GML point as Asterisk renders it: shape="Point",crs="2d",pos="31.2304 121.4737"
_POS = re.compile(r'pos="?\s*(-?\d{1,3}(?:\.\d+)?)\s+(-?\d{1,3}(?:\.\d+)?)')
_SHAPE = re.compile(r'shape="?Point"?', re.IGNORECASE)
LOCATION_MAX = 1000

Locate = Callable[..., Awaitable[object]]


def network_position(info: str | None) -> tuple[float, float] | None:
    """(lat, lon) from the network's ``location_info``, or None (absent, not a point, out of range)."""
    if not info:
        return None
    info = info[:LOCATION_MAX]
    if not _SHAPE.search(info):
        return None  # circles, polygons, civic addresses: left to the call-taker for now
    m = _POS.search(info)
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def arrival_time(stamp: str | None, clock: Callable[[], float] = time.time) -> float:
    """The dialplan's arrival stamp (epoch seconds), or now if it is missing or odd."""
    if stamp:
        try:
            value = float(stamp)
        except ValueError:
            return clock()
        # A stamp far from now is a broken clock or a forged argument.
        if math.isfinite(value) and abs(value - clock()) < 3600:
            return value
    return clock()


class Intake:
    """Tickets for calls entering the dialplan, plus the owned tasks that write network positions."""

    def __init__(self, service: TicketService, *, locate: Locate | None = None, queue: str = DEFAULT_QUEUE,
                 priority: int = DEFAULT_PRIORITY) -> None:
        self.service, self.locate, self.queue, self.priority = service, locate, queue, priority
        self.pending: set[asyncio.Task] = set()

    async def drain(self) -> None:
        await asyncio.gather(*self.pending, return_exceptions=True)

    def _locate_later(self, number: str, lat: float, lon: float) -> None:
        async def run() -> None:
            try:
                await self.locate(number, lat=lat, lon=lon, address="network position (PIDF-LO)")
            except Exception:
                log.exception("%s: network position %.5f,%.5f not recorded", number, lat, lon)

        task = asyncio.create_task(run(), name=f"locate-{number}")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def admit(self, *, uniqueid: str, caller_id: str, caller_name: str | None, arrived: str | None,
                    location: str | None) -> dict[str, str]:
        """Open (or find, if the AMI path was first) the call's ticket; the channel variables the dialplan sets.

        In the dialplan's order of trust: the ticket number last, as "the backend answered".
        """
        ticket = await self.service.open_call(
            uniqueid=uniqueid,
            caller_id=caller_id,
            caller_name=caller_name,
            at=arrival_time(arrived),
            source=Source.INTAKE,
            queue=self.queue,
            priority=self.priority,
        )
        answer = {
            channel_vars.QUEUE: ticket.queue or self.queue,
            channel_vars.PRIORITY: str(ticket.priority if ticket.priority is not None else self.priority),
            # Ticket number and uniqueid contain only [0-9A-Za-z.-]: safe as a file name.
            channel_vars.RECORDING: channel_vars.recording_name(ticket.number, ticket.uniqueid),
            channel_vars.TICKET: ticket.number,
        }
        position = network_position(location)
        if position is not None and self.locate is not None:
            self._locate_later(ticket.number, *position)
        return answer
