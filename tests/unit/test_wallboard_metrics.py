"""Wallboard figures and /metrics, fed by ticket steps as the AMI adapter writes them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.alerts.board import Alert
from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.seats.board import SeatBoard
from core.seats.wallboard import Wallboard
from core.web.app import make_app
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers


async def _call(service: TicketService, uid: str, at: float, answer_after: float | None, *, abandon: bool = False) -> None:
    await service.open_call(uniqueid=uid, caller_id="13800000000", at=at, source="ami")
    await service.record_step(uid, Step.QUEUED, at=at + 0.2, source="ami")
    if answer_after is not None:
        await service.record_step(uid, Step.ANSWERED, at=at + answer_after, source="ami", seat="seat-01")
    elif abandon:
        await service.record_step(uid, Step.ABANDONED, at=at + 20, source="ami")


async def test_snapshot_counts_waiting_calls_and_the_answer_target(
    service: TicketService, engine: AsyncEngine, clock: FakeClock
) -> None:
    board = Wallboard(engine, SeatBoard(engine, clock=clock), clock=clock)
    service.add_listener(board.on_step)
    await _call(service, "1.1", T0 - 7200, 2.0)  # today, not in the last hour: fast
    await _call(service, "1.2", T0 - 600, 2.9)  # fast
    await _call(service, "1.3", T0 - 500, 8.0)  # slow
    await _call(service, "1.4", T0 - 400, None, abandon=True)
    await _call(service, "1.5", T0 - 10, None)  # waiting 10 s: counted as missed
    await _call(service, "1.6", T0 - 1, None)  # waiting 1 s: not yet decided
    clock.now = T0 - 90
    report = await service.open_report(channel="sms", ref="SM1", sender="13900000000", at=T0 - 90, source="sms",
                                       text="有人打架")
    await service.open_report(channel="app", ref="a2", sender="13900000001", at=T0 - 30, source="app", text="x")
    await service.take(report.number, by="taker-1")  # taken: no longer waiting
    await service.open_report(channel="app", ref="a3", sender="13900000002", at=T0 - 45, source="app", text="y")
    clock.now = T0
    snap = board.snapshot()
    assert snap["waiting"]["count"] == 2
    assert snap["waiting"]["longest_s"] == 10.0
    assert [c["number"] for c in snap["waiting"]["calls"]] == ["110-20261129-000005", "110-20261129-000006"]
    assert snap["answered_within_target"]["today"] == {"answered_fast": 2, "counted": 5, "share": 0.4}
    assert snap["answered_within_target"]["last_hour"] == {"answered_fast": 1, "counted": 4, "share": 0.25}
    # Text reports are not calls: not in the answer target, shown apart.
    assert snap["reports_waiting"] == {"count": 2, "longest_s": 45.0}

    # After a restart the same figures come from the store.
    again = Wallboard(engine, SeatBoard(engine, clock=clock), clock=clock)
    await again.prime()
    assert again.snapshot()["answered_within_target"] == snap["answered_within_target"]
    assert again.snapshot()["waiting"]["count"] == 2
    assert again.snapshot()["reports_waiting"] == snap["reports_waiting"]


async def test_open_alerts_are_shown(service: TicketService, engine: AsyncEngine, clock: FakeClock) -> None:
    async with async_sessionmaker(engine).begin() as session:
        session.add(Alert(kind="follow_up_overdue", ref="1", message="回访超时", created_at_us=1))
        session.add(Alert(kind="follow_up_overdue", ref="2", message="done", created_at_us=1, resolved_at_us=2))
    board = Wallboard(engine, SeatBoard(engine, clock=clock), clock=clock)
    await board.refresh_alerts()
    alerts = board.snapshot()["alerts"]
    assert alerts["count"] == 1 and alerts["open"][0]["message"] == "回访超时"


def _sample(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


class Telephony:
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("jiejing_ami_connected", "1 while logged in to Asterisk's AMI.", value=1)


class Broken:
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("jiejing_half_done", "Never seen: the collector fails after it.", value=1)
        raise RuntimeError("no")


async def test_metrics_are_public_prometheus_text(
    service: TicketService, engine: AsyncEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seats = SeatBoard(engine, clock=clock)
    app = make_app(service, health={}, seats=seats, metrics=[Telephony(), Broken()])
    async with TestClient(TestServer(app)) as client:
        await seats.login("seat-01", "王")
        await _call(service, "1.1", T0, 2.5)
        await _call(service, "1.2", T0, 12.0)
        await _call(service, "1.3", T0, None, abandon=True)
        await _call(service, "1.4", T0, None)
        resp = await client.get("/metrics")  # no token
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
        again = await (await client.get("/metrics")).text()
    assert _sample(text, 'jiejing_calls_total{outcome="received"}') == 4
    assert _sample(text, 'jiejing_calls_total{outcome="answered"}') == 2
    assert _sample(text, 'jiejing_calls_total{outcome="abandoned"}') == 1
    assert _sample(text, 'jiejing_answer_seconds_bucket{le="3"}') == 1
    assert _sample(text, 'jiejing_answer_seconds_bucket{le="+Inf"}') == 2
    assert _sample(text, "jiejing_answer_seconds_sum") == 14.5
    assert _sample(text, "jiejing_queue_calls_waiting") == 1
    assert _sample(text, 'jiejing_seats{state="available"}') == 0  # seat-01 took a call: on_call/wrap-up
    assert _sample(text, "jiejing_ami_connected") == 1
    # One broken collector does not blank the scrape: left out, logged and counted.
    assert "jiejing_half_done" not in text
    assert _sample(text, 'jiejing_metrics_collector_errors_total{collector="Broken"}') == 1
    assert _sample(text, 'jiejing_metrics_collector_errors_total{collector="Telephony"}') == 0
    assert _sample(again, 'jiejing_metrics_collector_errors_total{collector="Broken"}') == 2
    failures = [r for r in caplog.records if r.name == "core.web.metrics"]
    message = "metrics collector Broken failed; its metrics are left out of this scrape"
    assert [r.getMessage() for r in failures] == [message] * 2
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)
    # Every sample line is name{labels} value.
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \S+', line), line


async def test_wallboard_socket_pushes_each_new_call(service: TicketService, engine: AsyncEngine) -> None:
    app = make_app(service, health={})
    headers = await login_headers(engine, Role.CALL_TAKER)
    token = headers["Authorization"].removeprefix("Bearer ")
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/api/wallboard/ws", params={"access_token": token})
        first = await ws.receive_json(timeout=2)
        assert first["waiting"]["count"] == 0
        await service.open_call(uniqueid="1.1", caller_id="1", at=T0, source="ami")
        pushed = await ws.receive_json(timeout=0.5)  # at once, not at the next tick
        assert pushed["waiting"]["count"] == 1
        await ws.close()
