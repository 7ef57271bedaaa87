"""A 110 call no seat takes rings the overflow (the supervisors' desk), and its ticket says who answered.

Every lab seat is paused, as when the last call-taker has gone: the caller waits the queue's overflow
time (set to 3 s here through a global variable), then the supervisors' desk (a lab answering phone)
rings and answers. The ticket is answered by the overflow, not abandoned.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from siplab import asterisk, storm
from tests.lab_globals import set_global

pytestmark = pytest.mark.lab

OVERFLOW_AFTER_S = 3


async def test_a_call_no_seat_takes_rings_the_supervisors_desk(backend, calls, lab_paths) -> None:
    settings = backend.settings
    await backend.wait_connected()
    await set_global(settings, "JIEJING_OVERFLOW_AFTER_S", str(OVERFLOW_AFTER_S))
    await storm.set_seats(settings, 100, 0)  # every seat paused
    try:
        number = f"137{random.randrange(10**8):08d}"
        stats = await calls.place([(number, "Overflow")], talk_s=2, patience_s=20)
        assert stats.get("SuccessfulCall(C)") == "1", stats
        await backend.settle()
    finally:
        await storm.set_seats(settings, 100, None)
        await set_global(settings, "JIEJING_OVERFLOW_AFTER_S", "30")
    (ticket,) = [t for t in await backend.service.list_recent(20) if t.caller_id == number]
    names = [str(s.step) for s in ticket.steps]
    assert names == ["received", "queued", "answered", "hung_up"], ticket.to_json()["steps"]
    received, queued, answered = (s.at_us / 1e6 for s in ticket.steps[:3])
    assert ticket.steps[2].detail["overflow_to"] == "PJSIP/supervisor-desk"
    assert ticket.seat is None
    # the overflow time in the queue, then the desk's phone rings 3 s (the lab's answering phones)
    assert OVERFLOW_AFTER_S + 2.5 <= answered - queued <= OVERFLOW_AFTER_S + 4.5, answered - queued
    assert len(ticket.recordings) == 1
    assert Path(ticket.recordings[0].path).parent == asterisk.LabPaths().recordings


async def test_a_call_while_every_staffed_seat_is_busy_rings_the_supervisors_desk(backend, calls) -> None:
    """One seat staffed and talking to a first caller (ringinuse=no keeps it out): the second caller, who finds no
    free seat, rings the overflow after the overflow time, never a busy tone."""
    settings = backend.settings
    await backend.wait_connected()
    await set_global(settings, "JIEJING_OVERFLOW_AFTER_S", str(OVERFLOW_AFTER_S))
    await storm.set_seats(settings, 100, 1)  # one seat staffed, the others paused
    first, second = (f"136{random.randrange(10**8):08d}" for _ in range(2))
    try:
        # the seat talks 12 s: the second caller, a second later, finds it busy for longer than the overflow time
        stats = await calls.place([(first, "First"), (second, "Second")], rate=1, talk_s=12, patience_s=30)
        assert stats.get("SuccessfulCall(C)") == "2", stats
        await backend.settle()
    finally:
        await storm.set_seats(settings, 100, None)
        await set_global(settings, "JIEJING_OVERFLOW_AFTER_S", "30")
    tickets = {t.caller_id: t for t in await backend.service.list_recent(20)}
    taken, overflowed = tickets[first], tickets[second]
    assert taken.seat == asterisk.seat_name(1), taken.to_json()["steps"]
    assert [str(s.step) for s in overflowed.steps] == ["received", "queued", "answered", "hung_up"], \
        overflowed.to_json()["steps"]
    assert overflowed.steps[2].detail["overflow_to"] == "PJSIP/supervisor-desk" and overflowed.seat is None
    queued, answered = (s.at_us / 1e6 for s in overflowed.steps[1:3])
    seat_answered = next(s.at_us / 1e6 for s in taken.steps if str(s.step) == "answered")
    assert answered < seat_answered + 12, "the overflow answered while the seat was still busy"
    assert OVERFLOW_AFTER_S + 2.5 <= answered - queued <= OVERFLOW_AFTER_S + 4.5, answered - queued
