"""The center calls back the 110 callers it lost, through the lab Asterisk: a SIPp caller on the carrier trunk
hangs up before any seat answers; the handset behind the lab's carrier-out trunk (the answering phones on port
5090, or the phones that only ring on 5091 through carrier-out-silent) is rung back and, when it answers,
reaches a seat; every attempt is a step on the caller's ticket."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.config import RULE_FILES, Settings
from core.quality.outbox import Outbox
from tests.integration.conftest import start_backend

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def _rules(tmp_path: Path, callback: str) -> str:
    """A rules folder: the shipped files, with a call-back table of the test's own (short delays)."""
    folder = tmp_path / "rules"
    folder.mkdir()
    for name in RULE_FILES:
        (folder / name).write_bytes((REPO / "dialplan" / name).read_bytes())
    (folder / "callback.toml").write_text("[callback]\n" + callback)
    return str(folder)


def _caller() -> str:
    return f"139{random.randrange(10**8):08d}"


async def _ticket_of(running, caller: str, *, after: float = 0.0, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ticket in await running.service.list_recent(50):
            if ticket.caller_id == caller and ticket.created_at_us >= after * 1e6:
                return ticket
        await asyncio.sleep(0.2)
    raise AssertionError(f"no ticket for {caller}")


async def _until_step(running, number: str, step: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticket = await running.service.get(number)
        if ticket is not None and any(str(s.step) == step for s in ticket.steps):
            return ticket
        await asyncio.sleep(0.2)
    ticket = await running.service.get(number)
    raise AssertionError(f"{number} never had {step}: {[str(s.step) for s in ticket.steps] if ticket else None}")


def _auto(ticket) -> list[tuple[str, dict]]:
    return [(str(s.step), dict(s.detail)) for s in ticket.steps if str(s.step).startswith("auto_callback")]


async def _abandon(calls, caller: str) -> None:
    # Asterisk answers at once and queues him; he hangs up half a second later, before a seat (1 s ring) answers.
    stats = await calls.place([(caller, "Gave up")], patience_s=0.5, talk_s=2)
    assert stats, stats


async def test_an_abandoned_caller_is_called_back_and_reaches_a_seat(backend_settings: Settings, calls,
                                                                     tmp_path: Path) -> None:
    settings = replace(backend_settings, auto_callback=True,
                       rules_dir=_rules(tmp_path, "first_after_s = 1\nretry_after_s = [5]\nring_s = 15\n"))
    running = await start_backend(settings)
    try:
        caller = _caller()
        await _abandon(calls, caller)
        ticket = await _ticket_of(running, caller)
        # The handset answers after 3 s; a seat takes him (1 s ring) and hangs up 8 s later.
        done = await _until_step(running, ticket.number, "auto_callback_ended", 45)
        names = [s for s, _ in _auto(done)]
        assert names == ["auto_callback_due", "auto_callback_started", "auto_callback_ringing",
                         "auto_callback_answered", "auto_callback_connected", "auto_callback_ended"], done.to_json()
        steps = {str(s.step): s for s in done.steps}
        assert str(done.state) == "abandoned"
        assert steps["auto_callback_due"].detail["call"] == "abandoned"
        assert steps["auto_callback_due"].detail["to"] == caller
        started = steps["auto_callback_started"]
        assert (started.detail["to"], started.detail["attempt"]) == (caller, 1)
        # within the promise: the first attempt 1 s (the rule) after the hang-up, plus the work
        lag_s = (started.at_us - steps["abandoned"].at_us) / 1e6
        assert 0.9 <= lag_s <= 10, lag_s
        connected = steps["auto_callback_connected"]
        assert connected.detail["seat"].startswith("seat") and steps["auto_callback_ended"].detail["connected"] is True
        # answered after the handset's 3 s ring, a seat within seconds (top priority, seats free)
        assert 2.0 <= (steps["auto_callback_answered"].at_us - started.at_us) / 1e6 <= 10
        assert (connected.at_us - steps["auto_callback_answered"].at_us) / 1e6 <= 10
        # the call-back is recorded and bound to the ticket, like the 110 call itself
        await running.settle()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ticket = await running.service.get(ticket.number)
            if any(r.path.endswith(f"_{started.detail['channel']}.wav") for r in ticket.recordings):
                break
            await asyncio.sleep(0.3)
        assert any(r.path.endswith(f"{ticket.number}_{started.detail['channel']}.wav") for r in ticket.recordings), \
            [r.path for r in ticket.recordings]
        assert running.backend.auto_callbacks.owed() == {}
    finally:
        await running.runner.cleanup()


async def test_an_unanswered_call_back_is_retried_then_texted_and_alerted(backend_settings: Settings, calls,
                                                                          tmp_path: Path) -> None:
    settings = replace(backend_settings, auto_callback=True, auto_callback_trunk="carrier-out-silent",
                       rules_dir=_rules(tmp_path, "first_after_s = 1\nretry_after_s = [1]\nring_s = 5\n"))
    running = await start_backend(settings)
    try:
        caller = _caller()
        await _abandon(calls, caller)
        ticket = await _ticket_of(running, caller)
        done = await _until_step(running, ticket.number, "auto_callback_gave_up", 40)
        auto = _auto(done)
        assert [s for s, _ in auto] == [
            "auto_callback_due",
            "auto_callback_started", "auto_callback_ringing", "auto_callback_failed",
            "auto_callback_started", "auto_callback_ringing", "auto_callback_failed",
            "auto_callback_gave_up"], done.to_json()
        failed = [d for s, d in auto if s == "auto_callback_failed"]
        assert [(d["attempt"], d["outcome"]) for d in failed] == [(1, "no_answer"), (2, "no_answer")]
        gave_up = auto[-1][1]
        assert (gave_up["why"], gave_up["attempts"], gave_up["alerted"]) == ("no_answer", 2, True)
        # the SMS is in the outbox (kept pending here: the lab has no SMS provider) ...
        sms = await Outbox(running.service.engine, None).get(gave_up["sms"])
        assert sms is not None and (sms.to, sms.ticket_number, sms.kind) == (caller, ticket.number, "auto_callback")
        # ... and the supervisors have the alert
        alerts = await running.backend.open_alerts()
        assert any(a["kind"] == "callback" and a["ref"] == ticket.number for a in alerts), alerts
    finally:
        await running.runner.cleanup()


async def test_a_caller_who_rings_again_first_joins_his_ticket_and_the_call_back_is_cancelled(
        backend_settings: Settings, calls, tmp_path: Path) -> None:
    settings = replace(backend_settings, auto_callback=True,
                       rules_dir=_rules(tmp_path, "first_after_s = 20\nshort_call_s = 0\n"))
    running = await start_backend(settings)
    try:
        caller = _caller()
        await _abandon(calls, caller)
        old = await _ticket_of(running, caller)
        await _until_step(running, old.number, "auto_callback_due", 10)
        again = time.time()
        await calls.place([(caller, "Again")], talk_s=2)  # rings 110 again; a seat answers this time
        new = await _ticket_of(running, caller, after=again - 1)
        assert new.number != old.number
        old = await _until_step(running, old.number, "auto_callback_cancelled", 10)
        new = await _until_step(running, new.number, "auto_callback_redialled", 10)
        assert _auto(old)[-1] == ("auto_callback_cancelled", {"reason": "redialled", "ticket": new.number})
        assert ("auto_callback_redialled", {"of": old.number}) in _auto(new)
        # the repeat-caller link the desk shows points the same way
        new = await _until_step(running, new.number, "repeat_linked", 10)
        assert next(s for s in new.steps if str(s.step) == "repeat_linked").detail["to"] == old.number
        # no attempt is made once the first one would have been due
        await asyncio.sleep(max(0.0, old.steps[0].at_us / 1e6 + 24 - time.time()))
        old = await running.service.get(old.number)
        assert not any(str(s.step) == "auto_callback_started" for s in old.steps), old.to_json()
        assert running.backend.auto_callbacks.owed() == {}
    finally:
        await running.runner.cleanup()
