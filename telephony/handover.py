"""Hand-overs on the Asterisk side: the anti-fraud desk conferenced in, a call transferred to 12345.

Implements ``core.routing.HandoverPort`` for the triage desk:

- ``conference``: caller and seat into the call's conference room (the same
  room dispatch uses), then the desk's phone is originated into it; returns
  when the desk answered. The call-taker stays; the caller's MixMonitor goes
  along into the room, so the recording goes on.
- ``transfer``: the target is set on the caller's channel and the channel is
  redirected to ``[handover]``, which dials it and, if nobody answers, brings
  the caller back to the 110 queue. The recording is the caller's MixMonitor:
  it follows the channel. Returns once Asterisk accepted the redirect.

Endpoints come from the admins' routing file; they are still checked to be
plain ``PJSIP/name`` dial strings before they reach a channel variable.
"""

from __future__ import annotations

import re

from core.calls.tickets import TicketService
from core.triage.routing import HandoverFailed
from telephony import channel_vars
from telephony.dispatcher import Dispatcher

ENDPOINT = re.compile(r"PJSIP/[A-Za-z0-9_.-]{1,80}")
DESK_TIMEOUT_S = 20.0


class AsteriskHandover:
    def __init__(self, ami, service: TicketService, dispatcher: Dispatcher, legs) -> None:
        self.ami = ami
        self.service = service
        self.dispatcher = dispatcher
        self.legs = legs  # caller uniqueid -> {"caller": channel, "seat": channel}

    async def _call(self, number: str) -> tuple[str, dict]:
        ticket = await self.service.get(number)
        if ticket is None:
            raise HandoverFailed(f"no ticket {number}")
        legs = self.legs(ticket.uniqueid)
        if not legs:
            raise HandoverFailed(f"{number}: the call is not connected to a seat")
        return ticket.uniqueid, legs

    @staticmethod
    def _checked(endpoint: str) -> str:
        if not ENDPOINT.fullmatch(endpoint or ""):
            raise HandoverFailed(f"endpoint {endpoint!r} is not a PJSIP/name dial string")
        return endpoint

    async def conference(self, number: str, endpoint: str) -> None:
        endpoint = self._checked(endpoint)
        uid, legs = await self._call(number)
        if not await self.dispatcher.ensure_room(uid, legs):
            raise HandoverFailed(f"{number}: caller and seat could not be moved into the room")
        answered, outcome = await self.dispatcher.call_into_room(uid, number, endpoint, DESK_TIMEOUT_S)
        if not answered:
            raise HandoverFailed(f"{number}: {endpoint} did not join ({outcome})")

    async def transfer(self, number: str, endpoint: str) -> None:
        endpoint = self._checked(endpoint)
        _, legs = await self._call(number)
        # The ticket's number too: the caller's channel carries none of its own (the ticket comes from the log).
        for variable, value in ((channel_vars.TICKET, number), (channel_vars.HANDOVER_TO, endpoint)):
            resp = await self.ami.action("Setvar", {"Channel": legs["caller"], "Variable": variable, "Value": value})
            if not resp.ok:
                raise HandoverFailed(f"{number}: {resp.message}")
        resp = await self.ami.action("Redirect", {"Channel": legs["caller"], "Context": "handover",
                                                  "Exten": "transfer", "Priority": "1"})
        if not resp.ok:
            raise HandoverFailed(f"{number}: redirect refused: {resp.message}")
