"""Intake: a 110 call entered the dialplan; where does it queue?

The dialplan asks with Asterisk's own ``CURL()`` and its own timeouts
(``telephony/intake_http.py``, ``dialplan/extensions.conf``): the request
carries the call's uniqueid and caller id, the answer is the queue and the
priority. The answer comes from memory only -- never from the store, never
after other work -- and it is given by a process of its own (``jiejing
intake``, started by ``jiejing serve``), so that a backend busy writing a
storm's record, stopped or crashed, never holds a caller: see docs/design.md,
"The intake answers from memory, the ticket is born from Asterisk's log".

The ticket is not made here. Asterisk's channel event log (CEL) has every
call whether or not any of our processes is up; the backend opens the ticket
from the call's ``CHAN_START`` there, at its true time. The handset's
position, if the network sent one with the INVITE (PIDF-LO), is written into
that log by the dialplan (a ``jiejing_location`` user event) and read back by
``telephony.cel.network_position``.
"""

from __future__ import annotations

import re

from telephony import channel_vars

DEFAULT_QUEUE = "emergency-110"
DEFAULT_PRIORITY = 10
_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,80}")


class Intake:
    """The queue and priority of every new 110 call, decided from memory."""

    def __init__(self, *, queue: str = DEFAULT_QUEUE, priority: int = DEFAULT_PRIORITY) -> None:
        if not _QUEUE.fullmatch(queue):
            raise ValueError(f"queue must be 1-80 of [A-Za-z0-9_-], got {queue!r}")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1000:
            raise ValueError(f"priority must be an integer 0..1000, got {priority!r}")
        self.queue, self.priority = queue, priority

    def answer(self, *, uniqueid: str, caller_id: str) -> dict[str, str]:
        """The channel variables the dialplan sets for this call.

        Every call gets the center's queue and priority today; this is the one place where a rule that can be
        decided from memory (a line's own queue, a caller's priority) belongs. Nothing here may wait.
        """
        return {channel_vars.QUEUE: self.queue, channel_vars.PRIORITY: str(self.priority)}
