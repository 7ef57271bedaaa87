"""Route ``intake``: a 110 call entered the dialplan; give it a ticket.

Dialplan: ``AGI(agi://127.0.0.1:4573/intake,${JIEJING_ARRIVED})``. The route
creates (or finds, if the AMI path was first) the call's ticket and hands the
dialplan its number, the queue, the priority and the recording's file name.
Everything it sets is optional for the dialplan: if this route fails or is
late, the call is queued with defaults and the ticket is completed from AMI.
"""

from __future__ import annotations

import math
import time

from core.tickets import TicketService
from telephony import channel_vars
from telephony.agi.codec import Request
from telephony.agi.server import AGISession, Route

DEFAULT_QUEUE = "emergency-110"
DEFAULT_PRIORITY = 10


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


def make_route(service: TicketService, *, queue: str = DEFAULT_QUEUE, priority: int = DEFAULT_PRIORITY) -> Route:
    async def intake(request: Request, agi: AGISession) -> None:
        h = request.headers
        ticket = await service.open_call(
            uniqueid=h.get("agi_uniqueid", ""),
            caller_id=h.get("agi_callerid", ""),
            caller_name=h.get("agi_calleridname"),
            at=arrival_time(request),
            source="agi",
            queue=queue,
            priority=priority,
        )
        await agi.set_variables(
            {
                channel_vars.QUEUE: ticket.queue or queue,
                channel_vars.PRIORITY: ticket.priority if ticket.priority is not None else priority,
                # Ticket number and uniqueid contain only [0-9A-Za-z.-]: safe as a file name.
                channel_vars.RECORDING: channel_vars.recording_name(ticket.number, ticket.uniqueid),
                # Last: the dialplan takes a set ticket as "the backend answered".
                channel_vars.TICKET: ticket.number,
            }
        )

    return intake
