"""Calling the reporter back from a seat, against the fake AMI: what is dialled, what is sent, what the
ticket records, and every refusal by its error_id (tests/integration/test_callback.py rings real phones)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.auth.users import Role
from core.calls.callback import NoCallbackNumber, callback_number
from core.calls.lifecycle import IllegalTransition
from core.calls.tickets import TicketService, TicketView
from core.seats.board import UnknownSeat
from core.web.app import make_app
from telephony import callback_api, channel_vars
from telephony.ami.client import AMIClient
from telephony.callback import (
    CallbackBusy,
    CallbackNotPlaced,
    Callbacks,
    SeatNotReachable,
)
from tests.ami_fake import FakeAction, FakeAsterisk, Pairs
from tests.unit.conftest import T0
from tests.web_login import login_headers, on_seat

REPORTER = "+8613800138000"


class Bound:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, uid: str, number: str) -> None:
        self.calls.append((uid, number))


@pytest.fixture
def bound() -> Bound:
    return Bound()


@pytest.fixture
async def callbacks(ami: AMIClient, service: TicketService, bound: Bound) -> AsyncIterator[Callbacks]:
    cbs = Callbacks(ami, service, bind_recording=bound, placed_wait_s=0.3, reason_wait_s=0.2)
    ami.add_listener(cbs.on_event)
    yield cbs
    await cbs.stop()


def asterisk(*script: str, reason: str = "3", dial_status: str = "ANSWER"):
    """An Originate handler answering as Asterisk would, then sending the call's events named in ``script``:
    ``new`` (the seat's channel), ``seat_up`` / ``seat_failed`` (OriginateResponse), ``dial`` (DialEnd),
    ``hangup``."""

    def handle(action: FakeAction) -> list[Pairs]:
        uid = action.get("ChannelId") or ""
        out: list[Pairs] = [[("Response", "Success"), ("Message", "Originate successfully queued")]]
        for what in script:
            if what == "new":
                out.append([("Event", "Newchannel"), ("Channel", "PJSIP/seat001-00000001"), ("Uniqueid", uid)])
            elif what == "seat_up":
                out.append([("Event", "OriginateResponse"), ("ActionID", action.action_id or ""),
                            ("Response", "Success"), ("Reason", "4"), ("Uniqueid", uid)])
            elif what == "seat_failed":
                out.append([("Event", "OriginateResponse"), ("ActionID", action.action_id or ""),
                            ("Response", "Failure"), ("Reason", reason), ("Uniqueid", "<null>")])
            elif what == "dial":
                out.append([("Event", "DialEnd"), ("Uniqueid", uid), ("DestChannel", "PJSIP/carrier-out-00000002"),
                            ("DialStatus", dial_status)])
            elif what == "hangup":
                out.append([("Event", "Hangup"), ("Uniqueid", uid), ("Cause", "16")])
        return out

    return handle


async def taken_report(service: TicketService, sender: str = REPORTER, ref: str = "SM1") -> TicketView:
    ticket = await service.open_report(channel="sms", ref=ref, sender=sender, at=T0, source="sms", text="有人打架")
    return await service.take(ticket.number, by="wang", seat="seat001")


async def abandoned_call(service: TicketService, caller_id: str, uid: str = "1795951800.1") -> TicketView:
    await service.open_call(uniqueid=uid, caller_id=caller_id, at=T0, source="ami")
    await service.record_step(uid, "queued", at=T0 + 1, source="ami", queue="emergency-110")
    return await service.record_step(uid, "abandoned", at=T0 + 5, source="ami")


async def finished(callbacks: Callbacks, number: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while callbacks.busy(number):
        if time.monotonic() > deadline:
            raise AssertionError(f"the call-back of {number} never ended")
        await asyncio.sleep(0.02)


async def steps(service: TicketService, number: str) -> list[tuple[str, dict]]:
    ticket = await service.get(number)
    assert ticket is not None
    return [(str(s.step), dict(s.detail)) for s in ticket.steps]


# -- the number dialled ---------------------------------------------------------------------

@pytest.mark.parametrize("good", ["13800138000", "+8613800138000", "110", "1" * 20])
def test_plain_phone_numbers_are_called_back(good: str) -> None:
    assert callback_number("110-20261129-000001", good) == good


HOSTILE = [
    "",
    "anonymous",
    "12",
    "1" * 21,
    "++8613800138000",
    "138 0013 8000",
    "13800138000,Hangup",
    "13800138000&PJSIP/officer001",
    "1${SHELL(id)}",
    "13800138000\r\nAction: Command",
    "13800138000\n",
    "١٣٨٠٠١٣٨٠٠٠",  # digits, but not ASCII ones
    "sip:13800138000@evil.example",
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_caller_id_that_is_not_a_phone_number_is_never_dialled(
    hostile: str, callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    ticket = await abandoned_call(service, hostile)
    before = await steps(service, ticket.number)
    with pytest.raises(NoCallbackNumber) as refused:
        await callbacks.call_back(ticket.number, seat="seat001", by="wang")
    assert refused.value.error_id == "no-callback-number" and refused.value.status == 409
    assert fake.count("Originate") == 0
    assert await steps(service, ticket.number) == before
    assert not callbacks.busy(ticket.number)


# -- what is sent ---------------------------------------------------------------------------

async def test_the_seat_is_originated_into_the_callback_context(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    fake.handlers["Originate"] = asterisk("new")
    ticket = await taken_report(service)
    placed = await callbacks.call_back(ticket.number, seat="seat001", by="wang")
    assert placed == {"number": ticket.number, "seat": "seat001", "to": REPORTER}
    (sent,) = fake.received("Originate")
    channel_id = sent.get("ChannelId") or ""
    assert channel_id.startswith("callback-")
    assert [(k, sent.get(k)) for k in ("Channel", "Context", "Exten", "Priority", "Timeout", "Async")] == [
        ("Channel", "PJSIP/seat001"), ("Context", "callback"), ("Exten", "reporter"), ("Priority", "1"),
        ("Timeout", "20000"), ("Async", "true")]
    assert sent.get("CallerID") == f'"{ticket.number}" <{REPORTER}>'
    assert sent.get_all("Variable") == [
        f"{channel_vars.TICKET}={ticket.number}",
        f"{channel_vars.RECORDING}={channel_vars.recording_name(ticket.number, channel_id)}",
        f"{channel_vars.CALLBACK_TO}={REPORTER}",
    ]
    requested = (await steps(service, ticket.number))[-1]
    assert requested == ("callback_requested",
                         {"by": "wang", "seat": "seat001", "to": REPORTER, "channel": channel_id})
    fake.emit("Hangup", [("Uniqueid", channel_id)])
    await finished(callbacks, ticket.number)


# -- outcomes → steps -------------------------------------------------------------------------

async def test_answered_call_back_is_recorded_and_its_recording_bound(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk, bound: Bound
) -> None:
    fake.handlers["Originate"] = asterisk("new", "seat_up", "dial", "hangup")
    ticket = await abandoned_call(service, "13800138000")
    await callbacks.call_back(ticket.number, seat="seat007", by="li")
    await finished(callbacks, ticket.number)
    trail = await steps(service, ticket.number)
    assert [name for name, _ in trail] == ["received", "queued", "abandoned", "callback_requested",
                                           "callback_answered", "callback_ended"]
    assert trail[-2][1] == {"seat": "seat007", "to": "13800138000", "reporter_channel": "PJSIP/carrier-out-00000002"}
    assert trail[-1][1] == {"seat": "seat007", "to": "13800138000"}
    channel_id = trail[-3][1]["channel"]
    assert bound.calls == [(channel_id, ticket.number)]
    after = await service.get(ticket.number)
    assert after is not None and str(after.state) == "abandoned"  # a call-back leaves the state alone


@pytest.mark.parametrize(("script", "kw", "outcome", "recorded"), [
    (("new", "seat_up", "dial", "hangup"), {"dial_status": "NOANSWER"}, "no_answer", True),
    (("new", "seat_up", "dial", "hangup"), {"dial_status": "BUSY"}, "busy", True),
    (("new", "seat_up", "dial", "hangup"), {"dial_status": "CANCEL"}, "cancelled", True),
    (("new", "seat_up", "hangup"), {}, "seat_hung_up", True),
    (("new", "hangup", "seat_failed"), {"reason": "3"}, "seat_no_answer", False),
    (("new", "hangup", "seat_failed"), {"reason": "5"}, "seat_busy", False),
])
async def test_failed_call_backs_say_why(
    script, kw, outcome: str, recorded: bool, callbacks: Callbacks, service: TicketService, fake: FakeAsterisk,
    bound: Bound
) -> None:
    fake.handlers["Originate"] = asterisk(*script, **kw)
    ticket = await taken_report(service)
    await callbacks.call_back(ticket.number, seat="seat001", by="wang")
    await finished(callbacks, ticket.number)
    name, detail = (await steps(service, ticket.number))[-1]
    assert (name, detail["outcome"]) == ("callback_failed", outcome)
    assert bool(bound.calls) is recorded  # MixMonitor only runs once the seat picked up


# -- refusals ---------------------------------------------------------------------------------

async def test_one_call_back_at_a_time_per_ticket(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    fake.handlers["Originate"] = asterisk("new", "seat_up")
    ticket = await taken_report(service)
    await callbacks.call_back(ticket.number, seat="seat001", by="wang")
    with pytest.raises(CallbackBusy) as refused:
        await callbacks.call_back(ticket.number, seat="seat002", by="li")
    assert refused.value.error_id == "callback-busy"
    assert fake.count("Originate") == 1
    channel_id = fake.received("Originate")[0].get("ChannelId") or ""
    fake.emit("DialEnd", [("Uniqueid", channel_id), ("DialStatus", "ANSWER")])
    fake.emit("Hangup", [("Uniqueid", channel_id)])
    await finished(callbacks, ticket.number)
    # once it is over, the ticket may be called back again
    await callbacks.call_back(ticket.number, seat="seat002", by="li")
    assert fake.count("Originate") == 2


async def test_two_requests_at_once_ring_one_seat(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    fake.handlers["Originate"] = asterisk("new", "seat_up", "dial", "hangup")
    ticket = await taken_report(service)
    results = await asyncio.gather(*(callbacks.call_back(ticket.number, seat=f"seat00{i}", by="wang")
                                     for i in (1, 2)), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["CallbackBusy", "dict"]
    await finished(callbacks, ticket.number)
    assert fake.count("Originate") == 1


async def test_a_seat_that_fails_at_once_is_not_reachable(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    fake.handlers["Originate"] = asterisk("seat_failed", reason="0")  # no such endpoint: no channel at all
    ticket = await taken_report(service)
    with pytest.raises(SeatNotReachable) as refused:
        await callbacks.call_back(ticket.number, seat="seat999", by="wang")
    assert refused.value.error_id == "seat-not-reachable"
    await finished(callbacks, ticket.number)
    trail = await steps(service, ticket.number)
    assert [n for n, _ in trail[-2:]] == ["callback_requested", "callback_failed"]
    assert trail[-1][1]["outcome"] == "seat_failed"


async def test_an_originate_asterisk_refuses_is_seat_not_reachable(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    fake.handlers["Originate"] = lambda action: [[("Response", "Error"), ("Message", "Originate failed")]]
    ticket = await taken_report(service)
    with pytest.raises(SeatNotReachable):
        await callbacks.call_back(ticket.number, seat="seat001", by="wang")
    assert (await steps(service, ticket.number))[-1][1]["outcome"] == "seat_unreachable"
    assert not callbacks.busy(ticket.number)


async def test_without_ami_nothing_is_rung_and_the_trail_says_so(
    service: TicketService, fake: FakeAsterisk
) -> None:
    down = AMIClient("127.0.0.1", fake.port, fake.username, fake.secret)  # never started
    cbs = Callbacks(down, service)
    ticket = await taken_report(service)
    with pytest.raises(CallbackNotPlaced) as refused:
        await cbs.call_back(ticket.number, seat="seat001", by="wang")
    assert (refused.value.error_id, refused.value.status) == ("callback-not-placed", 503)
    assert (await steps(service, ticket.number))[-1][1]["outcome"] == "not_placed"
    assert not cbs.busy(ticket.number)


async def test_a_report_is_taken_before_it_is_called_back(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    ticket = await service.open_report(channel="sms", ref="SM9", sender=REPORTER, at=T0, source="sms", text="救命")
    with pytest.raises(IllegalTransition):
        await callbacks.call_back(ticket.number, seat="seat001", by="wang")
    assert fake.count("Originate") == 0
    assert not callbacks.busy(ticket.number)


async def test_a_seat_name_is_checked(callbacks: Callbacks, service: TicketService, fake: FakeAsterisk) -> None:
    ticket = await taken_report(service)
    with pytest.raises(UnknownSeat):
        await callbacks.call_back(ticket.number, seat="seat001&PJSIP/officer001", by="wang")
    assert fake.count("Originate") == 0


# -- HTTP -------------------------------------------------------------------------------------

async def _post(service: TicketService, callbacks: Callbacks, number: str, body: object,
                role: Role = Role.CALL_TAKER, seat: str = "seat001") -> tuple[int, dict]:
    app = make_app(service, health={})
    callback_api.add_routes(app, callbacks)
    headers = await login_headers(service.engine, role, username="wang")
    async with TestClient(TestServer(app), headers=headers) as client:
        await on_seat(client, {}, seat)  # wang's seat
        resp = await client.post(f"/api/tickets/{number}/callback", json=body)
        return resp.status, await resp.json()


async def test_api_answers_202_with_whom_it_rings(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    fake.handlers["Originate"] = asterisk("new", "seat_up", "dial", "hangup")
    ticket = await taken_report(service)
    status, body = await _post(service, callbacks, ticket.number, {"seat": "seat001"})
    assert (status, body) == (202, {"number": ticket.number, "seat": "seat001", "to": REPORTER})
    await finished(callbacks, ticket.number)
    requested = [d for n, d in await steps(service, ticket.number) if n == "callback_requested"]
    assert [d["by"] for d in requested] == ["wang"]


@pytest.mark.parametrize(("body", "status", "error_id"), [
    ({"seat": "seat001"}, 409, "no-callback-number"),
    ({"seat": "seat 1"}, 400, "invalid-body"),
    ({}, 400, "invalid-body"),
    ({"seat": "seat001", "to": "13900000000"}, 400, "invalid-body"),  # the number is the ticket's, never the body's
])
async def test_api_refusals_carry_their_error_id(
    body, status: int, error_id: str, callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    ticket = await abandoned_call(service, "13800138000\r\nAction: Command")
    # An abandoned call is no call-taker's own: a supervisor calls it back.
    got_status, got = await _post(service, callbacks, ticket.number, body, role=Role.SUPERVISOR)
    assert (got_status, got["error_id"]) == (status, error_id)
    assert fake.count("Originate") == 0


async def test_a_call_taker_calls_back_only_their_own_tickets_from_their_own_seat(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    ticket = await taken_report(service)  # taken by wang
    other = await abandoned_call(service, "13800138000")
    app = make_app(service, health={})
    callback_api.add_routes(app, callbacks)
    headers = await login_headers(service.engine, Role.CALL_TAKER, username="wang")
    async with TestClient(TestServer(app), headers=headers) as client:
        await on_seat(client, {}, "seat001")
        resp = await client.post(f"/api/tickets/{ticket.number}/callback", json={"seat": "seat002"})
        assert (resp.status, (await resp.json())["error_id"]) == (403, "not-your-seat")
        resp = await client.post(f"/api/tickets/{other.number}/callback", json={"seat": "seat001"})
        assert (resp.status, (await resp.json())["error_id"]) == (403, "not-your-call")
    assert fake.count("Originate") == 0


async def test_api_refuses_an_unknown_ticket(callbacks: Callbacks, service: TicketService) -> None:
    status, body = await _post(service, callbacks, "110-20261129-000099", {"seat": "seat001"})
    assert (status, body["error_id"]) == (404, "unknown-ticket")


async def test_stop_ends_a_call_back_being_followed_at_once(
    callbacks: Callbacks, service: TicketService, fake: FakeAsterisk
) -> None:
    # It once waited out the whole ring time: the backend's shutdown hung for 140 s.
    fake.handlers["Originate"] = asterisk("new", "seat_up")
    ticket = await taken_report(service)
    await callbacks.call_back(ticket.number, seat="seat001", by="wang")
    assert callbacks.busy(ticket.number)
    await asyncio.wait_for(callbacks.stop(), 1.0)
    assert not callbacks.busy(ticket.number)


# -- the dialplan side ------------------------------------------------------------------------

def test_the_seat_gets_no_connected_line_update_when_the_reporter_is_dialled() -> None:
    # Found in the lab: Dial updated the seat's connected line with a re-INVITE as it called the
    # reporter; the seat phone dropped the dialog, never hung up, and the call-back never ended.
    from pathlib import Path

    from telephony.dialplan_admin.model import parse_folder

    dialplan = Path(__file__).resolve().parents[2] / "dialplan"
    config = parse_folder(dialplan, extra_folders=[dialplan / "lab"])
    (dial,) = [p for p in config.contexts["callback"].extensions["reporter"].priorities if p.app == "Dial"]
    target, _timeout, options = dial.data.split(",")
    assert target == "PJSIP/${JIEJING_CALLBACK_TO}@${JIEJING_CARRIER_OUT}"
    assert "I" in options
