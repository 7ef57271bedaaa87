"""/metrics as a whole: ``promtool check metrics`` accepts it; a collector's bad figures stay its own.

``promtool`` comes from the Debian package ``prometheus`` (``sip-lab/bootstrap.sh``
installs it). Without it the check is skipped, except in CI (``CI`` set),
where a missing promtool fails the test as the missing browser fails the
browser tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.config import Settings
from core.quality.config import QualitySettings
from core.quality.journal import JournalEntry
from core.quality.supervision import build as build_supervision
from core.seats.board import SeatBoard
from core.web.app import make_app
from core.web.metrics import registry_of
from telephony.agi.codec import Request
from telephony.agi.server import AGISession, FastAGIServer, RouteStats
from telephony.ami.client import AMIClient
from telephony.serve import TelephonyMetrics
from tests.unit.conftest import T0, FakeClock

PROMTOOL = shutil.which("promtool")


class Broken:
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("no")


async def _route(request: Request, session: AGISession) -> None:  # never run: the server is not started
    raise AssertionError("not called")


def _telephony() -> TelephonyMetrics:
    # Neither is started: the AMI client never connects, the FastAGI server never listens.
    ami = AMIClient("127.0.0.1", 5038, "jiejing", "secret")
    agi = FastAGIServer({"dispatch": _route})
    dispatch = agi.stats.routes["dispatch"]
    dispatch.requests, dispatch.failures = 2, 1
    dispatch.durations.observe(4.0)
    intake = RouteStats()
    intake.requests, intake.failures, intake.timeouts = 3, 1, 1
    for ms in (0.7, 3.0, 240.0):
        intake.durations.observe(ms)
    return TelephonyMetrics(ami, agi, intake.summary)


@pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                    reason="promtool is not installed (sip-lab/bootstrap.sh installs the Debian package prometheus)")
async def test_promtool_accepts_the_metrics_of_a_busy_app(
    service: TicketService, engine: AsyncEngine, clock: FakeClock
) -> None:
    if PROMTOOL is None:
        pytest.fail("promtool is missing in CI: sip-lab/bootstrap.sh installs the Debian package prometheus")
    seats = SeatBoard(engine, clock=clock)
    supervision = build_supervision(service, Settings(), QualitySettings(retention_days=180))
    app = make_app(service, health={}, seats=seats, metrics=[_telephony(), Broken(), supervision.metrics()])
    async with TestClient(TestServer(app)) as client:
        await seats.login("seat-01", "王")
        for uid, answer_after in (("1.1", 2.5), ("1.2", 12.0), ("1.3", None), ("1.4", None)):
            await service.open_call(uniqueid=uid, caller_id="13800000000", at=T0, source="ami")
            await service.record_step(uid, Step.QUEUED, at=T0 + 0.2, source="ami")
            if answer_after is not None:
                await service.record_step(uid, Step.ANSWERED, at=T0 + answer_after, source="ami", seat="seat-01")
        await service.record_step("1.3", Step.ABANDONED, at=T0 + 20, source="ami")
        assert await supervision.journaler.catch_up() >= 11  # the calls' steps, and the seat's
        await supervision.retention.run_due()
        async with engine.connect() as conn:
            journaled = await conn.scalar(select(func.count()).select_from(JournalEntry)
                                          .where(JournalEntry.kind.in_(("step", "recording"))))
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        body = await resp.read()

    # Every family, with the name, type and labels it had before prometheus-client wrote the text.
    text = body.decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types == {
        "jiejing_calls_total": "counter",
        "jiejing_answer_seconds": "histogram",
        "jiejing_queue_calls_waiting": "gauge",
        "jiejing_queue_longest_wait_seconds": "gauge",
        "jiejing_seats": "gauge",
        "jiejing_ami_connected": "gauge",
        "jiejing_ami_reconnects_total": "counter",
        "jiejing_fastagi_requests_total": "counter",
        "jiejing_fastagi_duration_seconds": "histogram",
        "jiejing_intake_requests_total": "counter",
        "jiejing_intake_duration_seconds": "histogram",
        "jiejing_metrics_collector_errors_total": "counter",
        "jiejing_build_info": "gauge",
        "jiejing_process_cpu_seconds_total": "counter",
        "jiejing_process_virtual_memory_bytes": "gauge",
        "jiejing_process_resident_memory_bytes": "gauge",
        "jiejing_process_start_time_seconds": "gauge",
        "jiejing_process_open_fds": "gauge",
        "jiejing_process_max_fds": "gauge",
        "jiejing_journal_entries_appended_total": "counter",
        "jiejing_journal_anchors_total": "counter",
        "jiejing_outbox_attempts_total": "counter",
        "jiejing_retention_runs_total": "counter",
        "jiejing_retention_expired_total": "counter",
        "jiejing_retention_last_run_timestamp_seconds": "gauge",
    }
    assert f"jiejing_journal_entries_appended_total {float(journaled)}" in text.splitlines()  # each step once
    assert "jiejing_retention_runs_total 1.0" in text.splitlines()
    assert 'jiejing_outbox_attempts_total{outcome="sent"} 0.0' in text.splitlines()
    # Outcomes are disjoint, so a sum() over them counts each request once.
    outcomes = dict(re.findall(r'^jiejing_intake_requests_total\{outcome="(\w+)"\} (\S+)$', text, re.M))
    assert outcomes == {"ok": "1.0", "failed": "1.0", "timed_out": "1.0"}  # 3 requests: 1 failed, 1 timed out
    assert 'jiejing_build_info{version="' in text
    assert 'jiejing_answer_seconds_bucket{le="3"} 1.0' in text.splitlines()
    assert 'jiejing_intake_requests_total{outcome="timed_out"} 1.0' in text.splitlines()
    assert 'jiejing_intake_duration_seconds_bucket{le="0.25"} 3.0' in text.splitlines()
    assert 'jiejing_fastagi_requests_total{outcome="failed",route="dispatch"} 1.0' in text.splitlines()
    assert 'jiejing_metrics_collector_errors_total{collector="Broken"} 1.0' in text.splitlines()

    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b""), checked


def test_a_collector_with_a_bad_value_is_left_out_alone() -> None:
    class NoValue:
        def collect(self) -> Iterator[Metric]:
            gauge = GaugeMetricFamily("jiejing_unknown", "A figure that could not be read.", labels=["x"])
            gauge.add_metric(["y"], None)  # type: ignore[arg-type]
            yield gauge

    class Fine:
        def collect(self) -> Iterator[Metric]:
            yield GaugeMetricFamily("jiejing_fine", "A figure.", value=2)

    text = generate_latest(registry_of([NoValue(), Fine()])).decode()
    assert "jiejing_unknown" not in text
    assert "jiejing_fine 2.0" in text.splitlines()
    assert 'jiejing_metrics_collector_errors_total{collector="NoValue"} 1.0' in text.splitlines()
    assert 'jiejing_metrics_collector_errors_total{collector="Fine"} 0.0' in text.splitlines()
