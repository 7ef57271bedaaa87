"""The intake as Asterisk's CURL() asks it: the answer the dialplan reads into HASH(), refusals and the
deadline that sends the call down the fallback branch without losing its ticket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.calls.tickets import TicketService
from telephony import intake_http
from telephony.intake import Intake, arrival_time, network_position
from telephony.intake_http import IntakeStats, make_intake_app

# location_info of a GML point as the lab's Asterisk renders it (URI-decoded by aiohttp)
POINT = 'shape="Point",crs="2d",pos="31.2304 121.4737"'


def test_network_position_from_the_location_info() -> None:
    assert network_position(POINT) == (31.2304, 121.4737)
    assert network_position("") is None and network_position(None) is None  # no position from the network
    assert network_position('shape="Circle",pos="31.2 121.4",radius="100"') is None
    assert network_position('shape="Point",pos="91.5 121.4"') is None  # out of range
    assert network_position("shape=Point,pos=${SHELL(id)}") is None


def test_arrival_time_is_the_dialplan_stamp_unless_it_is_odd() -> None:
    assert arrival_time("1764400000.123", clock=lambda: 1764400001.0) == 1764400000.123
    assert arrival_time("1764400000.123", clock=lambda: 1764500000.0) == 1764500000.0  # a day off: a broken clock
    assert arrival_time("nan", clock=lambda: 5.0) == 5.0 and arrival_time("x", clock=lambda: 5.0) == 5.0
    assert arrival_time(None, clock=lambda: 5.0) == 5.0


class Located:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    async def __call__(self, number: str, *, lat: float, lon: float, address: str) -> None:
        self.calls.append((number, lat, lon))


@pytest.fixture
def stats() -> IntakeStats:
    return IntakeStats()


@pytest.fixture
def located() -> Located:
    return Located()


@pytest.fixture
async def client(service: TicketService, stats: IntakeStats, located: Located) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_intake_app(Intake(service, locate=located), stats))) as client:
        yield client


async def _ask(client: TestClient, **query: str) -> tuple[int, dict[str, list[str]]]:
    # as the dialplan builds it: every value URI-encoded
    qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    resp = await client.get(f"/intake?{qs}")
    assert resp.content_type == "text/plain"
    return resp.status, parse_qs(await resp.text())


async def test_the_answer_is_what_the_dialplan_reads_into_hash(
    client: TestClient, service: TicketService, stats: IntakeStats, located: Located
) -> None:
    now = f"{time.time():.3f}"
    status, answer = await _ask(client, uniqueid="1796508551.50", arrived=now, caller="13800138000", name="张三",
                                location=POINT)
    assert status == 200
    ticket = await service.find_by_uniqueid("1796508551.50")
    assert ticket is not None
    assert answer == {"queue": ["emergency-110"], "priority": ["10"],
                      "recording": [f"{ticket.number}_1796508551.50"], "ticket": [ticket.number]}
    assert (ticket.caller_id, ticket.caller_name) == ("13800138000", "张三")
    assert ticket.steps[0].source == "intake" and ticket.steps[0].at_us == round(float(now) * 1e6)
    # the network's position is written after the answer, in a task of its own
    for _ in range(100):
        if located.calls:
            break
        await asyncio.sleep(0.01)
    assert located.calls == [(ticket.number, 31.2304, 121.4737)]
    # asked again (a retried request): the same ticket
    status, again = await _ask(client, uniqueid="1796508551.50", caller="13800138000")
    assert status == 200 and again["ticket"] == [ticket.number]
    assert (stats.requests, stats.failures, stats.timeouts, stats.durations.count) == (2, 0, 0, 2)
    assert stats.health()["ok"] is True and "reason" not in stats.health()


async def test_a_hostile_caller_id_is_stored_as_text_and_never_reaches_the_answer(
    client: TestClient, service: TicketService
) -> None:
    hostile = "1380013,Hangup&ticket=110-1&queue=x\r\nEvil: 1"
    status, answer = await _ask(client, uniqueid="1.7", caller=hostile, name="${SHELL(id)}")
    assert status == 200
    ticket = await service.find_by_uniqueid("1.7")
    assert ticket is not None and ticket.caller_id == hostile
    assert answer["ticket"] == [ticket.number] and answer["queue"] == ["emergency-110"]
    # too long for the store: kept as far as it goes, never a reason to refuse the caller a ticket
    status, answer = await _ask(client, uniqueid="1.8", caller="1" * 400, location="x" * 2000)
    assert status == 200
    ticket = await service.find_by_uniqueid("1.8")
    assert ticket is not None and answer["ticket"] == [ticket.number] and ticket.caller_id.startswith("111")


@pytest.mark.parametrize("query", [
    {"caller": "1"},  # no uniqueid
    {"uniqueid": "1.1;DROP", "caller": "1"},
    {"uniqueid": "x" * 151, "caller": "1"},
    {"uniqueid": "", "caller": "1"},
])
async def test_a_malformed_request_gets_no_ticket(
    client: TestClient, service: TicketService, stats: IntakeStats, query: dict[str, str]
) -> None:
    status, answer = await _ask(client, **query)
    assert status == 400 and "ticket" not in answer and answer["error"]
    assert await service.list_recent(5) == []
    assert stats.failures == 1


async def test_past_the_deadline_the_call_falls_back_and_its_ticket_is_still_written(
    service: TicketService, stats: IntakeStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_http, "DEADLINE_S", 0.05)
    slow = Intake(service)
    admit = slow.admit

    async def late(**kw: object) -> dict[str, str]:
        await asyncio.sleep(0.2)  # a slow store
        return await admit(**kw)

    slow.admit = late  # type: ignore[method-assign]
    async with TestClient(TestServer(make_intake_app(slow, stats))) as client:
        status, answer = await _ask(client, uniqueid="2.1", caller="13800138000")
        assert status == 503 and "ticket" not in answer
        assert stats.timeouts == 1
        assert await service.find_by_uniqueid("2.1") is None
        for _ in range(100):  # not cancelled half way: the ticket is written all the same
            if await service.find_by_uniqueid("2.1") is not None:
                break
            await asyncio.sleep(0.01)
        assert await service.find_by_uniqueid("2.1") is not None
        # /healthz tells the truth: not ok for a while after a timed-out intake request, with the reason
        health = stats.health()
        assert health["ok"] is False and "timed out" in health["reason"] and "fallback" in health["reason"]
        assert stats.health(window_s=0.0)["ok"] is True


async def test_a_failing_store_is_an_answer_without_a_ticket(service: TicketService, stats: IntakeStats) -> None:
    broken = Intake(service)

    async def fails(**kw: object) -> dict[str, str]:
        raise RuntimeError("database is locked")

    broken.admit = fails  # type: ignore[method-assign]
    async with TestClient(TestServer(make_intake_app(broken, stats))) as client:
        status, answer = await _ask(client, uniqueid="3.1", caller="1")
        assert status == 503 and "ticket" not in answer
        assert (stats.requests, stats.failures) == (1, 1)
        assert stats.health()["ok"] is False and "RuntimeError" in stats.health()["reason"]


async def test_writes_that_cannot_keep_up_are_bounded(
    service: TicketService, stats: IntakeStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_http, "DEADLINE_S", 0.02)
    monkeypatch.setattr(intake_http, "PENDING_MAX", 3)
    monkeypatch.setattr(intake_http, "SHUTDOWN_WAIT_S", 0.1)
    stuck = Intake(service)
    release = asyncio.Event()

    async def wedged(**kw: object) -> dict[str, str]:
        await release.wait()  # a store that does not answer
        raise RuntimeError("never")

    stuck.admit = wedged  # type: ignore[method-assign]
    app = make_intake_app(stuck, stats)
    async with TestClient(TestServer(app)) as client:
        for i in range(3):
            status, _ = await _ask(client, uniqueid=f"4.{i}", caller="1")
            assert status == 503
        assert len(app[intake_http.PENDING]) == 3
        status, answer = await _ask(client, uniqueid="4.9", caller="1")
        assert status == 503 and answer["error"] == ["intake overloaded"]
        assert len(app[intake_http.PENDING]) == 3  # no fourth write started
        assert "behind" in stats.health()["reason"]
        started = time.monotonic()
    # leaving the client shuts the app down: the wedged writes are cancelled after SHUTDOWN_WAIT_S
    assert time.monotonic() - started < 2.0
    assert not app[intake_http.PENDING]
