"""Guidance on scene: the file and its checks, its reload beside the other rule files, and the incident card
(GET /api/tickets/{number}/briefing) for the desk, the officers sent and the ticket's station."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.config import RULE_FILES
from core.triage import desk as desk_module
from core.triage.classify import IncidentType
from core.triage.desk import TriageDesk
from core.triage.guidance import (
    LINE_MAX,
    LINES_MAX,
    GuidanceError,
    load_guidance,
    parse_guidance,
)
from core.triage.keywords import HISTORY_MAX
from core.web.app import make_app
from telephony import rules_admin
from tests.dispatch_city import CENTER, answered_call, load, officer, point_in
from tests.triage_setup import desk_client, make_desk, planner_for, polling_desk
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "dialplan" / "guidance.toml"


def _minimal() -> str:
    """A valid file: one line of each required list for every type."""
    return "".join(f'[{t}]\nsecure = ["s {t}"]\nask = ["a {t}"]\nlegal = ["l {t}"]\n\n' for t in IncidentType)


def _line(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


# -- the file ----------------------------------------------------------------------------------------------


def test_the_shipped_file_covers_every_type_with_what_to_secure_ask_and_the_law() -> None:
    guidance = load_guidance(SHIPPED)
    assert set(guidance.types) == set(IncidentType)
    for advice in guidance.types.values():
        assert advice.secure and advice.ask and advice.legal, advice.type
    assert any("《中华人民共和国反电信网络诈骗法》" in line for line in guidance.for_type("fraud").legal)
    assert any("《中华人民共和国道路交通安全法》" in line for line in guidance.for_type("traffic").legal)
    assert any("《中华人民共和国治安管理处罚法》" in line for line in guidance.for_type("dispute").legal)
    assert any("《中华人民共和国刑事诉讼法》" in line for line in guidance.for_type("person").legal)
    assert guidance.for_type(None).type is IncidentType.OTHER  # not classified yet
    files = {name: (REPO / "dialplan" / name).read_bytes() for name in RULE_FILES}
    assert "guidance.toml" in RULE_FILES and rules_admin.check(files) == []


def test_a_minimal_file_loads_and_danger_is_optional() -> None:
    text = _minimal().replace('[fraud]\n', '[fraud]\ndanger = ["  对方可能仍在通话  "]\n')
    guidance = parse_guidance(text)
    assert guidance.for_type("fraud").danger == ("对方可能仍在通话",)  # trimmed
    assert guidance.for_type("person").danger == ()
    assert guidance.for_type("fraud").to_json()["label"] == "电信网络诈骗"


@pytest.mark.parametrize(
    ("change", "at", "reason"),
    [
        (lambda t: t + '[burglary]\nsecure = ["x"]\n', "[burglary]", "[burglary]: unknown incident type"),
        (lambda t: t.replace('[fraud]\n', '[fraud]\nnotes = ["x"]\n'), "notes =", "[fraud] notes: unknown key"),
        (lambda t: t.replace('legal = ["l fraud"]\n', ''), "[fraud]", "[fraud] legal: missing"),
        (lambda t: t.replace('["a fraud"]', '[]'), 'ask = []', "[fraud] ask: must be a list of 1-12 lines"),
        (lambda t: t.replace('["a fraud"]', "[" + ", ".join(['"x"'] * (LINES_MAX + 1)) + "]"), 'ask = ["x"',
         f"[fraud] ask: must be a list of 1-{LINES_MAX} lines"),
        (lambda t: t.replace('["a fraud"]', '"a fraud"'), 'ask = "a fraud"', "[fraud] ask: must be a list"),
        (lambda t: t.replace('["a fraud"]', '["a", "  "]'), 'ask = ["a", "  "]',
         "[fraud] ask: line 2 must be a non-empty string"),
        (lambda t: t.replace('["a fraud"]', '["a", 3]'), 'ask = ["a", 3]',
         "[fraud] ask: line 2 must be a non-empty string"),
        (lambda t: t.replace('["l traffic"]', f'["{"法" * (LINE_MAX + 1)}"]'), 'legal = ["法',
         f"[traffic] legal: line 1 is {LINE_MAX + 1} characters long (at most {LINE_MAX})"),
        (lambda t: t.replace('[prank]\nsecure = ["s prank"]\nask = ["a prank"]\nlegal = ["l prank"]\n', ''), None,
         "no guidance for the incident types prank"),
        (lambda t: 'fraud = 1\n' + t.replace('[fraud]\n', '[fraud_x]\n'), None, "'fraud' must be a table"),
        (lambda t: t.replace('["a fraud"]', '["a fraud"'), None, "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_with_the_file_the_line_and_the_key(change, at: str | None, reason: str) -> None:
    text = change(_minimal())
    with pytest.raises(GuidanceError) as caught:
        parse_guidance(text, "dialplan/guidance.toml")
    error = caught.value
    assert reason in error.reason, error.reason
    assert str(error).startswith(f"dialplan/guidance.toml:{error.line}: ")
    if at is not None:
        assert error.line == _line(text, at)


def test_an_unreadable_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "guidance.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(GuidanceError, match="guidance.toml:1: cannot read the file"):
        load_guidance(tmp_path / "guidance.toml")


def test_rules_check_finds_a_broken_or_missing_guidance_file() -> None:
    files = {name: (REPO / "dialplan" / name).read_bytes() for name in RULE_FILES}
    broken = {**files, "guidance.toml": files["guidance.toml"].replace(b"[silent]", b"[silence]")}
    [error] = rules_admin.check(broken)
    assert error.startswith("guidance.toml:") and "[silence]: unknown incident type" in error
    assert rules_admin.check({n: d for n, d in files.items() if n != "guidance.toml"}) == ["guidance.toml: missing"]
    assert rules_admin.NAMES["guidance.toml"] == "guidance"  # how /healthz names it to apply


# -- the running desk --------------------------------------------------------------------------------------


@pytest.fixture
async def running(service: TicketService, clock: FakeClock, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TriageDesk, Path]]:
    """A backend's triage desk polling the rule files of ``live``."""
    monkeypatch.setattr(desk_module, "RULES_POLL_S", 0.05)
    live = tmp_path / "live"
    desk, planner = polling_desk(service, clock, live)
    async with TestServer(make_app(service, health={"triage": desk.health}, dispatch=planner, triage=desk)):
        yield desk, live


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_the_desk_reloads_a_changed_guidance_file(running) -> None:
    desk, live = running
    path = live / "guidance.toml"
    assert desk.health()["rule_files"]["guidance"]["sha256"] == desk_module._digest(path)
    path.write_text(path.read_text(encoding="utf-8").replace("先救人", "首先救人"), encoding="utf-8")
    await _until(lambda: desk.loaded["guidance"] == desk_module._digest(path))
    assert desk.reload_errors == {} and desk.health()["ok"]
    assert desk.guidance.for_type("traffic").secure[0].startswith("首先救人")


async def test_a_bad_guidance_file_keeps_the_running_version_and_shows_in_healthz(running) -> None:
    desk, live = running
    before = desk.guidance
    (live / "guidance.toml").write_text('[fraud]\nsecure = []\nask = ["a"]\nlegal = ["l"]\n', encoding="utf-8")
    await _until(lambda: "guidance" in desk.reload_errors)
    assert desk.guidance is before  # the running version stays
    health = desk.health()
    assert not health["ok"] and "guidance:" in health["reason"]
    assert "[fraud] secure: must be a list" in health["rule_files"]["guidance"]["error"]
    assert health["rule_files"]["routing"]["error"] is None


# -- the card ----------------------------------------------------------------------------------------------


async def test_the_card_by_role_the_sent_officer_others_refused(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    desk = make_desk(service, planner, clock)
    lat, lon = point_in(CENTER)
    earlier = await answered_call(service, "0.1")  # the same caller, the same address
    await planner.locate(earlier.number, lat=lat, lon=lon, address="人民大道200号")
    await desk.triage.classify(earlier.number, "dispute", 3)
    ticket = await answered_call(service, "1.1")
    await planner.locate(ticket.number, lat=lat, lon=lon, address="人民大道200号")
    await desk.triage.classify(ticket.number, "fraud", 2)
    await desk.add_note(ticket.number, "对方冒充客服，还说要绑架我儿子")
    assert await desk.repeat.check(ticket.number) == earlier.number  # the earlier one is still open
    await desk.repeat.add_prank("13800000000", reason="骚扰", by="sup")
    await desk.warnings.add("place", "恶犬", by="sup", address="人民大道200号")
    await service.record_step(ticket.uniqueid, Step.DISPATCH_REQUESTED, at=T0 + 5, source="api")
    await service.record_step(ticket.uniqueid, Step.OFFICER_JOINED, at=T0 + 9, source="ami", badge="007",
                              kind="officer")
    async with desk_client(service, planner, desk) as client:
        url = f"/api/tickets/{ticket.number}/briefing"
        sent = await login_headers(service.engine, Role.OFFICER, username="007")
        other = await login_headers(service.engine, Role.OFFICER, username="008")
        east = await login_headers(service.engine, Role.STATION, station="east")
        west = await login_headers(service.engine, Role.STATION, station="west")
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        supervisor = await login_headers(service.engine, Role.SUPERVISOR)

        resp = await client.get(url, headers=sent)
        card = await resp.json()
        assert resp.status == 200, card
        assert card["number"] == ticket.number and card["officers"] == ["007"]
        assert card["incident_type"] == {"type": "fraud", "label": "电信网络诈骗", "classified": True}
        assert card["priority"] == {"value": 2, "label": "较急"}
        assert card["location"]["address"] == "人民大道200号" and card["station"] == "east"
        assert card["keywords"] == ["绑架"]
        assert card["guidance"] == load_guidance(SHIPPED).for_type("fraud").to_json()
        background = card["background"]
        assert background["same_place"]["count"] == 1 and background["same_caller"]["count"] == 1
        [here] = background["same_place"]["last"]
        assert {k: here[k] for k in ("number", "type", "label")} == {
            "number": earlier.number, "type": "dispute", "label": "纠纷"}
        assert here["at"].endswith("Z")
        assert [t["number"] for t in background["same_caller"]["last"]] == [earlier.number]
        assert background["danger_warnings"] == [{"kind": "place", "text": "恶犬"}]
        assert background["repeat_of"] == earlier.number and background["prank"] is True

        for headers in (taker, supervisor, east):
            resp = await client.get(url, headers=headers)
            assert resp.status == 200, await resp.text()
        resp = await client.get(url, headers=other)
        assert resp.status == 403 and (await resp.json())["error_id"] == "not-your-ticket"
        assert (await client.get("/api/tickets/110-20261129-999999/briefing", headers=other)).status == 404
        assert (await client.get(url, headers=west)).status == 404  # another station's ticket


async def test_an_unclassified_ticket_gets_the_guidance_for_other(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    ticket = await answered_call(service)
    card = await desk.briefing(ticket.number)
    assert card["incident_type"] == {"type": "other", "label": "其他", "classified": False}
    assert card["priority"] is None and card["location"] is None
    assert card["guidance"]["type"] == "other" and card["guidance"]["secure"]
    assert card["background"]["same_place"] == {"count": 0, "last": []}
    assert card["background"]["repeat_of"] is None and card["background"]["prank"] is False


async def test_the_counts_cover_more_history_than_the_card_names(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    lat, lon = point_in(CENTER)
    for n in range(HISTORY_MAX + 2):
        earlier = await answered_call(service, f"0.{n}")
        await planner.locate(earlier.number, lat=lat, lon=lon, address="人民大道200号")
    ticket = await answered_call(service)
    await planner.locate(ticket.number, lat=lat, lon=lon, address="人民大道200号")
    card = await desk.briefing(ticket.number)
    for kind in ("same_place", "same_caller"):
        assert card["background"][kind]["count"] == HISTORY_MAX + 2
        assert len(card["background"][kind]["last"]) == 5
