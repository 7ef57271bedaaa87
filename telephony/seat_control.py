"""Queue membership of seats over AMI: the ``QueuePort`` of ``core.seats.board``.

QueueAdd/QueueRemove/QueuePause on the call-takers' queue. A refusal by
Asterisk (``Response: Error``) becomes ``QueueControlError`` with Asterisk's
message, so the seat board leaves the seat as it was; "already there" and
"not there" answers are taken as done, since the queue is then as asked.

``members()`` reads the queue back (``QueueStatus``) for the board's
``reconcile`` after every AMI log-in: the board then equals Asterisk after a
restart of either side. Asterisk accepts the log-in before app_queue has
loaded, so a refused or unanswered ``QueueStatus`` is asked again a few times.
"""

from __future__ import annotations

import asyncio
import logging

from core.seats.board import (
    MemberStatus,
    QueueControlError,
    SeatBoard,
    UnknownSeat,
    check_seat,
)
from telephony.ami.client import AMIClient, AMIClientError

log = logging.getLogger("jiejing.seats")

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

    async def members(self, *, attempts: int = 10, delay: float = 0.5) -> list[MemberStatus]:
        """The queue's members as Asterisk has them now; QueueControlError if it never says."""
        why = "no answer"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(delay)
            try:
                response, entries = await self._ami.list_action("QueueStatus", [("Queue", self.queue)],
                                                                timeout=self._timeout)
            except (AMIClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
                continue
            if not response.ok:
                why = response.message or "refused"
                continue
            return [m for m in (member_status(e) for e in entries if e.name == "QueueMember") if m is not None]
        raise QueueControlError(f"QueueStatus of {self.queue} not answered after {attempts} tries: {why}")


# Device states in QueueMember's Status (Asterisk's enum ast_device_state).
_IN_CALL = {"2", "3", "7", "8"}  # in use, busy, ringing while in use, on hold
_RINGING = {"6"}


def member_status(entry) -> MemberStatus | None:
    """A ``QueueMember`` event as the board's MemberStatus; None for a member that is not a seat name."""
    name = entry.get("Name") or ""
    interface = entry.get("StateInterface") or entry.get("Location") or ""
    for candidate in (name, interface.split("/", 1)[-1]):
        try:
            seat = check_seat(candidate)
            break
        except UnknownSeat:
            continue
    else:
        log.warning("queue member %r (%s) is not a seat name; left off the seat board", name, interface)
        return None
    status = entry.get("Status") or ""
    return MemberStatus(
        seat=seat,
        paused=entry.get("Paused") == "1",
        reason=entry.get("PausedReason") or None,
        in_call=entry.get("InCall") == "1" or status in _IN_CALL,
        ringing=status in _RINGING,
    )


def pause_listener(board: SeatBoard, queue: str):
    """AMI listener: the seats' pauses as Asterisk reports them (``QueueMemberPause``), into the board."""

    def on_event(event) -> None:
        if event.name == "QueueMemberPause" and event.get("Queue") == queue:
            member = member_status(event)
            if member is not None:
                board.on_member_pause(member)

    return on_event


async def sync_board(port: AMIQueuePort, board: SeatBoard) -> dict[str, int]:
    """The AMI connect hook: the seat board made equal to the queue Asterisk really has."""
    try:
        found = await board.reconcile(await port.members())
    except QueueControlError as exc:
        log.error("seat board not reconciled with Asterisk: %s", exc)
        return {"members": 0, "changed": 0}
    log.info("seat board reconciled with Asterisk's queue: %s", found)
    return found
