"""The ticket lifecycle: every legal state transition, in one table.

A ticket moves only through ``advance(state, step)``; nothing else decides
which step may follow which. Later phases (dispatch of officers: dispatched,
officer_ringing, officer_joined, arrived, classified …) are added as new
``State``/``Step`` members and new rows in ``_RULES`` — no code changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType


class State(StrEnum):
    """Where a ticket stands."""

    RECEIVED = "received"  # the call entered the dialplan, ticket numbered
    QUEUED = "queued"  # waiting in a call-taker queue
    RINGING = "ringing"  # a seat's phone is ringing
    ANSWERED = "answered"  # a call-taker is talking to the caller
    ENDED = "ended"  # the answered call hung up; the ticket awaits closing
    ABANDONED = "abandoned"  # the caller hung up before any seat answered
    CLOSED = "closed"  # a call-taker closed the ticket with a disposition


class Step(StrEnum):
    """Something that happened to a ticket; each one is time-stamped and stored."""

    RECEIVED = "received"
    QUEUED = "queued"
    SEAT_RINGING = "seat_ringing"
    SEAT_NO_ANSWER = "seat_no_answer"
    ANSWERED = "answered"
    HUNG_UP = "hung_up"
    ABANDONED = "abandoned"
    CLOSED = "closed"


# States in which the caller's channel is still up: reconciliation after an AMI
# reconnect compares these tickets with the channels Asterisk reports. A new
# state must be placed here deliberately, hence the explicit set.
CALL_LIVE_STATES: frozenset[State] = frozenset({State.RECEIVED, State.QUEUED, State.RINGING, State.ANSWERED})

# (states the step may follow, step, resulting state). None is "no ticket yet".
_RULES: tuple[tuple[tuple[State | None, ...], Step, State], ...] = (
    ((None,), Step.RECEIVED, State.RECEIVED),
    ((State.RECEIVED,), Step.QUEUED, State.QUEUED),
    # ringall strategies and retries ring further seats while one already rings
    ((State.QUEUED, State.RINGING), Step.SEAT_RINGING, State.RINGING),
    ((State.RINGING,), Step.SEAT_NO_ANSWER, State.QUEUED),
    # AMI may report the answer before (or without) the ringing of that seat
    ((State.QUEUED, State.RINGING), Step.ANSWERED, State.ANSWERED),
    ((State.RECEIVED, State.QUEUED, State.RINGING), Step.ABANDONED, State.ABANDONED),
    ((State.ANSWERED,), Step.HUNG_UP, State.ENDED),
    ((State.ENDED, State.ABANDONED), Step.CLOSED, State.CLOSED),
)


def _expand(
    rules: Iterable[tuple[tuple[State | None, ...], Step, State]],
) -> Mapping[tuple[State | None, Step], State]:
    table: dict[tuple[State | None, Step], State] = {}
    for sources, step, target in rules:
        for source in sources:
            if (source, step) in table:  # a second row would silently win
                raise ValueError(f"duplicate transition {source!s}+{step!s}")
            table[(source, step)] = target
    return MappingProxyType(table)


TRANSITIONS: Mapping[tuple[State | None, Step], State] = _expand(_RULES)


class IllegalTransition(Exception):
    """A step that the lifecycle does not allow from the ticket's current state."""

    def __init__(self, state: State | None, step: Step) -> None:
        self.state = state
        self.step = step
        allowed = sorted(str(s) for (src, s) in TRANSITIONS if src == state)
        where = "a new ticket" if state is None else f"a ticket in state {state!s}"
        super().__init__(
            f"step {step!s} is not allowed for {where}; allowed steps: {', '.join(allowed) or 'none'}"
        )


def advance(state: State | None, step: Step) -> State:
    """The state after ``step``; raises ``IllegalTransition`` if the table has no such row."""
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise IllegalTransition(state, step) from None
