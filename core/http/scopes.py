"""Scopes shared by capabilities: a call-taker acts on their own calls only.

Which tickets are a call-taker's is known by the desk (the seat they hold, the
reports they took); routes of every capability that act on a ticket name
``own_call`` as their scope, and the desk fills ``TICKET_HOLDER`` when it is
mounted. This module knows neither: it only asks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from core.auth.users import Role
from core.http.replies import error_reply

if TYPE_CHECKING:
    from core.auth.users import Principal

# (username, ticket number) → True: theirs, False: not theirs, None: no such ticket.
TICKET_HOLDER = web.AppKey("ticket_holder", Callable[[str, str], Awaitable["bool | None"]])
# username → the seat they are logged in to, or None.
SEAT_HOLDER = web.AppKey("seat_holder", Callable[[str], "str | None"])


def seat_refusal(request: web.Request, principal: Principal, seat: str) -> web.Response | None:
    """A call-taker uses only the seat they hold (e.g. to call back from); others any seat."""
    holder = request.app.get(SEAT_HOLDER)
    if principal.role is not Role.CALL_TAKER or holder is None:
        return None
    held = holder(principal.username)
    if held != seat:
        return error_reply(403, f"you are not logged in to seat {seat}" + (f"; your seat is {held}" if held else ""),
                           error_id="not-your-seat", details={"seat": seat, "yours": held})
    return None


async def own_call(request: web.Request, principal: Principal) -> web.Response | None:
    """Scope: a call-taker acts only on the calls of their own seat and on the reports they took.

    Supervisors and admins act on any ticket. Without a desk mounted no seat is anyone's, and
    nothing is refused here.
    """
    holder = request.app.get(TICKET_HOLDER)
    if principal.role is not Role.CALL_TAKER or holder is None:
        return None
    number = request.match_info.get("number", "")
    owned = await holder(principal.username, number)
    if owned is None:
        return error_reply(404, "no such ticket", error_id="unknown-ticket", details={"number": number[:64]})
    if not owned:
        return error_reply(403, f"ticket {number} is not a call of your seat nor a report you took",
                           error_id="not-your-call", details={"number": number})
    return None
