"""Seats: log-in and pauses through the queue port, wrap-up after calls, states from ticket steps; AMI port on the fake."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.seats.board import (
    MemberStatus,
    QueueControlError,
    SeatBoard,
    SeatState,
    WrongSeatState,
)
from core.web.app import make_app
from telephony.ami.client import AMIClient
from telephony.seat_control import AMIQueuePort, pause_listener, sync_board
from tests.ami_fake import FakeAsterisk, list_reply
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers


class RecordingQueue:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = False

    async def _do(self, *call: str) -> None:
        if self.fail:
            raise QueueControlError("refused")
        self.calls.append(call)

    async def add(self, interface: str, member_name: str) -> None:
        await self._do("add", interface, member_name)

    async def remove(self, interface: str) -> None:
        await self._do("remove", interface)

    async def pause(self, interface: str, reason: str) -> None:
        await self._do("pause", interface, reason)

    async def unpause(self, interface: str) -> None:
        await self._do("unpause", interface)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def board(engine: AsyncEngine, queue: RecordingQueue, clock: FakeClock) -> SeatBoard:
    return SeatBoard(engine, queue, wrap_up_s=0.05, clock=clock)


async def test_login_pause_unpause_logout_follow_the_queue(board: SeatBoard, queue: RecordingQueue, clock: FakeClock) -> None:
    assert (await board.login("seat-01", "王")).state is SeatState.AVAILABLE
    clock.now += 60
    paused = await board.pause("seat-01", "用餐 meal", by="王")
    assert (paused.state, paused.reason) == (SeatState.PAUSED, "用餐 meal")
    clock.now += 300
    await board.unpause("seat-01")
    await board.logout("seat-01")
    assert queue.calls == [("add", "PJSIP/seat-01", "seat-01"), ("pause", "PJSIP/seat-01", "用餐 meal"),
                           ("unpause", "PJSIP/seat-01"), ("remove", "PJSIP/seat-01")]
    assert board.get("seat-01").state is SeatState.LOGGED_OUT
    pauses = await board.pauses("seat-01")
    assert [(p["reason"], p["by"], p["duration_s"], p["ongoing"]) for p in pauses] == [("用餐 meal", "王", 300.0, False)]


async def test_a_refusing_queue_leaves_the_seat_as_it_was(board: SeatBoard, queue: RecordingQueue) -> None:
    await board.login("seat-01", "王")
    queue.fail = True
    with pytest.raises(QueueControlError):
        await board.pause("seat-01", "break")
    assert board.get("seat-01").state is SeatState.AVAILABLE
    assert await board.pauses("seat-01") == []


async def test_wrong_states_are_refused(board: SeatBoard) -> None:
    with pytest.raises(WrongSeatState):
        await board.pause("seat-01", "break")
    await board.login("seat-01", "王")
    with pytest.raises(WrongSeatState):
        await board.login("seat-01", "李")
    with pytest.raises(WrongSeatState):
        await board.unpause("seat-01")
    with pytest.raises(ValueError):
        await board.pause("seat-01", "  ")


async def test_calls_drive_the_seat_and_wrap_up_ends_by_itself(
    board: SeatBoard, queue: RecordingQueue, service: TicketService
) -> None:
    service.add_listener(board.on_step)
    await board.login("seat-05", "王")
    await service.open_call(uniqueid="1.1", caller_id="1", at=T0, source="ami")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 0.5, source="ami")
    await service.record_step("1.1", Step.SEAT_RINGING, at=T0 + 1, source="ami", seat="seat-05")
    assert board.get("seat-05").state is SeatState.RINGING
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-05")
    assert (board.get("seat-05").state, board.get("seat-05").ticket) == (SeatState.ON_CALL, "110-20261129-000001")
    await service.record_step("1.1", Step.HUNG_UP, at=T0 + 60, source="ami")
    assert board.get("seat-05").state is SeatState.WRAP_UP
    for _ in range(100):
        await asyncio.sleep(0.01)
        if board.get("seat-05").state is SeatState.AVAILABLE:
            break
    assert board.get("seat-05").state is SeatState.AVAILABLE
    assert queue.calls[-2:] == [("pause", "PJSIP/seat-05", "wrap-up"), ("unpause", "PJSIP/seat-05")]


async def _available(board: SeatBoard, seat: str) -> None:
    for _ in range(100):
        if board.get(seat).state is SeatState.AVAILABLE:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{seat} stayed {board.get(seat).state}")


async def test_a_call_back_holds_the_seat_until_it_fails_ends_or_its_ticket_is_closed(
    board: SeatBoard, service: TicketService
) -> None:
    service.add_listener(board.on_step)
    await board.login("seat-05", "王")
    await board.login("seat-06", "李")
    outcomes = {"seat-05": (Step.CALLBACK_ANSWERED, Step.CALLBACK_ENDED), "seat-06": (Step.CALLBACK_FAILED,)}
    for n, (seat, ends) in enumerate(outcomes.items()):
        report = await service.open_report(channel="sms", ref=f"SM{n}", sender="+8613800138000", at=T0,
                                           source="sms", text="有人打架")
        await service.take(report.number, by="王", seat=seat)
        await service.record_step(report.uniqueid, Step.CALLBACK_REQUESTED, at=T0 + 1, source="api", seat=seat,
                                  by="王", to="+8613800138000", channel="callback-1")
        assert (board.get(seat).state, board.get(seat).ticket) == (SeatState.ON_CALL, report.number)
        for i, step in enumerate(ends):
            assert board.get(seat).state is SeatState.ON_CALL
            await service.record_step(report.uniqueid, step, at=T0 + 5 + i, source="ami", seat=seat,
                                      to="+8613800138000")
        assert board.get(seat).state is SeatState.WRAP_UP
        await _available(board, seat)
    # closed while the reporter is still on the phone: the board lets the seat go
    report = await service.open_report(channel="sms", ref="SM9", sender="+8613800138000", at=T0, source="sms",
                                       text="有人打架")
    await service.take(report.number, by="王", seat="seat-05")
    await service.record_step(report.uniqueid, Step.CALLBACK_REQUESTED, at=T0 + 1, source="api", seat="seat-05",
                              by="王", to="+8613800138000", channel="callback-2")
    await service.close(report.number, disposition="已回访", by="王")
    assert board.get("seat-05").state is SeatState.WRAP_UP
    await _available(board, "seat-05")
    # a paused seat calling back stays paused on the board (it rings no queue call either way)
    await board.pause("seat-06", "回访")
    report = await service.open_report(channel="sms", ref="SM10", sender="+8613800138000", at=T0, source="sms",
                                       text="有人打架")
    await service.take(report.number, by="李", seat="seat-06")
    await service.record_step(report.uniqueid, Step.CALLBACK_REQUESTED, at=T0 + 1, source="api", seat="seat-06",
                              by="李", to="+8613800138000", channel="callback-3")
    assert board.get("seat-06").state is SeatState.PAUSED


async def test_a_seat_not_logged_in_here_appears_when_its_call_rings(board: SeatBoard, service: TicketService) -> None:
    service.add_listener(board.on_step)
    await service.open_call(uniqueid="1.1", caller_id="1", at=T0, source="ami")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 0.5, source="ami")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-77")
    assert board.by_state()["on_call"] == 1


async def test_pausing_in_wrap_up_cancels_the_automatic_unpause(board: SeatBoard, service: TicketService) -> None:
    board.wrap_up_s = 0.2
    service.add_listener(board.on_step)
    await board.login("seat-05", "王")
    await service.open_call(uniqueid="1.1", caller_id="1", at=T0, source="ami")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 0.5, source="ami")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-05")
    await service.record_step("1.1", Step.HUNG_UP, at=T0 + 60, source="ami")
    await board.pause("seat-05", "report")
    await asyncio.sleep(0.3)
    assert board.get("seat-05").state is SeatState.PAUSED
    await board.stop()


async def test_seat_api(service: TicketService, engine: AsyncEngine, clock: FakeClock) -> None:
    board = SeatBoard(engine, RecordingQueue(), clock=clock)
    app = make_app(service, health={}, seats=board)
    headers = await login_headers(engine, Role.CALL_TAKER, username="wang")
    async with TestClient(TestServer(app), headers=headers) as client:
        assert (await client.post("/api/seats/seat-03/login", json={})).status == 200
        resp = await client.post("/api/seats/seat-03/pause", json={})
        refused = await resp.json()
        assert resp.status == 400 and refused["error_id"] == "invalid-body"
        assert refused["details"]["rule"] == "required" and "reason" in refused["error"]
        resp = await client.post("/api/seats/seat-03/pause", json={"reason": "如厕"})
        assert (await resp.json())["state"] == "paused"
        assert (await client.post("/api/seats/seat-03/pause", json={"reason": "x"})).status == 409
        assert (await client.post("/api/seats/bad%20seat/login", json={})).status == 404
        seats = await (await client.get("/api/seats")).json()
        assert seats["seats"][0] == {"seat": "seat-03", "state": "paused", "since_us": round(T0 * 1e6),
                                     "operator": "wang", "reason": "如厕", "ticket": None}
        assert (await client.get("/api/seats/seat-03/pauses")).status == 403  # supervisors only
    supervisor = await login_headers(engine, Role.SUPERVISOR)
    async with TestClient(TestServer(make_app(service, health={}, seats=board)), headers=supervisor) as client:
        pauses = await (await client.get("/api/seats/seat-03/pauses")).json()
        assert [p["reason"] for p in pauses["pauses"]] == ["如厕"]


# -- the AMI port ------------------------------------------------------------------------


async def test_ami_port_sends_queue_actions(fake: FakeAsterisk) -> None:
    for name in ("QueueAdd", "QueueRemove", "QueuePause"):
        fake.handlers[name] = lambda a: [[("Response", "Success"), ("Message", "done")]]
    client = AMIClient("127.0.0.1", fake.port, fake.username, fake.secret, connect_timeout=0.5)
    await client.start()
    try:
        await client.wait_connected(2.0)
        port = AMIQueuePort(client, "emergency-110")
        await port.add("PJSIP/seat-05", "seat-05")
        await port.pause("PJSIP/seat-05", "用餐")
        await port.unpause("PJSIP/seat-05")
        await port.remove("PJSIP/seat-05")
        added, = fake.received("QueueAdd")
        assert [(k, v) for k, v in added.headers if k in ("Queue", "Interface", "MemberName", "Paused")] == [
            ("Queue", "emergency-110"), ("Interface", "PJSIP/seat-05"), ("MemberName", "seat-05"), ("Paused", "false")]
        pause, unpause = fake.received("QueuePause")
        assert (pause.get("Paused"), pause.get("Reason")) == ("true", "用餐")
        assert (unpause.get("Paused"), unpause.get("Reason")) == ("false", None)
        assert fake.received("QueueRemove")[0].get("Interface") == "PJSIP/seat-05"

        fake.handlers["QueuePause"] = lambda a: [[("Response", "Error"), ("Message", "Interface not found")]]
        with pytest.raises(QueueControlError, match="Interface not found"):
            await port.pause("PJSIP/seat-99", "x")
        fake.handlers["QueueAdd"] = lambda a: [[("Response", "Error"), ("Message", "Unable to add interface: Already there")]]
        await port.add("PJSIP/seat-05", "seat-05")  # already a member: the queue is as asked
    finally:
        await client.stop()


# -- the board equals Asterisk's queue --------------------------------------------------------


async def test_reconcile_makes_the_board_what_the_queue_is(board: SeatBoard, queue: RecordingQueue) -> None:
    board.wrap_up_s = 0.05
    await board.login("seat-01", "王")  # on the board, gone from the queue (Asterisk restarted with other members)
    await board.login("seat-02", "李")
    await board.pause("seat-02", "用餐")
    ghost = await board.login("seat-03", "赵")
    board._set(ghost.__class__(ghost.seat, SeatState.RINGING, ghost.since_us, "赵", None, "110-x"))  # stuck ringing
    found = await board.reconcile([
        MemberStatus("seat-02", paused=True, reason="用餐"),
        MemberStatus("seat-03"),
        MemberStatus("seat-04", in_call=True),
        MemberStatus("seat-05", paused=True, reason="wrap-up"),  # its wrap-up timer was lost with the backend
        MemberStatus("seat-06", paused=True, reason="培训"),
        MemberStatus("seat-07", ringing=True),
    ])
    assert found == {"members": 6, "changed": 6}
    got = {v.seat: (str(v.state), v.operator, v.reason) for v in board.seats()}
    assert got == {
        "seat-01": ("logged_out", None, None),
        "seat-02": ("paused", "李", "用餐"),  # unchanged
        "seat-03": ("available", "赵", None),  # never stuck ringing
        "seat-04": ("on_call", None, None),
        "seat-05": ("wrap_up", None, None),
        "seat-06": ("paused", None, "培训"),
        "seat-07": ("ringing", None, None),
    }
    # the lost wrap-up runs again and ends by itself
    for _ in range(100):
        if board.get("seat-05").state is SeatState.AVAILABLE:
            break
        await asyncio.sleep(0.01)
    assert board.get("seat-05").state is SeatState.AVAILABLE
    assert ("unpause", "PJSIP/seat-05") in queue.calls
    # the same again changes nothing
    assert (await board.reconcile([MemberStatus("seat-02", paused=True, reason="用餐"), MemberStatus("seat-03"),
                                   MemberStatus("seat-04", in_call=True), MemberStatus("seat-05"),
                                   MemberStatus("seat-06", paused=True, reason="培训"),
                                   MemberStatus("seat-07", ringing=True)]))["changed"] == 0


async def test_a_queue_member_nobody_holds_is_claimed_at_log_in(board: SeatBoard) -> None:
    await board.reconcile([MemberStatus("seat-09", paused=True, reason="培训")])
    claimed = await board.login("seat-09", "王")
    assert (claimed.state, claimed.operator, claimed.reason) == (SeatState.PAUSED, "王", "培训")
    with pytest.raises(WrongSeatState):
        await board.login("seat-09", "李")


async def test_the_board_is_read_back_from_queue_status_after_a_refusal(
    fake: FakeAsterisk, engine: AsyncEngine
) -> None:
    refusals = []

    def status(action):
        if len(refusals) < 2:  # app_queue still loading after Asterisk's restart
            refusals.append(action)
            return [[("Response", "Error"), ("Message", "Invalid/unknown command: QueueStatus")]]
        return list_reply(action, [
            [("Event", "QueueMember"), ("Queue", "emergency-110"), ("Name", "seat001"),
             ("StateInterface", "PJSIP/seat001"), ("InCall", "1"), ("Status", "2"), ("Paused", "0")],
            [("Event", "QueueMember"), ("Queue", "emergency-110"), ("Name", "PJSIP/seat002"),
             ("StateInterface", "PJSIP/seat002"), ("InCall", "0"), ("Status", "1"), ("Paused", "1"),
             ("PausedReason", "用餐")],
            [("Event", "QueueMember"), ("Queue", "emergency-110"), ("Name", "bad name;x"),
             ("StateInterface", "Local/x@y"), ("InCall", "0"), ("Status", "1"), ("Paused", "0")],
        ], "QueueStatusComplete")

    fake.handlers["QueueStatus"] = status
    client = AMIClient("127.0.0.1", fake.port, fake.username, fake.secret, connect_timeout=0.5)
    await client.start()
    try:
        await client.wait_connected(2.0)
        board = SeatBoard(engine, wrap_up_s=1)
        found = await sync_board(AMIQueuePort(client, "emergency-110"), board)
        assert found == {"members": 2, "changed": 2} and len(refusals) == 2
        assert [(v.seat, str(v.state), v.reason) for v in board.seats()] == [
            ("seat001", "on_call", None), ("seat002", "paused", "用餐")]
        assert fake.received("QueueStatus")[-1].get("Queue") == "emergency-110"
    finally:
        await client.stop()


async def test_pauses_asterisk_reports_reach_the_board(board: SeatBoard, fake: FakeAsterisk) -> None:
    board.wrap_up_s = 0.3
    await board.reconcile([MemberStatus("seat011", paused=True, reason="wrap-up"), MemberStatus("seat012"),
                           MemberStatus("seat013")])
    assert board.get("seat011").state is SeatState.WRAP_UP
    client = AMIClient("127.0.0.1", fake.port, fake.username, fake.secret, connect_timeout=0.5)
    client.add_listener(pause_listener(board, "emergency-110"))
    await client.start()
    try:
        await client.wait_connected(2.0)

        def paused(seat: str, yes: bool, reason: str = "", queue: str = "emergency-110") -> None:
            fake.emit("QueueMemberPause", [("Queue", queue), ("MemberName", seat), ("Name", seat),
                                           ("StateInterface", f"PJSIP/{seat}"), ("Paused", "1" if yes else "0"),
                                           ("PausedReason", reason), ("InCall", "0"), ("Status", "1")])

        # a tool pauses a seat in wrap-up: its timer no longer unpauses it
        paused("seat011", True, "storm: seat not staffed")
        paused("seat012", True, "培训")
        paused("seat013", True, "x", queue="other-queue")  # another queue's member: not this board's
        for _ in range(100):
            if board.get("seat012").state is SeatState.PAUSED:
                break
            await asyncio.sleep(0.01)
        assert (board.get("seat011").state, board.get("seat011").reason) == (SeatState.PAUSED,
                                                                            "storm: seat not staffed")
        assert (board.get("seat012").state, board.get("seat012").reason) == (SeatState.PAUSED, "培训")
        assert board.get("seat013").state is SeatState.AVAILABLE
        await asyncio.sleep(0.4)  # past the wrap-up that was running
        assert board.get("seat011").state is SeatState.PAUSED
        paused("seat012", False)
        for _ in range(100):
            if board.get("seat012").state is SeatState.AVAILABLE:
                break
            await asyncio.sleep(0.01)
        assert board.get("seat012").state is SeatState.AVAILABLE
    finally:
        await client.stop()


async def _call(service: TicketService, uniqueid: str, seat: str, at: float) -> None:
    await service.open_call(uniqueid=uniqueid, caller_id="1", at=at, source="ami")
    await service.record_step(uniqueid, Step.QUEUED, at=at + 0.5, source="ami")
    await service.record_step(uniqueid, Step.SEAT_RINGING, at=at + 1, source="ami", seat=seat)
    await service.record_step(uniqueid, Step.ANSWERED, at=at + 2, source="ami", seat=seat)
    await service.record_step(uniqueid, Step.HUNG_UP, at=at + 10, source="ami")


async def test_suspending_wrap_up_releases_seats_in_wrap_up_at_once(
    engine: AsyncEngine, queue: RecordingQueue, service: TicketService, clock: FakeClock
) -> None:
    board = SeatBoard(engine, queue, wrap_up_s=60, clock=clock)
    service.add_listener(board.on_step)
    for seat in ("seat-01", "seat-02"):
        await board.login(seat, seat)
    await _call(service, "1.1", "seat-01", T0)
    await asyncio.sleep(0.01)  # the wrap-up task pauses the member
    assert board.get("seat-01").state is SeatState.WRAP_UP
    assert queue.calls[-1] == ("pause", "PJSIP/seat-01", "wrap-up")
    assert await board.suspend_wrap_up(True) == 1
    assert (board.get("seat-01").state, board.get("seat-01").ticket) == (SeatState.AVAILABLE, None)
    assert queue.calls[-1] == ("unpause", "PJSIP/seat-01")
    assert board.get("seat-02").state is SeatState.AVAILABLE  # not in wrap-up: untouched
    await board.stop()


async def test_while_suspended_a_call_ends_on_an_available_seat_with_no_pause(
    engine: AsyncEngine, queue: RecordingQueue, service: TicketService, clock: FakeClock
) -> None:
    board = SeatBoard(engine, queue, wrap_up_s=60, clock=clock)
    service.add_listener(board.on_step)
    await board.login("seat-01", "王")
    await board.suspend_wrap_up(True)
    await _call(service, "1.1", "seat-01", T0)
    await asyncio.sleep(0.01)
    assert board.get("seat-01").state is SeatState.AVAILABLE
    assert queue.calls == [("add", "PJSIP/seat-01", "seat-01")]
    # Resumed: the next call has its wrap-up again.
    assert await board.suspend_wrap_up(False) == 0
    await _call(service, "1.2", "seat-01", T0 + 20)
    await asyncio.sleep(0.01)
    assert board.get("seat-01").state is SeatState.WRAP_UP
    assert queue.calls[-1] == ("pause", "PJSIP/seat-01", "wrap-up")
    await board.stop()


async def test_a_seat_found_paused_for_wrap_up_while_suspended_is_unpaused(
    engine: AsyncEngine, queue: RecordingQueue, clock: FakeClock
) -> None:
    board = SeatBoard(engine, queue, wrap_up_s=60, clock=clock)
    await board.suspend_wrap_up(True)
    await board.reconcile([MemberStatus("seat-03", paused=True, reason="wrap-up")])
    await _available(board, "seat-03")
    assert queue.calls == [("unpause", "PJSIP/seat-03")]
    await board.stop()
