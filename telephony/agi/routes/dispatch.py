"""Route ``dispatch``: the call-taker pressed the dispatch feature code (*1) on the seat.

features.conf runs ``Gosub(seat-features,dispatch,1)`` on the seat's channel,
which calls ``AGI(agi://127.0.0.1:4573/dispatch,${CHANNEL(linkedid)})``: the
seat channel's linkedid is the caller's uniqueid, i.e. the ticket's key. The route only starts the dispatch (an owned task of the
dispatcher) and returns at once: the seat is back in the call within
milliseconds, and the dispatch's steps appear on the ticket.
"""

from __future__ import annotations

import logging

from core.calls.tickets import TicketService
from telephony.agi.codec import Request
from telephony.agi.server import AGISession, Route
from telephony.dispatcher import Dispatcher, DispatchError

log = logging.getLogger("jiejing.agi.dispatch")
# The seat's channel must be back from the feature's Gosub before it is moved
# into the room; Asterisk needs well under a millisecond after this route
# closes the connection, so a quarter second is a wide margin the caller does
# not notice.
FEATURE_SETTLE_S = 0.25


def make_route(service: TicketService, dispatcher: Dispatcher) -> Route:
    async def dispatch(request: Request, agi: AGISession) -> None:
        caller_uid = request.args[0] if request.args else ""
        ticket = await service.find_by_uniqueid(caller_uid) if caller_uid else None
        if ticket is None:
            await agi.verbose(f"jiejing: no ticket for linkedid {caller_uid}", 1)
            return
        seat = request.headers.get("agi_channel", "")
        try:
            await dispatcher.dispatch(ticket.number, by=seat.split("/", 1)[-1].rsplit("-", 1)[0] or "seat",
                                      settle_s=FEATURE_SETTLE_S)
        except DispatchError as exc:
            log.info("feature-code dispatch of %s refused: %s", ticket.number, exc)
            await agi.verbose(f"jiejing: {exc}", 1)

    return dispatch
