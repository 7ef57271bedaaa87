"""The intake as Asterisk's CURL() asks it: the answer the dialplan reads into HASH(), from memory, refusals; its
own process, which ends with the backend; and the backend's CPU yielded to Asterisk."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from telephony.agi.server import RouteStats
from telephony.cel import network_position
from telephony.intake import Intake
from telephony.intake_http import make_intake_app
from telephony.intake_process import IntakeProcess

# location_info of a GML point as the lab's Asterisk renders it
POINT = 'shape="Point",crs="2d",pos="31.2304 121.4737"'


def test_network_position_from_the_location_info() -> None:
    assert network_position(POINT) == (31.2304, 121.4737)
    assert network_position(quote(POINT, safe="")) == (31.2304, 121.4737)  # as the dialplan writes it to the log
    assert network_position("") is None and network_position(None) is None  # no position from the network
    assert network_position('shape="Circle",pos="31.2 121.4",radius="100"') is None
    assert network_position('shape="Point",pos="91.5 121.4"') is None  # out of range
    assert network_position("shape=Point,pos=${SHELL(id)}") is None
    assert network_position("%" * 5000) is None


@pytest.fixture
def stats() -> RouteStats:
    return RouteStats()


@pytest.fixture
async def client(stats: RouteStats) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_intake_app(Intake(), stats))) as client:
        yield client


async def _ask(client: TestClient, **query: str) -> tuple[int, dict[str, list[str]]]:
    # as the dialplan builds it: every value URI-encoded
    qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    resp = await client.get(f"/intake?{qs}")
    assert resp.content_type == "text/plain"
    return resp.status, parse_qs(await resp.text())


async def test_the_answer_is_what_the_dialplan_reads_into_hash(client: TestClient, stats: RouteStats) -> None:
    status, answer = await _ask(client, uniqueid="1796508551.50", caller="13800138000")
    assert status == 200
    assert answer == {"queue": ["emergency-110"], "priority": ["10"]}
    status, again = await _ask(client, uniqueid="1796508551.50", caller="13800138000")
    assert status == 200 and again == answer
    assert (stats.requests, stats.failures, stats.timeouts, stats.durations.count) == (2, 0, 0, 2)
    health = await (await client.get("/intake/health")).json()
    assert health["requests"] == 2 and health["pid"] == os.getpid()  # the health request is not counted


async def test_the_answer_follows_the_configured_queue_and_priority() -> None:
    async with TestClient(TestServer(make_intake_app(Intake(queue="city-110", priority=7)))) as client:
        status, answer = await _ask(client, uniqueid="1.2", caller="1")
    assert (status, answer) == (200, {"queue": ["city-110"], "priority": ["7"]})
    for bad in ({"queue": "a,b"}, {"queue": ""}, {"priority": -1}, {"priority": True}, {"priority": "9"}):
        with pytest.raises(ValueError):
            Intake(**bad)  # type: ignore[arg-type]


async def test_a_hostile_caller_id_never_reaches_the_answer(client: TestClient) -> None:
    hostile = "1380013,Hangup&queue=x&priority=99\r\nEvil: 1"
    status, answer = await _ask(client, uniqueid="1.7", caller=hostile)
    assert (status, answer) == (200, {"queue": ["emergency-110"], "priority": ["10"]})
    status, answer = await _ask(client, uniqueid="1.8", caller="1" * 2_000)
    assert (status, answer) == (200, {"queue": ["emergency-110"], "priority": ["10"]})
    # past what an HTTP request line may hold: refused, and the dialplan queues the call with its defaults
    status, answer = await _ask(client, uniqueid="1.9", caller="呼" * 3_000)
    assert status == 400 and "queue" not in answer


@pytest.mark.parametrize("query", [
    {"caller": "1"},  # no uniqueid
    {"uniqueid": "1.1;DROP", "caller": "1"},
    {"uniqueid": "x" * 151, "caller": "1"},
    {"uniqueid": "", "caller": "1"},
])
async def test_a_malformed_request_gets_no_answer_the_dialplan_takes(
    client: TestClient, stats: RouteStats, query: dict[str, str]
) -> None:
    status, answer = await _ask(client, **query)
    assert status == 400 and "queue" not in answer and answer["error"]
    assert stats.failures == 1


async def test_a_failing_rule_is_an_answer_the_dialplan_falls_back_from(stats: RouteStats) -> None:
    broken = Intake()

    def fails(**kw: object) -> dict[str, str]:
        raise RuntimeError("a rule failed")

    broken.answer = fails  # type: ignore[method-assign]
    async with TestClient(TestServer(make_intake_app(broken, stats))) as client:
        status, answer = await _ask(client, uniqueid="3.1", caller="1")
    assert status == 503 and "queue" not in answer
    assert (stats.requests, stats.failures) == (1, 1)


# -- its own process --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_the_intake_answers_from_a_process_of_its_own_that_is_restarted_when_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("telephony.intake_process.WATCH_S", 0.1)
    port = _free_port()
    proc = IntakeProcess("127.0.0.1", port, Intake(queue="city-110", priority=5))
    await proc.start()
    try:
        first = proc.proc.pid
        assert first != os.getpid()
        assert await _get(port, "/intake?uniqueid=1.1&caller=1") == (200, "queue=city-110&priority=5")
        assert os.getsid(first) == first  # a session (a scheduling group) of its own
        for _ in range(50):
            if proc.health()["ok"] and proc.health().get("requests") == 1:
                break
            await asyncio.sleep(0.1)
        assert proc.health()["ok"] is True and proc.health()["requests"] == 1
        os.kill(first, signal.SIGKILL)
        for _ in range(100):
            if proc.starts == 2 and proc.health()["ok"]:
                break
            await asyncio.sleep(0.1)
        assert proc.starts == 2 and proc.proc.pid != first and proc.last_exit == -signal.SIGKILL
        assert await _get(port, "/intake?uniqueid=1.2&caller=1") == (200, "queue=city-110&priority=5")
    finally:
        await proc.stop()
    assert proc.health()["ok"] is False and "not running" in proc.health()["reason"]
    with pytest.raises(OSError):
        await _get(port, "/intake?uniqueid=1.3&caller=1")


def test_the_intake_process_ends_with_the_backend_that_started_it(tmp_path: Path) -> None:
    """A backend killed with SIGKILL leaves no intake behind holding the port (its restart starts its own)."""
    port = _free_port()
    parent = textwrap.dedent(f"""
        import asyncio, sys
        from telephony.intake import Intake
        from telephony.intake_process import IntakeProcess

        async def main():
            proc = IntakeProcess("127.0.0.1", {port}, Intake())
            await proc.start()
            print(proc.proc.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    backend = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        child = int(backend.stdout.readline())
        os.kill(child, 0)  # it runs
        backend.kill()
        backend.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the intake outlived the backend that started it")
    finally:
        backend.kill()
        backend.wait()
        backend.stdout.close()


def test_the_backend_yields_the_cpu_in_a_session_of_its_own(tmp_path: Path) -> None:
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-1 nice 0\n")
    probe = textwrap.dedent(f"""
        import json, os
        from pathlib import Path
        from telephony.serve import yield_cpu
        said = yield_cpu(7, autogroup=Path({str(autogroup)!r}))
        print(json.dumps({{"said": said, "leader": os.getsid(0) == os.getpid(), "nice": os.nice(0)}}))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], start_new_session=False)
    found = json.loads(out.stdout)
    assert found["leader"] is True and found["nice"] >= 7
    assert autogroup.read_text() == "7" and "session of its own at nice 7" in found["said"]
    # without autogroups: nice alone
    probe_plain = probe.replace(repr(str(autogroup)), repr(str(tmp_path / "none")))
    found = json.loads(subprocess.run([sys.executable, "-c", probe_plain], capture_output=True, text=True, check=True,
                                      cwd=Path(__file__).resolve().parents[2]).stdout)
    assert found["said"] == "nice +7" and found["leader"] is False
