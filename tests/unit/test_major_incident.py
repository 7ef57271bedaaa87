"""A declared major incident: declaration, end, restore after a restart, callers linked, the recorded message."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from core.calls.lifecycle import State, Step
from core.calls.tickets import Source, TicketService
from core.triage.major import (
    GENERIC_CLASS,
    MESSAGE_CLASS,
    BadMajorIncident,
    BadMessage,
    Kind,
    MajorIncidentDeclared,
    MajorIncidents,
    MessageFiles,
    NoMajorIncident,
    check_message,
    ringback,
    wav,
)
from tests.unit.conftest import T0, FakeClock


def _tone(seconds: float, rate: int = 8000) -> bytes:
    return b"".join(struct.pack("<h", 1000 if (i // 20) % 2 else -1000) for i in range(int(seconds * rate)))


async def _call(service: TicketService, uid: str, caller: str = "13800000001") -> str:
    view = await service.open_call(uniqueid=uid, caller_id=caller, at=T0, source=Source.CEL)
    await service.record_step(uid, Step.QUEUED, at=T0 + 0.1, source=Source.CEL, queue="emergency-110")
    return view.number


def _steps(view, step: Step) -> list[dict]:
    return [dict(s.detail) for s in view.steps if s.step is step]


async def test_declare_opens_and_takes_a_ticket_of_its_own(service: TicketService, clock: FakeClock) -> None:
    incidents = MajorIncidents(service, clock=clock)
    heard = []
    incidents.add_listener(heard.append)
    incident = await incidents.declare(kind="fire", address="中山路 88 号 Zhongshan Rd 88", by="sup1",
                                       reason="warehouse fire, many calls")
    assert incidents.current == incident and heard == [incident]
    assert (incident.kind, incident.declared_by, incident.declared_at) == (Kind.FIRE, "sup1", T0)
    assert incident.moh_class == GENERIC_CLASS and incident.declared
    ticket = await service.get(incident.ticket)
    assert ticket.state is State.TAKEN
    declared = _steps(ticket, Step.MAJOR_INCIDENT_DECLARED)
    assert declared == [{"id": incident.id, "kind": "fire", "address": "中山路 88 号 Zhongshan Rd 88", "lat": None,
                         "lon": None, "by": "sup1", "reason": "warehouse fire, many calls"}]
    assert incident.to_json()["title"] == "火灾 fire — 中山路 88 号 Zhongshan Rd 88"


async def test_declare_on_an_existing_ticket_and_only_one_at_a_time(service: TicketService, clock: FakeClock) -> None:
    number = await _call(service, "1.1")
    incidents = MajorIncidents(service, clock=clock)
    incident = await incidents.declare(kind="explosion", lat=31.23, lon=121.47, ticket=number, by="sup1")
    assert incident.ticket == number and incident.place == "31.23000, 121.47000"
    with pytest.raises(MajorIncidentDeclared) as refused:
        await incidents.declare(kind="fire", address="elsewhere", by="sup2")
    assert refused.value.details == {"id": incident.id, "ticket": number}


@pytest.mark.parametrize(("fields", "field"), [
    ({"kind": "meteor", "address": "x"}, "kind"),
    ({"kind": "fire"}, "address"),
    ({"kind": "fire", "lat": 31.2}, "lon"),
    ({"kind": "fire", "lat": 95.0, "lon": 121.0}, "position"),
    ({"kind": "fire", "address": "a\nb"}, "address"),
    ({"kind": "fire", "address": "x", "ticket": "110-20990101-000001"}, "ticket"),
])
async def test_bad_declarations_are_refused_and_leave_nothing(service: TicketService, clock: FakeClock,
                                                              fields: dict, field: str) -> None:
    incidents = MajorIncidents(service, clock=clock)
    with pytest.raises(BadMajorIncident) as refused:
        await incidents.declare(by="sup1", **fields)
    assert refused.value.details["field"] == field
    assert incidents.current is None and await incidents.recent() == []
    assert await service.list_recent() == []


async def test_end_then_restore_finds_nothing(service: TicketService, clock: FakeClock, engine) -> None:
    incidents = MajorIncidents(service, clock=clock)
    with pytest.raises(NoMajorIncident):
        await incidents.end(by="sup1")
    incident = await incidents.declare(kind="fire", address="Zhongshan Rd 88", by="sup1")
    clock.now = T0 + 600
    ended = await incidents.end(by="sup2", reason="fire out")
    assert incidents.current is None and (ended.ended_by, ended.ended_at, ended.end_reason) == ("sup2", T0 + 600,
                                                                                               "fire out")
    ticket = await service.get(incident.ticket)
    assert _steps(ticket, Step.MAJOR_INCIDENT_ENDED) == [{"id": incident.id, "by": "sup2", "reason": "fire out"}]
    again = MajorIncidents(TicketService(engine, clock=clock), clock=clock)
    assert await again.restore() is None and again.current is None


async def test_a_declared_incident_is_restored_after_a_restart(service: TicketService, clock: FakeClock,
                                                               engine) -> None:
    incidents = MajorIncidents(service, clock=clock)
    incident = await incidents.declare(kind="chemical", address="Port Rd", lat=31.2, lon=121.5, by="sup1")
    _, samples = check_message(wav(_tone(2.0)))
    info, _ = check_message(wav(samples))
    incident = await incidents.set_message(info, by="sup1")
    restarted = MajorIncidents(TicketService(engine, clock=clock), clock=clock)
    heard = []
    restarted.add_listener(heard.append)
    assert await restarted.restore() == incident == restarted.current and heard == [incident]
    assert incident.moh_class == MESSAGE_CLASS


async def test_a_caller_who_pressed_1_is_linked_on_both_tickets_once(service: TicketService, clock: FakeClock) -> None:
    incidents = MajorIncidents(service, clock=clock)
    incident = await incidents.declare(kind="fire", address="Zhongshan Rd 88", by="sup1")
    caller = await _call(service, "2.1", "13900000002")
    linked = await incidents.link_caller("2.1", incident.id, at=T0 + 5)
    assert linked.number == caller
    await incidents.link_caller("2.1", incident.id, at=T0 + 6)  # replayed from the log: once
    assert _steps(await service.get(caller), Step.MAJOR_INCIDENT_LINKED) == [{"id": incident.id,
                                                                              "ticket": incident.ticket}]
    assert _steps(await service.get(incident.ticket), Step.MAJOR_INCIDENT_CALLER) == [
        {"id": incident.id, "ticket": caller, "caller": "13900000002"}]
    # no ticket yet for the call, or an unknown incident: nothing linked, nothing raised
    assert await incidents.link_caller("9.9", incident.id, at=T0) is None
    assert await incidents.link_caller("2.1", incident.id + 100, at=T0) is None


async def test_a_caller_pressing_1_after_the_end_is_still_linked(service: TicketService, clock: FakeClock) -> None:
    incidents = MajorIncidents(service, clock=clock)
    incident = await incidents.declare(kind="fire", address="Zhongshan Rd 88", by="sup1")
    await _call(service, "3.1")
    await incidents.end(by="sup1")
    assert (await incidents.link_caller("3.1", incident.id, at=T0 + 1)) is not None


# -- the recorded message -------------------------------------------------------------------------------------


def test_check_message_accepts_8khz_mono_pcm16() -> None:
    info, samples = check_message(wav(_tone(3.0)))
    assert round(info.seconds, 2) == 3.0 and len(samples) == 48000 and len(info.sha256) == 64


@pytest.mark.parametrize(("data", "reason"), [
    (b"hello", "not-wav"),
    (b"RIFF" + b"\0" * 60, "not-wav"),
    (wav(_tone(0.5)), "length"),
    (wav(b"\0\0" * 16000), "silent"),
])
def test_check_message_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as refused:
        check_message(data)
    assert refused.value.details["reason"] == reason


def test_check_message_refuses_other_formats() -> None:
    stereo = bytearray(wav(_tone(2.0)))
    struct.pack_into("<H", stereo, 22, 2)
    with pytest.raises(BadMessage) as refused:
        check_message(bytes(stereo))
    assert refused.value.details["reason"] == "format" and refused.value.details["channels"] == 2
    rate = bytearray(wav(_tone(2.0)))
    struct.pack_into("<I", rate, 24, 16000)
    with pytest.raises(BadMessage) as refused:
        check_message(bytes(rate))
    assert refused.value.details["rate"] == 16000


def test_message_files_write_the_message_and_the_ringback(tmp_path: Path) -> None:
    files = MessageFiles(tmp_path / "major")
    files.prepare()
    _, samples = check_message(wav(_tone(2.0)))
    files.keep(samples)
    kept = (tmp_path / "major" / "major-incident.wav").read_bytes()
    info, back = check_message(kept)
    assert back.startswith(samples) and round(info.seconds, 1) == 2.5
    ring = (tmp_path / "major" / "ringback.wav").read_bytes()
    assert ring == wav(ringback()) and len(ringback()) == 5 * 8000 * 2
    with pytest.raises(BadMessage):
        MessageFiles(None).keep(samples)


# -- the API ----------------------------------------------------------------------------------------------------


@pytest.fixture
async def api(service: TicketService, clock: FakeClock, tmp_path: Path):
    from aiohttp.test_utils import TestClient, TestServer

    from core.web.app import make_app

    app = make_app(service, health={}, major_messages=MessageFiles(tmp_path / "sounds"))
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_api_declare_message_end(api, engine, tmp_path: Path) -> None:
    from core.auth.users import Role
    from tests.web_login import login_headers

    taker = await login_headers(engine, Role.CALL_TAKER)
    chief = await login_headers(engine, Role.SUPERVISOR, username="chief")
    assert (await api.get("/api/major-incident", headers=taker)).status == 200
    body = {"kind": "fire", "address": "中山路 88 号", "lat": 31.23, "lon": 121.47, "reason": "warehouse"}
    assert (await api.post("/api/major-incident", json=body, headers=taker)).status == 403
    bad = await api.post("/api/major-incident", json={"kind": "meteor", "address": "x"}, headers=chief)
    assert bad.status == 400 and (await bad.json())["error_id"] == "invalid-body"
    no_place = await api.post("/api/major-incident", json={"kind": "fire"}, headers=chief)
    assert no_place.status == 400 and (await no_place.json())["error_id"] == "invalid-major-incident"
    resp = await api.post("/api/major-incident", json=body, headers=chief)
    assert resp.status == 201, await resp.text()
    current = (await resp.json())["current"]
    assert (current["kind"], current["declared_by"], current["message"]["class"]) == ("fire", "chief", GENERIC_CLASS)
    again = await api.post("/api/major-incident", json=body, headers=chief)
    assert again.status == 409 and (await again.json())["error_id"] == "major-incident-declared"
    # the message: a bad file changes nothing, a good one is kept where Asterisk plays it
    bad = await api.put("/api/major-incident/message", data=b"RIFF....WAVEnot really", headers=chief)
    assert bad.status == 400 and (await bad.json())["error_id"] == "invalid-major-message"
    assert not (tmp_path / "sounds" / "major-incident.wav").exists()
    recording = wav(_tone(4.0))
    resp = await api.put("/api/major-incident/message", data=recording,
                         headers={**chief, "Content-Type": "audio/wav"})
    assert resp.status == 200, await resp.text()
    message = (await resp.json())["current"]["message"]
    assert message["recorded"] and message["class"] == MESSAGE_CLASS
    assert (tmp_path / "sounds" / "major-incident.wav").read_bytes()[44:44 + 64000] == recording[44:]
    assert (tmp_path / "sounds" / "ringback.wav").exists()
    too_long = await api.put("/api/major-incident/message", data=wav(_tone(31.0)), headers=chief)
    assert too_long.status == 400 and (await too_long.json())["details"]["reason"] == "too-long"
    ended = await api.post("/api/major-incident/end", json={"reason": "fire out"}, headers=chief)
    assert ended.status == 200 and (await ended.json())["current"] is None
    assert (await api.post("/api/major-incident/end", json={}, headers=chief)).status == 409
    assert (await api.put("/api/major-incident/message", data=recording, headers=chief)).status == 409
    state = await (await api.get("/api/major-incident", headers=taker)).json()
    assert state["recent"][0]["end_reason"] == "fire out" and state["recent"][0]["message"]["recorded"]


# -- the posture kept across a restart --------------------------------------------------------------------------


async def test_the_posture_is_kept_and_restored(engine, clock: FakeClock) -> None:
    from core.seats.posture import Posture, last_change, save_change

    assert await last_change(engine) is None
    posture = Posture(clock=clock)
    change = posture.declare(True, by="chief", reason="explosion downtown")
    await save_change(engine, change)
    kept = await last_change(engine)
    assert kept == change
    restarted = Posture(clock=clock)
    heard = []
    restarted.add_listener(heard.append)
    restarted.restore(kept)
    assert restarted.surge and restarted.current.source == "declared" and heard == [kept]
    # a declared surge restored stays declared: the rules do not end it
    assert restarted.evaluate(T0 + 10_000, 0, 0.0) is None and restarted.surge
