"""The desk's logic: keyword spans and suggestions, and the hub that pops a call on its seat holder's desk only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.calls.lifecycle import Step
from core.calls.tickets import TicketService, TicketView
from core.desk.hub import DeskHub
from core.desk.suggest import highlights, suggest
from core.seats.board import SeatBoard
from core.triage.keywords import load_keywords

KEYWORDS = load_keywords(Path(__file__).resolve().parents[2] / "dialplan" / "keywords.toml")
T0 = 1_795_000_000.0


def test_spans_are_what_match_finds_with_their_lists() -> None:
    text = "有人持刀抢劫, he was kidnapped near a BOMB"
    spans = KEYWORDS.spans(text)
    assert [w for _, _, w, _ in spans] == KEYWORDS.match(text) == ["持刀", "抢劫", "kidnapped", "bomb"]
    assert [(text[a:b], listed) for a, b, _, listed in spans] == [
        ("持刀", "violent"), ("抢劫", "violent"), ("kidnapped", "violent"), ("BOMB", "explosive_fire")]


def test_highlight_offsets_count_utf16_units_as_browsers_do() -> None:
    text = "😀有人抢劫"  # the emoji is two UTF-16 units, one Python character
    [hit] = highlights(KEYWORDS, text)
    assert (hit["start"], hit["end"], hit["word"]) == (4, 6, "抢劫")


@pytest.mark.parametrize(
    ("text", "kind", "priority"),
    [
        ("对方让我转账到安全账户", "fraud", 2),
        ("路口两车追尾了", "traffic", 2),
        ("我的电动车被盗", "property", 3),
        ("楼上噪音太大", "public_service", 4),
        ("被骗了，对方还持刀威胁", "person", 1),  # a major-incident keyword outranks every cue
        ("a car crash, then a fight", "traffic", 2),  # the first cue in the text wins
    ],
)
def test_suggestions(text: str, kind: str, priority: int) -> None:
    s = suggest(KEYWORDS, text)
    assert s is not None and (str(s.type), int(s.priority)) == (kind, priority)


def test_no_cue_no_suggestion() -> None:
    assert suggest(KEYWORDS, "你好，请问") is None
    assert suggest(KEYWORDS, "") is None
    assert suggest(KEYWORDS, "fighters") is None  # English cues are whole words


async def _drain(sub) -> list[dict]:
    await asyncio.sleep(0.05)
    out = []
    while not sub._queue.empty():
        out.append(sub._queue.get_nowait())
    return out


async def test_a_call_pops_on_its_seat_holders_desk_only(service: TicketService) -> None:
    board = SeatBoard(service.engine, wrap_up_s=0)
    rendered: list[str] = []

    async def render(ticket: TicketView) -> dict:
        rendered.append(ticket.number)
        return {"number": ticket.number, "state": str(ticket.state)}

    hub = DeskHub(board, service, render)
    board.add_listener(hub.on_seat)
    service.add_listener(board.on_step)
    service.add_listener(hub.on_step)
    li, wang = hub.subscribe("li"), hub.subscribe("wang")
    await board.login("seat-01", "li")
    await board.login("seat-02", "wang")
    ticket = await service.open_call(uniqueid="1.1", caller_id="13800000000", at=T0, source="ami")
    await service.record_step("1.1", Step.QUEUED, at=T0 + 1, source="ami")
    await service.record_step("1.1", Step.SEAT_RINGING, at=T0 + 2, source="ami", seat="seat-01")
    await service.record_step("1.1", Step.ANSWERED, at=T0 + 3, source="ami", seat="seat-01")
    await service.record_step("1.1", Step.HUNG_UP, at=T0 + 9, source="ami")
    mine, theirs = await _drain(li), await _drain(wang)
    pops = [(m["event"], m["ticket"]["state"]) for m in mine if m["type"] == "pop"]
    assert pops == [("ringing", "ringing"), ("answered", "answered")]
    assert [m["ticket"]["state"] for m in mine if m["type"] == "ticket"] == ["ended"]  # then the steps it watches
    assert [m["type"] for m in theirs] == ["seat"]  # wang saw only his own log-in
    final = await service.get(ticket.number)
    assert hub.owns("li", final) and not hub.owns("wang", final)
    assert hub.seat_of("li").seat == "seat-01" and hub.seat_of("nobody") is None
    # After log-out the seat is nobody's: the call is no longer li's to act on.
    await board.logout("seat-01")
    assert hub.holder_of("seat-01") is None and not hub.owns("li", final)
    await hub.stop()
    await board.stop()


async def test_a_desk_that_does_not_read_is_closed_not_shown_a_gap(service: TicketService) -> None:
    board = SeatBoard(service.engine)

    async def render(ticket: TicketView) -> dict:
        return {}

    hub = DeskHub(board, service, render)
    sub = hub.subscribe("li")
    for i in range(300):
        sub.offer({"type": "seat", "n": i})
    assert sub.closed == "too far behind"
    assert await sub.next() is None
    await hub.stop()
