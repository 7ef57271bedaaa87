"""The rules of the center's automatic call-backs, as admins write them (``dialplan/callback.toml``), and the
decisions taken from them: pure functions of a ticket's steps and the clock, no I/O.

Which calls are called back (``reason_for``): one abandoned before any seat answered, one that ended within
``short_call_s`` seconds of the answer (the line dropped, or the caller could not go on), and one cut by a
failure (a hang-up cause of ``cut_causes``, or an end Asterisk never reported, found on reconciliation). When
(``Plan``): the first attempt ``first_after_s`` after the hang-up (at most 60 s: the promise), then one more
after each unanswered attempt, ``retry_after_s`` later, each attempt ringing ``ring_s``; after the last one an
SMS (``sms_text``) and the supervisors. A number on the prank list follows ``prank``: ``callback`` (like any
other), ``sms_only`` (the SMS at once, no call) or ``none`` (only the step that says so). A located ticket of
priority ``dispatch_priority`` or more urgent gets a dispatch proposal.

Where a pending call-back stands (``progress``) is read back from the ticket's own steps, so a backend that
restarts finds every call-back it owed in the store and carries on where the steps say it was.

A file with a mistake is refused whole with ``file:line: reason``; the triage desk keeps the running version
(``jiejing rules check|apply`` run the same parser).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.calls.lifecycle import State, Step
from core.calls.tickets import StepView, TicketView
from core.triage.keywords import table_line

__all__ = ["CallbackRules", "CallbackRulesError", "Plan", "Progress", "load_callback_rules",
           "parse_callback_rules", "progress", "reason_for", "urgent_priority"]

TABLE = "callback"
PRANK_RULES = ("callback", "sms_only", "none")
FIRST_AFTER_MAX_S = 60.0  # the promise: a call-back starts within a minute of the hang-up
RETRIES_MAX = 10
SMS_MAX = 300
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")

# Steps that end a ticket's call-back for good: nothing is owed after one of them.
FINAL_STEPS = frozenset({Step.AUTO_CALLBACK_SKIPPED, Step.AUTO_CALLBACK_ANSWERED, Step.AUTO_CALLBACK_CANCELLED,
                         Step.AUTO_CALLBACK_GAVE_UP})
# Steps that end one attempt (its outcome); ``answered`` also ends the call-back.
ATTEMPT_OUTCOMES = frozenset({Step.AUTO_CALLBACK_ANSWERED, Step.AUTO_CALLBACK_FAILED})


class CallbackRulesError(ValueError):
    """A call-back rule file that cannot be used; ``str()`` is ``file:line: reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True, slots=True)
class CallbackRules:
    enabled: bool = True
    abandoned: bool = True
    short_call_s: float = 5.0
    cut_causes: tuple[int, ...] = (27, 34, 38, 41, 42, 102)
    first_after_s: float = 5.0
    retry_after_s: tuple[float, ...] = (60.0, 120.0)
    ring_s: float = 30.0
    max_age_s: float = 3600.0
    prank: str = "sms_only"
    sms_text: str = ("110: we tried to call you back after your call to 110 at {time} and could not reach you. "
                     "If you still need the police, call 110.")
    dispatch_priority: int = 2
    path: str = field(default="(built in)", compare=False)

    @property
    def attempts(self) -> int:
        return 1 + len(self.retry_after_s)

    def delay_before(self, attempt: int) -> float:
        """Seconds before attempt ``attempt`` (1-based): after the hang-up for the first, after the previous
        attempt's end for the others."""
        return self.first_after_s if attempt <= 1 else self.retry_after_s[attempt - 2]

    def sms_for(self, call_time: str) -> str:
        return self.sms_text.replace("{time}", call_time)


_KEYS = {f.name for f in fields(CallbackRules)} - {"path"}


def parse_callback_rules(text: str, path: str = "callback.toml") -> CallbackRules:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.search(str(exc))
        raise CallbackRulesError(path, int(found.group(1)) if found else 1, f"not valid TOML: {exc}") from None
    lines = text.splitlines()

    def bad(key: str | None, reason: str) -> CallbackRulesError:
        return CallbackRulesError(path, table_line(lines, TABLE, key), reason)

    unknown = sorted(set(data) - {TABLE})
    if unknown:
        raise CallbackRulesError(path, table_line(lines, unknown[0]),
                                 f"[{unknown[0]}]: unknown table (the file holds one table, [{TABLE}])")
    table = data.get(TABLE)
    if not isinstance(table, dict):
        raise CallbackRulesError(path, 1, f"[{TABLE}]: missing")
    for key in table:
        if key not in _KEYS:
            raise bad(key, f"[{TABLE}] {key}: unknown key (allowed: {', '.join(sorted(_KEYS))})")

    def number(key: str, low: float, high: float) -> float:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise bad(key, f"[{TABLE}] {key} must be a number from {low:g} to {high:g}, got {value!r}")
        return float(value)

    def flag(key: str) -> bool:
        if not isinstance(table[key], bool):
            raise bad(key, f"[{TABLE}] {key} must be true or false, got {table[key]!r}")
        return table[key]

    values: dict[str, Any] = {}
    for key in ("enabled", "abandoned"):
        if key in table:
            values[key] = flag(key)
    if "short_call_s" in table:
        values["short_call_s"] = number("short_call_s", 0, 600)
    if "first_after_s" in table:
        values["first_after_s"] = number("first_after_s", 0, FIRST_AFTER_MAX_S)
    if "ring_s" in table:
        values["ring_s"] = number("ring_s", 5, 120)
    if "max_age_s" in table:
        values["max_age_s"] = number("max_age_s", 60, 86400)
    if "dispatch_priority" in table:
        value = table["dispatch_priority"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
            raise bad("dispatch_priority", f"[{TABLE}] dispatch_priority must be an integer from 0 (never) to 4, "
                                           f"got {value!r}")
        values["dispatch_priority"] = value
    if "retry_after_s" in table:
        value = table["retry_after_s"]
        if (not isinstance(value, list) or len(value) > RETRIES_MAX
                or any(isinstance(v, bool) or not isinstance(v, int | float) or not 1 <= v <= 86400 for v in value)):
            raise bad("retry_after_s", f"[{TABLE}] retry_after_s must be a list of at most {RETRIES_MAX} numbers of "
                                       f"seconds from 1 to 86400 (one per retry), got {value!r}")
        values["retry_after_s"] = tuple(float(v) for v in value)
    if "cut_causes" in table:
        value = table["cut_causes"]
        if (not isinstance(value, list)
                or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 127 for v in value)):
            raise bad("cut_causes", f"[{TABLE}] cut_causes must be a list of Q.850 cause codes (1-127), got {value!r}")
        if 16 in value:
            raise bad("cut_causes", f"[{TABLE}] cut_causes: 16 is a normal hang-up, not a failure")
        values["cut_causes"] = tuple(value)
    if "prank" in table:
        if table["prank"] not in PRANK_RULES:
            raise bad("prank", f"[{TABLE}] prank must be one of {', '.join(PRANK_RULES)}, got {table['prank']!r}")
        values["prank"] = table["prank"]
    if "sms_text" in table:
        value = table["sms_text"]
        if not isinstance(value, str) or not value.strip() or len(value) > SMS_MAX:
            raise bad("sms_text", f"[{TABLE}] sms_text must be a text of 1-{SMS_MAX} characters")
        values["sms_text"] = value.strip()
    return CallbackRules(**values, path=path)


def load_callback_rules(path: str | Path) -> CallbackRules:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CallbackRulesError(str(path), 1, f"cannot read the file: {exc}") from None
    return parse_callback_rules(text, str(path))


# -- decisions -------------------------------------------------------------------------------------------------


def _cause(detail: dict[str, Any]) -> int | None:
    try:
        return int(detail.get("cause"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def reason_for(ticket: TicketView, end: StepView, rules: CallbackRules) -> str | None:
    """Why the call whose end is ``end`` (a step of ``ticket``) is to be called back, or None.

    ``abandoned``: no seat answered; ``short_call``: it ended within ``short_call_s`` of the answer; ``cut``: a
    failure ended it (a cause of ``cut_causes``, or an end found only on reconciliation).
    """
    if not rules.enabled:
        return None
    if end.step is Step.ABANDONED:
        return "abandoned" if rules.abandoned else None
    if end.step is not Step.HUNG_UP:
        return None
    steps = list(ticket.steps)
    try:
        index = next(i for i, s in enumerate(steps) if s is end or (s.step is end.step and s.at_us == end.at_us))
    except StopIteration:
        index = len(steps)
    before = steps[:index]
    if not any(s.step is Step.ANSWERED for s in before):
        return None
    # Only the end of the call itself: a hang-up recorded once the officer was on scene is not a dropped call.
    if any(s.step in (Step.ARRIVED, Step.CLEARED) for s in before):
        return None
    if end.detail.get("reconciled") or _cause(end.detail) in rules.cut_causes:
        return "cut"
    answered = next(s for s in reversed(before) if s.step is Step.ANSWERED)
    if rules.short_call_s and end.at_us - answered.at_us <= rules.short_call_s * 1_000_000:
        return "short_call"
    return None


def call_end(ticket: TicketView) -> StepView | None:
    """The step that ended the ticket's own call (abandoned or hung up), if it has ended."""
    return next((s for s in ticket.steps if s.step in (Step.ABANDONED, Step.HUNG_UP)), None)


def urgent_priority(ticket: TicketView) -> int | None:
    """The ticket's latest classified priority (1 most urgent), None if never classified."""
    for step in reversed(ticket.steps):
        if step.step is Step.CLASSIFIED and isinstance(step.detail.get("priority"), int):
            return step.detail["priority"]
    return None


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a ticket's call-back stands, from its steps."""

    due: StepView | None  # the decision to call back
    attempts: int  # attempts started
    open_attempt: StepView | None  # the last attempt's start, if no outcome followed it
    last_end_us: int | None  # when the last attempt ended (its outcome's time)
    last_outcome: str | None
    final: StepView | None  # the step that ended the call-back for good
    proposed: bool  # a dispatch proposal is on the ticket

    @property
    def pending(self) -> bool:
        return self.due is not None and self.final is None


def progress(steps: Sequence[StepView]) -> Progress:
    due = final = open_attempt = None
    attempts = 0
    last_end_us = last_outcome = None
    proposed = False
    for s in steps:
        if s.step is Step.AUTO_CALLBACK_DUE and due is None:
            due = s
        elif s.step is Step.AUTO_CALLBACK_STARTED:
            attempts += 1
            open_attempt = s
        elif s.step in ATTEMPT_OUTCOMES:
            open_attempt = None
            last_end_us = s.at_us
            last_outcome = str(s.detail.get("outcome") or "answered")
        elif s.step is Step.DISPATCH_PROPOSED:
            proposed = True
        if s.step in FINAL_STEPS and final is None:
            final = s
    return Progress(due, attempts, open_attempt, last_end_us, last_outcome, final, proposed)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do next for a pending call-back: ``attempt`` at ``at_us``, or ``give_up`` (with why)."""

    action: str  # "attempt", "give_up", "wait" (an attempt is ringing)
    at_us: int
    attempt: int = 0
    why: str | None = None


def next_action(p: Progress, rules: CallbackRules, *, ended_at_us: int, sms_only: bool) -> Plan:
    """The next thing a pending call-back needs (``ended_at_us``: the hang-up that made it due).

    An attempt whose outcome is unknown (events lost, a restart while it rang) is never followed by another: the
    caller may be talking to a seat by then. The call-back then ends as after the last attempt, with the SMS
    and the supervisors, who see why.
    """
    if sms_only:
        return Plan("give_up", ended_at_us, why="prank_sms_only")
    if p.open_attempt is not None:
        return Plan("wait", p.open_attempt.at_us + round((rules.ring_s + 30) * 1_000_000), p.attempts)
    if p.last_outcome == "unknown":
        return Plan("give_up", p.last_end_us or ended_at_us, why="outcome_unknown")
    if p.attempts >= rules.attempts:
        return Plan("give_up", p.last_end_us or ended_at_us, why="no_answer")
    attempt = p.attempts + 1
    base = ended_at_us if p.attempts == 0 else (p.last_end_us or ended_at_us)
    return Plan("attempt", base + round(rules.delay_before(attempt) * 1_000_000), attempt)


def still_owed(ticket: TicketView, rules: CallbackRules, now_us: int) -> bool:
    """Whether a ticket found at start may still be called back: not closed and not older than ``max_age_s``."""
    return ticket.state is not State.CLOSED and now_us - ticket.created_at_us <= rules.max_age_s * 1_000_000
