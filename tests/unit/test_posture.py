"""The room's surge posture: the state machine, its thresholds in surge.toml, its API, and what a change does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.alerts.board import Alert
from core.auth.users import Role
from core.calls.tickets import TicketService
from core.seats.board import SeatBoard
from core.seats.posture import Posture, PostureError, PostureRules, parse_posture
from core.seats.views import POSTURE, SEATS
from core.triage import desk as desk_module
from core.triage.desk import TriageDesk
from core.triage.surge import SurgeError, parse_surge_config
from core.web.app import make_app
from tests.triage_setup import polling_desk
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers

REPO = Path(__file__).resolve().parents[2]
RULES = PostureRules(enter_waiting=3, enter_longest_wait_s=2.0, leave_waiting=0, leave_longest_wait_s=1.0, calm_s=60)


def _posture(clock: FakeClock, rules: PostureRules = RULES) -> Posture:
    return Posture(rules, clock=clock)


# -- the state machine ----------------------------------------------------------------------------


def test_enters_by_calls_waiting(clock: FakeClock) -> None:
    posture = _posture(clock)
    assert posture.evaluate(T0, 2, 0.5) is None and not posture.surge
    change = posture.evaluate(T0 + 1, 3, 0.5)
    assert change is not None and (change.mode, change.source, change.by) == ("surge", "auto", None)
    assert "3 calls waiting" in change.reason
    assert posture.to_json() == {"mode": "surge", "source": "auto", "since": T0 + 1, "reason": change.reason,
                                 "by": None}


def test_enters_by_the_longest_wait(clock: FakeClock) -> None:
    posture = _posture(clock)
    change = posture.evaluate(T0, 1, 2.0)
    assert change is not None and posture.surge and "waiting 2.0 s" in change.reason


def test_leaves_only_after_calm_s_without_a_break(clock: FakeClock) -> None:
    posture = _posture(clock)
    posture.evaluate(T0, 5, 3.0)
    assert posture.evaluate(T0 + 1, 0, 0.0) is None  # calm starts
    assert posture.evaluate(T0 + 59, 0, 0.5) is None and posture.surge
    assert posture.evaluate(T0 + 60.5, 1, 0.2) is None  # above leave_waiting: the calm starts over
    assert posture.evaluate(T0 + 61, 0, 0.0) is None
    assert posture.evaluate(T0 + 120, 0, 0.0) is None and posture.surge
    change = posture.evaluate(T0 + 121, 0, 0.0)
    assert change is not None and change.mode == "normal" and "calm for 60 s" in change.reason
    assert [c.mode for c in posture.history] == ["surge", "normal"]


def test_no_flapping_between_the_leave_and_enter_figures(clock: FakeClock) -> None:
    posture = _posture(clock)
    posture.evaluate(T0, 3, 0.0)
    for i in range(1, 600):  # two calls waiting, over a second, for ten minutes: below enter, above leave
        assert posture.evaluate(T0 + i, 2, 1.5) is None
    assert posture.surge and len(posture.history) == 1


def test_a_declared_surge_stays_until_a_supervisor_ends_it(clock: FakeClock) -> None:
    posture = _posture(clock)
    seen = []
    posture.add_listener(seen.append)
    change = posture.declare(True, by="chief", reason="化工厂爆炸 explosion at the chemical plant")
    assert change is not None and (change.source, change.by) == ("declared", "chief")
    for i in range(1, 300):
        assert posture.evaluate(T0 + i, 0, 0.0) is None
    assert posture.surge
    assert posture.declare(True, by="chief", reason="again") is None  # already declared
    ended = posture.declare(False, by="chief", reason="scene under control")
    assert ended is not None and ended.mode == "normal" and not posture.surge
    assert [(c.mode, c.by) for c in seen] == [("surge", "chief"), ("normal", "chief")]


def test_a_supervisor_may_declare_over_an_automatic_surge(clock: FakeClock) -> None:
    posture = _posture(clock)
    posture.evaluate(T0, 4, 0.0)
    assert posture.declare(True, by="chief", reason="explosion").source == "declared"
    assert posture.evaluate(T0 + 3600, 0, 0.0) is None and posture.surge


def test_new_rules_apply_from_the_next_evaluation(clock: FakeClock) -> None:
    posture = _posture(clock)
    assert posture.evaluate(T0, 3, 0.0) is not None
    posture.declare(False, by="chief", reason="test")
    posture.set_rules(PostureRules(enter_waiting=10, enter_longest_wait_s=30, leave_longest_wait_s=5))
    assert posture.evaluate(T0 + 1, 9, 20.0) is None and not posture.surge


# -- the rules ------------------------------------------------------------------------------------


def test_parse_posture_over_the_defaults() -> None:
    assert parse_posture({}) == PostureRules()
    assert parse_posture({"enter_waiting": 5, "calm_s": 120}).calm_s == 120


@pytest.mark.parametrize(("table", "message"), [
    ({"enter_wating": 3}, "unknown key 'enter_wating'"),
    ({"enter_waiting": -1}, "enter_waiting must be an integer from 0 to 10000"),
    ({"enter_waiting": True}, "enter_waiting must be an integer"),
    ({"calm_s": "60"}, "calm_s must be a number"),
    ({"enter_waiting": 3, "leave_waiting": 3}, "leave_waiting must be below enter_waiting (3)"),
    ({"enter_longest_wait_s": 2, "leave_longest_wait_s": 2}, "leave_longest_wait_s must be below"),
    ({"enter_waiting": 0, "enter_longest_wait_s": 0}, "would never start by itself"),
])
def test_bad_rules_are_refused_with_a_clear_message(table: dict, message: str) -> None:
    with pytest.raises(PostureError, match="x.toml \\[posture\\]") as caught:
        parse_posture(table, "x.toml [posture]")
    assert message in str(caught.value)


def test_surge_toml_holds_the_posture_and_checks_it() -> None:
    shipped = parse_surge_config((REPO / "dialplan" / "surge.toml").read_text(encoding="utf-8"))
    assert shipped.posture == PostureRules()
    config = parse_surge_config("[posture]\nenter_waiting = 8\n")
    assert config.posture.enter_waiting == 8
    with pytest.raises(SurgeError, match=r"surge.toml \[posture\]: leave_waiting must be below"):
        parse_surge_config("[posture]\nenter_waiting = 2\nleave_waiting = 5\n")
    with pytest.raises(SurgeError, match="unknown table 'postur'"):
        parse_surge_config("[postur]\nenter_waiting = 2\n")


# -- the assembled backend -------------------------------------------------------------------------


@pytest.fixture
async def running(service: TicketService, clock: FakeClock, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient, TriageDesk, Path]]:
    """The backend's app with a triage desk polling the rule files of ``live``."""
    monkeypatch.setattr(desk_module, "RULES_POLL_S", 0.05)
    live = tmp_path / "live"
    desk, planner = polling_desk(service, clock, live)
    board = SeatBoard(service.engine, wrap_up_s=10, clock=clock)
    app = make_app(service, health={}, dispatch=planner, triage=desk, seats=board)
    async with TestClient(TestServer(app)) as client:
        yield client, desk, live


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def _posture_alerts(engine: AsyncEngine) -> list:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Alert).where(Alert.kind == "surge_mode"))).all())


async def test_a_supervisor_declares_and_a_call_taker_reads(running, engine: AsyncEngine) -> None:
    client, _desk, _live = running
    app = client.server.app
    taker = await login_headers(engine, Role.CALL_TAKER)
    chief = await login_headers(engine, Role.SUPERVISOR, username="chief")
    resp = await client.get("/api/posture", headers=taker)
    assert resp.status == 200 and (await resp.json())["mode"] == "normal"
    refused = await client.post("/api/posture", json={"surge": True, "reason": "x"}, headers=taker)
    assert refused.status == 403
    resp = await client.post("/api/posture", json={"surge": True, "reason": "爆炸 explosion"}, headers=chief)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["mode"], body["source"], body["by"], body["reason"]) == ("surge", "declared", "chief", "爆炸 explosion")
    await _until(lambda: app[SEATS].wrap_up_suspended)
    wall = await (await client.get("/api/wallboard", headers=taker)).json()
    assert wall["posture"]["mode"] == "surge" and wall["posture"]["by"] == "chief"
    for _ in range(100):
        if len(await _posture_alerts(engine)) == 1:
            break
        await asyncio.sleep(0.02)
    [alert] = await _posture_alerts(engine)
    assert alert.resolved_at_us is None and "wrap-up suspended" in alert.message
    assert (await client.post("/api/posture", json={"surge": "yes", "reason": "x"}, headers=chief)).status == 400
    resp = await client.post("/api/posture", json={"surge": False, "reason": "over"}, headers=chief)
    assert (await resp.json())["mode"] == "normal"
    await _until(lambda: not app[SEATS].wrap_up_suspended)
    for _ in range(100):
        [alert] = await _posture_alerts(engine)
        if alert.resolved_at_us is not None:
            break
        await asyncio.sleep(0.02)
    assert alert.resolved_at_us is not None and alert.resolved_by == "chief"


async def test_a_reloaded_surge_toml_gives_the_posture_new_thresholds(running) -> None:
    client, desk, live = running
    posture = client.server.app[POSTURE]
    assert posture.rules == PostureRules()
    path = live / "surge.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("enter_waiting = 3", "enter_waiting = 7"),
                    encoding="utf-8")
    await _until(lambda: posture.rules.enter_waiting == 7)
    # A bad file keeps the running thresholds, and says why.
    path.write_text(path.read_text(encoding="utf-8").replace("calm_s = 60", "calm_s = -1"), encoding="utf-8")
    await _until(lambda: "surge" in desk.reload_errors)
    assert "calm_s must be a number" in desk.reload_errors["surge"]
    assert posture.rules.enter_waiting == 7 and posture.rules.calm_s == 60
