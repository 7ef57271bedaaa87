"""The record survives the backend: killed, stopped or down, every call's ticket is what Asterisk's log says.

Each test runs ``jiejing serve`` as its own process (siplab.drill_backend), places calls through the lab's
Asterisk with SIPp, does the harm, and compares every ticket with Asterisk's channel event log (CEL):
the received, queued, answered and end steps at the log's times (to the microsecond), the seat, the end, and the
recording's sha256 against the finished file; then ``jiejing journal verify`` must be clean. The full-size
drills (60 calls, 10 s down) are in docs/benchmarks.md; these are their small, CI-sized versions.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from siplab import drill_backend, storm, trail_check
from tests.integration.conftest import default_phones

pytestmark = pytest.mark.lab


def _clean(report: dict) -> None:
    assert report["calls_in_log"] == report["calls"], report
    assert report["tickets"] == report["calls"], report
    assert report["differing"] == {}, report["differing"]
    assert report["recordings_ok"] == report["calls"], report
    assert report["journal_verify_rc"] == 0, report["journal_verify"]


async def test_backend_killed_mid_storm_and_restarted(lab_paths) -> None:
    default_phones(lab_paths)
    report = await drill_backend.run("kill", calls=12, rate=2, fault_at=2, down=4, talk_s=2, tolerance_ms=0.001)
    _clean(report)
    assert report["sipp_successful"] == 12 and report["at_seat_within_3s"] == 12, report


async def test_backend_stopped_10s_mid_storm_callers_still_seated_within_3s(lab_paths) -> None:
    default_phones(lab_paths)
    report = await drill_backend.run("stop", calls=24, rate=2, fault_at=2, down=10, talk_s=2, tolerance_ms=0.001)
    _clean(report)
    assert report["sipp_successful"] == 24 and report["at_seat_within_3s"] == 24, report


async def test_call_entirely_while_the_backend_is_down(lab_paths, tmp_path) -> None:
    default_phones(lab_paths)
    backend = drill_backend.BackendProcess(tmp_path, lab_paths)
    backend.start()
    try:
        await backend.wait_ready()
        backend.signal(signal.SIGTERM)
        backend.proc.wait(30)
        offset = trail_check.offset_now(lab_paths.cel_file)
        number = storm.caller_numbers(1, int(time.time()) % 10_000)[0]
        run_dir = lab_paths.run / f"test-down-{int(time.time() * 1000)}"
        run_dir.mkdir(parents=True)
        storm.write_injection(run_dir / "callers.csv", [(number, "While down")])
        scenario = storm.prepare_callers(lab_paths, run_dir, talk_s=2, patience_s=30)
        stats = await storm.drive_calls(run_dir, scenario, 1, 1, timeout=60)
        assert stats.get("SuccessfulCall(C)") == "1", stats
        backend.start()
        await backend.wait_ready()
        calls = {u: c for u, c in trail_check.cel_calls(lab_paths.cel_file, offset).items()
                 if c.events[0].caller == number}
        assert len(calls) == 1
        for _ in range(50):
            result = await trail_check.compare(backend.db_url, calls, lab_paths.recordings)
            if not result.differing:
                break
            await asyncio.sleep(0.2)
        assert result.tickets == 1 and result.differing == {}, result.differing
        assert result.recordings_ok == 1  # the recording, named after the caller's uniqueid by the dialplan
    finally:
        backend.stop()
    rc, out = backend.journal_verify()
    assert rc == 0, out
