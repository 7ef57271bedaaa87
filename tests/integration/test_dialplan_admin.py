"""`jiejing dialplan apply|rollback` against the lab Asterisk, with real calls."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import pytest

from siplab.asterisk import lab_rx_prefix
from telephony.ami.client import AMIClient
from telephony.dialplan_admin.apply import DialplanAdmin, asterisk_console
from telephony.dialplan_admin.running import running_dialplan
from telephony.dialplan_admin.versions import VersionStore

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parent.parent.parent
HOLIDAY = "\n[holiday-route]\n; a holiday announcement route\nexten => 8,1,NoOp(holiday)\n same => n,Hangup()\n"


async def connect_admin() -> AMIClient:
    ami = AMIClient("127.0.0.1", 5038, "jiejing-admin", "jiejing-lab-admin")
    await ami.start()
    await ami.wait_connected(timeout=5)
    return ami


@pytest.fixture
def sources(tmp_path) -> list[Path]:
    main = tmp_path / "dialplan"
    shutil.copytree(REPO / "dialplan", main)
    return [main, main / "lab"]


@pytest.fixture
async def admin(lab_paths, sources, tmp_path):
    admin = DialplanAdmin(live_dir=lab_paths.etc, sources=sources, store=VersionStore(tmp_path / "versions"),
                          connect=connect_admin, console=asterisk_console(lab_rx_prefix(lab_paths)), by="tester",
                          log=lambda *_: None, lab=True)
    yield admin
    # put the project's own dialplan back for the next tests
    restore = DialplanAdmin(live_dir=lab_paths.etc, sources=[REPO / "dialplan", REPO / "dialplan" / "lab"],
                            store=VersionStore(tmp_path / "restore"), connect=connect_admin,
                            console=asterisk_console(lab_rx_prefix(lab_paths)), log=lambda *_: None, lab=True)
    outcome = await restore.apply()
    assert outcome.ok, outcome.message


async def running_contexts() -> set[str]:
    ami = await connect_admin()
    try:
        return set(await running_dialplan(ami))
    finally:
        await ami.stop()


def _number() -> str:
    return f"137{random.randrange(10**8):08d}"


async def test_good_change_applied_while_a_call_is_up(admin, sources, calls):
    call = asyncio.create_task(calls.place([(_number(), "During apply")], talk_s=5))
    await asyncio.sleep(2.5)  # answered by a seat after ~1 s, talking
    (sources[1] / "extensions_lab.conf").write_text((sources[1] / "extensions_lab.conf").read_text() + HOLIDAY)
    outcome = await admin.apply(note="holiday route")
    assert outcome.ok, (outcome.message, outcome.changes)
    assert "holiday-route" in await running_contexts()
    stats = await call
    assert stats.get("SuccessfulCall(C)") == "1" and stats.get("FailedCall(C)") == "0", stats
    history = admin.store.list()
    assert [m.status for m in history] == ["snapshot", "applied"]
    assert history[1].by == "tester" and history[1].note == "holiday route"


async def test_broken_change_is_refused_by_check_and_nothing_changes(admin, sources, lab_paths):
    before = {p.name: p.read_bytes() for p in lab_paths.etc.glob("*.conf")}
    ext = sources[0] / "extensions.conf"
    lines = ext.read_text().splitlines(keepends=True)
    queue = [i for i, line in enumerate(lines) if line.startswith(" same => n(queue),Queue(${JIEJING_QUEUE},")]
    assert len(queue) == 1, queue  # the 110 call's one Queue()
    lines[queue[0]] = " same => n(queue),NoOp(no queue)\n"
    ext.write_text("".join(lines))
    outcome = await admin.apply()
    assert not outcome.ok and "refused" in outcome.message
    assert "error" in outcome.report
    after = {p.name: p.read_bytes() for p in lab_paths.etc.glob("*.conf")}
    assert after == before
    assert admin.store.list() == []


async def test_change_asterisk_does_not_take_is_rolled_back_and_110_still_works(admin, sources, lab_paths, calls):
    before = {p.name: p.read_bytes() for p in lab_paths.etc.glob("*.conf")}
    # Passes our check, but Asterisk cuts context names at 79 characters: the
    # context it runs is not the one we asked for.
    long_name = "holiday-" + "x" * 100
    lab_ext = sources[1] / "extensions_lab.conf"
    lab_ext.write_text(lab_ext.read_text() + f"\n[{long_name}]\nexten => 8,1,NoOp(too long)\n")
    outcome = await admin.apply()
    assert not outcome.ok and outcome.rolled_back, outcome.message
    assert "previous version runs again" in outcome.message
    after = {p.name: p.read_bytes() for p in lab_paths.etc.glob("*.conf")}
    assert after == before
    assert not any(c.startswith("holiday-") for c in await running_contexts())
    assert [m.status for m in admin.store.list()] == ["snapshot", "rolled back"]
    stats = await calls.place([(_number(), "After rollback")], talk_s=1)
    assert stats.get("SuccessfulCall(C)") == "1", stats


async def test_history_and_rollback(admin, sources):
    lab_ext = sources[1] / "extensions_lab.conf"
    lab_ext.write_text(lab_ext.read_text() + HOLIDAY)
    assert (await admin.apply()).ok
    assert "holiday-route" in await running_contexts()
    snapshot = admin.store.list()[0]
    assert snapshot.status == "snapshot"
    outcome = await admin.rollback(snapshot.version)
    assert outcome.ok, outcome.message
    assert "holiday-route" not in await running_contexts()
    assert [m.status for m in admin.store.list()] == ["snapshot", "applied", "applied"]
    assert admin.store.list()[-1].note == f"rollback to version {snapshot.version}"


async def test_diff_sees_a_changed_global_and_queue_option_and_none_once_applied(admin, sources):
    """An admin who trusts diff before a change is not misled: every option apply would change shows."""
    before = await admin.diff()
    assert before.ok and before.changes == [], before.changes
    assert "compared with the running Asterisk" in before.message
    ext, queues = sources[0] / "extensions.conf", sources[0] / "queues.conf"
    ext.write_text(ext.read_text().replace("JIEJING_DEFAULT_PRIORITY = 10", "JIEJING_DEFAULT_PRIORITY = 9", 1))
    queues.write_text(queues.read_text().replace("timeout = 10 ", "timeout = 11 ", 1))
    outcome = await admin.diff()
    assert not outcome.ok
    assert "~ global JIEJING_DEFAULT_PRIORITY: 10 -> 9" in outcome.changes
    assert "~ queues.conf [emergency-110] timeout: 10 -> 11" in outcome.changes
    assert (await admin.apply(note="priority 9, timeout 11")).ok
    after = await admin.diff()
    assert after.ok and after.changes == [], after.changes
