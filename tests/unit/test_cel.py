"""Asterisk's channel event log (CEL): reading the file, a call's steps, and replaying them into tickets.

``tests/fixtures/cel_two_calls.csv`` was written by the lab's Asterisk 22 with
``dialplan/cel_custom.conf`` while SIPp placed two answered calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest

from core.calls.checkpoints import Checkpoints
from core.calls.lifecycle import State, Step
from core.calls.tickets import TicketService
from core.migrate import ensure_ready
from telephony.call_events import CallEvents
from telephony.cel import (
    CEL_COLUMNS,
    CallLog,
    CelCall,
    CelFile,
    CelFollower,
    CelFormatError,
    derive_steps,
    parse_line,
)

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "cel_two_calls.csv"
FIRST, SECOND = "1796524606.0", "1796524610.2"


def line(event: str, at: float, uid: str, linkedid: str | None = None, *, channel: str = "PJSIP/carrier-00000000",
         context: str = "from-carrier", exten: str = "110", caller: str = "13800138000", app: str = "",
         appdata: str = "", peer: str = "", extra: str = "", user_type: str = "", name: str = "") -> bytes:
    values = [event, f"{at:.6f}", uid, linkedid or uid, channel, context, exten, caller, app, appdata, peer,
              user_type, extra, quote(name, safe="")]  # the name as URIENCODE() writes it
    assert len(values) == len(CEL_COLUMNS)
    return (",".join('"' + v.replace('"', '""') + '"' for v in values) + "\n").encode()


def calls_of(data: bytes) -> dict[str, CelCall]:
    log = CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"])
    offset = 0
    for raw in data.splitlines(keepends=True):
        log.feed(parse_line(raw, offset))
        offset += len(raw)
    return dict(log.calls)


# -- the file ------------------------------------------------------------------

def test_columns_are_those_the_dialplan_writes():
    conf = (Path(__file__).resolve().parents[2] / "dialplan" / "cel_custom.conf").read_text()
    mapping = next(x for x in conf.splitlines() if x.startswith("jiejing.csv =>"))
    assert mapping.count("CSV_QUOTE") == len(CEL_COLUMNS)


def test_recorded_lines_parse_with_microsecond_times():
    events = CelFile(FIXTURE).read(None, 0).events
    assert len(events) == 30
    first = events[0]
    assert (first.event, first.uniqueid, first.context, first.exten, first.caller) == (
        "CHAN_START", FIRST, "from-carrier", "110", "13856785985")
    assert first.at == pytest.approx(1796524606.324621, abs=1e-6)
    bridge = next(e for e in events if e.event == "BRIDGE_ENTER" and e.uniqueid == FIRST)
    assert bridge.peer == "PJSIP/seat100-00000001" and "bridge_id" in bridge.extra
    assert [e.offset for e in events[:2]] == [0, len(FIXTURE.read_bytes().splitlines(keepends=True)[0])]


@pytest.mark.parametrize("raw", [
    b'"CHAN_START","1","x"\n',  # too few columns
    b'"CHAN_START","soon",' + b'"a",' * 10 + b'"a"\n',  # no time
    b'"CHAN_START","1796524606.0","",' + b'"a",' * 9 + b'"a"\n',  # no uniqueid
    b'"unterminated\n',
    b"x" * 20_000 + b"\n",
])
def test_malformed_lines_are_refused(raw):
    with pytest.raises(CelFormatError):
        parse_line(raw)


def test_hostile_caller_number_survives_quoting():
    hostile = '1" ,"HANGUP","9,\\x00'
    event = parse_line(line("CHAN_START", 1796524606.5, "1.1", caller=hostile))
    assert event.caller == hostile and event.event == "CHAN_START"


def test_a_hostile_caller_name_comes_back_as_it_was_sent():
    hostile = '张三" ,"HANGUP"\r\n"CHAN_START",${SHELL(id)}'
    raw = line("CHAN_START", 1796524606.5, "1.1", name=hostile)
    assert raw.count(b"\n") == 1  # one line, whatever the name holds
    event = parse_line(raw)
    assert event.caller_name == hostile and event.event == "CHAN_START"
    assert len(parse_line(line("CHAN_START", 1.5, "1.2", name="x" * 5000)).caller_name) == 200


def test_a_line_still_being_written_waits_for_its_newline(tmp_path):
    path = tmp_path / "jiejing.csv"
    whole = line("CHAN_START", 1796524606.5, "1.1")
    path.write_bytes(whole + whole[:20])
    result = CelFile(path).read(None, 0)
    assert len(result.events) == 1 and result.offset == len(whole)
    with open(path, "ab") as f:
        f.write(whole[20:])
    again = CelFile(path).read(result.inode, result.offset)
    assert len(again.events) == 1 and again.offset == 2 * len(whole) and not again.rotated


def test_malformed_line_is_counted_and_skipped_not_fatal(tmp_path):
    path = tmp_path / "jiejing.csv"
    path.write_bytes(line("CHAN_START", 1796524606.5, "1.1") + b"garbage\n" + line("HANGUP", 1796524607.5, "1.1"))
    result = CelFile(path).read(None, 0)
    assert [e.event for e in result.events] == ["CHAN_START", "HANGUP"] and result.malformed == 1


def test_rotated_or_truncated_file_is_read_from_its_start(tmp_path):
    path = tmp_path / "jiejing.csv"
    path.write_bytes(line("CHAN_START", 1796524606.5, "1.1") * 3)
    first = CelFile(path).read(None, 0)
    os.rename(path, tmp_path / "old.csv")
    path.write_bytes(line("CHAN_START", 1796524608.5, "2.1"))
    result = CelFile(path).read(first.inode, first.offset)
    assert result.rotated and [e.uniqueid for e in result.events] == ["2.1"]
    path.write_bytes(b"")  # cut short under the same inode
    assert CelFile(path).read(result.inode, result.offset).rotated


def test_missing_file_is_no_events(tmp_path):
    result = CelFile(tmp_path / "none.csv").read(None, 0)
    assert result.events == [] and result.offset == 0


# -- one call's steps -----------------------------------------------------------

def test_recorded_answered_call_gives_the_steps_ami_gives():
    call = calls_of(FIXTURE.read_bytes())[FIRST]
    steps = derive_steps(call)
    assert [s.step for s in steps] == [Step.RECEIVED, Step.QUEUED, Step.SEAT_RINGING, Step.ANSWERED, Step.HUNG_UP]
    assert steps[1].detail == {"queue": "emergency-110"}
    assert steps[2].detail == {"seat": "seat100", "interface": "PJSIP/seat100"}
    assert steps[3].detail["seat"] == "seat100" and steps[3].at == pytest.approx(1796524607.352, abs=0.01)
    assert steps[4].detail == {"cause": "16"}


def test_seat_channels_of_other_calls_and_other_numbers_are_not_calls():
    data = (line("CHAN_START", 1.0e9, "9.1", context="seats", exten="s", channel="PJSIP/seat001-01")
            + line("CHAN_START", 1.0e9, "9.2", exten="999"))
    assert calls_of(data) == {}


def _call(*lines: bytes) -> CelCall:
    (call,) = calls_of(b"".join(lines)).values()
    return call


def test_seat_that_does_not_answer_then_another_answers():
    t = 1796524600.0
    call = _call(
        line("CHAN_START", t, "1.1"),
        line("APP_START", t + 0.01, "1.1", app="Queue", appdata="emergency-110,r,,,30"),
        line("CHAN_START", t + 0.02, "1.2", "1.1", channel="PJSIP/seat001-00000002", context="seats"),
        line("HANGUP", t + 10.02, "1.2", "1.1", channel="PJSIP/seat001-00000002", context="seats"),
        line("CHAN_START", t + 11.0, "1.3", "1.1", channel="PJSIP/seat002-00000003", context="seats"),
        line("ANSWER", t + 12.0, "1.3", "1.1", channel="PJSIP/seat002-00000003", context="seats"),
        line("BRIDGE_ENTER", t + 12.001, "1.1", app="Queue", peer="PJSIP/seat002-00000003"),
        line("HANGUP", t + 20.0, "1.1", extra='{"hangupcause":16}'),
    )
    steps = derive_steps(call)
    assert [(s.step, s.detail.get("seat")) for s in steps] == [
        (Step.RECEIVED, None), (Step.QUEUED, None), (Step.SEAT_RINGING, "seat001"), (Step.SEAT_NO_ANSWER, "seat001"),
        (Step.SEAT_RINGING, "seat002"), (Step.ANSWERED, "seat002"), (Step.HUNG_UP, None)]
    assert steps[3].detail["ring_ms"] == 10000 and steps[5].detail["hold_s"] == 12


def test_ringall_losers_hung_up_after_an_answer_are_not_no_answers():
    t = 1796524600.0
    call = _call(
        line("CHAN_START", t, "1.1"),
        line("APP_START", t + 0.01, "1.1", app="Queue", appdata="q"),
        line("CHAN_START", t + 0.02, "1.2", "1.1", channel="PJSIP/seat001-2", context="seats"),
        line("CHAN_START", t + 0.02, "1.3", "1.1", channel="PJSIP/seat002-3", context="seats"),
        line("ANSWER", t + 1.0, "1.3", "1.1", channel="PJSIP/seat002-3", context="seats"),
        line("HANGUP", t + 1.001, "1.2", "1.1", channel="PJSIP/seat001-2", context="seats"),
        line("BRIDGE_ENTER", t + 1.002, "1.1", app="Queue", peer="PJSIP/seat002-3"),
    )
    assert Step.SEAT_NO_ANSWER not in [s.step for s in derive_steps(call)]


def test_overflow_answer_and_later_bridges():
    t = 1796524600.0
    call = _call(
        line("CHAN_START", t, "1.1"),
        line("APP_START", t + 0.01, "1.1", app="Queue", appdata="emergency-110,r,,,30"),
        line("APP_END", t + 30.0, "1.1", app="Queue"),
        line("APP_START", t + 30.01, "1.1", app="Dial", appdata="PJSIP/supervisor-desk,20,r"),
        line("BRIDGE_ENTER", t + 32.0, "1.1", app="Dial", peer="PJSIP/supervisor-desk-00000009"),
        line("BRIDGE_EXIT", t + 40.0, "1.1", app="Dial"),
        line("BRIDGE_ENTER", t + 41.0, "1.1", app="ConfBridge", peer="PJSIP/x-1"),
    )
    steps = derive_steps(call)
    assert [s.step for s in steps] == [Step.RECEIVED, Step.QUEUED, Step.ANSWERED]
    assert steps[2].detail == {"overflow_to": "PJSIP/supervisor-desk"}


def test_call_log_holds_calls_until_they_end_and_checkpoints_before_the_oldest():
    now = [100.0]
    log = CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"], clock=lambda: now[0])
    a = line("CHAN_START", 1.0e9, "1.1")
    b = line("CHAN_START", 1.0e9 + 1, "2.1")
    log.feed(parse_line(a, 0))
    log.feed(parse_line(b, len(a)))
    def reconcile_due():
        due = log.due()
        for call, final in due:
            log.done(call, final)
        return [(c.uniqueid, final) for c, final in due]

    assert reconcile_due() == [("1.1", False), ("2.1", False)]
    assert reconcile_due() == []  # nothing new
    assert log.checkpoint(999) == 0
    log.feed(parse_line(line("HANGUP", 1.0e9 + 2, "1.1"), 999))
    assert [(c.uniqueid, final) for c, final in log.due()] == [("1.1", True)]
    assert log.checkpoint(2000) == 0  # not reconciled yet: still held
    assert reconcile_due() == [("1.1", True)]
    assert log.checkpoint(2000) == len(a)  # the second call is still held
    log.feed(parse_line(line("HANGUP", 1.0e9 + 3, "2.1"), 2000))
    reconcile_due()
    assert log.checkpoint(3000) == 3000


def test_call_log_is_bounded():
    log = CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"], calls_max=2)
    for i in range(3):
        log.feed(parse_line(line("CHAN_START", 1.0e9 + i, f"{i}.1")))
    due = log.due()
    assert len(log.calls) == 2 and log.evicted == 1 and ("0.1" in {c.uniqueid for c, _ in due})


# -- replay into tickets ----------------------------------------------------------

@pytest.fixture
async def store(engine):
    await ensure_ready(engine)
    return engine


@pytest.fixture
def adapter(service: TicketService, tmp_path: Path) -> CallEvents:
    return CallEvents(service, intake_contexts=["from-carrier"], emergency_numbers=["110"],
                      recordings_dir=None, steps_from_ami=False)


async def _follow(tmp_path, store, adapter, data: bytes) -> CelFollower:
    path = tmp_path / "jiejing.csv"
    path.write_bytes(b"")
    follower = CelFollower(path, CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"]),
                           adapter.reconcile, Checkpoints(store))
    await adapter.start()
    await follower.catch_up()  # no checkpoint: followed from the (empty) end on
    path.write_bytes(data)
    await follower.poll()
    return follower


async def test_calls_in_the_log_become_tickets_at_asterisks_times(tmp_path, store, adapter, service):
    await _follow(tmp_path, store, adapter, FIXTURE.read_bytes())
    try:
        for uid in (FIRST, SECOND):
            ticket = await service.find_by_uniqueid(uid)
            assert [s.step for s in ticket.steps] == ["received", "queued", "seat_ringing", "answered", "hung_up"]
            assert {s.source for s in ticket.steps} == {"cel"} and ticket.state is State.ENDED
            call = calls_of(FIXTURE.read_bytes())[uid]
            assert [s.at_us for s in ticket.steps] == [round(d.at * 1_000_000) for d in derive_steps(call)]
        first = await service.find_by_uniqueid(FIRST)
        assert first.seat == "seat100" and first.caller_id == "13856785985"
    finally:
        await adapter.stop()


async def test_replay_adds_only_what_the_ticket_lacks(tmp_path, store, adapter, service):
    data = FIXTURE.read_bytes()
    # The intake and the first part of the call were recorded before the backend went down.
    call = calls_of(data)[FIRST]
    steps = derive_steps(call)
    await service.open_call(uniqueid=FIRST, caller_id="13856785985", at=steps[0].at, source="intake")
    await service.record_step(FIRST, Step.QUEUED, at=steps[1].at, source="cel", queue="emergency-110")
    await service.record_step(FIRST, Step.SEAT_RINGING, at=steps[2].at, source="cel", seat="seat100")
    follower = await _follow(tmp_path, store, adapter, data)
    try:
        ticket = await service.find_by_uniqueid(FIRST)
        assert [(s.step, s.source) for s in ticket.steps] == [
            ("received", "intake"), ("queued", "cel"), ("seat_ringing", "cel"), ("answered", "cel"),
            ("hung_up", "cel")]
        # a second replay of the same lines (a restart before the checkpoint moved) changes nothing
        follower._offset = 0
        follower.calls.calls.clear()
        await follower.catch_up()
        assert len((await service.find_by_uniqueid(FIRST)).steps) == 5
    finally:
        await adapter.stop()


async def test_checkpoint_survives_a_restart_and_calls_meanwhile_are_replayed(tmp_path, store, adapter, service):
    data = FIXTURE.read_bytes()
    first_call = data[: data.index(b'"CHAN_START","1796524610')]
    follower = await _follow(tmp_path, store, adapter, first_call)
    await adapter.stop()
    assert await service.find_by_uniqueid(FIRST) is not None
    assert await Checkpoints(store).load("cel") == (follower._inode, len(first_call))
    # down: the second call comes and goes; a new process follows from the checkpoint
    (tmp_path / "jiejing.csv").write_bytes(data)
    again = CallEvents(service, intake_contexts=["from-carrier"], emergency_numbers=["110"], recordings_dir=None,
                       steps_from_ami=False)
    await again.start()
    try:
        follower = CelFollower(tmp_path / "jiejing.csv",
                               CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"]),
                               again.reconcile, Checkpoints(store))
        await follower.catch_up()
        ticket = await service.find_by_uniqueid(SECOND)
        assert [s.step for s in ticket.steps][-1] == "hung_up" and ticket.state is State.ENDED
        assert follower.speaks_for(SECOND)
    finally:
        await again.stop()


async def test_a_closed_ticket_is_not_written_to(tmp_path, store, adapter, service):
    data = FIXTURE.read_bytes()
    steps = derive_steps(calls_of(data)[FIRST])
    await service.open_call(uniqueid=FIRST, caller_id="1", at=steps[0].at, source="intake")
    await service.record_step(FIRST, Step.ABANDONED, at=steps[0].at + 1, source="resync")
    await service.close((await service.find_by_uniqueid(FIRST)).number, disposition="test", by="t")
    await _follow(tmp_path, store, adapter, data)
    try:
        assert [s.step for s in (await service.find_by_uniqueid(FIRST)).steps] == ["received", "abandoned", "closed"]
    finally:
        await adapter.stop()


async def test_in_cel_mode_ami_events_record_no_steps(adapter, service):
    from telephony.ami.codec import Event

    await adapter.apply(Event([("Event", "Newchannel"), ("Uniqueid", "5.1"), ("Context", "from-carrier"),
                               ("Exten", "110")]))
    await adapter.apply(Event([("Event", "AgentConnect"), ("Uniqueid", "5.1"), ("Channel", "PJSIP/carrier-1"),
                               ("DestChannel", "PJSIP/seat001-2")]))
    assert await service.find_by_uniqueid("5.1") is None
    assert adapter.legs("5.1") == {"caller": "PJSIP/carrier-1", "seat": "PJSIP/seat001-2"}
    await adapter.apply(Event([("Event", "Hangup"), ("Uniqueid", "5.1")]))
    assert adapter.legs("5.1") is None


async def test_first_start_takes_the_calls_in_progress_not_the_ended_ones(tmp_path, store, adapter, service):
    data = FIXTURE.read_bytes()
    # the first call has ended; the second is still talking (its hang-up not yet written)
    cut = data.index(b'"BRIDGE_EXIT","1796524617')
    path = tmp_path / "jiejing.csv"
    path.write_bytes(b"x" * 100 + b"\n" + data[:cut])  # older lines before, a torn one at the tail's edge
    follower = CelFollower(path, CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"]),
                           adapter.reconcile, Checkpoints(store))
    await adapter.start()
    try:
        await follower.catch_up()
        assert await service.find_by_uniqueid(FIRST) is None
        live = await service.find_by_uniqueid(SECOND)
        assert [s.step for s in live.steps] == ["received", "queued", "seat_ringing", "answered"]
        path.write_bytes(b"x" * 100 + b"\n" + data)
        await follower.poll()
        assert (await service.find_by_uniqueid(SECOND)).state is State.ENDED
        assert follower.stats.malformed == 1  # the line of x's: not a CEL record
    finally:
        await adapter.stop()


def test_tail_start_is_a_line_start(tmp_path):
    path = tmp_path / "jiejing.csv"
    path.write_bytes(b"aaaa\nbbbb\ncccc\n")
    assert CelFile(path).tail_start(100)[1] == 0
    assert CelFile(path).tail_start(7)[1] == 10
    assert CelFile(path).tail_start(5)[1] == 10
    assert CelFile(tmp_path / "none").tail_start(5) == (0, 0)


async def test_health_says_when_the_store_is_behind_the_log_or_refuses_it(tmp_path, store, monkeypatch):
    import asyncio

    import telephony.cel as cel

    path = tmp_path / "jiejing.csv"
    path.write_bytes(b"")
    release = asyncio.Event()

    async def slow(call, final):
        await release.wait()

    follower = CelFollower(path, CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"]), slow,
                           Checkpoints(store), poll_s=0.01)
    await follower.catch_up()
    assert follower.health()["ok"] is True
    monkeypatch.setattr(cel, "BEHIND_S", 0.05)
    path.write_bytes(FIXTURE.read_bytes())
    passing = asyncio.create_task(follower.poll())
    await asyncio.sleep(0.2)
    health = follower.health()
    assert health["ok"] is False and "catching up with Asterisk's log" in health["reason"]
    release.set()
    await passing
    assert follower.health()["ok"] is True

    async def refused(call, final):
        raise RuntimeError("database is locked")

    failing = CelFollower(path, CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"]), refused,
                          Checkpoints(store), name="other", poll_s=0.01)
    path.write_bytes(b"")
    await failing.catch_up()  # followed from the (empty) end on
    path.write_bytes(FIXTURE.read_bytes())
    await failing.start()
    try:
        for _ in range(100):
            if failing.health()["ok"] is False:
                break
            await asyncio.sleep(0.02)
        assert "database is locked" in failing.health()["reason"]
        assert await Checkpoints(store).load("other") == (path.stat().st_ino, 0)  # nothing skipped
    finally:
        await failing.stop()


async def test_a_call_the_store_cannot_take_does_not_hold_up_the_others(tmp_path, store, adapter, service):
    bad = line("CHAN_START", 1796524600.0, "x" * 400)  # longer than any uniqueid Asterisk makes
    follower = await _follow(tmp_path, store, adapter, bad + FIXTURE.read_bytes())
    try:
        assert follower.stats.unrecordable == 1
        assert (await service.find_by_uniqueid(FIRST)).state is State.ENDED
        assert follower.health()["ok"] is True
    finally:
        await adapter.stop()


def test_in_cel_mode_the_ami_reader_queues_nothing_for_ordinary_events(adapter):
    from telephony.ami.codec import Event

    for name in ("Newchannel", "QueueCallerJoin", "AgentCalled", "AgentConnect", "Hangup"):
        adapter.on_event(Event([("Event", name), ("Uniqueid", "6.1"), ("Channel", "PJSIP/carrier-1"),
                                ("DestChannel", "PJSIP/seat001-2")]))
        if name == "AgentConnect":
            assert adapter.legs("6.1") == {"caller": "PJSIP/carrier-1", "seat": "PJSIP/seat001-2"}
    assert adapter._queue.qsize() == 0 and adapter.legs("6.1") is None


async def test_calls_asterisk_lost_without_logging_their_end_are_let_go(tmp_path, store, adapter, service):
    """Asterisk crashed mid-call: the log has no HANGUP, the channel snapshot no channel."""
    from tests.unit.test_call_events import RecordedAMI

    data = FIXTURE.read_bytes()
    cut = data.index(b'"BRIDGE_EXIT","1796524617')  # the second call, answered, never ends in the log
    follower = await _follow(tmp_path, store, adapter, data[:cut])
    try:
        assert (await service.find_by_uniqueid(SECOND)).state is State.ANSWERED
        assert follower.speaks_for(SECOND)
        await follower.catch_up(live=set(), snapshot_at=1796524700.0)
        assert SECOND not in follower.calls.calls and not follower.speaks_for(SECOND)
        assert follower.stats.dead_calls == 1
        # the snapshot may now end the ticket: the log cannot say how the call ended
        await adapter.resync(RecordedAMI({"CoreShowChannels": [], "QueueStatus": []}),
                             speaks_for=follower.speaks_for)
        ticket = await service.find_by_uniqueid(SECOND)
        assert ticket.state is State.ENDED and ticket.steps[-1].detail.get("reconciled") is True
    finally:
        await adapter.stop()


async def test_a_new_store_takes_no_ticket_for_a_call_asterisk_lost(tmp_path, store, adapter, service):
    data = FIXTURE.read_bytes()
    cut = data.index(b'"BRIDGE_EXIT","1796524617')
    path = tmp_path / "jiejing.csv"
    path.write_bytes(data[:cut])
    follower = CelFollower(path, CallLog(intake_contexts=["from-carrier"], emergency_numbers=["110"]),
                           adapter.reconcile, Checkpoints(store))
    await adapter.start()
    try:
        await follower.poll()  # a first start: the unended call waits for the AMI log-in's snapshot
        assert await service.find_by_uniqueid(SECOND) is None
        await follower.catch_up(live=set(), snapshot_at=1796524700.0)
        assert await service.find_by_uniqueid(SECOND) is None and follower.calls.calls == {}
    finally:
        await adapter.stop()


async def test_the_dialplans_marks_locate_the_call_once_and_count_its_fallback(tmp_path, store, adapter, service):
    located: list[tuple] = []

    async def locate(number: str, **kw) -> None:
        located.append((number, kw))

    adapter.locate = locate
    adapter.clock = lambda: 1796600010.0  # ten seconds after the call came
    where = quote('shape="Point",crs="2d",pos="31.2406 121.4858"', safe="")
    uid = "1796600000.1"
    first = (line("CHAN_START", 1796600000.0, uid)
             + line("jiejing_location", 1796600000.002, uid, app="CELGenUserEvent", user_type="jiejing_location",
                    extra=json.dumps({"extra": where}))
             + line("jiejing_fallback", 1796600001.5, uid, app="CELGenUserEvent", user_type="jiejing_fallback",
                    extra='{"extra":""}'))
    follower = await _follow(tmp_path, store, adapter, first)
    try:
        assert adapter.fallback_health()["ok"] is False
        assert "queued without the intake's answer" in adapter.fallback_health()["reason"]
        with (tmp_path / "jiejing.csv").open("ab") as f:
            f.write(line("APP_START", 1796600001.6, uid, app="Queue", appdata="emergency-110,r")
                    + line("HANGUP", 1796600003.0, uid, extra='{"hangupcause":16}'))
        await follower.poll()
        ticket = await service.find_by_uniqueid(uid)
        assert [s.step for s in ticket.steps] == ["received", "queued", "abandoned"]
        # once, though the call was reconciled twice; at the time the dialplan wrote it
        assert located == [(ticket.number, {"lat": 31.2406, "lon": 121.4858, "address": "network position (PIDF-LO)",
                                            "at": 1796600000.002, "fix": {"source": "network", "method": "pidf-lo"}})]
        assert adapter.fallbacks == 1
        # counted from when the call came, also when it was read long after (a replay after a restart)
        adapter.clock = lambda: 1796600062.0
        assert adapter.fallback_health()["ok"] is True and adapter.fallback_health()["fallbacks"] == 1
    finally:
        await adapter.stop()
