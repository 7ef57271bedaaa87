"""Queue membership of seats over AMI: the ``QueuePort`` of ``core.seats.board``.

QueueAdd/QueueRemove/QueuePause on the call-takers' queue. A refusal by
Asterisk (``Response: Error``) becomes ``QueueControlError`` with Asterisk's
message, so the seat board leaves the seat as it was; "already there" and
"not there" answers are taken as done, since the queue is then as asked.
"""

from __future__ import annotations

from core.seats.board import QueueControlError
from telephony.ami.client import AMIClient

DEFAULT_QUEUE = "emergency-110"
# Asterisk's messages when the queue is already as asked: not failures.
_ALREADY = ("unable to add interface: already there", "unable to remove interface: not there")


class AMIQueuePort:
    def __init__(self, ami: AMIClient, queue: str = DEFAULT_QUEUE, *, timeout: float = 5.0) -> None:
        self._ami = ami
        self.queue = queue
        self._timeout = timeout

    async def _act(self, action: str, headers: list[tuple[str, str]]) -> None:
        response = await self._ami.action(action, [("Queue", self.queue), *headers], timeout=self._timeout)
        if not response.ok:
            message = response.message or "no message"
            if message.lower().rstrip(".") in _ALREADY:
                return
            raise QueueControlError(f"{action} refused: {message}")

    async def add(self, interface: str, member_name: str) -> None:
        await self._act("QueueAdd", [("Interface", interface), ("MemberName", member_name), ("Paused", "false")])

    async def remove(self, interface: str) -> None:
        await self._act("QueueRemove", [("Interface", interface)])

    async def pause(self, interface: str, reason: str) -> None:
        await self._act("QueuePause", [("Interface", interface), ("Paused", "true"), ("Reason", reason)])

    async def unpause(self, interface: str) -> None:
        await self._act("QueuePause", [("Interface", interface), ("Paused", "false")])
