"""Silent calls: which answered caller has said nothing, and what his keys mean.

Someone who cannot speak (an intruder in the house, a violent partner in the
room) dials 110 and says nothing. The center never hangs up on silence: it
flags the call, and the call-taker asks with the prompt ("if you cannot speak,
press 5 twice"), with yes/no questions answered by keys, and by SMS.

This module is the rule, without Asterisk or a clock of its own:

* ``SilenceWatch``: one answered call. Asterisk's talk detection
  (``TALK_DETECT`` on the caller's channel, from the answer) says when the
  caller starts talking; a caller with no talk ``after_s`` seconds after the
  answer is silent, once. Talk after the flag is news for the desk
  (``caller_spoke``); talk before it ends the watch.
* ``KeyReader``: the keys of one caller. ``1`` answers the question in force
  yes, ``2`` no; two ``5`` within ``PAIR_WITHIN_S`` are the UK "Silent
  Solution" answer, "I cannot speak" (``55``), whatever was asked.
* ``question_in_force``: the latest question the ticket shows, which each key
  is recorded with.

The steps (``caller_silent``, ``caller_key`` …) are in ``core.calls.lifecycle``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.calls.lifecycle import Step
from core.errors import DomainError

__all__ = [
    "CANNOT_SPEAK", "KEYS", "NO_KEY", "PAIR_WITHIN_S", "QUESTION_MAX", "YES_KEY", "KeyReader", "NotSilentCallable",
    "SilenceWatch", "key_meaning", "question_in_force",
]

YES_KEY = "1"
NO_KEY = "2"
CANNOT_SPEAK_KEY = "5"
CANNOT_SPEAK = "cannot_speak"
# Two presses of 5 further apart than this are two single 5s (a caller hunting for keys in the dark
# still presses twice within a few seconds).
PAIR_WITHIN_S = 5.0
# What a telephone keypad sends (RFC 4733 events 0-15).
KEYS = frozenset("0123456789*#ABCD")
QUESTION_MAX = 200


class NotSilentCallable(DomainError):
    """The call is not one the prompt or a question can reach now (not connected, not watched)."""

    status = 409
    error_id = "not-on-the-line"


@dataclass(slots=True)
class SilenceWatch:
    """One answered call, watched for the caller's speech (times in epoch seconds)."""

    answered_at: float
    after_s: float
    spoke_at: float | None = None  # the caller's first talk after the answer
    flagged_at: float | None = None  # when the call was flagged silent

    @property
    def due_at(self) -> float:
        """When the call is silent if the caller has not talked by then."""
        return self.answered_at + self.after_s

    @property
    def done(self) -> bool:
        """Nothing more to watch: the caller spoke (before or after the flag)."""
        return self.spoke_at is not None

    def talked(self, at: float) -> bool:
        """The caller started talking at ``at``; True when this clears a silent flag (a ``caller_spoke`` step)."""
        if self.spoke_at is not None:
            return False
        self.spoke_at = at
        return self.flagged_at is not None

    def check(self, now: float) -> bool:
        """True exactly once: the first check at or after ``due_at`` with no talk since the answer."""
        if self.flagged_at is not None or self.spoke_at is not None or now < self.due_at:
            return False
        self.flagged_at = now
        return True


def key_meaning(key: str, *, question: str | None, pair: bool) -> str | None:
    """What one key says: ``cannot_speak`` (the second 5 of a pair), ``yes``/``no`` to a question in force."""
    if pair:
        return CANNOT_SPEAK
    if question is not None and key == YES_KEY:
        return "yes"
    if question is not None and key == NO_KEY:
        return "no"
    return None


class KeyReader:
    """The keys of one caller, in order: each one's meaning, ``55`` recognised across a question."""

    def __init__(self, pair_within_s: float = PAIR_WITHIN_S) -> None:
        self.pair_within_s = pair_within_s
        self._open_five: float | None = None  # a first 5 waiting for its second

    def press(self, key: str, at: float, *, question: str | None) -> dict[str, Any]:
        """The detail of the key's step: key, question in force, answer (or None)."""
        if key not in KEYS:
            raise ValueError(f"not a telephone key: {key!r}")
        pair = False
        if key == CANNOT_SPEAK_KEY:
            if self._open_five is not None and at - self._open_five <= self.pair_within_s:
                pair, self._open_five = True, None
            else:
                self._open_five = at
        else:
            self._open_five = None
        return {"key": key, "question": question, "answer": key_meaning(key, question=question, pair=pair)}


def question_in_force(steps: Iterable[Any]) -> str | None:
    """The text of the latest ``question_asked`` step (steps as the ticket holds them, oldest first)."""
    text = None
    for step in steps:
        if step.step is Step.QUESTION_ASKED:
            detail: Mapping[str, Any] = step.detail
            text = detail.get("text")
    return text
