"""The rule files under the dialplan's safety net: the running backend picks up a changed file by itself and
keeps its running version of a bad one; `jiejing rules apply` checks, keeps versions, writes, and reads back
from the backend's /healthz that it runs exactly the files written."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.alerts.board import AlertBoard
from core.calls.tickets import TicketService
from core.config import RULE_FILES
from core.triage import desk as desk_module
from core.triage.desk import TriageDesk, default_files
from core.web.app import make_app
from telephony import rules_admin
from telephony.dialplan_admin.versions import VersionStore
from tests.triage_setup import planner_for
from tests.unit.conftest import FakeClock

REPO = Path(__file__).resolve().parents[2]


def _copy(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in RULE_FILES:
        shutil.copy2(REPO / "dialplan" / name, folder / name)
    return folder


@pytest.fixture
async def running(service: TicketService, clock: FakeClock, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TriageDesk, Path, str]]:
    """A backend's triage desk reading the rule files of ``live``, with its /healthz on a real port."""
    monkeypatch.setattr(desk_module, "RULES_POLL_S", 0.05)
    live = _copy(tmp_path / "live")
    planner = planner_for(service, clock)
    desk = TriageDesk(service, planner.officers, AlertBoard(service.engine, clock), owns_alerts=True,
                      files=default_files(live), clock=clock)
    app = make_app(service, health={"triage": desk.health}, dispatch=planner, triage=desk)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield desk, live, str(server.make_url("/healthz"))


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_the_backend_reloads_a_changed_file_and_keeps_its_running_version_of_a_bad_one(running) -> None:
    desk, live, _ = running
    routing = live / "routing.toml"
    routing.write_text(routing.read_text() + "\n# the holiday rota, reviewed\n")
    await _until(lambda: desk.loaded["routing"] == desk_module._digest(routing))
    assert desk.health()["ok"] and desk.reload_errors == {}
    surge_before = desk.surge.config

    (live / "surge.toml").write_text("[default]\nwindow_s = 'soon'\n")
    await _until(lambda: "surge" in desk.reload_errors)
    assert desk.surge.config is surge_before  # the running version stays
    health = desk.health()
    assert not health["ok"] and "rule files not loaded" in health["reason"]
    assert health["rule_files"]["surge"]["error"]


async def test_apply_checks_keeps_versions_and_sees_the_backend_load_it(running, tmp_path: Path) -> None:
    desk, live, healthz = running
    source = _copy(tmp_path / "source")
    admin = rules_admin.RulesAdmin(source, live, VersionStore(tmp_path / "versions"), healthz=healthz, by="admin",
                                   log=lambda *_: None)
    assert (await asyncio.to_thread(admin.apply)).message == "nothing to apply: the rule files are already these"

    keywords = source / "keywords.toml"
    keywords.write_text(keywords.read_text() + "\n# reviewed\n")
    assert rules_admin.diff(admin.source_files(), admin.live_files())[:2] == [
        "--- running/keywords.toml", "+++ new/keywords.toml"]
    outcome = await asyncio.to_thread(admin.apply, note="reviewed")
    assert outcome.ok and outcome.message.endswith("the backend runs it"), outcome.message
    assert (live / "keywords.toml").read_bytes() == keywords.read_bytes()
    assert [(m.status, m.by) for m in admin.store.list()] == [("snapshot", "admin"), ("applied", "admin")]
    assert rules_admin.diff(admin.source_files(), admin.live_files()) == []

    (source / "routing.toml").write_text("[[rule]]\ntype = 'no-such-type'\n")
    refused = await asyncio.to_thread(admin.apply)
    assert not refused.ok and refused.message.startswith("refused: the check found errors")
    assert refused.lines and refused.lines[0].startswith("routing.toml")
    assert (live / "routing.toml").read_bytes() == (REPO / "dialplan" / "routing.toml").read_bytes()

    back = await asyncio.to_thread(admin.rollback, 1)
    assert back.ok and back.message.endswith("the backend runs it"), back.message
    assert (live / "keywords.toml").read_bytes() == (REPO / "dialplan" / "keywords.toml").read_bytes()
    assert desk.loaded["keywords"] == desk_module._digest(REPO / "dialplan" / "keywords.toml")


async def test_apply_without_a_backend_says_it_was_not_confirmed(tmp_path: Path, engine: AsyncEngine) -> None:
    live, source = _copy(tmp_path / "live"), _copy(tmp_path / "source")
    (source / "surge.toml").write_text((source / "surge.toml").read_text() + "\n# checked\n")
    admin = rules_admin.RulesAdmin(source, live, VersionStore(tmp_path / "versions"),
                                   healthz="http://127.0.0.1:9/healthz", by="admin", wait_s=0.5,
                                   log=lambda *_: None)
    outcome = await asyncio.to_thread(admin.apply)
    assert outcome.ok and "the backend did not confirm it (unreachable" in outcome.message
