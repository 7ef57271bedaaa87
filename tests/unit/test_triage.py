"""Classification: steps (never overwritten), the query copy, the API with its roles, notes, and hand-overs."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.lifecycle import IllegalTransition, Step
from core.calls.tickets import TicketService
from core.triage.classify import (
    IncidentType,
    Priority,
    TriageRow,
    TriageService,
    current_classification,
)
from tests.dispatch_city import CENTER, answered_call, load, point_in
from tests.triage_setup import (
    PushStandIn,
    RecordingPort,
    desk_client,
    make_desk,
    planner_for,
)
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers, on_seat


async def _row(engine: AsyncEngine, number: str) -> TriageRow | None:
    async with engine.connect() as conn:
        return (await conn.execute(select(TriageRow).where(TriageRow.number == number))).first()


async def test_reclassification_is_a_new_step_and_the_copy_follows(service: TicketService, clock: FakeClock) -> None:
    triage = TriageService(service, clock=clock)
    ticket = await answered_call(service)
    await triage.classify(ticket.number, "dispute", 3, by="ct-1")
    clock.now += 60
    view, current = await triage.classify(ticket.number, IncidentType.PERSON, Priority.CRITICAL, by="ct-2")
    classified = [s for s in view.steps if s.step is Step.CLASSIFIED]
    assert [(s.detail["type"], s.detail["priority"], s.detail["by"]) for s in classified] == [
        ("dispute", 3, "ct-1"), ("person", 1, "ct-2")]
    assert view.state.value == "answered"  # a self-transition
    assert current_classification(view) == current
    assert current.type.label == "侵犯人身" and current.priority.label == "紧急"
    row = await _row(service.engine, ticket.number)
    assert row is not None and (row.type, row.priority) == ("person", 1)
    assert row.created_at_us == ticket.created_at_us


async def test_bad_values_and_closed_tickets_are_refused(service: TicketService, clock: FakeClock) -> None:
    triage = TriageService(service, clock=clock)
    ticket = await answered_call(service)
    with pytest.raises(ValueError, match="type must be one of"):
        await triage.classify(ticket.number, "burglary", 2)
    with pytest.raises(ValueError, match="priority"):
        await triage.classify(ticket.number, "person", 5)
    with pytest.raises(ValueError, match="priority"):
        await triage.classify(ticket.number, "person", True)  # type: ignore[arg-type]
    await service.record_step(ticket.uniqueid, Step.HUNG_UP, at=T0 + 9, source="ami")
    await triage.classify(ticket.number, "person", 2)  # after the call, before closing: fine
    await service.close(ticket.number, disposition="done", by="ct")
    with pytest.raises(IllegalTransition):
        await triage.classify(ticket.number, "person", 1)
    with pytest.raises(IllegalTransition):
        await triage.add_note(ticket.number, "late")


async def test_reindex_rebuilds_the_copy_from_the_steps(service: TicketService, clock: FakeClock) -> None:
    triage = TriageService(service, clock=clock)
    ticket = await answered_call(service)
    await triage.classify(ticket.number, "traffic", 3)
    async with service.engine.begin() as conn:
        await conn.execute(TriageRow.__table__.delete())
    assert await triage.reindex([ticket.number, "110-20261129-999999"]) == 1
    row = await _row(service.engine, ticket.number)
    assert row is not None and row.type == "traffic"


async def test_classify_api_roles_and_validation(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    ticket = await answered_call(service)
    async with desk_client(service, planner, desk) as client:
        taker = await login_headers(service.engine, Role.CALL_TAKER, username="ct-07")
        await on_seat(client, taker)
        station = await login_headers(service.engine, Role.STATION)
        officer = await login_headers(service.engine, Role.OFFICER)
        url = f"/api/tickets/{ticket.number}/classify"
        for headers in (station, officer):
            assert (await client.post(url, json={"type": "person", "priority": 1}, headers=headers)).status == 403
        for body in ({"type": "burglary", "priority": 1}, {"type": "person", "priority": 0},
                     {"type": "person"}, {"type": "person", "priority": 1, "by": "x"}):
            resp = await client.post(url, json=body, headers=taker)
            assert resp.status == 400, body
        resp = await client.post(url, json={"type": "dispute", "priority": 3}, headers=taker)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["classification"]["by"] == "ct-07"  # who, from the log-in, not from the body
        assert body["decision"] is None
        got = await (await client.get(f"/api/tickets/{ticket.number}", headers=taker)).json()
        assert got["triage"]["classification"]["type"] == "dispute"
        resp = await client.post("/api/tickets/110-20261129-999999/classify", json={"type": "person", "priority": 1},
                                 headers=taker)
        assert resp.status == 404


async def test_fraud_conferences_the_desk_pushes_the_ticket_and_stamps_the_handover(
    service: TicketService, clock: FakeClock
) -> None:
    from core.triage.push_http import HttpPoster

    planner = planner_for(service, clock)
    await load(planner.officers)
    stand_in = PushStandIn()
    async with stand_in.running():
        poster = HttpPoster(timeout_s=5)
        desk = make_desk(service, planner, clock, base_url=stand_in.url, poster=poster)
        port = RecordingPort()
        desk.set_handover_port(port)
        ticket = await answered_call(service)
        lat, lon = point_in(CENTER)
        await planner.locate(ticket.number, lat=lat, lon=lon, address="人民大道1号")
        await desk.start()
        try:
            result = await desk.classify(ticket.number, "fraud", 2, by="ct-1")
            await desk.pusher.deliver_due()
        finally:
            await desk.stop()
            await poster.close()
    assert result["decision"]["target"] == "anti_fraud"
    assert port.calls == [("conference", ticket.number, "PJSIP/antifraud-desk")]
    assert result["handover"] == {"done": True}
    last = result["ticket"]["steps"][-1]
    assert last["step"] == "handed_over"
    assert last["detail"] == {"to": "anti_fraud", "mode": "conference", "endpoint": "PJSIP/antifraud-desk",
                              "recording": "kept"}
    path, payload, headers = stand_in.received[0]
    assert path == "/fraud"
    assert payload["ticket"]["number"] == ticket.number
    assert payload["incident"]["address"] == "人民大道1号"
    assert payload["classification"]["type"] == "fraud"
    assert headers["Idempotency-Key"].endswith(ticket.number)
    pushes = await desk.pusher.for_ticket(ticket.number)
    assert [(p.target, p.state, p.answer) for p in pushes] == [("anti_fraud", "sent", "R1")]
    # Classifying it again does not conference the desk a second time.
    again = await desk.classify(ticket.number, "fraud", 1)
    assert again["handover"] == {"done": True, "already": True}
    assert len(port.calls) == 1


async def test_public_service_transfers_to_12345_and_a_failure_leaves_no_stamp(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    port = RecordingPort()
    port.fail = "hotline busy"
    desk.set_handover_port(port)
    ticket = await answered_call(service)
    result = await desk.classify(ticket.number, "public_service", 4)
    assert port.calls == [("transfer", ticket.number, "PJSIP/hotline-12345")]
    assert result["handover"] == {"done": False, "error": "hotline busy"}
    assert result["push"] is not None  # the ticket goes to the hotline even though the line was busy
    assert all(s["step"] != "handed_over" for s in result["ticket"]["steps"])
    port.fail = None
    async with desk_client(service, planner, desk) as client:
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        await on_seat(client, taker)
        resp = await client.post(f"/api/tickets/{ticket.number}/handover", json={}, headers=taker)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["ticket"]["steps"][-1]["detail"]["to"] == "hotline_12345"
        triage = await (await client.get(f"/api/tickets/{ticket.number}/triage", headers=taker)).json()
        assert [p["target"] for p in triage["pushes"]] == ["hotline_12345"]
        assert triage["handovers"][0]["mode"] == "transfer"


async def test_without_a_port_the_decision_is_returned_for_the_call_taker(
    service: TicketService, clock: FakeClock
) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    ticket = await answered_call(service)
    result = await desk.classify(ticket.number, "public_service", 4)
    assert result["decision"]["mode"] == "transfer"
    assert result["handover"]["done"] is False
    async with desk_client(service, planner, desk) as client:
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        await on_seat(client, taker)
        resp = await client.post(f"/api/tickets/{ticket.number}/handover", json={}, headers=taker)
        assert resp.status == 503


async def test_notes_are_steps(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    ticket = await answered_call(service)
    async with desk_client(service, planner, desk) as client:
        taker = await login_headers(service.engine, Role.CALL_TAKER, username="ct-3")
        await on_seat(client, taker)
        resp = await client.post(f"/api/tickets/{ticket.number}/notes", json={"text": "邻居吵架，无人受伤"},
                                 headers=taker)
        body = await resp.json()
        assert resp.status == 201, body
        assert body["major_incident"] is False
        assert body["ticket"]["steps"][-1]["detail"] == {"text": "邻居吵架，无人受伤", "by": "ct-3"}
        assert (await client.post(f"/api/tickets/{ticket.number}/notes", json={"text": " "},
                                  headers=taker)).status == 400


async def test_hand_over_by_target_from_the_desk(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    await load(planner.officers)
    desk = make_desk(service, planner, clock)
    port = RecordingPort()
    desk.set_handover_port(port)
    ticket = await answered_call(service)
    async with desk_client(service, planner, desk) as client:
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        await on_seat(client, taker)
        url = f"/api/tickets/{ticket.number}/handover"
        # the local station is the incident's: none without a location
        resp = await client.post(url, json={"target": "local_station"}, headers=taker)
        assert (resp.status, (await resp.json())["error_id"]) == (409, "not-located")
        resp = await client.post(url, json={"target": "the_moon"}, headers=taker)
        assert (resp.status, (await resp.json())["error_id"]) == (400, "invalid-body")
        resp = await client.post(url, json={"target": "anti_fraud"}, headers=taker)
        body = await resp.json()
        assert resp.status == 200, body
        assert body["decision"]["reason"] == "by hand → anti_fraud"
        lat, lon = point_in(CENTER)
        await planner.locate(ticket.number, lat=lat, lon=lon, address="人民大道1号")
        resp = await client.post(url, json={"target": "local_station"}, headers=taker)
        assert resp.status == 200, await resp.json()
    assert port.calls == [("conference", ticket.number, "PJSIP/antifraud-desk"),
                          ("conference", ticket.number, "PJSIP/desk-east")]
    handed = [s.detail for s in (await service.get(ticket.number)).steps if s.step is Step.HANDED_OVER]
    assert [(h["to"], h.get("station")) for h in handed] == [("anti_fraud", None), ("local_station", "east")]
