"""Every channel variable the backend reads or sets, named once.

The dialplan (``dialplan/extensions.conf``), the intake and the AGI route modules use these
names; ``jiejing dialplan check`` will compare the two sets. Keep the comment
next to each name in step with the dialplan.
"""

# The intake's answer (telephony/intake_http.py); the dialplan sets them from HASH(jiejing).
QUEUE = "JIEJING_QUEUE"  # queue the call goes to
PRIORITY = "JIEJING_PRIORITY"  # app_queue priority (higher is served first)

# Set over AMI on the channels the backend places (Originate: an officer's leg of a dispatch, a call-back)
# and on a caller's before a hand-over (Setvar, telephony/handover.py).
TICKET = "JIEJING_TICKET"  # human-readable ticket number, e.g. 110-20261129-000042
# File name (no folder, no extension) for MixMonitor: the caller's uniqueid on a 110 call (set by the
# dialplan), set by the call-back's Originate on a call-back.
RECORDING = "JIEJING_RECORDING"

# Set over AMI (Setvar) by telephony/handover.py, read by the [handover] context.
HANDOVER_TO = "JIEJING_HANDOVER_TO"  # PJSIP/name the call is transferred to

# Set over AMI (Originate) by telephony/callback.py, read by the [callback] context;
# it also sets TICKET and RECORDING there.
CALLBACK_TO = "JIEJING_CALLBACK_TO"  # the number a seat calls back: digits, optional leading +, checked

# Set over AMI (Originate) by telephony/silent_calls.py, read by the [silent-prompt] context: the uniqueid of
# the caller the prompt is played to (ChanSpy's target).
SPY_ON = "JIEJING_SPY_ON"

# Globals set over AMI (Setvar without a channel) by telephony/major_incident.py, read by [from-carrier]:
# the declared major incident's id (empty: none) and the music-on-hold class its callers hear.
MAJOR = "JIEJING_MAJOR"
MAJOR_MOH = "JIEJING_MAJOR_MOH"


def recording_name(ticket_number: str, uniqueid: str) -> str:
    """Value of RECORDING on a call-back: the ticket number, plus the uniqueid so
    that a file can never be taken for another call's (numbers restart with a
    new store; uniqueids do not repeat on one Asterisk). A 110 call's recording
    is named after its uniqueid alone (the dialplan's)."""
    return f"{ticket_number}_{uniqueid}"


READ_BY_BACKEND: frozenset[str] = frozenset()
SET_BY_BACKEND = frozenset({TICKET, QUEUE, PRIORITY, RECORDING, HANDOVER_TO, CALLBACK_TO, SPY_ON, MAJOR, MAJOR_MOH})
