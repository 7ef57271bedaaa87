"""Routing rules: the file (good, bad with line and reason, reloads), decisions, jurisdiction, and ticket pushes."""

from __future__ import annotations

from pathlib import Path

import h3
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tickets import TicketService
from core.dispatch.officers import OfficerService
from core.dispatch.planner import Incident
from core.triage.classify import Classification, IncidentType, Priority
from core.triage.desk import default_files
from core.triage.push import TicketPusher
from core.triage.push_http import HttpPoster
from core.triage.routing import (
    Jurisdiction,
    Mode,
    RuleBook,
    RuleError,
    Target,
    assess_jurisdiction,
    distance_to_segment_m,
    load_rules,
    parse_rules,
)
from tests.dispatch_city import CENTER, LAT0, LON0, answered_call, load, ring_cell
from tests.triage_setup import RULES, PushStandIn
from tests.unit.conftest import FakeClock

GOOD = RULES.format(fraud_url="http://fraud.example/api", hotline_url="none")


def _c(kind: str) -> Classification:
    return Classification(IncidentType(kind), Priority.HIGH, "ct", 0)


def test_the_shipped_rule_file_loads() -> None:
    rules = load_rules(default_files()["routing"])
    targets = {(r.type, r.target) for r in rules.rules}
    assert (IncidentType.FRAUD, Target.ANTI_FRAUD) in targets
    assert (IncidentType.PUBLIC_SERVICE, Target.HOTLINE_12345) in targets
    assert any(r.jurisdiction == "unclear" and r.target is Target.LOCAL_STATION for r in rules.rules)


def test_good_rules_parse_in_order_with_their_lines() -> None:
    rules = parse_rules(GOOD)
    assert [(str(r.type), str(r.target), str(r.mode)) for r in rules.rules] == [
        ("fraud", "anti_fraud", "conference"), ("public_service", "hotline_12345", "transfer"),
        ("None", "local_station", "conference"),
    ]
    lines = GOOD.splitlines()
    assert [lines[r.line - 1] for r in rules.rules] == ["[[rule]]"] * 3
    assert rules.rules[1].push is None and rules.boundary_m == 150


BAD = [
    ("[[rule]]\ntype = \"fraud\"\ntarget = \"anti_fraud\"\nendpoint = \"PJSIP/x\"\ncolour = \"red\"\n", 5,
     "unknown key 'colour'"),
    ("[[rule]]\ntype = \"burglary\"\ntarget = \"anti_fraud\"\nendpoint = \"PJSIP/x\"\n", 2,
     "unknown incident type 'burglary'"),
    ("[[rule]]\ntype = \"fraud\"\ntarget = \"police\"\n", 3, "unknown target 'police'"),
    ("[[rule]]\ntype = \"fraud\"\ntarget = \"anti_fraud\"\nmode = \"fax\"\nendpoint = \"PJSIP/x\"\n", 4,
     "unknown mode 'fax'"),
    ("[[rule]]\ntype = \"fraud\"\ntarget = \"anti_fraud\"\nmode = \"transfer\"\n", 1,
     "a transfer to anti_fraud needs an endpoint"),
    ("[[rule]]\ntype = \"fraud\"\ntarget = \"anti_fraud\"\nendpoint = \"antifraud desk\"\n", 4,
     "endpoint must be a dial string"),
    ("[[rule]]\ntype = \"fraud\"\ntarget = \"anti_fraud\"\nendpoint = \"PJSIP/x\"\npush = \"ftp://x\"\n", 5,
     "push must be an http(s) URL"),
    ("[[rule]]\ntype = \"*\"\ntarget = \"local_station\"\nwhen = { station = \"x\" }\n", 4,
     "when must be"),
    ("# fraud\n[[rule]]\ntype = \"fraud\"\ntarget = \"anti_fraud\"\nendpoint = \"PJSIP/a\"\n\n"
     "[[rule]]\ntarget = \"anti_fraud\"\ntype = \"fraud\"\nendpoint = \"PJSIP/b\"\n", 9,
     "type fraud is already routed by the rule at line 2"),
    ("[[rule]]\ntarget = \"anti_fraud\"\n", 1, "rule has no type"),
    ("boundary_m = 900\n", 1, "boundary_m must be a number of metres"),
    ("timeout = 5\n[[rule]]\n", 1, "unknown key 'timeout'"),
    ("[[rule]]\ntype = \"fraud\"\ntarget = \n", 3, "not valid TOML"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD, ids=[b[2][:30] for b in BAD])
def test_bad_rules_name_the_line_and_the_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(text, "dialplan/routing.toml")
    assert caught.value.line == line, caught.value
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"dialplan/routing.toml:{line}: ")


def test_a_bad_reload_keeps_the_running_rules(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(GOOD, encoding="utf-8")
    book = RuleBook.from_file(path)
    before = book.rules
    path.write_text(GOOD.replace('mode = "transfer"', 'mode = "teleport"'), encoding="utf-8")
    with pytest.raises(RuleError, match=r"routing.toml:\d+: unknown mode 'teleport'"):
        book.reload(path)
    assert book.rules == before
    assert book.last_error is not None and "teleport" in book.last_error
    path.write_text(GOOD.replace('mode = "transfer"', 'mode = "conference"'), encoding="utf-8")
    book.reload(path)
    assert book.rules[1].mode is Mode.CONFERENCE and book.last_error is None
    path.unlink()
    with pytest.raises(RuleError, match="cannot read"):
        book.reload(path)
    assert book.rules[1].mode is Mode.CONFERENCE


async def test_decisions_follow_the_first_matching_rule(service: TicketService) -> None:
    book = RuleBook(parse_rules(GOOD))
    ticket = await answered_call(service)
    clear = Jurisdiction(False, "inside", "east")
    unclear = Jurisdiction(True, "near west", "east", "PJSIP/desk-east")
    fraud = book.route_for(ticket, _c("fraud"), None, unclear)
    assert fraud is not None and (fraud.target, fraud.mode, fraud.endpoint) == (
        Target.ANTI_FRAUD, Mode.CONFERENCE, "PJSIP/antifraud-desk")  # fraud goes to the center wherever it is
    hotline = book.route_for(ticket, _c("public_service"), None, clear)
    assert hotline is not None and (hotline.target, hotline.mode) == (Target.HOTLINE_12345, Mode.TRANSFER)
    assert book.route_for(ticket, _c("person"), None, clear) is None  # dispatch as usual
    local = book.route_for(ticket, _c("person"), None, unclear)
    assert local is not None
    assert (local.target, local.station, local.endpoint) == (Target.LOCAL_STATION, "east", "PJSIP/desk-east")
    assert "near west" in local.reason
    # No desk known for the local station: nothing the telephony side could dial.
    assert book.route_for(ticket, _c("person"), None, Jurisdiction(True, "x", None)) is None


def test_distance_to_an_edge() -> None:
    a, b = (31.0, 121.0), (31.0, 121.01)
    assert distance_to_segment_m(31.001, 121.005, a, b) == pytest.approx(111.2, abs=0.5)
    assert distance_to_segment_m(31.0, 120.999, a, b) == pytest.approx(95.3, abs=0.5)  # past the end


def _incident(cell: str, lat: float, lon: float, station: str | None) -> Incident:
    return Incident("110-20261129-000001", None, lat, lon, cell, station, 0)


def _towards(cell: str, other: str, share: float) -> tuple[float, float]:
    """A point on the line from ``cell``'s centre to ``other``'s, ``share`` of the way."""
    (a_lat, a_lon), (b_lat, b_lon) = h3.cell_to_latlng(cell), h3.cell_to_latlng(other)
    return a_lat + (b_lat - a_lat) * share, a_lon + (b_lon - a_lon) * share


async def test_jurisdiction_clear_inside_unclear_on_a_boundary_or_without_station(
    service: TicketService, clock: FakeClock
) -> None:
    officers = OfficerService(service.engine, clock)
    await load(officers)
    # The centre cell and ring 1 are east's, ring 2 west's: the centre is well inside.
    inside = await assess_jurisdiction(officers, _incident(CENTER, LAT0, LON0, "east"), 150)
    assert inside.unclear is False and inside.local_station == "east"
    # A ring-1 cell next to a ring-2 cell: near their shared edge it is unclear, at the centre it is not.
    east_cell = ring_cell(1)
    west_cell = next(c for c in h3.grid_ring(east_cell, 1) if h3.grid_distance(CENTER, c) == 2)
    near = _towards(east_cell, west_cell, 0.45)
    edge = await assess_jurisdiction(officers, _incident(east_cell, *near, "east"), 150)
    assert edge.unclear is True and "boundary with station west" in edge.reason
    assert (edge.local_station, edge.local_desk) == ("east", "PJSIP/desk-east")
    middle = await assess_jurisdiction(officers, _incident(east_cell, *h3.cell_to_latlng(east_cell), "east"), 150)
    assert middle.unclear is False
    # Outside every station's cells: unclear, and the nearest station takes it first.
    outside = ring_cell(4)
    nobody = await assess_jurisdiction(officers, _incident(outside, *h3.cell_to_latlng(outside), None), 150)
    assert nobody.unclear is True and nobody.local_station == "south"
    assert nobody.local_desk == "PJSIP/desk-south"
    assert (await assess_jurisdiction(officers, None)).unclear is True


async def test_pushes_retry_until_taken_and_give_up_on_a_refusal(engine: AsyncEngine, clock: FakeClock) -> None:
    stand_in = PushStandIn()
    async with stand_in.running():
        poster = HttpPoster(timeout_s=5)
        pusher = TicketPusher(engine, poster, clock=clock, backoff_s=1.0)
        try:
            stand_in.answers = [503, 429]
            first = await pusher.enqueue("110-20261129-000001", "anti_fraud", f"{stand_in.url}/fraud", {"a": 1})
            assert await pusher.deliver_due() == 1
            assert await pusher.deliver_due() == 0  # waiting out the pause
            clock.now += 1.5
            await pusher.deliver_due()
            clock.now += 2.5
            await pusher.deliver_due()
            [view] = await pusher.for_ticket("110-20261129-000001")
            assert (view.id, view.state, view.attempts) == (first, "sent", 3)
            keys = {h["Idempotency-Key"] for _, _, h in stand_in.received}
            assert len(keys) == 1  # every attempt the same key: the receiver drops repeats
            stand_in.answers = [422]
            await pusher.enqueue("110-20261129-000002", "hotline_12345", f"{stand_in.url}/12345", {"b": 2})
            await pusher.deliver_due()
            [refused] = await pusher.for_ticket("110-20261129-000002")
            assert refused.state == "failed" and "HTTP 422" in (refused.last_error or "")
        finally:
            await poster.close()
    # Nobody listening: retried, not lost.
    poster = HttpPoster(timeout_s=2)
    pusher = TicketPusher(engine, poster, clock=clock)
    try:
        await pusher.enqueue("110-20261129-000003", "anti_fraud", "http://127.0.0.1:9/none", {"c": 3})
        await pusher.deliver_due()
        [waiting] = await pusher.for_ticket("110-20261129-000003")
        assert waiting.state == "pending" and waiting.attempts == 1
    finally:
        await poster.close()
