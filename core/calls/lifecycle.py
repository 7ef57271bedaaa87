"""The ticket lifecycle: every legal state transition, in one table.

A ticket moves only through ``advance(state, step)``; nothing else decides
which step may follow which. Later phases (dispatch of officers: dispatched,
officer_ringing, officer_joined, arrived, classified …) are added as new
``State``/``Step`` members and new rows in ``_RULES`` — no code changes.

Dispatch. A ticket has two things to follow, the phone call and the incident,
and one state column. While the caller's channel is up the state says where
the call stands (``dispatching``, ``dispatched`` are live call states); once
it is down it says where the incident stands. The caller often hangs up
before the officer arrives, so ``hung_up`` moves a dispatching or dispatched
call to its call-ended twin (``dispatching_ended``, ``en_route``) and the
incident carries on from there: the ladder keeps ringing with the call-taker
in the conference, arrival and clearing need no call. Arrival ends the call
dimension: ``on_scene`` and ``cleared`` are not live even if the caller is
still on the line, and a late ``hung_up`` is recorded there without changing
the state (reconciliation has nothing left to decide for such a ticket).
``located`` records or corrects the incident location in any state before
the officer is on scene, without changing the state.

Triage. ``classified`` (incident type and priority), ``note_added`` (a
call-taker's note), ``handed_over`` (the anti-fraud desk conferenced in, the
call transferred to the 12345 hotline, …) and ``repeat_linked`` (the caller
rang again within minutes) are recorded in every state but closed, without
changing it: an incident is re-classified and annotated while the officer is
on the way, and a re-classification is a new step, never an overwrite.

Text reports. A report by SMS or the 110 app opens a ticket with
``reported`` instead of ``received``: there is no call, so its states
(``reported``, ``taken``) are not live and reconciliation with Asterisk never
touches them. A call-taker takes it (``taken``), may locate, classify and
annotate it like any ticket, and closes it.

Call-backs. A call-taker rings back the reporter of a text report, or the
caller of a dropped or ended call, from his seat (``callback_requested``:
by, seat, number called); the call ends in ``callback_answered`` (the
reporter picked up) or ``callback_failed`` (its outcome). None of them
changes the state: the call-back is a separate call, not the ticket's own
channel, so it must not make the ticket live (reconciliation would end it for
want of its uniqueid's channel), and the ticket is closed from where it
stood. A call-back is asked for only once the ticket's own call is down and
before it is closed. Closed stays final (the journal's verifier forgets a
ticket once closed): the outcome of a call-back still ringing when the
ticket is closed is not recorded, its recording is still bound.

Attachments. The photos and videos of a text report are fetched from its
gateway after the report (``core.triage.attachments``): each one ends in
``attachment_kept`` (its sha256, size and type) or ``attachment_refused``
(why). They are recorded in every state but closed, without changing it, like
triage steps: the fetch runs beside whatever the desk does with the ticket,
and closed stays final.

Automatic call-backs. A 110 call abandoned before a seat answered, ended within
seconds of the answer, or cut by a failure is called back by the center itself
(``core.triage.auto_callback``): the decision (``auto_callback_due``, or
``auto_callback_skipped`` with why not), each attempt (``started``, ``ringing``,
``answered`` or ``failed`` with its outcome, ``connected`` to a seat,
``ended``), its end (``cancelled``: the caller rang again or a call-taker called;
``gave_up``: SMS and supervisors after the last attempt), the caller's new call
(``auto_callback_redialled``, on the new ticket, naming the old one) and a
``dispatch_proposed`` for a located urgent ticket. Like triage steps they are
recorded in every state but closed without changing it: the call-back is a call
of its own, never the ticket's channel.

Handset location. A caller's AML fix (``core.triage.aml_service``) that may
not move the incident (a call-taker's position stands, the officer is on
scene) is kept as ``handset_located`` in every state but closed, without
changing it; one that may is a ``located`` step.

Major incidents. A supervisor declares one (``core.triage.major``) on a
ticket of its own: ``major_incident_declared`` (place, type),
``major_incident_message`` (the recorded message callers hear),
``major_incident_ended``; a caller who pressed 1 gets
``major_incident_linked`` (naming the incident's ticket) and the incident's
ticket ``major_incident_caller`` (naming his). In every state but closed,
without changing it, like triage steps.

Silent calls. A caller who has not spoken some seconds after a seat answered
is flagged ``caller_silent`` (``caller_spoke`` if he speaks after all); the
call-taker plays him the prompt (``prompt_played``), asks yes/no questions
(``question_asked``: only while the call is connected) answered by his keys
(``caller_key``), and texts him (``sms_sent``, ``sms_received``: his replies,
bound to the ticket). From the answer until the ticket is closed, without
changing the state: the call's end reaches the ticket from Asterisk's log,
a key or a reply may come just after it (``core.calls.silent``).

Mobilisation. For a major incident a supervisor mobilises support: several
officers at once, each rung alone on his own ladder (``core.dispatch.mobilise``).
``support_requested`` (the picks), ``support_ringing``, ``support_no_answer``,
``support_joined`` (an officer on his way, or a desk that took the pick over),
``support_unanswered`` (a pick's ladder ran out) and ``support_stood_down``
are recorded in every state but closed without changing it: the ticket's own
call and dispatch go on beside them, and support may be sent to an incident
whose caller hung up long ago.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from core.errors import DomainError


class State(StrEnum):
    """Where a ticket stands."""

    RECEIVED = "received"  # the call entered the dialplan, ticket numbered
    QUEUED = "queued"  # waiting in a call-taker queue
    RINGING = "ringing"  # a seat's phone is ringing
    ANSWERED = "answered"  # a call-taker is talking to the caller
    ENDED = "ended"  # the answered call hung up; the ticket awaits closing
    ABANDONED = "abandoned"  # the caller hung up before any seat answered
    CLOSED = "closed"  # a call-taker closed the ticket with a disposition
    DISPATCHING = "dispatching"  # caller on the line, the dispatch ladder is ringing
    DISPATCHED = "dispatched"  # an officer (or desk) joined caller and call-taker in conference
    DISPATCHING_ENDED = "dispatching_ended"  # the caller hung up; the ladder rings on with the call-taker
    EN_ROUTE = "en_route"  # the call ended with an officer dispatched; awaiting arrival
    ON_SCENE = "on_scene"  # the officer reported arrival
    CLEARED = "cleared"  # the officer cleared the incident with a disposition; awaits closing
    REPORTED = "reported"  # a text report (SMS, app) came in, numbered; waits for a call-taker
    TAKEN = "taken"  # a call-taker handles the text report; awaits closing


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
    LOCATED = "located"  # incident location set or corrected: address, lat/lon, cell, station
    DISPATCH_REQUESTED = "dispatch_requested"  # the call-taker judged it a police matter
    OFFICER_RINGING = "officer_ringing"  # one rung of the ladder is ringing
    OFFICER_NO_ANSWER = "officer_no_answer"  # that rung did not answer, was busy or unreachable
    OFFICER_JOINED = "officer_joined"  # that rung answered and joined the conference
    LADDER_EXHAUSTED = "ladder_exhausted"  # nobody answered; supervisors alerted
    ARRIVED = "arrived"
    CLEARED = "cleared"
    CLASSIFIED = "classified"  # incident type and priority set or changed by the call-taker
    NOTE_ADDED = "note_added"  # a call-taker's note (scanned for major-incident keywords)
    HANDED_OVER = "handed_over"  # anti-fraud desk, 12345 hotline or local station took part or all of it
    REPEAT_LINKED = "repeat_linked"  # the same number rang within minutes; linked to its open ticket
    REPORTED = "reported"  # a text report (SMS, app) came in: its channel, sender and text
    TAKEN = "taken"  # a call-taker took the text report
    CALLBACK_REQUESTED = "callback_requested"  # a seat rings the reporter back: by, seat, number called
    CALLBACK_ANSWERED = "callback_answered"  # the reporter answered the call-back
    CALLBACK_FAILED = "callback_failed"  # the call-back did not reach the reporter: its outcome
    CALLBACK_ENDED = "callback_ended"  # the answered call-back's call ended (the seat's channel hung up)
    ATTACHMENT_KEPT = "attachment_kept"  # a report's photo or video fetched and stored: index, sha256, size, type
    ATTACHMENT_REFUSED = "attachment_refused"  # a report's photo or video not kept: index, reason
    HANDSET_LOCATED = "handset_located"  # the caller's AML fix kept beside the incident location, not moving it
    MAJOR_INCIDENT_DECLARED = "major_incident_declared"  # a supervisor declared a major incident on this ticket
    MAJOR_INCIDENT_MESSAGE = "major_incident_message"  # its recorded message for callers: sha256, size, by whom
    MAJOR_INCIDENT_ENDED = "major_incident_ended"  # the supervisor ended it
    MAJOR_INCIDENT_CALLER = "major_incident_caller"  # on the incident's ticket: a caller pressed 1 (his ticket)
    MAJOR_INCIDENT_LINKED = "major_incident_linked"  # on the caller's ticket: he pressed 1 (the incident's ticket)
    CALLER_SILENT = "caller_silent"  # the caller said nothing for N s after the answer: flagged on the desk
    CALLER_SPOKE = "caller_spoke"  # a caller flagged silent spoke after all
    PROMPT_PLAYED = "prompt_played"  # the silent-call prompt played to the caller on the line (or why not)
    QUESTION_ASKED = "question_asked"  # a yes/no question the call-taker asks aloud: its text, by whom
    CALLER_KEY = "caller_key"  # a key the caller pressed: the question in force, what it means (yes, no, 55)
    SMS_SENT = "sms_sent"  # a text to the caller through the outbox, opening a conversation on this ticket
    SMS_RECEIVED = "sms_received"  # the caller's SMS reply, bound to this ticket
    AUTO_CALLBACK_DUE = "auto_callback_due"  # the center will call back: why, the number, when
    AUTO_CALLBACK_SKIPPED = "auto_callback_skipped"  # no call-back: why (withheld number, prank rule)
    AUTO_CALLBACK_STARTED = "auto_callback_started"  # an attempt: its number, the number rung, its channel
    AUTO_CALLBACK_RINGING = "auto_callback_ringing"  # the caller's phone rings
    AUTO_CALLBACK_ANSWERED = "auto_callback_answered"  # the caller answered; he waits for a seat at top priority
    AUTO_CALLBACK_FAILED = "auto_callback_failed"  # the attempt did not reach him: no_answer, busy, unreachable …
    AUTO_CALLBACK_CONNECTED = "auto_callback_connected"  # a seat took the called-back caller
    AUTO_CALLBACK_ENDED = "auto_callback_ended"  # the answered call-back's call ended
    AUTO_CALLBACK_CANCELLED = "auto_callback_cancelled"  # no more attempts: the caller rang again, a seat called
    AUTO_CALLBACK_REDIALLED = "auto_callback_redialled"  # on a new call: its caller's earlier ticket awaited a call-back
    AUTO_CALLBACK_GAVE_UP = "auto_callback_gave_up"  # the last attempt failed: SMS sent, supervisors alerted
    DISPATCH_PROPOSED = "dispatch_proposed"  # a located urgent ticket whose caller is gone: who would be sent
    SUPPORT_REQUESTED = "support_requested"  # a supervisor mobilised support: what was asked, the picks, the shortfall
    SUPPORT_RINGING = "support_ringing"  # one rung of a pick's ladder is ringing (the phone alone)
    SUPPORT_NO_ANSWER = "support_no_answer"  # that rung did not answer, was busy or unreachable
    SUPPORT_JOINED = "support_joined"  # that rung answered: the officer is on his way, or his desk took the pick over
    SUPPORT_UNANSWERED = "support_unanswered"  # nobody on a pick's ladder answered
    SUPPORT_STOOD_DOWN = "support_stood_down"  # the supervisor released the officers mobilised for the ticket


# States in which the caller's channel is still up: reconciliation after an AMI
# reconnect compares these tickets with the channels Asterisk reports. A new
# state must be placed here deliberately, hence the explicit set.
CALL_LIVE_STATES: frozenset[State] = frozenset(
    {State.RECEIVED, State.QUEUED, State.RINGING, State.ANSWERED, State.DISPATCHING, State.DISPATCHED}
)

# Live states in which a seat is talking to the caller: a hang-up there is
# ``hung_up`` (before any seat answered it is ``abandoned``).
CALL_CONNECTED_STATES: frozenset[State] = frozenset({State.ANSWERED, State.DISPATCHING, State.DISPATCHED})

# States in which the incident location may be set or corrected.
_LOCATABLE = (
    State.RECEIVED,
    State.QUEUED,
    State.RINGING,
    State.ANSWERED,
    State.ENDED,
    State.ABANDONED,  # the network's location of a dropped call, for the call-back
    State.DISPATCHING,
    State.DISPATCHED,
    State.DISPATCHING_ENDED,
    State.EN_ROUTE,
    State.REPORTED,  # the location the reporter's app sent, or the call-taker's
    State.TAKEN,
)

# States in which triage may classify, annotate, hand over or link a ticket:
# all but closed (a closed ticket is the record; it is not written to again).
_TRIAGEABLE = tuple(state for state in State if state is not State.CLOSED)
_TRIAGE_STEPS = (Step.CLASSIFIED, Step.NOTE_ADDED, Step.HANDED_OVER, Step.REPEAT_LINKED)

# States from which a seat may call the reporter back: the ticket's own call
# (if it had one) is down and the ticket is not closed. A reported text is
# taken first, so that who calls back is on record.
_CALLBACK_FROM = (
    State.TAKEN,
    State.ENDED,
    State.ABANDONED,
    State.DISPATCHING_ENDED,
    State.EN_ROUTE,
    State.ON_SCENE,
    State.CLEARED,
)
_CALLBACK_OUTCOMES = (Step.CALLBACK_ANSWERED, Step.CALLBACK_FAILED, Step.CALLBACK_ENDED)

# A report's attachments are settled in every state but closed, as triage steps are.
_ATTACHMENT_STEPS = (Step.ATTACHMENT_KEPT, Step.ATTACHMENT_REFUSED)

# Mobilisation runs beside the ticket's own call and dispatch, in every state but closed.
_SUPPORT_STEPS = (Step.SUPPORT_REQUESTED, Step.SUPPORT_RINGING, Step.SUPPORT_NO_ANSWER, Step.SUPPORT_JOINED,
                  Step.SUPPORT_UNANSWERED, Step.SUPPORT_STOOD_DOWN)

# The center's own call-backs of dropped calls, and what they lead to: recorded beside the rest, like triage steps.
_AUTO_CALLBACK_STEPS = (
    Step.AUTO_CALLBACK_DUE, Step.AUTO_CALLBACK_SKIPPED, Step.AUTO_CALLBACK_STARTED, Step.AUTO_CALLBACK_RINGING,
    Step.AUTO_CALLBACK_ANSWERED, Step.AUTO_CALLBACK_FAILED, Step.AUTO_CALLBACK_CONNECTED, Step.AUTO_CALLBACK_ENDED,
    Step.AUTO_CALLBACK_CANCELLED, Step.AUTO_CALLBACK_REDIALLED, Step.AUTO_CALLBACK_GAVE_UP, Step.DISPATCH_PROPOSED,
)

# Silent calls: from the answer until closed (a key, a reply or the silence's step may land just after the
# hang-up the log wrote first); a question is asked only while the caller is on the line.
_SILENT_CALL_FROM = (
    State.ANSWERED,
    State.DISPATCHING,
    State.DISPATCHED,
    State.ENDED,
    State.DISPATCHING_ENDED,
    State.EN_ROUTE,
    State.ON_SCENE,
    State.CLEARED,
)
_SILENT_CALL_STEPS = (Step.CALLER_SILENT, Step.CALLER_SPOKE, Step.PROMPT_PLAYED, Step.CALLER_KEY, Step.SMS_SENT,
                      Step.SMS_RECEIVED)

# A declared major incident's steps, on its ticket and on its callers', in every state but closed.
_MAJOR_INCIDENT_STEPS = (Step.MAJOR_INCIDENT_DECLARED, Step.MAJOR_INCIDENT_MESSAGE, Step.MAJOR_INCIDENT_ENDED,
                         Step.MAJOR_INCIDENT_CALLER, Step.MAJOR_INCIDENT_LINKED)

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
    # -- dispatch --
    *(((state,), Step.LOCATED, state) for state in _LOCATABLE),
    ((State.ANSWERED,), Step.DISPATCH_REQUESTED, State.DISPATCHING),
    ((State.DISPATCHING,), Step.OFFICER_RINGING, State.DISPATCHING),
    ((State.DISPATCHING,), Step.OFFICER_NO_ANSWER, State.DISPATCHING),
    ((State.DISPATCHING,), Step.OFFICER_JOINED, State.DISPATCHED),
    # the call-taker keeps the caller and may dispatch again
    ((State.DISPATCHING,), Step.LADDER_EXHAUSTED, State.ANSWERED),
    ((State.DISPATCHING,), Step.HUNG_UP, State.DISPATCHING_ENDED),
    ((State.DISPATCHING_ENDED,), Step.OFFICER_RINGING, State.DISPATCHING_ENDED),
    ((State.DISPATCHING_ENDED,), Step.OFFICER_NO_ANSWER, State.DISPATCHING_ENDED),
    ((State.DISPATCHING_ENDED,), Step.OFFICER_JOINED, State.EN_ROUTE),
    ((State.DISPATCHING_ENDED,), Step.LADDER_EXHAUSTED, State.ENDED),
    ((State.DISPATCHED,), Step.HUNG_UP, State.EN_ROUTE),
    ((State.DISPATCHED, State.EN_ROUTE), Step.ARRIVED, State.ON_SCENE),
    # cancelled on the way (false alarm, another unit took it) or done on scene
    ((State.DISPATCHED, State.EN_ROUTE, State.ON_SCENE), Step.CLEARED, State.CLEARED),
    # the caller stayed on the line until the officer came
    ((State.ON_SCENE,), Step.HUNG_UP, State.ON_SCENE),
    ((State.CLEARED,), Step.HUNG_UP, State.CLEARED),
    ((State.CLEARED,), Step.CLOSED, State.CLOSED),
    # -- text reports: no call, so never live; a call-taker takes one, then closes it --
    ((None,), Step.REPORTED, State.REPORTED),
    ((State.REPORTED,), Step.TAKEN, State.TAKEN),
    ((State.TAKEN,), Step.CLOSED, State.CLOSED),
    # a taken report is dispatched like a call whose caller is gone: the ladder rings phones alone
    ((State.TAKEN,), Step.DISPATCH_REQUESTED, State.DISPATCHING_ENDED),
    # -- call-backs: a separate call; the state stays where it is --
    *(((state,), Step.CALLBACK_REQUESTED, state) for state in _CALLBACK_FROM),
    *(((state,), step, state) for step in _CALLBACK_OUTCOMES for state in _CALLBACK_FROM),
    # -- triage --
    *(((state,), step, state) for step in _TRIAGE_STEPS for state in _TRIAGEABLE),
    # -- a report's attachments, fetched beside the rest --
    *(((state,), step, state) for step in _ATTACHMENT_STEPS for state in _TRIAGEABLE),
    # -- the caller's AML fix that did not move the incident --
    *(((state,), Step.HANDSET_LOCATED, state) for state in _TRIAGEABLE),
    # -- a declared major incident and the callers who pressed 1 for it, beside the rest --
    *(((state,), step, state) for step in _MAJOR_INCIDENT_STEPS for state in _TRIAGEABLE),
    # -- silent calls: flagged, prompted, questioned, texted; the state stays where it is --
    *(((state,), step, state) for step in _SILENT_CALL_STEPS for state in _SILENT_CALL_FROM),
    *(((state,), Step.QUESTION_ASKED, state) for state in CALL_CONNECTED_STATES),
    # -- support mobilised for a major incident, beside the rest --
    *(((state,), step, state) for step in _SUPPORT_STEPS for state in _TRIAGEABLE),
    # -- automatic call-backs of dropped calls, beside the rest --
    *(((state,), step, state) for step in _AUTO_CALLBACK_STEPS for state in _TRIAGEABLE),
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


class IllegalTransition(DomainError):
    """A step that the lifecycle does not allow from the ticket's current state."""

    status = 409
    error_id = "illegal-transition"

    def __init__(self, state: State | None, step: Step) -> None:
        self.state = state
        self.step = step
        allowed = sorted(str(s) for (src, s) in TRANSITIONS if src == state)
        where = "a new ticket" if state is None else f"a ticket in state {state!s}"
        super().__init__(
            f"step {step!s} is not allowed for {where}; allowed steps: {', '.join(allowed) or 'none'}",
            details={"state": None if state is None else str(state), "step": str(step), "allowed": allowed},
        )


def advance(state: State | None, step: Step) -> State:
    """The state after ``step``; raises ``IllegalTransition`` if the table has no such row."""
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise IllegalTransition(state, step) from None
