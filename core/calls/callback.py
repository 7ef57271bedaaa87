"""Which number a call-back rings: the reporter's, checked before it goes anywhere near Asterisk.

A call-back rings the ticket's ``caller_id``: a text report's sender (checked
at intake) or a call's caller id as the carrier sent it, which is anything
the network let through — empty, ``anonymous``, or hostile text aimed at the
dialplan. Only a plain phone number is ever dialled: digits with an
optional leading ``+``, 3 to 20 of them. Anything else is refused here, so no
caller-controlled text reaches a channel variable or a dial string.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import DomainError

__all__ = ["CALLBACK_NUMBER", "NoCallbackNumber", "callback_number"]

# The whole number, as the carrier trunk takes it; the same shape as a report's sender.
CALLBACK_NUMBER = re.compile(r"\+?[0-9]{3,20}")


class NoCallbackNumber(DomainError):
    """The ticket has no number that can be called back (withheld, not a phone number)."""

    status = 409
    error_id = "no-callback-number"


def callback_number(number: str, caller_id: Any) -> str:
    """``caller_id`` if it is a plain phone number; ``NoCallbackNumber`` otherwise (it is not echoed back)."""
    if not isinstance(caller_id, str) or not CALLBACK_NUMBER.fullmatch(caller_id):
        shown = caller_id[:40] if isinstance(caller_id, str) else None
        raise NoCallbackNumber(f"ticket {number} has no number to call back",
                               details={"number": number, "caller_id": shown})
    return caller_id
