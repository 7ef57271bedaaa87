"""Automatic call-backs of lost 110 callers: the admins' rules, the decisions taken from a ticket's steps, the
owner's schedule against a real store with a stand-in dialer, and the dialer against the fake AMI
(tests/integration/test_auto_callback.py rings real phones through the lab's carrier trunk)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.calls.lifecycle import Step
from core.calls.tickets import Source, TicketService, TicketView
from core.leases import Leases, hold
from core.triage.auto_callback import Attempt, AutoCallbacks
from core.triage.callback_rules import (
    CallbackRules,
    CallbackRulesError,
    load_callback_rules,
    next_action,
    parse_callback_rules,
    progress,
    reason_for,
)
from telephony import rules_admin
from telephony.ami.client import AMIClient
from telephony.auto_callback import AutoDialer
from tests.ami_fake import FakeAction, FakeAsterisk, Pairs

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "dialplan" / "callback.toml"
CALLER = "+8613912345678"


# -- the rule file ----------------------------------------------------------------------------------------

def test_the_shipped_rules_load_and_pass_the_rules_check() -> None:
    rules = load_callback_rules(SHIPPED)
    assert rules.enabled and rules.first_after_s <= 60 and rules.attempts == 1 + len(rules.retry_after_s)
    files = {name: (REPO / "dialplan" / name).read_bytes() for name in rules_admin.PARSERS}
    assert "callback.toml" in files and rules_admin.check(files) == []


@pytest.mark.parametrize(("line", "text", "says"), [
    (3, "[callback]\nenabled = true\nfirst_after_s = 90\n", "first_after_s must be a number from 0 to 60"),
    (2, "[callback]\nprank = \"hang_up\"\n", "prank must be one of callback, sms_only, none"),
    (2, "[callback]\nretry_sec = [60]\n", "retry_sec: unknown key"),
    (2, "[callback]\nretry_after_s = 60\n", "retry_after_s must be a list"),
    (2, "[callback]\ncut_causes = [16, 38]\n", "16 is a normal hang-up"),
    (2, "[callback]\nenabled = \"yes\"\n", "enabled must be true or false"),
    (3, "[callback]\n\n[surge]\n", "[surge]: unknown table"),
    (1, "[callback\n", "not valid TOML"),
])
def test_a_bad_file_is_refused_with_its_line(line: int, text: str, says: str) -> None:
    with pytest.raises(CallbackRulesError) as caught:
        parse_callback_rules(text, "dialplan/callback.toml")
    assert caught.value.line == line and says in caught.value.reason, str(caught.value)
    assert str(caught.value).startswith(f"dialplan/callback.toml:{line}: ")


def test_an_empty_table_takes_the_defaults() -> None:
    assert parse_callback_rules("[callback]\n") == CallbackRules()


# -- which calls, and when -----------------------------------------------------------------------------------

async def _call(service: TicketService, uid: str, *steps: tuple[str, float, dict], caller: str = CALLER,
                t0: float | None = None) -> TicketView:
    t0 = time.time() if t0 is None else t0
    ticket = await service.open_call(uniqueid=uid, caller_id=caller, at=t0, source=Source.AMI)
    for name, offset, detail in steps:
        ticket = await service.record_step(uid, name, at=t0 + offset, source=Source.AMI, **detail)
    return ticket


ABANDONED = (("queued", 0.1, {}), ("abandoned", 4.0, {}))


def _answered(talk_s: float, **hangup) -> tuple:
    return (("queued", 0.1, {}), ("seat_ringing", 0.2, {"seat": "seat001"}), ("answered", 1.0, {"seat": "seat001"}),
            ("hung_up", 1.0 + talk_s, hangup))


@pytest.mark.parametrize(("steps", "rules", "expected"), [
    (ABANDONED, CallbackRules(), "abandoned"),
    (ABANDONED, CallbackRules(abandoned=False), None),
    (ABANDONED, CallbackRules(enabled=False), None),
    (_answered(3.0), CallbackRules(short_call_s=10), "short_call"),
    (_answered(30.0), CallbackRules(short_call_s=10), None),
    (_answered(3.0), CallbackRules(short_call_s=0), None),
    (_answered(300.0, cause="38"), CallbackRules(), "cut"),
    (_answered(300.0, cause="16"), CallbackRules(), None),
    (_answered(300.0, reconciled=True), CallbackRules(), "cut"),
])
async def test_which_ended_calls_are_called_back(service: TicketService, steps, rules, expected) -> None:
    ticket = await _call(service, "r.1", *steps)
    assert reason_for(ticket, ticket.steps[-1], rules) == expected


async def test_a_hang_up_after_the_officer_arrived_is_no_dropped_call(service: TicketService) -> None:
    ticket = await _call(service, "r.2", ("queued", 0.1, {}), ("answered", 1.0, {"seat": "seat001"}),
                         ("located", 1.5, {"lat": 30.0, "lon": 120.0}), ("dispatch_requested", 2.0, {}),
                         ("officer_joined", 3.0, {}), ("arrived", 4.0, {}), ("hung_up", 5.0, {"cause": "38"}))
    assert reason_for(ticket, ticket.steps[-1], CallbackRules()) is None


def _view(step: Step, at_us: int, **detail) -> SimpleNamespace:
    return SimpleNamespace(step=step, at_us=at_us, detail=detail)


def test_the_schedule_from_the_steps() -> None:
    rules = CallbackRules(first_after_s=5, retry_after_s=(60, 120), ring_s=30)
    ended = 1_000_000_000
    due = _view(Step.AUTO_CALLBACK_DUE, ended)
    plan = next_action(progress([due]), rules, ended_at_us=ended, sms_only=False)
    assert (plan.action, plan.attempt, plan.at_us) == ("attempt", 1, ended + 5_000_000)
    first = [due, _view(Step.AUTO_CALLBACK_STARTED, ended + 5_000_000),
             _view(Step.AUTO_CALLBACK_FAILED, ended + 35_000_000, outcome="no_answer")]
    plan = next_action(progress(first), rules, ended_at_us=ended, sms_only=False)
    assert (plan.action, plan.attempt, plan.at_us) == ("attempt", 2, ended + 95_000_000)
    third = first + [_view(Step.AUTO_CALLBACK_STARTED, ended + 95_000_000),
                     _view(Step.AUTO_CALLBACK_FAILED, ended + 96_000_000, outcome="busy"),
                     _view(Step.AUTO_CALLBACK_STARTED, ended + 216_000_000),
                     _view(Step.AUTO_CALLBACK_FAILED, ended + 246_000_000, outcome="no_answer")]
    plan = next_action(progress(third), rules, ended_at_us=ended, sms_only=False)
    assert (plan.action, plan.why, plan.at_us) == ("give_up", "no_answer", ended + 246_000_000)
    # an attempt nobody heard the end of is never followed by another
    unknown = first[:2] + [_view(Step.AUTO_CALLBACK_FAILED, ended + 40_000_000, outcome="unknown")]
    assert next_action(progress(unknown), rules, ended_at_us=ended, sms_only=False).why == "outcome_unknown"
    # one still open (a restart while it rang) is waited for, past its ring time
    plan = next_action(progress(first[:2]), rules, ended_at_us=ended, sms_only=False)
    assert (plan.action, plan.at_us) == ("wait", ended + 5_000_000 + 60_000_000)
    assert next_action(progress([due]), rules, ended_at_us=ended, sms_only=True).why == "prank_sms_only"
    answered = first[:2] + [_view(Step.AUTO_CALLBACK_ANSWERED, ended + 9_000_000)]
    assert not progress(answered).pending


# -- the owner, with a stand-in dialer ------------------------------------------------------------------------

class Alerts:
    def __init__(self) -> None:
        self.raised: list[tuple[str, str, str]] = []

    def raise_alert(self, kind: str, ref: str, message: str) -> None:
        self.raised.append((kind, ref, message))


class Phone:
    """The caller's side of each attempt: ``answers`` lists what each attempt ends in; the dialer's steps are
    written as the real one writes them."""

    def __init__(self, service: TicketService, answers: list[str], ring_s: float = 0.05) -> None:
        self.service = service
        self.answers = list(answers)
        self.ring_s = ring_s
        self.attempts: list[Attempt] = []
        self.hung_up: list[str] = []

    async def ring(self, attempt: Attempt) -> str:
        self.attempts.append(attempt)
        await self.service.record_step(attempt.uniqueid, Step.AUTO_CALLBACK_STARTED, at=time.time(),
                                       source=Source.AMI, attempt=attempt.attempt, to=attempt.to)
        await asyncio.sleep(self.ring_s)
        outcome = self.answers.pop(0) if self.answers else "no_answer"
        step = Step.AUTO_CALLBACK_ANSWERED if outcome == "answered" else Step.AUTO_CALLBACK_FAILED
        await self.service.record_step(attempt.uniqueid, step, at=time.time(), source=Source.AMI,
                                       attempt=attempt.attempt, **({} if outcome == "answered" else {"outcome": outcome}))
        return outcome

    def hang_up(self, number: str) -> bool:
        self.hung_up.append(number)
        return False


class Outbox:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def enqueue(self, **message) -> None:
        self.sent.append(message)


FAST = CallbackRules(first_after_s=0.1, retry_after_s=(0.1, 0.1), ring_s=5)


@pytest.fixture
def live_service(engine) -> TicketService:
    return TicketService(engine)  # wall-clock times: the owner's timers run on them


def owner(service: TicketService, rules: CallbackRules = FAST, *, pranks: set[str] = frozenset(), planner=None,
          ) -> tuple[AutoCallbacks, Alerts, Outbox]:
    alerts, outbox = Alerts(), Outbox()

    async def is_prank(phone: str) -> bool:
        return phone in pranks

    auto = AutoCallbacks(service, rules=lambda: rules, alerts=alerts, is_prank=is_prank,  # type: ignore[arg-type]
                         send_sms=outbox.enqueue, planner=planner)
    return auto, alerts, outbox


@pytest.fixture
async def running(live_service: TicketService) -> AsyncIterator[list[AutoCallbacks]]:
    started: list[AutoCallbacks] = []
    yield started
    for auto in started:
        await auto.stop()


async def until(predicate, timeout: float = 5.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def names(service: TicketService, number: str) -> list[str]:
    ticket = await service.get(number)
    assert ticket is not None
    return [str(s.step) for s in ticket.steps]


def ended_with(step: str):
    async def check(service: TicketService, number: str) -> bool:
        return step in await names(service, number)
    return check


async def test_an_unanswered_call_back_is_retried_then_texted_and_alerted(live_service, running) -> None:
    auto, alerts, outbox = owner(live_service)
    auto.set_dialer(phone := Phone(live_service, ["no_answer", "busy", "no_answer"]))
    await auto.start()
    running.append(auto)
    ticket = await _call(live_service, "u.1", *ABANDONED, t0=time.time() - 4.0)
    await until(lambda: ended_with("auto_callback_gave_up")(live_service, ticket.number), what="the give-up")
    assert await names(live_service, ticket.number) == [
        "received", "queued", "abandoned", "auto_callback_due",
        "auto_callback_started", "auto_callback_failed", "auto_callback_started", "auto_callback_failed",
        "auto_callback_started", "auto_callback_failed", "auto_callback_gave_up"]
    assert [a.attempt for a in phone.attempts] == [1, 2, 3] and {a.to for a in phone.attempts} == {CALLER}
    done = (await live_service.get(ticket.number)).steps
    assert done[3].detail["call"] == "abandoned" and done[3].detail["to"] == CALLER
    assert done[-1].detail == {"why": "no_answer", "attempts": 3, "sms": f"auto-callback:{ticket.number}",
                               "alerted": True}
    (sms,) = outbox.sent
    assert (sms["to"], sms["key"], sms["ticket_number"]) == (CALLER, f"auto-callback:{ticket.number}", ticket.number)
    assert "{time}" not in sms["body"] and "110" in sms["body"]
    assert [(k, r) for k, r, _ in alerts.raised] == [("callback", ticket.number)]


async def test_an_answered_attempt_ends_the_call_back(live_service, running) -> None:
    auto, alerts, outbox = owner(live_service)
    auto.set_dialer(phone := Phone(live_service, ["no_answer", "answered"]))
    await auto.start()
    running.append(auto)
    ticket = await _call(live_service, "u.2", *_answered(2.0))  # ended 2 s after the answer: short call
    await until(lambda: ended_with("auto_callback_answered")(live_service, ticket.number))
    await asyncio.sleep(0.4)  # nothing more comes
    assert (await names(live_service, ticket.number))[-5:] == [
        "auto_callback_due", "auto_callback_started", "auto_callback_failed", "auto_callback_started",
        "auto_callback_answered"]
    assert len(phone.attempts) == 2 and outbox.sent == [] and alerts.raised == []
    assert auto.owed() == {}


@pytest.mark.parametrize(("caller", "reason"), [("", "withheld_number"), ("anonymous", "withheld_number"),
                                                ("13800138000,Hangup", "not_a_phone_number")])
async def test_a_number_that_cannot_be_called_gets_a_step_saying_why(live_service, running, caller, reason) -> None:
    auto, alerts, outbox = owner(live_service)
    auto.set_dialer(phone := Phone(live_service, []))
    await auto.start()
    running.append(auto)
    ticket = await _call(live_service, f"w.{len(caller)}", *ABANDONED, caller=caller)
    await until(lambda: ended_with("auto_callback_skipped")(live_service, ticket.number))
    skipped = (await live_service.get(ticket.number)).steps[-1]
    assert skipped.detail["reason"] == reason and skipped.detail["call"] == "abandoned"
    assert phone.attempts == [] and outbox.sent == []


async def test_prank_numbers_follow_the_rule(live_service, running) -> None:
    auto, alerts, outbox = owner(live_service, pranks={CALLER})
    auto.set_dialer(phone := Phone(live_service, []))
    await auto.start()
    running.append(auto)
    texted = await _call(live_service, "p.1", *ABANDONED)
    await until(lambda: ended_with("auto_callback_gave_up")(live_service, texted.number))
    assert phone.attempts == [] and [m["to"] for m in outbox.sent] == [CALLER]
    assert (await live_service.get(texted.number)).steps[-1].detail["why"] == "prank_sms_only"
    await auto.stop()
    running.clear()
    silent, _, outbox2 = owner(live_service, replace(FAST, prank="none"), pranks={CALLER})
    silent.set_dialer(phone)
    await silent.start()
    running.append(silent)
    quiet = await _call(live_service, "p.2", *ABANDONED)
    await until(lambda: ended_with("auto_callback_skipped")(live_service, quiet.number))
    assert (await live_service.get(quiet.number)).steps[-1].detail["reason"] == "prank_rule_none"
    assert phone.attempts == [] and outbox2.sent == []


async def test_a_caller_who_rings_again_first_cancels_the_call_back_and_links_both_tickets(live_service,
                                                                                        running) -> None:
    auto, alerts, outbox = owner(live_service, replace(FAST, first_after_s=30))
    auto.set_dialer(phone := Phone(live_service, []))
    await auto.start()
    running.append(auto)
    old = await _call(live_service, "d.1", *ABANDONED)
    await until(lambda: ended_with("auto_callback_due")(live_service, old.number))
    new = await _call(live_service, "d.2", ("queued", 0.1, {}))
    await until(lambda: ended_with("auto_callback_cancelled")(live_service, old.number))
    await until(lambda: ended_with("auto_callback_redialled")(live_service, new.number))
    cancelled = (await live_service.get(old.number)).steps[-1]
    redialled = (await live_service.get(new.number)).steps[-1]
    assert cancelled.detail == {"reason": "redialled", "ticket": new.number}
    assert redialled.detail == {"of": old.number}
    assert phone.attempts == [] and phone.hung_up == [old.number] and auto.owed() == {}


async def test_the_owed_call_backs_are_read_back_from_the_store_at_start(live_service, running, engine) -> None:
    first, _, _ = owner(live_service, replace(FAST, first_after_s=0.1, retry_after_s=(0.2,)))
    first.set_dialer(Phone(live_service, ["no_answer"]))
    await first.start()
    ticket = await _call(live_service, "s.1", *ABANDONED)
    await until(lambda: ended_with("auto_callback_failed")(live_service, ticket.number))
    await first.stop()  # the backend stops between the first attempt and the retry
    # A new process on the same store: its own service, no memory of the first.
    again = TicketService(engine)
    second, alerts, outbox = owner(again, replace(FAST, first_after_s=0.1, retry_after_s=(0.2,)))
    second.set_dialer(phone := Phone(again, ["no_answer"]))
    await second.start()
    running.append(second)
    await until(lambda: ended_with("auto_callback_gave_up")(again, ticket.number), what="the retry and the end")
    assert [a.attempt for a in phone.attempts] == [2]
    assert (await names(again, ticket.number)).count("auto_callback_due") == 1
    assert len(outbox.sent) == 1


async def test_an_attempt_left_open_by_a_restart_is_never_rung_again_blindly(live_service, running) -> None:
    ticket = await _call(live_service, "o.1", *ABANDONED, t0=time.time() - 120)
    uid = ticket.uniqueid
    now = time.time()
    await live_service.record_step(uid, Step.AUTO_CALLBACK_DUE, at=now - 100, source=Source.API, call="abandoned",
                                   to=CALLER)
    await live_service.record_step(uid, Step.AUTO_CALLBACK_STARTED, at=now - 90, source=Source.AMI, attempt=1,
                                   to=CALLER)
    auto, alerts, outbox = owner(live_service, replace(FAST, ring_s=5))
    auto.set_dialer(phone := Phone(live_service, []))
    await auto.start()
    running.append(auto)
    await until(lambda: ended_with("auto_callback_gave_up")(live_service, ticket.number))
    steps = (await live_service.get(ticket.number)).steps
    assert [str(s.step) for s in steps[-2:]] == ["auto_callback_failed", "auto_callback_gave_up"]
    assert steps[-2].detail["outcome"] == "unknown" and steps[-1].detail["why"] == "outcome_unknown"
    assert phone.attempts == [] and outbox.sent == []  # no SMS saying he was not reached: nobody knows
    assert "unknown outcome" in alerts.raised[0][2]


async def test_two_backends_call_a_lost_caller_back_once_and_the_duty_moves_when_its_holder_stops(
        live_service, engine) -> None:
    """Two backends on one store each build the owner, but it runs only where the lease is held: one call-back
    per lost caller. The holder stops (a clean stop, or a crash once its lease has lapsed): the other reads what is
    owed from the store and carries on."""
    (auto_a, _, _), (auto_b, _, _) = owner(live_service), owner(live_service)
    phone_a, phone_b = Phone(live_service, ["answered"]), Phone(live_service, ["answered"])
    auto_a.set_dialer(phone_a)
    auto_b.set_dialer(phone_b)
    lease_a, lease_b = Leases(engine, "node-a:1"), Leases(engine, "node-b:1")
    task_a = asyncio.create_task(hold(lease_a, "auto-callback", ttl_s=0.6, start=auto_a.start, stop=auto_a.stop))
    await until(lambda: _holder(lease_a, "node-a:1"), what="node-a holding the duty")
    task_b = asyncio.create_task(hold(lease_b, "auto-callback", ttl_s=0.6, start=auto_b.start, stop=auto_b.stop))
    try:
        first = await _call(live_service, "u.two.1", *ABANDONED, t0=time.time() - 4.0)
        await until(lambda: ended_with("auto_callback_answered")(live_service, first.number), what="the call-back")
        assert [a.to for a in phone_a.attempts] == [CALLER] and phone_b.attempts == []

        task_a.cancel()  # node-a stops: the lease is released, node-b takes the duty at its next look
        await asyncio.gather(task_a, return_exceptions=True)
        second = await _call(live_service, "u.two.2", *ABANDONED, t0=time.time() - 4.0, caller="+8613912345679")
        await until(lambda: ended_with("auto_callback_answered")(live_service, second.number), what="node-b's")
        assert [a.to for a in phone_b.attempts] == ["+8613912345679"] and len(phone_a.attempts) == 1
        assert (await names(live_service, first.number)).count("auto_callback_started") == 1
    finally:
        for task in (task_a, task_b):
            task.cancel()
        await asyncio.gather(task_a, task_b, return_exceptions=True)


async def _holder(leases: Leases, holder: str) -> bool:
    held = await leases.holding("auto-callback")
    return held is not None and held.holder == holder


class Planner:
    def __init__(self, located: bool) -> None:
        self.located = located

    async def incident(self, number: str):
        return object() if self.located else None

    async def preview(self, number: str):
        choice = SimpleNamespace(to_json=lambda: {"station": "east", "officer": {"badge": "A1001", "distance_m": 850.0,
                                                                                  "eta_s": 95.0}})
        return SimpleNamespace(choice=choice, rungs=())


@pytest.mark.parametrize(("priority", "located", "proposed"), [(1, True, True), (3, True, False), (1, False, False)])
async def test_a_located_urgent_ticket_gets_a_dispatch_proposal(live_service, running, priority, located,
                                                                proposed) -> None:
    auto, alerts, _ = owner(live_service, replace(FAST, first_after_s=30), planner=Planner(located))
    auto.set_dialer(Phone(live_service, []))
    await auto.start()
    running.append(auto)
    ticket = await _call(live_service, f"x.{priority}.{located}", ("queued", 0.1, {}),
                         ("answered", 1.0, {"seat": "seat001"}),
                         ("classified", 1.5, {"type": "violence", "priority": priority}), ("hung_up", 3.0, {}))
    await until(lambda: ended_with("auto_callback_due")(live_service, ticket.number))
    await auto.flush()
    steps = await names(live_service, ticket.number)
    assert ("dispatch_proposed" in steps) is proposed
    if proposed:
        step = (await live_service.get(ticket.number)).steps[-1]
        assert (step.detail["officer"], step.detail["priority"], step.detail["station"]) == ("A1001", 1, "east")
        assert alerts.raised[0][0] == "dispatch_proposal"


# -- the dialer against the fake AMI -----------------------------------------------------------------------------


def asterisk(*script: str, reason: str = "3"):
    def handle(action: FakeAction) -> list[Pairs]:
        uid = action.get("ChannelId") or ""
        chan = "PJSIP/carrier-out-00000001"
        out: list[Pairs] = [[("Response", "Success"), ("Message", "Originate successfully queued")]]
        for what in script:
            if what == "new":
                out.append([("Event", "Newchannel"), ("Channel", chan), ("Uniqueid", uid), ("ChannelState", "0")])
            elif what == "ringing":
                out.append([("Event", "Newstate"), ("Channel", chan), ("Uniqueid", uid), ("ChannelState", "5"),
                            ("ChannelStateDesc", "Ringing")])
            elif what == "up":
                out.append([("Event", "OriginateResponse"), ("ActionID", action.action_id or ""),
                            ("Response", "Success"), ("Reason", "4"), ("Uniqueid", uid)])
            elif what == "failed":
                out.append([("Event", "Hangup"), ("Channel", chan), ("Uniqueid", uid), ("Cause", "19")])
                out.append([("Event", "OriginateResponse"), ("ActionID", action.action_id or ""),
                            ("Response", "Failure"), ("Reason", reason), ("Uniqueid", "<null>")])
            elif what == "seat":
                out.append([("Event", "AgentConnect"), ("Channel", chan), ("Uniqueid", uid),
                            ("MemberName", "seat042"), ("HoldTime", "1")])
            elif what == "hangup":
                out.append([("Event", "Hangup"), ("Channel", chan), ("Uniqueid", uid), ("Cause", "16")])
        return out

    return handle


async def _dialer_ticket(service: TicketService) -> TicketView:
    return await _call(service, "a.1", *ABANDONED)


async def test_the_dialer_rings_the_caller_through_the_trunk_and_follows_him_to_a_seat(
        fake: FakeAsterisk, ami: AMIClient, live_service: TicketService) -> None:
    bound: list[tuple[str, str]] = []
    dialer = AutoDialer(ami, live_service, trunk="carrier-out", cli="110",
                        bind_recording=lambda uid, number: bound.append((uid, number)))
    ami.add_listener(dialer.on_event)
    fake.handlers["Originate"] = asterisk("new", "ringing", "up", "seat", "hangup")
    ticket = await _dialer_ticket(live_service)
    outcome = await dialer.ring(Attempt(ticket.number, ticket.uniqueid, CALLER, 1, 20))
    assert outcome == "answered"
    await until(lambda: ended_with("auto_callback_ended")(live_service, ticket.number))
    (sent,) = fake.received("Originate")
    channel = sent.get("ChannelId")
    assert sent.get("Channel") == f"PJSIP/{CALLER}@carrier-out" and sent.get("Context") == "auto-callback"
    assert sent.get("Timeout") == "20000" and sent.get("CallerID") == '"110" <110>'
    assert f"JIEJING_RECORDING={ticket.number}_{channel}" in sent.get_all("Variable")
    steps = (await live_service.get(ticket.number)).steps[3:]
    assert [str(s.step) for s in steps] == ["auto_callback_started", "auto_callback_ringing", "auto_callback_answered",
                                            "auto_callback_connected", "auto_callback_ended"]
    assert steps[0].detail == {"attempt": 1, "to": CALLER, "channel": channel, "ring_s": 20}
    assert steps[3].detail["seat"] == "seat042" and steps[4].detail["connected"] is True
    assert bound == [(channel, ticket.number)]
    await dialer.stop()


@pytest.mark.parametrize(("reason", "outcome"), [("3", "no_answer"), ("5", "busy"), ("8", "unreachable")])
async def test_the_dialer_says_why_an_attempt_failed(fake, ami, live_service, reason, outcome) -> None:
    dialer = AutoDialer(ami, live_service, trunk="carrier-out", cli="110")
    ami.add_listener(dialer.on_event)
    fake.handlers["Originate"] = asterisk("new", "ringing", "failed", reason=reason)
    ticket = await _dialer_ticket(live_service)
    assert await dialer.ring(Attempt(ticket.number, ticket.uniqueid, CALLER, 2, 20)) == outcome
    last = (await live_service.get(ticket.number)).steps[-1]
    assert (str(last.step), last.detail["outcome"], last.detail["attempt"]) == ("auto_callback_failed", outcome, 2)


async def test_a_call_back_whose_originate_is_not_answered_is_never_sent_again(fake, ami, live_service) -> None:
    fake.hold.add("Originate")
    dialer = AutoDialer(ami, live_service, trunk="carrier-out", cli="110", undecided_s=0.3)
    ami.add_listener(dialer.on_event)
    ticket = await _dialer_ticket(live_service)
    attempt = Attempt(ticket.number, ticket.uniqueid, CALLER, 1, 0.5)
    ami_timeout = asyncio.create_task(dialer.ring(attempt))
    assert await asyncio.wait_for(ami_timeout, 10) == "unknown"
    assert fake.count("Originate") == 1
    assert (await live_service.get(ticket.number)).steps[-1].detail["outcome"] == "unknown"


async def test_a_ringing_attempt_is_hung_up_when_the_caller_rings_again(fake, ami, live_service) -> None:
    dialer = AutoDialer(ami, live_service, trunk="carrier-out", cli="110")
    ami.add_listener(dialer.on_event)
    fake.handlers["Originate"] = asterisk("new", "ringing")
    hangups: list[str] = []

    def on_hangup(action: FakeAction) -> list[Pairs]:
        hangups.append(action.get("Channel") or "")
        sent = fake.received("Originate")[-1]
        return [[("Response", "Success")],
                [("Event", "Hangup"), ("Channel", action.get("Channel") or ""), ("Uniqueid", sent.get("ChannelId") or ""),
                 ("Cause", "16")],
                [("Event", "OriginateResponse"), ("ActionID", sent.action_id or ""), ("Response", "Failure"),
                 ("Reason", "1"), ("Uniqueid", "<null>")]]

    fake.handlers["Hangup"] = on_hangup
    ticket = await _dialer_ticket(live_service)
    ringing = asyncio.create_task(dialer.ring(Attempt(ticket.number, ticket.uniqueid, CALLER, 1, 20)))
    await until(lambda: ended_with("auto_callback_ringing")(live_service, ticket.number))
    assert dialer.hang_up(ticket.number) is True
    assert await asyncio.wait_for(ringing, 5) == "cancelled"
    assert hangups == ["PJSIP/carrier-out-00000001"]
    assert (await live_service.get(ticket.number)).steps[-1].detail["outcome"] == "cancelled"
    await dialer.stop()


async def test_the_settings_name_a_trunk_and_a_number() -> None:
    from core.config import ConfigError, Settings
    with pytest.raises(ConfigError, match="AUTO_CALLBACK_TRUNK"):
        Settings.from_env({"JIEJING_AUTO_CALLBACK_TRUNK": "carrier out"})
    with pytest.raises(ConfigError, match="AUTO_CALLBACK_CLI"):
        Settings.from_env({"JIEJING_AUTO_CALLBACK_CLI": "110,Hangup"})
    assert Settings.from_env({"JIEJING_AUTO_CALLBACK": "no"}).auto_callback is False

