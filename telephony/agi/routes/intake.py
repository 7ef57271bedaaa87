"""Route ``intake``: a 110 call entered the dialplan; give it a ticket.

Dialplan: ``AGI(agi://127.0.0.1:4573/intake,${JIEJING_ARRIVED},<location>)``.
The route creates (or finds, if the AMI path was first) the call's ticket and
hands the dialplan its number, the queue, the priority and the recording's
file name. Everything it sets is optional for the dialplan: if this route
fails or is late, the call is queued with defaults and the ticket is
completed from AMI.

``<location>`` is the handset's position the network sent with the INVITE
(PIDF-LO, read by Asterisk's geolocation profile): ``location_info`` of a GML
Point, URI-encoded. It becomes the incident location (step ``located``) —
after the variables are set, in a task of its own, so the caller's way to a
seat never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from core.calls.tickets import TicketService
from telephony import channel_vars
from telephony.agi.codec import Request
from telephony.agi.server import AGISession

log = logging.getLogger("jiejing.agi.intake")

DEFAULT_QUEUE = "emergency-110"
DEFAULT_PRIORITY = 10
# location_info of a GML point as Asterisk renders it: shape="Point",crs="2d",pos="31.2304 121.4737"
_POS = re.compile(r'pos="?\s*(-?\d{1,3}(?:\.\d+)?)\s+(-?\d{1,3}(?:\.\d+)?)')
_SHAPE = re.compile(r'shape="?Point"?', re.IGNORECASE)

Locate = Callable[..., Awaitable[object]]


def network_position(request: Request) -> tuple[float, float] | None:
    """(lat, lon) from the dialplan's second argument, or None (absent, not a point, out of range)."""
    if len(request.args) < 2 or not request.args[1]:
        return None
    info = unquote(request.args[1])[:1000]
    if not _SHAPE.search(info):
        return None  # circles, polygons, civic addresses: left to the call-taker for now
    m = _POS.search(info)
    if not m:
        return None
    lat, lon = float(m.group(1)), float(m.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def arrival_time(request: Request, clock=time.time) -> float:
    """The dialplan's arrival stamp (argument 1), or now if it is missing or odd."""
    if request.args:
        try:
            value = float(request.args[0])
        except ValueError:
            return clock()
        # A stamp far from now is a broken clock or a forged argument.
        if math.isfinite(value) and abs(value - clock()) < 3600:
            return value
    return clock()


class IntakeRoute:
    """The route, plus the owned tasks that write network positions after it answered."""

    def __init__(self, service: TicketService, *, locate: Locate | None, queue: str, priority: int) -> None:
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

    async def __call__(self, request: Request, agi: AGISession) -> None:
        h = request.headers
        ticket = await self.service.open_call(
            uniqueid=h.get("agi_uniqueid", ""),
            caller_id=h.get("agi_callerid", ""),
            caller_name=h.get("agi_calleridname"),
            at=arrival_time(request),
            source="agi",
            queue=self.queue,
            priority=self.priority,
        )
        await agi.set_variables(
            {
                channel_vars.QUEUE: ticket.queue or self.queue,
                channel_vars.PRIORITY: ticket.priority if ticket.priority is not None else self.priority,
                # Ticket number and uniqueid contain only [0-9A-Za-z.-]: safe as a file name.
                channel_vars.RECORDING: channel_vars.recording_name(ticket.number, ticket.uniqueid),
                # Last: the dialplan takes a set ticket as "the backend answered".
                channel_vars.TICKET: ticket.number,
            }
        )
        position = network_position(request)
        if position is not None and self.locate is not None:
            self._locate_later(ticket.number, *position)


def make_route(service: TicketService, *, locate: Locate | None = None, queue: str = DEFAULT_QUEUE,
               priority: int = DEFAULT_PRIORITY) -> IntakeRoute:
    return IntakeRoute(service, locate=locate, queue=queue, priority=priority)
