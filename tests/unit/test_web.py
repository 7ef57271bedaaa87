"""The HTTP API through a real aiohttp server: every endpoint, its errors, hostile input."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from core.auth.users import Role
from core.calls.lifecycle import State, Step
from core.calls.tickets import TicketService, TicketView
from core.web import app as core_web
from core.web.app import make_app
from tests.web_login import login_headers, on_seat

T0 = 1_795_951_800.0  # 2026-11-29 11:30:00 UTC


@asynccontextmanager
async def serve(
    service: TicketService, health: Mapping[str, Any] | None = None, **kwargs: Any
) -> AsyncIterator[TestClient]:
    app = make_app(service, health=health if health is not None else {"ami": lambda: {"ok": True}}, **kwargs)
    headers = await login_headers(service.engine, Role.CALL_TAKER)
    async with TestClient(TestServer(app), headers=headers) as client:
        # The call-taker holds the seat the test calls are answered on.
        await on_seat(client, {}, "seat-05")
        yield client


async def _ended_call(service: TicketService, uniqueid: str = "1.1") -> TicketView:
    ticket = await service.open_call(uniqueid=uniqueid, caller_id="13800000000", at=T0, source="agi")
    await service.record_step(uniqueid, Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step(uniqueid, Step.ANSWERED, at=T0 + 2.5, source="ami", seat="seat-05")
    await service.record_step(uniqueid, Step.HUNG_UP, at=T0 + 60, source="ami")
    return ticket


# -- health --------------------------------------------------------------------


async def test_healthz_ok(service: TicketService) -> None:
    async def ami() -> dict:
        return {"ok": True, "connected_for_s": 12, "since": datetime(2026, 11, 29, 11, 0, tzinfo=UTC)}

    async with serve(service, {"ami": ami}) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["latency_ms"] >= 0
    assert body["checks"]["ami"] == {"ok": True, "connected_for_s": 12, "since": "2026-11-29 11:00:00+00:00"}


@pytest.mark.parametrize(
    ("probe", "error"),
    [
        (lambda: {"ok": False, "error": "not logged in"}, "not logged in"),
        (lambda: 1 / 0, "ZeroDivisionError"),
        (lambda: "fine", "check returned str"),
    ],
    ids=["reports-down", "raises", "not-a-dict"],
)
async def test_healthz_degraded(service: TicketService, probe: Any, error: str) -> None:
    async with serve(service, {"ami": probe}) as client:
        resp = await client.get("/healthz")
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["ami"]["ok"] is False
    assert error in body["checks"]["ami"].get("error", "")


async def test_healthz_does_not_wait_for_a_hanging_check(
    service: TicketService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_web, "CHECK_TIMEOUT_S", 0.05)

    async def hangs() -> dict:
        await asyncio.sleep(10)
        return {"ok": True}

    async with serve(service, {"ami": hangs}) as client:
        resp = await asyncio.wait_for(client.get("/healthz"), 2)
        assert resp.status == 503
        assert "no answer" in (await resp.json())["checks"]["ami"]["error"]


async def test_database_check_is_built_in(service: TicketService) -> None:
    with pytest.raises(ValueError, match="database"):
        make_app(service, health={"database": lambda: {"ok": True}})


# -- listing -------------------------------------------------------------------


async def test_list_newest_first_with_limit(service: TicketService, clock) -> None:
    for i in range(3):
        clock.now = T0 + i
        await service.open_call(uniqueid=f"1.{i}", caller_id="1", at=T0 + i, source="agi")
    async with serve(service) as client:
        resp = await client.get("/api/tickets")
        assert resp.status == 200
        every = (await resp.json())["tickets"]
        resp = await client.get("/api/tickets", params={"limit": "2"})
        two = (await resp.json())["tickets"]
    assert [t["uniqueid"] for t in every] == ["1.2", "1.1", "1.0"]
    assert [t["uniqueid"] for t in two] == ["1.2", "1.1"]
    assert every[0]["steps"][0]["step"] == "received"


@pytest.mark.parametrize(
    "limit",
    ["abc", "0", "-1", "1001", "99999999999999999999999", "1e3", " 5", "５", "", "0x10", "50&limit=2"],
)
async def test_list_refuses_bad_limits(service: TicketService, limit: str) -> None:
    async with serve(service) as client:
        resp = await client.get(URL("/api/tickets").with_query({"limit": limit}))
        assert resp.status == 400
        assert resp.content_type == "application/json"
        assert (await resp.json())["error_id"] == "invalid-limit"


async def test_list_accepts_the_bounds(service: TicketService) -> None:
    async with serve(service) as client:
        for limit in ("1", "1000"):
            resp = await client.get("/api/tickets", params={"limit": limit})
            assert resp.status == 200
            assert await resp.json() == {"tickets": []}


# -- one ticket ----------------------------------------------------------------


async def test_get_ticket_with_steps_and_recordings(service: TicketService, tmp_path) -> None:
    ticket = await _ended_call(service)
    recording = tmp_path / "r.gsm"
    recording.write_bytes(b"\x00" * 33)
    await service.bind_recording(ticket.number, str(recording))
    async with serve(service) as client:
        resp = await client.get(f"/api/tickets/{ticket.number}")
        assert resp.status == 200
        body = await resp.json()
    assert body["number"] == ticket.number
    assert body["state"] == "ended"
    assert body["seat"] == "seat-05"
    assert [(s["seq"], s["step"], s["state_after"], s["source"]) for s in body["steps"]] == [
        (1, "received", "received", "agi"),
        (2, "queued", "queued", "ami"),
        (3, "answered", "answered", "ami"),
        (4, "hung_up", "ended", "ami"),
    ]
    assert body["steps"][2]["at"] == "2026-11-29T11:30:02.500Z"
    assert body["steps"][2]["at_us"] == 1_795_951_802_500_000
    assert body["steps"][2]["detail"] == {"seat": "seat-05"}
    assert body["recordings"] == [
        {
            "path": str(recording),
            "duration_s": None,
            "size_bytes": 33,
            "sha256": hashlib.sha256(b"\x00" * 33).hexdigest(),
            "bound_at": "2026-11-29T11:30:00.000Z",
            "bound_at_us": 1_795_951_800_000_000,
        }
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/api/tickets/110-20261129-999999",
        "/api/tickets/..%2F..%2Fetc%2Fpasswd",
        "/api/tickets/110-20261129-000001%2F..%2F..",
        "/api/tickets/%00",
        "/api/tickets/110-20261129-000001'%20OR%20'1'='1",
        "/api/tickets/../../etc/passwd",
    ],
)
async def test_unknown_or_hostile_numbers_are_404_json(service: TicketService, path: str) -> None:
    await service.open_call(uniqueid="1.1", caller_id="1", at=T0, source="agi")
    async with serve(service) as client:
        resp = await client.get(URL(path, encoded=True))
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()


# -- closing -------------------------------------------------------------------


async def test_close_stores_text_verbatim(service: TicketService) -> None:
    ticket = await _ended_call(service)
    disposition = "警情：${jndi:ldap://x/a} 盗窃 <script>alert(1)</script> '; DROP TABLE tickets; --"
    async with serve(service) as client:
        # A body's "by" is ignored: the record names the logged-in user.
        resp = await client.post(
            f"/api/tickets/{ticket.number}/close", json={"disposition": disposition, "by": "座席-07 ${CALLERID(num)}"}
        )
        assert resp.status == 200
        body = await resp.json()
        again = await (await client.get(f"/api/tickets/{ticket.number}")).json()
        by = (await (await client.get("/api/me")).json())["username"]
    assert body["state"] == "closed"
    assert body["steps"][-1]["detail"] == {"disposition": disposition, "by": by}
    assert again == body
    stored = await service.get(ticket.number)
    assert stored.state is State.CLOSED
    assert dict(stored.steps[-1].detail) == {"disposition": disposition, "by": by}


async def test_close_unknown_is_404(service: TicketService) -> None:
    async with serve(service) as client:
        for number in ("110-20261129-000009", "..%2Fx"):
            resp = await client.post(
                URL(f"/api/tickets/{number}/close", encoded=True), json={"disposition": "x", "by": "y"}
            )
            assert resp.status == 404
            assert "error" in await resp.json()


async def test_close_of_a_live_call_is_409(service: TicketService) -> None:
    ticket = await service.open_call(uniqueid="1.1", caller_id="1", at=T0, source="agi")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 2, source="ami", seat="seat-05")
    async with serve(service) as client:
        resp = await client.post(f"/api/tickets/{ticket.number}/close", json={"disposition": "x", "by": "y"})
        assert resp.status == 409
        refused = await resp.json()
        assert refused["error_id"] == "illegal-transition"
        assert refused["details"]["step"] == "closed"
        resp = await client.post(f"/api/tickets/{ticket.number}/close", json={"disposition": "x", "by": "y"})
        assert resp.status == 409
    assert len((await service.get(ticket.number)).steps) == 3  # nothing added by the refusals


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[]",
        b'"disposition"',
        b"null",
        b"{}",
        b'{"by": "y"}',
        b'{"disposition": 1, "by": "y"}',
        b'{"disposition": "x", "by": ["y"]}',
        b'{"disposition": "", "by": "y"}',
        b'{"disposition": "   ", "by": "y"}',
        b'{"disposition": "x", "by": null}',
        b'{"disposition": "\xff", "by": "y"}',  # not UTF-8
        b"\xff\xfe{}",
        b"[" * 50_000,
        json.dumps({"disposition": "x" * (64 * 1024), "by": "y"}).encode(),
    ],
    ids=lambda b: repr(b[:24]),
)
async def test_close_refuses_bad_bodies(service: TicketService, body: bytes) -> None:
    ticket = await _ended_call(service)
    async with serve(service) as client:
        resp = await client.post(
            f"/api/tickets/{ticket.number}/close", data=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status == 400
        assert isinstance((await resp.json())["error"], str)
    assert (await service.get(ticket.number)).state is State.ENDED


async def test_close_refuses_an_oversized_chunked_body(service: TicketService) -> None:
    ticket = await _ended_call(service)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"disposition": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'", "by": "y"}'

    async with serve(service) as client:
        resp = await client.post(f"/api/tickets/{ticket.number}/close", data=chunks())
        assert resp.status == 400
        assert (await resp.json())["error_id"] == "body-too-large"
    assert (await service.get(ticket.number)).state is State.ENDED


# -- errors and lifecycle of the app -------------------------------------------


async def test_unexpected_error_is_500_without_traceback(
    service: TicketService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(number: str) -> None:
        raise RuntimeError("password=hunter2 in /srv/secret")

    monkeypatch.setattr(service, "get", broken)
    async with serve(service) as client:
        resp = await client.get("/api/tickets/110-20261129-000001")
        assert resp.status == 500
        text = await resp.text()
    assert json.loads(text) == {"error": "internal error", "error_id": "internal-error"}
    assert "hunter2" not in text
    assert "Traceback" not in text
    # The operator still gets the whole story in the log.
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert [r.levelname for r in logged] == ["ERROR"]


async def test_unknown_route_and_method_answer_json(service: TicketService) -> None:
    async with serve(service) as client:
        resp = await client.get("/api/nothing")
        assert resp.status == 404
        assert "error" in await resp.json()
        resp = await client.delete("/api/tickets")
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert "error" in await resp.json()


async def test_cleanup_ctx_runs_in_order(service: TicketService) -> None:
    events: list[str] = []

    def ctx(name: str) -> Any:
        async def lifecycle(app: web.Application) -> AsyncIterator[None]:
            events.append(f"start {name}")
            yield
            events.append(f"stop {name}")

        return lifecycle

    async with serve(service, cleanup_ctx=[ctx("ami"), ctx("agi")]) as client:
        assert (await client.get("/healthz")).status == 200
        assert events == ["start ami", "start agi"]
    assert events == ["start ami", "start agi", "stop agi", "stop ami"]
