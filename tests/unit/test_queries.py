"""Incident queries on generated tickets: every filter, cursor and offset paging, the stats, and the API's checks."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.tables import Ticket
from core.calls.tickets import TicketService, iso_utc
from core.dispatch.planner import IncidentRow
from core.triage.classify import IncidentType, TriageRow, rebuild_hourly_counts
from core.triage.queries import (
    HOUR_US,
    BadCursor,
    TicketQuery,
    ensure_indexes,
    hourly_series,
    search,
)
from tests.triage_setup import desk_client, make_desk, planner_for, repaired
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers

STATIONS = ["east", "west", "south"]
CELLS = ["8831aa5079fffff", "8831aa5071fffff", "8831aa5077fffff", "8831aa5073fffff"]
STATES = ["closed", "closed", "answered", "abandoned", "en_route"]
T0_US = round(T0 * 1_000_000)
N = 400


async def _generate(engine: AsyncEngine) -> list[dict[str, Any]]:
    """N tickets over ~40 hours; most located, most classified; several share a creation time."""
    rng = random.Random(4)
    rows = []
    for i in range(N):
        created = T0_US + (i // 2) * 360 * 1_000_000  # pairs share a time: the cursor must break the tie
        rows.append({
            "id": i + 1, "number": f"110-20261129-{i + 1:06d}", "created": created, "state": rng.choice(STATES),
            "station": rng.choice(STATIONS) if i % 7 else None, "cell": rng.choice(CELLS),
            "type": str(rng.choice(list(IncidentType))) if i % 5 else None, "priority": rng.randint(1, 4),
        })
    async with engine.begin() as conn:
        await conn.execute(insert(Ticket), [
            {"id": r["id"], "number": r["number"], "uniqueid": f"u{r['id']}", "caller_id": "13800000000",
             "caller_name": None, "state": r["state"], "queue": None, "priority": None, "seat": None,
             "created_at_us": r["created"], "updated_at_us": r["created"]} for r in rows])
        await conn.execute(insert(IncidentRow), [
            {"number": r["number"], "address": None, "lat": 31.0, "lon": 121.0, "cell": r["cell"],
             "station_id": r["station"], "located_at_us": r["created"]} for r in rows if r["station"]])
        await conn.execute(insert(TriageRow), [
            {"number": r["number"], "type": r["type"], "priority": r["priority"] if r["type"] else None,
             "station_id": r["station"], "cell": r["cell"] if r["station"] else None, "created_at_us": r["created"],
             "updated_at_us": r["created"]} for r in rows])
    await ensure_indexes(engine)  # idempotent
    await rebuild_hourly_counts(engine)  # the rows went in around the write path, as a bulk load's do
    return rows


def _expected(rows: list[dict[str, Any]], **f: Any) -> list[str]:
    def keep(r: dict[str, Any]) -> bool:
        if f.get("from_us") is not None and r["created"] < f["from_us"]:
            return False
        if f.get("to_us") is not None and r["created"] >= f["to_us"]:
            return False
        if f.get("station") is not None and r["station"] != f["station"]:
            return False
        if f.get("cell") is not None and (r["station"] is None or r["cell"] != f["cell"]):
            return False
        if f.get("type") == "unclassified" and r["type"] is not None:
            return False
        if f.get("type") not in (None, "unclassified") and r["type"] != f["type"]:
            return False
        if f.get("priority") is not None and (r["type"] is None or r["priority"] != f["priority"]):
            return False
        return not f.get("states") or r["state"] in f["states"]

    chosen = sorted((r for r in rows if keep(r)), key=lambda r: (r["created"], r["number"]), reverse=True)
    return [r["number"] for r in chosen]


FILTERS = [
    {},
    {"from_us": T0_US + 10 * HOUR_US, "to_us": T0_US + 20 * HOUR_US},
    {"station": "west"},
    {"cell": CELLS[1]},
    {"station": "east", "cell": CELLS[0]},
    {"type": "fraud"},
    {"type": "unclassified"},
    {"priority": 1},
    {"type": "person", "priority": 2},
    {"states": ("answered", "en_route")},
    {"from_us": T0_US + 5 * HOUR_US, "station": "south", "type": "traffic", "priority": 3, "states": ("closed",)},
]


@pytest.mark.parametrize("filters", FILTERS[::3], ids=[",".join(f) or "none" for f in FILTERS[::3]])
async def test_oldest_first_pages_the_same_list_backwards(engine: AsyncEngine, filters: dict[str, Any]) -> None:
    rows = await _generate(engine)
    expected = _expected(rows, **filters)[::-1]
    got: list[str] = []
    cursor = None
    for _ in range(N):
        page = await search(engine, TicketQuery(**filters, limit=9, cursor=cursor, oldest=True))
        got += [t["number"] for t in page["tickets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        newest_first = await search(engine, TicketQuery(**filters, limit=9))
        with pytest.raises(BadCursor):  # a cursor of one order is refused by the other
            await search(engine, TicketQuery(**filters, limit=9, cursor=newest_first["next_cursor"], oldest=True))
        with pytest.raises(BadCursor):
            await search(engine, TicketQuery(**filters, limit=9, cursor=cursor))
    assert got == expected and expected


@pytest.mark.parametrize("filters", FILTERS, ids=[",".join(f) or "none" for f in FILTERS])
async def test_every_filter_with_cursor_paging(engine: AsyncEngine, filters: dict[str, Any]) -> None:
    rows = await _generate(engine)
    expected = _expected(rows, **filters)
    got: list[str] = []
    cursor = None
    for _ in range(N):
        page = await search(engine, TicketQuery(**filters, limit=7, cursor=cursor))
        got += [t["number"] for t in page["tickets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert got == expected
    assert expected, "the filter should find something in the generated data"


async def test_offset_pages_agree_with_the_cursor(engine: AsyncEngine) -> None:
    rows = await _generate(engine)
    expected = _expected(rows, station="east")
    pages = [await search(engine, TicketQuery(station="east", limit=10, page=p)) for p in (1, 2, 3)]
    assert [t["number"] for p in pages for t in p["tickets"]] == expected[:30]
    first = pages[0]["tickets"][0]
    assert {k: first[k] for k in ("station", "created_at_us")} == {"station": "east", "created_at_us": rows[
        [r["number"] for r in rows].index(first["number"])]["created"]}


async def test_stats_hourly_series(engine: AsyncEngine) -> None:
    rows = await _generate(engine)
    start, end = T0_US + 3 * HOUR_US, T0_US + 30 * HOUR_US
    expected = Counter(
        (r["type"] or "unclassified", r["station"], (r["created"] // HOUR_US) * HOUR_US)
        for r in rows if start <= r["created"] < end
    )
    got = (await hourly_series(engine, start, end)).groups()
    assert Counter({(c["type"], c["station"], c["hour_us"]): c["count"] for c in got}) == expected
    east = (await hourly_series(engine, start, end, station="east")).groups()
    assert sum(c["count"] for c in east) == sum(n for (t, s, h), n in expected.items() if s == "east")


async def test_the_api_filters_validates_and_keeps_stations_to_their_own(
    service: TicketService, clock: FakeClock
) -> None:
    rows = await _generate(service.engine)
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    async with desk_client(service, planner, desk) as client:
        supervisor = await login_headers(service.engine, Role.SUPERVISOR)
        west = await login_headers(service.engine, Role.STATION, station="west")
        params = {"type": "fraud", "from": "2026-11-29T19:30:00+08:00", "limit": "5"}
        body = await (await client.get("/api/tickets", params=params, headers=supervisor)).json()
        assert [t["number"] for t in body["tickets"]] == _expected(rows, type="fraud", from_us=T0_US)[:5]
        following = await (await client.get("/api/tickets", params={**params, "cursor": body["next_cursor"]},
                                             headers=supervisor)).json()
        assert [t["number"] for t in following["tickets"]] == _expected(rows, type="fraud", from_us=T0_US)[5:10]
        mine = await (await client.get("/api/tickets", params={"station": "east", "limit": "1000"},
                                       headers=west)).json()
        assert {t["station"] for t in mine["tickets"]} == {"west"}  # asked for east, got its own
        for bad in ({"from": "yesterday"}, {"from": "2026-11-29T10:00:00"}, {"to": "1", "from": "2"},
                    {"type": "burglary"}, {"priority": "0"}, {"status": "open"}, {"cell": "nope"},
                    {"page": "0"}, {"cursor": "!!"}, {"cursor": "abc", "page": "2"}, {"sort": "asc", "type": "fraud"},
                    {"limit": "5000", "station": "east"}, {"order": "asc"}):
            resp = await client.get("/api/tickets", params=bad, headers=supervisor)
            assert resp.status == 400, (bad, await resp.text())
        stats = await (await client.get("/api/stats", params={"from": str(T0), "to": str(T0 + 7200)},
                                        headers=supervisor)).json()
        inside = [r for r in rows if T0_US <= r["created"] < T0_US + 2 * HOUR_US]
        assert stats["total"] == len(inside) == sum(sum(s["counts"]) for s in stats["series"])
        assert len(stats["hours"]) == 3 and all(len(s["counts"]) == 3 for s in stats["series"])  # 11:30 to 13:30
        assert {(s["type"], s["station"], stats["hours"][i]): n for s in stats["series"]
                for i, n in enumerate(s["counts"]) if n} == {
            (t, s, iso_utc(h)): n for (t, s, h), n in Counter(
                (r["type"] or "unclassified", r["station"], r["created"] // HOUR_US * HOUR_US) for r in inside).items()}
        own = await (await client.get("/api/stats", params={"from": str(T0), "to": str(T0 + 7200)},
                                      headers=west)).json()
        assert own["station"] == "west" and {s["station"] for s in own["series"]} <= {"west"}
        assert (await client.get("/api/stats", params={"from": str(T0), "to": str(T0 + 200 * 86400)},
                                 headers=supervisor)).status == 400
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        assert (await client.get("/api/stats", headers=taker)).status == 403


async def test_the_query_copy_follows_new_tickets_and_fills_in_missing_ones(
    service: TicketService, clock: FakeClock
) -> None:
    from core.triage.queries import QueryIndex
    from tests.dispatch_city import CENTER, answered_call, load, point_in

    planner = planner_for(service, clock)
    await load(planner.officers)
    index = QueryIndex(service.engine)
    remove = service.add_listener(index.on_step)
    await index.start()
    try:
        ticket = await answered_call(service)
        await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
        await index.flush()
        page = await search(service.engine, TicketQuery(station="east"))
        assert [(t["number"], t["cell"], t["type"]) for t in page["tickets"]] == [(ticket.number, CENTER, None)]
    finally:
        remove()
        await index.stop()
    # A ticket whose copy was never written (a crash, an upgrade) is added at the next start.
    unindexed = await answered_call(service, "2.2")
    await planner.locate(unindexed.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
    assert await QueryIndex(service.engine).backfill() == 1
    page = await search(service.engine, TicketQuery(station="east"))
    assert [t["number"] for t in page["tickets"]] == [unindexed.number, ticket.number]


async def test_a_full_queue_leaves_work_out_says_so_and_redoes_it_from_the_store(
    service: TicketService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.triage import queries
    from core.triage.queries import QueryIndex
    from tests.dispatch_city import CENTER, answered_call, load, point_in

    monkeypatch.setattr(queries, "WORK_MAX", 2)
    planner = planner_for(service, clock)
    await load(planner.officers)
    located = []
    for i in range(5):  # written while nobody listened: their copies wait for the index
        ticket = await answered_call(service, f"7.{i}")
        view, _ = await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
        located.append((view, next(s for s in view.steps if s.step == "located")))
    index = QueryIndex(service.engine)
    await index.start()  # the start's own backfill gives each a copy, without its place
    try:
        for view, step in located:  # five at once, before the worker runs: two fit, three are left out
            index.on_step(view, step)
        assert index.overflow.dropped == 3
        health = index.health()
        assert health["ok"] is False and "query copies" in health["reason"] and health["waiting"] == 2
        await repaired(index.overflow)
        assert index.health()["ok"] is True and index.overflow.repairs == 1
        page = await search(service.engine, TicketQuery(station="east"))
        assert sorted(t["number"] for t in page["tickets"]) == sorted(v.number for v, _ in located)
    finally:
        await index.stop()


async def test_csv_export_has_every_matching_ticket_and_no_formula(
    service: TicketService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv as csv_module
    import io

    from sqlalchemy import update

    from core.triage import views as triage_views

    monkeypatch.setattr(triage_views, "EXPORT_PAGE", 7)  # many pages, cursor to cursor
    rows = await _generate(service.engine)
    async with service.engine.begin() as conn:  # a hostile caller id must not become a spreadsheet formula
        await conn.execute(update(Ticket).where(Ticket.id == N).values(caller_id="=HYPERLINK(\"http://x\")"))
    planner = planner_for(service, clock)
    desk = make_desk(service, planner, clock)
    async with desk_client(service, planner, desk) as client:
        supervisor = await login_headers(service.engine, Role.SUPERVISOR)
        resp = await client.get("/api/tickets.csv", headers=supervisor)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
        text = (await resp.read()).decode("utf-8")
        assert text.startswith("\ufeff")
        table = list(csv_module.reader(io.StringIO(text[1:])))
        assert table[0] == list(triage_views._CSV_COLUMNS)
        assert [r[0] for r in table[1:]] == _expected(rows)  # all 400, in order, none twice
        hostile = next(r for r in table[1:] if r[0] == f"110-20261129-{N:06d}")
        assert hostile[-1] == "'=HYPERLINK(\"http://x\")"
        west = await login_headers(service.engine, Role.STATION, station="west")
        mine = list(csv_module.reader(io.StringIO((await (await client.get(
            "/api/tickets.csv", params={"station": "east", "type": "fraud"}, headers=west)).read()).decode()[1:])))
        assert [r[0] for r in mine[1:]] == _expected(rows, station="west", type="fraud")
        assert (await client.get("/api/tickets.csv", params={"page": "2"}, headers=supervisor)).status == 400
        assert (await client.get("/api/tickets.csv", params={"limit": "5"}, headers=supervisor)).status == 400
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        assert (await client.get("/api/tickets.csv", headers=taker)).status == 403
