"""Silent calls: the silence rule, the meaning of keys, the AMI watch's steps (a fake AMI, a real store), the
prompt's Originate and refusals, and the SMS conversation bound to the ticket (tests/integration/
test_silent_call.py places real calls)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.calls.callback import NoCallbackNumber
from core.calls.lifecycle import IllegalTransition, State, Step, advance
from core.calls.silent import (
    CANNOT_SPEAK,
    KeyReader,
    NotSilentCallable,
    SilenceWatch,
    question_in_force,
)
from core.calls.tickets import TicketService
from core.errors import BadRequest
from core.quality.conversation import KIND, Conversations, same_phone
from core.quality.outbox import Outbox
from telephony import channel_vars
from telephony.ami.codec import Event, Response
from telephony.silent_calls import PromptBusy, PromptNotPlayed, SilentCalls
from tests.unit.conftest import FakeClock

CALLER = "+8613800138000"


# -- the rule ------------------------------------------------------------------------------------


def test_a_caller_who_says_nothing_is_silent_once_at_the_deadline() -> None:
    watch = SilenceWatch(answered_at=100.0, after_s=8.0)
    assert watch.due_at == 108.0
    assert not watch.check(107.9)
    assert watch.check(108.0)
    assert watch.flagged_at == 108.0
    assert not watch.check(120.0)  # flagged once


def test_a_caller_who_talks_before_the_deadline_is_never_silent() -> None:
    watch = SilenceWatch(answered_at=100.0, after_s=8.0)
    assert not watch.talked(103.0)  # nothing to clear
    assert watch.done
    assert not watch.check(200.0)


def test_talk_after_the_flag_clears_it_once() -> None:
    watch = SilenceWatch(answered_at=100.0, after_s=8.0)
    assert watch.check(108.5)
    assert watch.talked(115.0)  # a caller_spoke step
    assert not watch.talked(116.0)
    assert watch.done


def test_keys_one_and_two_answer_the_question_in_force() -> None:
    reader = KeyReader()
    assert reader.press("1", 10.0, question=None) == {"key": "1", "question": None, "answer": None}
    assert reader.press("1", 11.0, question="有危险吗") == {"key": "1", "question": "有危险吗", "answer": "yes"}
    assert reader.press("2", 12.0, question="有危险吗")["answer"] == "no"
    assert reader.press("9", 13.0, question="有危险吗")["answer"] is None


def test_two_fives_close_together_mean_cannot_speak() -> None:
    reader = KeyReader(pair_within_s=5.0)
    assert reader.press("5", 10.0, question=None)["answer"] is None
    assert reader.press("5", 10.6, question=None)["answer"] == CANNOT_SPEAK
    # a third 5 starts a new pair; a 5 too late after it is a single 5 again
    assert reader.press("5", 11.0, question=None)["answer"] is None
    assert reader.press("5", 20.0, question="是否安全")["answer"] is None
    assert reader.press("5", 21.0, question="是否安全")["answer"] == CANNOT_SPEAK
    # another key between the two 5s breaks the pair
    reader.press("5", 30.0, question=None)
    reader.press("1", 30.5, question=None)
    assert reader.press("5", 31.0, question=None)["answer"] is None


def test_a_key_that_is_no_telephone_key_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyReader().press("x", 1.0, question=None)


def test_silent_call_steps_follow_the_answer_and_never_change_the_state() -> None:
    for step in (Step.CALLER_SILENT, Step.CALLER_KEY, Step.PROMPT_PLAYED, Step.SMS_SENT, Step.SMS_RECEIVED):
        for state in (State.ANSWERED, State.DISPATCHED, State.ENDED, State.EN_ROUTE):
            assert advance(state, step) is state
        for state in (State.QUEUED, State.RINGING, State.REPORTED, State.CLOSED):
            with pytest.raises(IllegalTransition):
                advance(state, step)
    # a question is asked aloud: only while the caller is on the line with a seat
    assert advance(State.DISPATCHING, Step.QUESTION_ASKED) is State.DISPATCHING
    with pytest.raises(IllegalTransition):
        advance(State.ENDED, Step.QUESTION_ASKED)


# -- the AMI watch --------------------------------------------------------------------------------


class FakeAmi:
    """Answers Setvar and Originate; records what was asked."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict]] = []
        self.refuse_setvar = False
        self.originate_answer = "Success"
        self.down = False

    async def action(self, name: str, headers: dict | None = None, **_kw) -> Response:
        self.actions.append((name, dict(headers or {})))
        ok = not (name == "Setvar" and self.refuse_setvar)
        return Response([("Response", "Success" if ok else "Error"), ("Message", "" if ok else "No such channel")])

    async def originate(self, **fields) -> Response:
        if self.down:
            from telephony.ami.client import NotConnected
            raise NotConnected("down")
        self.actions.append(("Originate", fields))
        return Response([("Response", self.originate_answer), ("ActionID", "a1"),
                         ("Message", "Originate successfully queued" if self.originate_answer == "Success"
                          else "Extension does not exist.")])


def ev(name: str, at: float, **headers: str) -> Event:
    return Event([("Event", name), ("Timestamp", f"{at:.6f}"), *headers.items()])


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def answered_call(service: TicketService, clock: FakeClock, uid: str = "1795951800.1",
                        caller: str = CALLER):
    ticket = await service.open_call(uniqueid=uid, caller_id=caller, at=clock.now, source="ami")
    await service.record_step(uid, "queued", at=clock.now + 0.1, source="ami")
    await service.record_step(uid, "answered", at=clock.now + 1.0, source="ami", seat="seat001")
    return ticket


@pytest.fixture
def ami() -> FakeAmi:
    return FakeAmi()


@pytest.fixture
async def silent(ami: FakeAmi, service: TicketService, clock: FakeClock) -> AsyncIterator[SilentCalls]:
    watcher = SilentCalls(ami, service, after_s=8.0, clock=clock, prompt_wait_s=0.5)
    yield watcher
    await watcher.stop()


def connect(silent: SilentCalls, at: float, uid: str = "1795951800.1") -> None:
    silent.on_event(ev("AgentConnect", at, Uniqueid=uid, Channel="PJSIP/carrier-00000001",
                       DestChannel="PJSIP/seat001-00000002"))


async def steps(service: TicketService, number: str) -> list[str]:
    return [str(s.step) for s in (await service.get(number)).steps]


async def test_a_silent_caller_is_flagged_after_the_deadline_and_talk_detection_is_set(
        silent: SilentCalls, ami: FakeAmi, service: TicketService, clock: FakeClock) -> None:
    silent.after_s = 0.3
    ticket = await answered_call(service, clock)
    connect(silent, clock.now)
    await settle()
    assert ami.actions[0] == ("Setvar", {"Channel": "PJSIP/carrier-00000001", "Variable": "TALK_DETECT(set)",
                                         "Value": "2500"})
    assert "caller_silent" not in await steps(service, ticket.number)
    clock.now += 1.2  # past answer + after_s
    await asyncio.sleep(0.5)
    assert (await steps(service, ticket.number))[-1] == "caller_silent"
    flagged = (await service.get(ticket.number)).steps[-1]
    assert flagged.detail == {"after_s": 0.3, "channel": "PJSIP/carrier-00000001"}
    assert flagged.at_us == round(clock.now * 1e6)
    assert silent.flagged == 1
    # he speaks after all: the flag is cleared on the ticket, detection removed
    silent.on_event(ev("ChannelTalkingStart", clock.now + 2, Uniqueid="1795951800.1"))
    await settle()
    assert (await steps(service, ticket.number))[-1] == "caller_spoke"
    assert ami.actions[-1][1]["Variable"] == "TALK_DETECT(remove)"


async def test_a_caller_who_talks_in_time_is_never_flagged(silent: SilentCalls, ami: FakeAmi,
                                                            service: TicketService, clock: FakeClock) -> None:
    silent.after_s = 0.2
    ticket = await answered_call(service, clock)
    connect(silent, clock.now + 1.0)
    await settle()
    silent.on_event(ev("ChannelTalkingStart", clock.now + 1.5, Uniqueid="1795951800.1"))
    await settle()
    clock.now += 5
    await asyncio.sleep(0.3)
    assert "caller_silent" not in await steps(service, ticket.number)
    assert [a[1]["Variable"] for a in ami.actions] == ["TALK_DETECT(set)", "TALK_DETECT(remove)"]


async def test_no_talk_detection_no_flag(silent: SilentCalls, ami: FakeAmi, service: TicketService,
                                         clock: FakeClock) -> None:
    """A caller whose channel refused talk detection is never flagged: silence could not be told from speech."""
    ami.refuse_setvar = True
    silent.after_s = 0.05
    ticket = await answered_call(service, clock)
    connect(silent, clock.now + 1.0)
    clock.now += 2
    await asyncio.sleep(0.2)
    assert "caller_silent" not in await steps(service, ticket.number)
    assert silent.not_watched == 1


async def test_keys_become_steps_with_the_question_in_force(silent: SilentCalls, service: TicketService,
                                                           clock: FakeClock) -> None:
    ticket = await answered_call(service, clock)
    connect(silent, clock.now + 1.0)
    await settle()
    uid = "1795951800.1"
    silent.on_event(ev("DTMFEnd", clock.now + 5.0, Uniqueid=uid, Digit="5", Direction="Received"))
    silent.on_event(ev("DTMFEnd", clock.now + 5.5, Uniqueid=uid, Digit="5", Direction="Received"))
    silent.on_event(ev("DTMFEnd", clock.now + 5.6, Uniqueid=uid, Digit="7", Direction="Sent"))  # to him: not his
    silent.on_event(ev("DTMFEnd", clock.now + 5.7, Uniqueid="other", Digit="9", Direction="Received"))
    await settle()
    await service.record_step(uid, Step.QUESTION_ASKED, at=clock.now + 6.0, source="api", by="zhao",
                              text="您有危险吗")
    silent.on_event(ev("DTMFEnd", clock.now + 8.0, Uniqueid=uid, Digit="2", Direction="Received"))
    await settle()
    keys = [s for s in (await service.get(ticket.number)).steps if s.step is Step.CALLER_KEY]
    assert [(k.detail["key"], k.detail["answer"], k.detail["question"]) for k in keys] == [
        ("5", None, None), ("5", "cannot_speak", None), ("2", "no", "您有危险吗")]
    assert keys[0].at_us == round((clock.now + 5.0) * 1e6)  # Asterisk's time of the key
    assert question_in_force((await service.get(ticket.number)).steps) == "您有危险吗"
    # the call ends: the watch is gone
    silent.on_event(ev("Hangup", clock.now + 9, Uniqueid=uid))
    await settle()
    assert not silent.watching(uid)


async def test_the_prompt_is_played_by_a_spy_on_the_callers_uniqueid(silent: SilentCalls, ami: FakeAmi,
                                                                     service: TicketService, clock: FakeClock) -> None:
    silent.after_s = 0
    ticket = await answered_call(service, clock)
    connect(silent, clock.now + 1.0)
    await settle()
    assert await silent.play_prompt(ticket.number, by="zhao") == {"number": ticket.number, "playing": True}
    name, fields = ami.actions[-1]
    assert name == "Originate"
    assert (fields["Channel"], fields["Context"], fields["Exten"]) == ("Local/play@silent-prompt/n", "silent-prompt",
                                                                     "spy")
    assert fields["Variable"] == {channel_vars.SPY_ON: ticket.uniqueid}
    with pytest.raises(PromptBusy):
        await silent.play_prompt(ticket.number, by="zhao")
    spy, play = fields["ChannelId"], fields["OtherChannelId"]
    silent.on_event(ev("ChanSpyStart", clock.now + 3, SpyerUniqueid=spy, SpyeeUniqueid=ticket.uniqueid,
                       SpyeeChannel="PJSIP/carrier-00000001"))
    silent.on_event(ev("UserEvent", clock.now + 5, Uniqueid=play, UserEvent="JiejingPrompt", Status="SUCCESS"))
    await settle()
    played = (await service.get(ticket.number)).steps[-1]
    assert played.step is Step.PROMPT_PLAYED
    assert played.detail == {"by": "zhao", "outcome": "played", "heard_on": "PJSIP/carrier-00000001",
                             "playback": "SUCCESS"}
    # the next prompt may be played
    await silent.play_prompt(ticket.number, by="zhao")


async def test_a_prompt_nothing_is_heard_of_is_recorded_unknown(silent: SilentCalls, service: TicketService,
                                                                 clock: FakeClock) -> None:
    silent.after_s = 0
    ticket = await answered_call(service, clock)
    connect(silent, clock.now + 1.0)
    await settle()
    await silent.play_prompt(ticket.number, by="zhao")
    await asyncio.sleep(0.7)  # prompt_wait_s
    played = (await service.get(ticket.number)).steps[-1]
    assert (played.step, played.detail["outcome"]) == (Step.PROMPT_PLAYED, "unknown")


async def test_prompt_refusals(silent: SilentCalls, ami: FakeAmi, service: TicketService, clock: FakeClock) -> None:
    silent.after_s = 0
    ticket = await answered_call(service, clock)
    with pytest.raises(NotSilentCallable):  # the call is not watched here (no AgentConnect)
        await silent.play_prompt(ticket.number, by="zhao")
    connect(silent, clock.now + 1.0)
    await settle()
    ami.originate_answer = "Error"
    with pytest.raises(PromptNotPlayed):
        await silent.play_prompt(ticket.number, by="zhao")
    ami.originate_answer, ami.down = "Success", True
    with pytest.raises(PromptNotPlayed):
        await silent.play_prompt(ticket.number, by="zhao")
    outcomes = [s.detail["outcome"] for s in (await service.get(ticket.number)).steps if s.step is Step.PROMPT_PLAYED]
    assert outcomes == ["not_played", "not_played"]
    await service.record_step(ticket.uniqueid, "hung_up", at=clock.now + 9, source="ami")
    with pytest.raises(NotSilentCallable):
        await silent.play_prompt(ticket.number, by="zhao")


# -- the SMS conversation -------------------------------------------------------------------------


@pytest.fixture
def conversations(service: TicketService, clock: FakeClock) -> Conversations:
    return Conversations(service, Outbox(service.engine, None, clock=clock), window_s=3600, clock=clock)


def sms(sender: str, body: str, sid: str = "SM1") -> dict[str, str]:
    return {"From": sender, "Body": body, "MessageSid": sid}


async def test_a_text_to_the_caller_goes_through_the_outbox_and_his_reply_joins_the_ticket(
        conversations: Conversations, service: TicketService, clock: FakeClock) -> None:
    ticket = await answered_call(service, clock)
    sent = await conversations.send(ticket.number, "您好，如不方便说话请回复短信", by="zhao")
    assert sent["to"] == CALLER and sent["state"] == "pending"
    queued = await conversations.outbox.get(sent["message"])
    assert (queued.kind, queued.to, queued.ticket_number) == (KIND, CALLER, ticket.number)
    step = (await service.get(ticket.number)).steps[-1]
    assert (step.step, step.detail["text"], step.detail["by"]) == (Step.SMS_SENT, "您好，如不方便说话请回复短信", "zhao")
    # his reply, and Twilio's retry of it
    assert await conversations.receive(sms(CALLER, "有人在家里，我在卧室"))
    assert await conversations.receive(sms(CALLER, "有人在家里，我在卧室"))
    replies = [s for s in (await service.get(ticket.number)).steps if s.step is Step.SMS_RECEIVED]
    assert [(r.detail["text"], r.detail["sid"]) for r in replies] == [("有人在家里，我在卧室", "SM1")]
    # a stranger's SMS is not his
    assert not await conversations.receive(sms("+8613900000000", "hello", "SM2"))


async def test_a_reply_after_the_ticket_is_closed_or_the_window_is_not_bound(
        conversations: Conversations, service: TicketService, clock: FakeClock) -> None:
    ticket = await answered_call(service, clock)
    await conversations.send(ticket.number, "请回复", by="zhao")
    clock.now += 3601
    assert not await conversations.receive(sms(CALLER, "late", "SM3"))
    clock.now -= 3601
    await service.record_step(ticket.uniqueid, "hung_up", at=clock.now + 2, source="ami")
    await service.close(ticket.number, disposition="done", by="zhao")
    assert not await conversations.receive(sms(CALLER, "after", "SM4"))


async def test_texts_go_only_to_a_plain_number_of_a_call_that_was_answered(
        conversations: Conversations, service: TicketService, clock: FakeClock) -> None:
    hostile = await answered_call(service, clock, uid="1795951800.2", caller="13800,Hangup")
    with pytest.raises(NoCallbackNumber):
        await conversations.send(hostile.number, "hi", by="zhao")
    waiting = await service.open_call(uniqueid="1795951800.3", caller_id=CALLER, at=clock.now, source="ami")
    with pytest.raises(IllegalTransition):
        await conversations.send(waiting.number, "hi", by="zhao")
    with pytest.raises(BadRequest):
        await conversations.send(hostile.number, "   ", by="zhao")
    assert await conversations.outbox.counts() == {}


async def test_a_question_is_asked_only_while_the_caller_is_on_the_line(
        conversations: Conversations, service: TicketService, clock: FakeClock) -> None:
    ticket = await answered_call(service, clock)
    view = await conversations.ask(ticket.number, " 您受伤了吗？ ", by="zhao")
    assert view.steps[-1].detail == {"by": "zhao", "text": "您受伤了吗？"}
    await service.record_step(ticket.uniqueid, "hung_up", at=clock.now + 2, source="ami")
    with pytest.raises(IllegalTransition):
        await conversations.ask(ticket.number, "还在吗", by="zhao")


def test_a_national_number_and_its_international_form_are_one_phone() -> None:
    assert same_phone("13800138000", "+8613800138000")
    assert same_phone("+8613800138000", "+8613800138000")
    assert not same_phone("+13800138000", "+8613800138000")  # two international numbers must match whole
    assert not same_phone("38000", "+8613800138000")  # too short to stand for a phone
    assert not same_phone("", "+8613800138000")

