"""The transition table: every legal row, illegal pairs, and whole call paths."""

from __future__ import annotations

import itertools

import pytest

from core.calls import lifecycle
from core.calls.lifecycle import (
    CALL_LIVE_STATES,
    TRANSITIONS,
    IllegalTransition,
    State,
    Step,
    advance,
)

# Written out independently of the module's rules, as the specification lists them.
LEGAL = {
    (None, Step.RECEIVED): State.RECEIVED,
    (State.RECEIVED, Step.QUEUED): State.QUEUED,
    (State.QUEUED, Step.SEAT_RINGING): State.RINGING,
    (State.RINGING, Step.SEAT_RINGING): State.RINGING,
    (State.RINGING, Step.SEAT_NO_ANSWER): State.QUEUED,
    (State.QUEUED, Step.ANSWERED): State.ANSWERED,
    (State.RINGING, Step.ANSWERED): State.ANSWERED,
    (State.RECEIVED, Step.ABANDONED): State.ABANDONED,
    (State.QUEUED, Step.ABANDONED): State.ABANDONED,
    (State.RINGING, Step.ABANDONED): State.ABANDONED,
    (State.ANSWERED, Step.HUNG_UP): State.ENDED,
    (State.ENDED, Step.CLOSED): State.CLOSED,
    (State.ABANDONED, Step.CLOSED): State.CLOSED,
}

# Dispatch (docs/dispatch.md): the call's state while the caller is on the line,
# the incident's once the call has ended.
DISPATCH_LEGAL = {
    **{
        (state, Step.LOCATED): state
        for state in (
            State.RECEIVED,
            State.QUEUED,
            State.RINGING,
            State.ANSWERED,
            State.ENDED,
            State.ABANDONED,
            State.DISPATCHING,
            State.DISPATCHED,
            State.DISPATCHING_ENDED,
            State.EN_ROUTE,
        )
    },
    (State.ANSWERED, Step.DISPATCH_REQUESTED): State.DISPATCHING,
    (State.DISPATCHING, Step.OFFICER_RINGING): State.DISPATCHING,
    (State.DISPATCHING, Step.OFFICER_NO_ANSWER): State.DISPATCHING,
    (State.DISPATCHING, Step.OFFICER_JOINED): State.DISPATCHED,
    (State.DISPATCHING, Step.LADDER_EXHAUSTED): State.ANSWERED,
    (State.DISPATCHING, Step.HUNG_UP): State.DISPATCHING_ENDED,
    (State.DISPATCHING_ENDED, Step.OFFICER_RINGING): State.DISPATCHING_ENDED,
    (State.DISPATCHING_ENDED, Step.OFFICER_NO_ANSWER): State.DISPATCHING_ENDED,
    (State.DISPATCHING_ENDED, Step.OFFICER_JOINED): State.EN_ROUTE,
    (State.DISPATCHING_ENDED, Step.LADDER_EXHAUSTED): State.ENDED,
    (State.DISPATCHED, Step.HUNG_UP): State.EN_ROUTE,
    (State.DISPATCHED, Step.ARRIVED): State.ON_SCENE,
    (State.EN_ROUTE, Step.ARRIVED): State.ON_SCENE,
    (State.DISPATCHED, Step.CLEARED): State.CLEARED,
    (State.EN_ROUTE, Step.CLEARED): State.CLEARED,
    (State.ON_SCENE, Step.CLEARED): State.CLEARED,
    (State.ON_SCENE, Step.HUNG_UP): State.ON_SCENE,
    (State.CLEARED, Step.HUNG_UP): State.CLEARED,
    (State.CLEARED, Step.CLOSED): State.CLOSED,
}
LEGAL.update(DISPATCH_LEGAL)

# Triage (docs/triage.md): classification, notes, hand-overs and repeat links
# are recorded in every state but closed and leave the state as it is.
TRIAGE_LEGAL = {
    (state, step): state
    for state in State
    if state is not State.CLOSED
    for step in (Step.CLASSIFIED, Step.NOTE_ADDED, Step.HANDED_OVER, Step.REPEAT_LINKED)
}
LEGAL.update(TRIAGE_LEGAL)

# The caller's AML fix that may not move the incident (core/triage/aml_service.py): kept in every state but
# closed; the state never changes.
LEGAL.update({(state, Step.HANDSET_LOCATED): state for state in State if state is not State.CLOSED})

# Silent calls (docs/triage.md): from the answer until closed, a question only while the caller is connected to a
# seat; the state never changes.
SILENT_FROM = (State.ANSWERED, State.DISPATCHING, State.DISPATCHED, State.ENDED, State.DISPATCHING_ENDED,
               State.EN_ROUTE, State.ON_SCENE, State.CLEARED)
SILENT_STEPS = (Step.CALLER_SILENT, Step.CALLER_SPOKE, Step.PROMPT_PLAYED, Step.CALLER_KEY, Step.SMS_SENT,
                Step.SMS_RECEIVED)
LEGAL.update({(state, step): state for state in SILENT_FROM for step in SILENT_STEPS})
LEGAL.update({(state, Step.QUESTION_ASKED): state for state in (State.ANSWERED, State.DISPATCHING, State.DISPATCHED)})

# Support mobilised for a major incident (docs/dispatch.md): beside the ticket's own call and dispatch, in every
# state but closed; the state never changes.
SUPPORT_STEPS = (Step.SUPPORT_REQUESTED, Step.SUPPORT_RINGING, Step.SUPPORT_NO_ANSWER, Step.SUPPORT_JOINED,
                 Step.SUPPORT_UNANSWERED, Step.SUPPORT_STOOD_DOWN)
LEGAL.update({(state, step): state for state in State if state is not State.CLOSED for step in SUPPORT_STEPS})

# The center's automatic call-backs of lost callers (docs/triage.md): a call of their own, in every state but
# closed; the state never changes.
AUTO_CALLBACK_STEPS = (
    Step.AUTO_CALLBACK_DUE, Step.AUTO_CALLBACK_SKIPPED, Step.AUTO_CALLBACK_STARTED, Step.AUTO_CALLBACK_RINGING,
    Step.AUTO_CALLBACK_ANSWERED, Step.AUTO_CALLBACK_FAILED, Step.AUTO_CALLBACK_CONNECTED, Step.AUTO_CALLBACK_ENDED,
    Step.AUTO_CALLBACK_CANCELLED, Step.AUTO_CALLBACK_REDIALLED, Step.AUTO_CALLBACK_GAVE_UP, Step.DISPATCH_PROPOSED)
LEGAL.update({(state, step): state for state in State if state is not State.CLOSED for step in AUTO_CALLBACK_STEPS})

# A declared major incident (docs/design.md): on its ticket and on its callers', in every state but closed; the
# state never changes.
MAJOR_STEPS = (Step.MAJOR_INCIDENT_DECLARED, Step.MAJOR_INCIDENT_MESSAGE, Step.MAJOR_INCIDENT_ENDED,
               Step.MAJOR_INCIDENT_CALLER, Step.MAJOR_INCIDENT_LINKED)
LEGAL.update({(state, step): state for state in State if state is not State.CLOSED for step in MAJOR_STEPS})

# Text reports (docs/triage.md): no call, taken by a call-taker, located, closed.
REPORT_LEGAL = {
    (None, Step.REPORTED): State.REPORTED,
    (State.REPORTED, Step.TAKEN): State.TAKEN,
    (State.TAKEN, Step.CLOSED): State.CLOSED,
    (State.TAKEN, Step.DISPATCH_REQUESTED): State.DISPATCHING_ENDED,
    (State.REPORTED, Step.LOCATED): State.REPORTED,
    (State.TAKEN, Step.LOCATED): State.TAKEN,
}
LEGAL.update(REPORT_LEGAL)

# Call-backs (docs/design.md): asked for once the ticket's own call is down and before it is closed; closed
# stays final. The state never changes.
CALLBACK_FROM = (State.TAKEN, State.ENDED, State.ABANDONED, State.DISPATCHING_ENDED, State.EN_ROUTE,
                 State.ON_SCENE, State.CLEARED)
CALLBACK_LEGAL = {
    **{(state, Step.CALLBACK_REQUESTED): state for state in CALLBACK_FROM},
    **{(state, step): state for state in CALLBACK_FROM for step in (Step.CALLBACK_ANSWERED, Step.CALLBACK_FAILED,
                                                                    Step.CALLBACK_ENDED)},
}
LEGAL.update(CALLBACK_LEGAL)

# A report's attachments (docs/triage.md): kept or refused in every state but closed; the state never changes.
ATTACHMENT_LEGAL = {
    (state, step): state
    for state in State
    if state is not State.CLOSED
    for step in (Step.ATTACHMENT_KEPT, Step.ATTACHMENT_REFUSED)
}
LEGAL.update(ATTACHMENT_LEGAL)


def test_a_call_back_is_asked_for_only_once_the_tickets_own_call_is_down() -> None:
    for state in (*CALL_LIVE_STATES, State.REPORTED, State.CLOSED):
        with pytest.raises(IllegalTransition):
            advance(state, Step.CALLBACK_REQUESTED)
    assert not set(CALLBACK_FROM) & CALL_LIVE_STATES


def test_text_reports_are_never_live_calls() -> None:
    # Reconciliation with Asterisk would otherwise end them for want of a channel.
    assert State.REPORTED not in CALL_LIVE_STATES and State.TAKEN not in CALL_LIVE_STATES
    with pytest.raises(IllegalTransition):
        advance(State.REPORTED, Step.CLOSED)  # taken by someone first: who closed it is on record
    # a taken report is dispatched with no caller to conference: its ladder rings phones alone, never live
    assert advance(State.TAKEN, Step.DISPATCH_REQUESTED) is State.DISPATCHING_ENDED
    assert State.DISPATCHING_ENDED not in CALL_LIVE_STATES
    with pytest.raises(IllegalTransition):
        advance(State.REPORTED, Step.DISPATCH_REQUESTED)  # taken first: who dispatched it is on record


@pytest.mark.parametrize(("pair", "target"), LEGAL.items(), ids=lambda v: str(v))
def test_every_legal_row(pair: tuple[State | None, Step], target: State) -> None:
    assert advance(*pair) is target


def test_table_has_exactly_the_legal_rows() -> None:
    assert dict(TRANSITIONS) == LEGAL


def test_every_other_pair_is_illegal() -> None:
    for state, step in itertools.product([None, *State], Step):
        if (state, step) in LEGAL:
            continue
        with pytest.raises(IllegalTransition):
            advance(state, step)


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (None, Step.QUEUED),
        (State.RECEIVED, Step.RECEIVED),
        (State.RECEIVED, Step.ANSWERED),
        (State.QUEUED, Step.QUEUED),
        (State.ANSWERED, Step.ABANDONED),
        (State.ANSWERED, Step.CLOSED),  # a live call cannot be closed
        (State.ENDED, Step.HUNG_UP),
        (State.ABANDONED, Step.ANSWERED),
        (State.CLOSED, Step.CLOSED),
        (State.CLOSED, Step.RECEIVED),
    ],
)
def test_illegal_pairs_name_state_and_step(state: State | None, step: Step) -> None:
    with pytest.raises(IllegalTransition) as caught:
        advance(state, step)
    assert caught.value.state == state
    assert caught.value.step == step
    assert str(step) in str(caught.value)
    assert ("a new ticket" if state is None else f"state {state}") in str(caught.value)


def test_message_lists_allowed_steps() -> None:
    allowed = (r"abandoned, answered, attachment_kept, attachment_refused, auto_callback_answered, "
               r"auto_callback_cancelled, auto_callback_connected, auto_callback_due, auto_callback_ended, "
               r"auto_callback_failed, auto_callback_gave_up, auto_callback_redialled, auto_callback_ringing, "
               r"auto_callback_skipped, auto_callback_started, classified, dispatch_proposed, handed_over, "
               r"handset_located, "
               r"located, major_incident_caller, major_incident_declared, major_incident_ended, "
               r"major_incident_linked, major_incident_message, note_added, repeat_linked, seat_ringing, support_joined, support_no_answer, support_requested, "
               r"support_ringing, support_stood_down, support_unanswered")
    with pytest.raises(IllegalTransition, match=rf"allowed steps: {allowed}$"):
        advance(State.QUEUED, Step.HUNG_UP)
    with pytest.raises(IllegalTransition, match=r"allowed steps: none$"):
        advance(State.CLOSED, Step.CLOSED)


def test_plain_strings_from_the_database_are_accepted() -> None:
    assert advance("ringing", "answered") is State.ANSWERED  # type: ignore[arg-type]


def _walk(*steps: Step) -> list[State]:
    state: State | None = None
    seen = []
    for step in steps:
        state = advance(state, step)
        seen.append(state)
    return seen


def test_path_answered_call() -> None:
    assert _walk(Step.RECEIVED, Step.QUEUED, Step.SEAT_RINGING, Step.ANSWERED, Step.HUNG_UP, Step.CLOSED) == [
        State.RECEIVED,
        State.QUEUED,
        State.RINGING,
        State.ANSWERED,
        State.ENDED,
        State.CLOSED,
    ]


def test_path_seat_does_not_answer_then_another_does() -> None:
    assert _walk(
        Step.RECEIVED,
        Step.QUEUED,
        Step.SEAT_RINGING,
        Step.SEAT_NO_ANSWER,
        Step.SEAT_RINGING,
        Step.SEAT_RINGING,
        Step.ANSWERED,
        Step.HUNG_UP,
    )[-4:] == [State.RINGING, State.RINGING, State.ANSWERED, State.ENDED]


@pytest.mark.parametrize(
    "before",
    [(), (Step.QUEUED,), (Step.QUEUED, Step.SEAT_RINGING)],
    ids=["in-dialplan", "in-queue", "while-ringing"],
)
def test_path_caller_abandons(before: tuple[Step, ...]) -> None:
    assert _walk(Step.RECEIVED, *before, Step.ABANDONED, Step.CLOSED)[-2:] == [State.ABANDONED, State.CLOSED]


def test_live_states_are_those_before_hang_up() -> None:
    assert CALL_LIVE_STATES == {
        State.RECEIVED,
        State.QUEUED,
        State.RINGING,
        State.ANSWERED,
        State.DISPATCHING,
        State.DISPATCHED,
    }


def test_duplicate_rule_is_refused() -> None:
    rules = [
        ((State.RECEIVED,), Step.QUEUED, State.QUEUED),
        ((State.RECEIVED,), Step.QUEUED, State.ABANDONED),
    ]
    with pytest.raises(ValueError, match="duplicate transition received\\+queued"):
        lifecycle._expand(rules)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(State.CLOSED, Step.RECEIVED)] = State.RECEIVED  # type: ignore[index]
