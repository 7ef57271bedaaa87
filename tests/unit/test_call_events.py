"""The AMI event adapter, fed with transcripts recorded from the lab Asterisk 22.

The fixtures in tests/fixtures were recorded with `python -m siplab.record_ami`
while SIPp placed the call; they are replayed through our AMI codec into the
adapter and a real store (SQLite file).
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from pathlib import Path

import pytest

from core.calls.lifecycle import State
from core.calls.tickets import TicketService
from telephony.ami.codec import NEED_DATA, AMIProtocol, Closed, Event
from telephony.call_events import CallEvents
from telephony.channel_vars import recording_name
from telephony.recording_files import SNAPSHOT_S, OpenFiles

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CALL_PATH = ["received", "queued", "seat_ringing", "answered", "hung_up"]


def transcript(name: str) -> list[Event]:
    proto = AMIProtocol()
    proto.receive_data((FIXTURES / name).read_bytes())
    proto.receive_data(b"")
    events = []
    while True:
        ev = proto.next_event()
        if ev is NEED_DATA or isinstance(ev, Closed):
            break
        if isinstance(ev, Event):
            events.append(ev)
    return events


def live_events(events: list[Event]) -> list[Event]:
    """The unsolicited events (not answers to the recorder's list actions)."""
    return [e for e in events if not e.action_id]


def list_answer(events: list[Event], action_id: str) -> list[Event]:
    return [e for e in events if e.action_id == action_id and e.get("EventList") != "Complete"]


class RecordedAMI:
    """Answers list actions from a transcript, as the AMI client would."""

    def __init__(self, answers: dict[str, list[Event]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def list_action(self, name: str, headers=None, **_):
        self.asked.append(name)
        return None, self.answers.get(name, [])


@pytest.fixture
def adapter(service: TicketService, tmp_path: Path) -> CallEvents:
    return CallEvents(service, intake_contexts=["from-carrier"], emergency_numbers=["110"],
                      recordings_dir=tmp_path / "monitor")


async def replay(adapter: CallEvents, events: list[Event]) -> None:
    for event in events:
        await adapter.apply(event)


async def test_answered_call_becomes_a_ticket_with_asterisk_timestamps(adapter, service):
    events = live_events(transcript("ami_one_call_fallback.txt"))
    await replay(adapter, events)
    tickets = await service.list_recent(10)
    assert len(tickets) == 1
    t = tickets[0]
    assert t.caller_id == "13900000003" and t.caller_name == "Wang Wu"
    assert [s.step for s in t.steps] == CALL_PATH
    assert t.state == State.ENDED
    assert t.seat == "seat008"
    # every step carries the Timestamp Asterisk put on the event, to the microsecond
    by_name = {e.name: e.timestamp for e in events if e.get("Uniqueid") == t.uniqueid}
    stamps = {s.step: s.at_us for s in t.steps}
    assert stamps["received"] == round(by_name["Newchannel"] * 1_000_000)
    assert stamps["answered"] == round(by_name["AgentConnect"] * 1_000_000)
    assert stamps["hung_up"] == round(by_name["Hangup"] * 1_000_000)


async def test_abandoned_call(adapter, service):
    await replay(adapter, live_events(transcript("ami_abandoned_call.txt")))
    (t,) = await service.list_recent(10)
    assert [s.step for s in t.steps] == ["received", "queued", "seat_ringing", "abandoned"]
    assert t.state == State.ABANDONED
    assert t.seat is None


async def test_replayed_events_add_no_duplicate_steps(adapter, service):
    events = live_events(transcript("ami_one_call_fallback.txt"))
    await replay(adapter, events)
    await replay(adapter, events)
    (t,) = await service.list_recent(10)
    assert [s.step for s in t.steps] == CALL_PATH
    assert adapter.rejected > 0


async def test_seat_channels_and_other_contexts_make_no_ticket(adapter, service):
    events = [e for e in live_events(transcript("ami_one_call_fallback.txt"))
              if e.get("Context") != "from-carrier"]
    await replay(adapter, events)
    assert await service.list_recent(10) == []


async def test_resync_after_restart_finds_the_call_in_progress_and_its_seat(adapter, service):
    events = transcript("ami_call_in_progress.txt")
    ami = RecordedAMI({"CoreShowChannels": list_answer(events, "rec-channels"),
                       "QueueStatus": list_answer(events, "rec-queues")})
    result = await adapter.resync(ami)
    assert result["opened"] == 1 and result["channels"] == 1
    (t,) = await service.list_recent(10)
    assert t.caller_id == "13900000009"
    assert [s.step for s in t.steps] == ["received", "queued", "answered"]
    assert {s.source for s in t.steps} == {"resync"}
    assert t.seat == "seat100"
    # the channel had been up 3 s: received is dated back accordingly
    assert t.steps[1].at_us - t.steps[0].at_us == pytest.approx(3_000_000, abs=50_000)

    # the call ended while we were away: the next resync closes the trail
    gone = RecordedAMI({"CoreShowChannels": [], "QueueStatus": []})
    result = await adapter.resync(gone)
    assert result["ended"] == 1
    t = await service.get(t.number)
    assert [s.step for s in t.steps] == ["received", "queued", "answered", "hung_up"]
    assert t.steps[-1].detail.get("reconciled") is True


async def test_resync_does_not_repeat_what_live_events_recorded(adapter, service):
    events = transcript("ami_call_in_progress.txt")
    await replay(adapter, live_events(events))
    (before,) = await service.list_recent(10)
    assert [s.step for s in before.steps] == ["received", "queued", "seat_ringing", "answered"]
    await adapter.resync(RecordedAMI({"CoreShowChannels": list_answer(events, "rec-channels"),
                                      "QueueStatus": list_answer(events, "rec-queues")}))
    after = await service.get(before.number)
    assert after.steps == before.steps


def _wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * int(8000 * seconds))


async def test_recording_of_another_call_with_the_same_number_is_never_bound(adapter, service, tmp_path):
    # Found in the lab: with a fresh store, ticket numbers start again at
    # 000001 and an older "<number>.wav" was bound to the new call.
    events = live_events(transcript("ami_one_call_fallback.txt"))
    opened = next(i for i, e in enumerate(events) if e.name == "Newchannel") + 1
    await replay(adapter, events[:opened])  # the caller's Newchannel: ticket opened
    (t,) = await service.list_recent(1)
    monitor = tmp_path / "monitor"
    _wav(monitor / f"{t.number}.wav", 9.0)  # stale file of an older call
    _wav(monitor / f"{recording_name(t.number, t.uniqueid)}.wav", 3.0)  # this call's
    await replay(adapter, events[opened:])
    await adapter.wait_recordings()
    t = await service.get(t.number)
    assert len(t.recordings) == 1
    assert t.recordings[0].path.endswith(f"{t.number}_{t.uniqueid}.wav")
    assert t.recordings[0].duration_s == pytest.approx(3.0)


async def test_a_recording_is_bound_only_once_asterisk_has_closed_it(service, tmp_path):
    """MixMonitor writes ``<name>.wav`` and closes it when its thread ends, after the channel: a file still
    open in Asterisk is never bound, whatever its size does meanwhile. Here this process plays Asterisk."""
    adapter = CallEvents(service, intake_contexts=["from-carrier"], emergency_numbers=["110"],
                         recordings_dir=tmp_path / "monitor", open_files=OpenFiles(find_pids=lambda: [os.getpid()]))
    events = live_events(transcript("ami_one_call_fallback.txt"))
    uid = next(e.get("Uniqueid") for e in events if e.name == "Newchannel" and e.get("Context") == "from-carrier")
    path = tmp_path / "monitor" / f"{uid}.wav"
    _wav(path, 0.0)  # the header alone: the size of a recording that has just started
    writing = open(path, "ab")  # noqa: SIM115 - held open as MixMonitor holds it
    try:
        await replay(adapter, events)
        await asyncio.sleep(1.0)  # longer than any "size stopped growing" guess
        (t,) = await service.list_recent(1)
        assert t.recordings == ()
    finally:
        writing.close()
    _wav(path, 2.5)  # MixMonitor ends: the whole file, closed
    await adapter.wait_recordings()
    t = await service.get(t.number)
    assert [r.path for r in t.recordings] == [str(path)]
    assert t.recordings[0].duration_s == pytest.approx(2.5)


def test_open_files_are_seen_by_inode_and_unknown_without_a_process(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF")
    mine = OpenFiles(find_pids=lambda: [os.getpid()])
    with open(path, "rb"):
        assert mine.is_open(path) is True
        # another name for the same file (the lab's chroot path, a hard link) is the same file
        os.link(path, tmp_path / "same.wav")
        assert mine.is_open(tmp_path / "same.wav") is True
    assert mine.is_open(path) is False
    assert mine.is_open(tmp_path / "missing.wav") is False
    assert OpenFiles(find_pids=lambda: []).is_open(path) is None
    assert OpenFiles(find_pids=lambda: [2**22 + 7]).is_open(path) is None  # no such process


def test_one_look_at_the_open_files_serves_every_recording_waiting_since_before_it(tmp_path):
    """In a storm dozens of recordings wait at once: one look at Asterisk's descriptors answers for all that
    began waiting before it, for ``SNAPSHOT_S``; a look older than the wait, or too old, is taken again."""
    now = [100.0]
    files = [tmp_path / f"{n}.wav" for n in range(3)]
    for f in files:
        f.write_bytes(b"RIFF")
    mine = OpenFiles(find_pids=lambda: [os.getpid()], clock=lambda: now[0])
    with open(files[0], "rb"):
        assert [mine.is_open(f, seen_after=99.0) for f in files] == [True, False, False]
        assert mine.scans == 1
    # closed since that look: a recording that began waiting before it may still use it (and waits on) ...
    assert mine.is_open(files[0], seen_after=99.5) is True and mine.scans == 1
    # ... one that began waiting after it gets a new look, which sees the file closed
    now[0] = 100.1
    assert mine.is_open(files[0], seen_after=100.05) is False and mine.scans == 2
    # a file opened after a look is not judged by that look: its wait began later
    with open(files[1], "rb"):
        now[0] = 100.15
        assert mine.is_open(files[1], seen_after=100.12) is True and mine.scans == 3
        # nor by a look older than SNAPSHOT_S
        now[0] += SNAPSHOT_S + 0.01
        assert mine.is_open(files[1], seen_after=0) is True and mine.scans == 4
    # without seen_after the table is always read afresh
    assert mine.is_open(files[1]) is False and mine.scans == 5


async def test_fallback_recording_named_after_uniqueid_is_bound(adapter, service, tmp_path):
    events = live_events(transcript("ami_one_call_fallback.txt"))
    uid = next(e.get("Uniqueid") for e in events if e.name == "Newchannel" and e.get("Context") == "from-carrier")
    _wav(tmp_path / "monitor" / f"{uid}.wav", 2.0)
    await replay(adapter, events)
    await adapter.wait_recordings()
    (t,) = await service.list_recent(1)
    assert [r.path for r in t.recordings] == [str(tmp_path / "monitor" / f"{uid}.wav")]


async def test_a_failing_event_does_not_stop_the_consumer(adapter, service, monkeypatch):
    events = live_events(transcript("ami_one_call_fallback.txt"))
    await adapter.start()
    try:
        original = adapter.apply
        calls = {"n": 0}

        async def flaky(event):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom")
            await original(event)

        monkeypatch.setattr(adapter, "apply", flaky)
        adapter.on_event(events[0])  # lost to the error
        for e in events:
            adapter.on_event(e)
        await asyncio.wait_for(adapter.drain(), 5)
    finally:
        await adapter.stop()
    (t,) = await service.list_recent(1)
    assert [s.step for s in t.steps] == CALL_PATH


def _event(name: str, uid: str, at: float, **headers: str) -> Event:
    return Event([("Event", name), ("Uniqueid", uid), ("Timestamp", f"{at:.6f}"), *headers.items()])


async def test_a_caller_answered_by_the_overflow_is_answered_not_abandoned(adapter, service):
    uid, t0 = "1796510000.7", 1796510000.0
    await replay(adapter, [
        _event("Newchannel", uid, t0, Channel="PJSIP/carrier-00000007", Context="from-carrier", Exten="110",
               CallerIDNum="13800138000"),
        _event("QueueCallerJoin", uid, t0 + 0.01, Queue="emergency-110", Position="1"),
        # no seat within the overflow time: app_queue counts the caller as abandoned, the dialplan says
        # "overflow" and rings the supervisors' desk, which answers
        _event("QueueCallerAbandon", uid, t0 + 30.0, Queue="emergency-110", HoldTime="30"),
        _event("UserEvent", uid, t0 + 30.0, UserEvent="JiejingOverflow", Target="PJSIP/supervisor-desk"),
        _event("DialEnd", uid, t0 + 33.0, Channel="PJSIP/carrier-00000007",
               DestChannel="PJSIP/supervisor-desk-00000008", DialStatus="ANSWER"),
        _event("Hangup", uid, t0 + 60.0, Cause="16"),
    ])
    (ticket,) = await service.list_recent(1)
    assert [str(s.step) for s in ticket.steps] == ["received", "queued", "answered", "hung_up"]
    answered = ticket.steps[2]
    assert answered.detail == {"overflow_to": "PJSIP/supervisor-desk"} and answered.at_us == round((t0 + 33) * 1e6)
    assert ticket.seat is None
    # app_queue's own Dial to a seat and a hand-over's Dial are not an overflow
    uid2 = "1796510000.9"
    await replay(adapter, [
        _event("Newchannel", uid2, t0, Channel="PJSIP/carrier-00000009", Context="from-carrier", Exten="110",
               CallerIDNum="13900139000"),
        _event("QueueCallerJoin", uid2, t0 + 0.01, Queue="emergency-110", Position="1"),
        _event("DialEnd", uid2, t0 + 0.99, DestChannel="PJSIP/seat001-0000000a", DialStatus="ANSWER"),
        _event("AgentConnect", uid2, t0 + 1.0, MemberName="seat001", Interface="PJSIP/seat001",
               Channel="PJSIP/carrier-00000009", DestChannel="PJSIP/seat001-0000000a", HoldTime="1"),
        _event("DialEnd", uid2, t0 + 20.0, DestChannel="PJSIP/hotline-12345-0000000b", DialStatus="ANSWER"),
    ])
    other = await service.find_by_uniqueid(uid2)
    assert [str(s.step) for s in other.steps] == ["received", "queued", "answered"]
    assert other.seat == "seat001"
    # a caller who gave up in the queue is abandoned as Asterisk stamped it, once the call has ended
    uid3 = "1796510000.11"
    await replay(adapter, [
        _event("Newchannel", uid3, t0, Channel="PJSIP/carrier-0000000c", Context="from-carrier", Exten="110",
               CallerIDNum="13700137000"),
        _event("QueueCallerJoin", uid3, t0 + 0.01, Queue="emergency-110", Position="1"),
        _event("QueueCallerAbandon", uid3, t0 + 4.0, Queue="emergency-110", HoldTime="4"),
        _event("Hangup", uid3, t0 + 4.01, Cause="16"),
    ])
    gave_up = await service.find_by_uniqueid(uid3)
    assert [str(s.step) for s in gave_up.steps] == ["received", "queued", "abandoned"]
    assert gave_up.steps[2].at_us == round((t0 + 4.0) * 1e6)
    assert gave_up.steps[2].detail == {"queue": "emergency-110", "hold_s": "4"}


async def test_resync_never_ends_a_ticket_the_log_speaks_for_nor_one_newer_than_its_snapshot(adapter, service):
    now = time.time()
    await service.open_call(uniqueid="7.1", caller_id="1", at=now - 5, source="intake")  # in Asterisk's log
    await service.open_call(uniqueid="7.2", caller_id="2", at=now + 1, source="intake")  # arrived after the snapshot
    await service.open_call(uniqueid="7.3", caller_id="3", at=now - 9, source="intake")  # gone, unknown to the log
    gone = RecordedAMI({"CoreShowChannels": [], "QueueStatus": []})
    result = await adapter.resync(gone, speaks_for=lambda uid: uid == "7.1")
    assert result["ended"] == 1
    states = {uid: (await service.find_by_uniqueid(uid)).state for uid in ("7.1", "7.2", "7.3")}
    assert states == {"7.1": State.RECEIVED, "7.2": State.RECEIVED, "7.3": State.ABANDONED}


async def test_resync_keeps_a_caller_moved_to_another_context(adapter, service):
    """After a dispatch the caller's channel is in the conference room's context, not the intake's."""
    await service.open_call(uniqueid="8.1", caller_id="1", at=time.time() - 60, source="intake")
    moved = [Event([("Event", "CoreShowChannel"), ("Uniqueid", "8.1"), ("Context", "dispatch-room"),
                    ("Channel", "PJSIP/carrier-00000001"), ("Linkedid", "8.1")])]
    result = await adapter.resync(RecordedAMI({"CoreShowChannels": moved, "QueueStatus": []}))
    assert result["ended"] == 0 and (await service.find_by_uniqueid("8.1")).state is State.RECEIVED
    assert await adapter.live_channels(RecordedAMI({"CoreShowChannels": moved})) == {"8.1"}
