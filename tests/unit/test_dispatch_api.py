"""``POST /api/tickets/{number}/dispatch`` (declared by the telephony side): who asked, and refusals as data.

The dispatcher here is a stand-in that records its calls: what is tested is the view's logic, not Asterisk
(tests/integration/test_dispatch.py rings real phones).
"""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.web.app import make_app
from telephony import dispatch_api
from telephony.dispatcher import DispatchError
from tests.web_login import login_headers, on_seat

NUMBER = "110-20261129-000001"
T0 = 1_795_951_800.0  # 2026-11-29 08:10 in Shanghai: the ticket is NUMBER


class RecordingDispatcher:
    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse = refuse

    async def dispatch(self, number: str, *, by: str) -> None:
        self.calls.append((number, by))
        if self.refuse is not None:
            raise DispatchError(self.refuse)


async def _post(service: TicketService, dispatcher: RecordingDispatcher) -> tuple[int, dict]:
    app = make_app(service, health={})
    dispatch_api.add_routes(app, dispatcher)  # type: ignore[arg-type]
    headers = await login_headers(service.engine, Role.CALL_TAKER, username="wang")
    await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="ami")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-05")
    async with TestClient(TestServer(app), headers=headers) as client:
        await on_seat(client, {}, "seat-05")  # wang's seat: the call is his
        resp = await client.post(f"/api/tickets/{NUMBER}/dispatch")
        return resp.status, await resp.json()


async def test_a_call_taker_cannot_dispatch_another_seats_call(service: TicketService) -> None:
    app = make_app(service, health={})
    dispatcher = RecordingDispatcher()
    dispatch_api.add_routes(app, dispatcher)  # type: ignore[arg-type]
    headers = await login_headers(service.engine, Role.CALL_TAKER, username="li")
    await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="ami")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-05")
    async with TestClient(TestServer(app), headers=headers) as client:
        await on_seat(client, {}, "seat-06")
        resp = await client.post(f"/api/tickets/{NUMBER}/dispatch")
        assert resp.status == 403 and (await resp.json())["error_id"] == "not-your-call"
    assert dispatcher.calls == []


async def test_the_dispatch_is_recorded_as_the_logged_in_users(service: TicketService) -> None:
    dispatcher = RecordingDispatcher()
    status, body = await _post(service, dispatcher)
    assert (status, body) == (202, {"number": NUMBER, "status": "dispatching"})
    # It used to read a request key nobody set, so every dispatch said "api".
    assert dispatcher.calls == [(NUMBER, "wang")]


async def test_a_refused_dispatch_is_409_with_its_error_id(service: TicketService) -> None:
    status, body = await _post(service, RecordingDispatcher(refuse="the call is not answered"))
    assert status == 409
    assert body == {"error": "the call is not answered", "error_id": "dispatch-refused"}
