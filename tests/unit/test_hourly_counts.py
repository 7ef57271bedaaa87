"""The hourly rollup of the query copies: exact through re-classifications and relocations, at range edges, rebuilt."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import insert, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tables import Ticket
from core.calls.tickets import TicketService
from core.dispatch.planner import IncidentRow
from core.triage.classify import (
    DAY_US,
    HOUR_US,
    HOURLY_COUNTS,
    IncidentType,
    TriageRow,
    TriageService,
    ensure_hourly_counts,
    read_hourly_counts,
    rebuild_hourly_counts,
    upsert_query_copy,
)
from core.triage.queries import QueryIndex, hourly_series
from tests.dispatch_city import CENTER, answered_call, load, point_in, ring_cell
from tests.triage_setup import planner_for
from tests.unit.conftest import T0, FakeClock

H0 = (round(T0 * 1_000_000) // HOUR_US) * HOUR_US  # a whole UTC hour
STATIONS = [None, "east", "west", "south"]
TYPES = [None, *map(str, IncidentType)]

Key = tuple[int, str, str]  # (hour_us, station, type), "" for none, as the rollup stores them


async def _add_tickets(engine: AsyncEngine, created: list[int]) -> list[str]:
    """Ticket rows only (the query copy's foreign key wants them); their copies are left to the test."""
    numbers = [f"110-20261129-{i + 1:06d}" for i in range(len(created))]
    async with engine.begin() as conn:
        await conn.execute(insert(Ticket), [
            {"id": i + 1, "number": n, "uniqueid": f"u{i + 1}", "caller_id": "13800000000", "caller_name": None,
             "state": "answered", "queue": None, "priority": None, "seat": None, "created_at_us": c,
             "updated_at_us": c} for i, (n, c) in enumerate(zip(numbers, created, strict=True))])
    return numbers


async def _copies(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(TriageRow.created_at_us, TriageRow.station_id, TriageRow.type))).all())


async def _direct(engine: AsyncEngine) -> Counter[Key]:
    """What the rollup must hold: every query copy counted once, in its creation hour."""
    return Counter(((c // HOUR_US) * HOUR_US, s or "", t or "") for c, s, t in await _copies(engine))


async def _rollup(engine: AsyncEngine) -> Counter[Key]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(HOURLY_COUNTS))).all()
        counts = await read_hourly_counts(conn)
    assert all(n >= 0 for row in rows for n in row[3:]), "a count went below zero"
    return Counter(counts)


async def _expected_stats(engine: AsyncEngine, from_us: int, to_us: int, station: str | None = None) -> Counter[Any]:
    return Counter(
        (t or "unclassified", s, (c // HOUR_US) * HOUR_US)
        for c, s, t in await _copies(engine)
        if from_us <= c < to_us and (station is None or s == station)
    )


def _as_counter(rows: list[dict[str, Any]]) -> Counter[Any]:
    got = Counter({(r["type"], r["station"], r["hour_us"]): r["count"] for r in rows})
    assert len(got) == len(rows) and all(r["count"] > 0 for r in rows)
    return got


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counts_follow_random_classifications_and_relocations(engine: AsyncEngine, seed: int) -> None:
    rng = random.Random(seed)
    created = [H0 + rng.randrange(6 * HOUR_US) for _ in range(60)]
    created[:4] = [H0, H0 + HOUR_US - 1, H0 + HOUR_US, H0 + 3 * HOUR_US]  # hour edges
    numbers = await _add_tickets(engine, created)
    by_number = dict(zip(numbers, created, strict=True))

    def change() -> dict[str, Any]:
        kind = rng.randrange(4)
        at = {"updated_at_us": rng.randrange(10**9)}
        if kind == 0:  # received: no place, no type
            return at
        located = {"station_id": rng.choice(STATIONS), "cell": rng.choice([None, CENTER])}
        classified = {"type": rng.choice(TYPES[1:]), "priority": rng.randint(1, 4)}
        return {**at, **(located if kind == 1 else classified if kind == 2 else {**located, **classified})}

    for _ in range(25):
        # Eight writers at once, several on the same ticket: each move must still be counted once.
        batch = [rng.choice(numbers[: rng.choice((5, 60))]) for _ in range(8)]
        await asyncio.gather(*(upsert_query_copy(engine, n, by_number[n], **change())
                               for n in batch))
    direct = await _direct(engine)
    assert sum(direct.values()) == len(set(await _copies(engine))) > 0
    assert await _rollup(engine) == direct

    for _ in range(40):  # random ranges, edges anywhere
        a, b = sorted(H0 - HOUR_US + rng.randrange(8 * HOUR_US) for _ in range(2))
        station = rng.choice([None, "east", "west"])
        got = (await hourly_series(engine, a, b + 1, station=station)).groups()
        assert _as_counter(got) == await _expected_stats(engine, a, b + 1, station), (a - H0, b - H0, station)

    await rebuild_hourly_counts(engine)
    assert await _rollup(engine) == direct


@pytest.mark.parametrize("seed", [4, 5])
async def test_ranges_across_days_and_stations(engine: AsyncEngine, seed: int) -> None:
    """Days are rows of 24 hours in the rollup: ranges starting and ending anywhere, over several days."""
    rng = random.Random(seed)
    midnight = H0 // DAY_US * DAY_US
    created = [midnight - DAY_US + rng.randrange(4 * DAY_US) for _ in range(300)]
    created[:4] = [midnight - 1, midnight, midnight + DAY_US - 1, midnight + DAY_US]
    numbers = await _add_tickets(engine, created)
    for number, at in zip(numbers, created, strict=True):
        await upsert_query_copy(engine, number, at, updated_at_us=at, station_id=rng.choice(STATIONS),
                                type=rng.choice(TYPES))
    assert await _rollup(engine) == await _direct(engine)
    ranges = [(midnight - DAY_US, midnight + 3 * DAY_US), (midnight, midnight + DAY_US),
              (midnight - 1, midnight + 1), (midnight + HOUR_US, midnight + DAY_US + HOUR_US)]
    ranges += [tuple(sorted(midnight - DAY_US + rng.randrange(4 * DAY_US) for _ in range(2))) for _ in range(30)]
    for a, b in ranges:
        if a == b:
            continue
        station = rng.choice([None, "east", "west"])
        series = await hourly_series(engine, a, b, station=station)
        assert _as_counter(series.groups()) == await _expected_stats(engine, a, b, station), (a, b, station)
        assert series.total == sum((await _expected_stats(engine, a, b, station)).values())
        assert all(any(counts) for counts in series.counts.values())  # no empty series
        assert series.hours == -(-(b - a // HOUR_US * HOUR_US) // HOUR_US)


async def test_partial_hours_at_both_ends_are_counted_exactly(engine: AsyncEngine) -> None:
    minute = 60_000_000
    created = [H0, H0 + 1, H0 + 20 * minute, H0 + HOUR_US - 1, H0 + HOUR_US, H0 + HOUR_US + 20 * minute,
               H0 + 2 * HOUR_US + 10 * minute, H0 + 2 * HOUR_US + 40 * minute, H0 + 3 * HOUR_US - 1]
    numbers = await _add_tickets(engine, created)
    for i, (number, at) in enumerate(zip(numbers, created, strict=True)):
        await upsert_query_copy(engine, number, at, updated_at_us=at, station_id=STATIONS[i % 4],
                                type=TYPES[i % 3])
    ranges = [
        (H0, H0 + 3 * HOUR_US),  # whole hours only
        (H0 + 1, H0 + 3 * HOUR_US - 1),  # a microsecond in at each end
        (H0 + 20 * minute, H0 + 2 * HOUR_US + 40 * minute),  # partial, whole, partial
        (H0 + 20 * minute, H0 + 20 * minute + 1),  # one microsecond
        (H0 + 10 * minute, H0 + HOUR_US + 30 * minute),  # two partial hours, no whole one
        (H0 + HOUR_US, H0 + 2 * HOUR_US),  # exactly one hour
        (H0 - 5 * HOUR_US, H0 + 10 * HOUR_US),  # around everything
    ]
    for a, b in ranges:
        got = _as_counter((await hourly_series(engine, a, b)).groups())
        assert got == await _expected_stats(engine, a, b), ((a - H0) / minute, (b - H0) / minute)
    # A partial first hour: only the tickets from its start on, in that hour's group.
    got = (await hourly_series(engine, H0 + 20 * minute, H0 + HOUR_US)).groups()
    assert sum(r["count"] for r in got) == 2 and {r["hour_us"] for r in got} == {H0}


async def test_rebuild_at_start_when_the_counts_are_missing_and_only_then(engine: AsyncEngine) -> None:
    assert not await ensure_hourly_counts(engine)  # no tickets: nothing to do
    created = [H0 + i * 7 * 60_000_000 for i in range(30)]
    numbers = await _add_tickets(engine, created)
    async with engine.begin() as conn:  # copies written around the write path, as a restore or an upgrade leaves them
        await conn.execute(insert(TriageRow), [
            {"number": n, "created_at_us": c, "updated_at_us": c, "station_id": STATIONS[i % 4],
             "type": TYPES[i % 5], "priority": None, "cell": None}
            for i, (n, c) in enumerate(zip(numbers, created, strict=True))])
    assert await _rollup(engine) == Counter()
    assert await ensure_hourly_counts(engine)
    direct = await _direct(engine)
    assert await _rollup(engine) == direct and sum(direct.values()) == 30
    assert not await ensure_hourly_counts(engine)  # counts there: left alone

    async with engine.begin() as conn:  # a hand edit gone wrong
        await conn.execute(update(HOURLY_COUNTS).values(h03=HOURLY_COUNTS.c.h03 + 5))
    assert await rebuild_hourly_counts(engine) == len({(h // DAY_US, s, t) for h, s, t in direct})  # rows: days
    assert await _rollup(engine) == direct


async def test_backfilled_copies_are_counted(engine: AsyncEngine) -> None:
    created = [H0 + 10, H0 + 20, H0 + HOUR_US + 30]
    numbers = await _add_tickets(engine, created)
    await upsert_query_copy(engine, numbers[0], created[0], updated_at_us=1, station_id="east", type="fraud")
    async with engine.begin() as conn:
        await conn.execute(insert(IncidentRow), [{"number": numbers[1], "address": None, "lat": 31.0, "lon": 121.0,
                                                  "cell": CENTER, "station_id": "west", "located_at_us": 1}])
    assert await QueryIndex(engine).backfill() == 2
    assert await _rollup(engine) == await _direct(engine) == Counter(
        {(H0, "east", "fraud"): 1, (H0, "west", ""): 1, (H0 + HOUR_US, "", ""): 1})


async def test_classify_and_relocate_through_the_services(service: TicketService, clock: FakeClock) -> None:
    planner = planner_for(service, clock)
    await load(planner.officers)
    triage = TriageService(service, clock=clock)
    index = QueryIndex(service.engine)
    remove = service.add_listener(index.on_step)
    await index.start()
    try:
        ticket = await answered_call(service)
        await index.flush()
        hour = (ticket.created_at_us // HOUR_US) * HOUR_US
        day = (hour - 12 * HOUR_US, hour + 12 * HOUR_US)

        async def counts() -> Counter[Any]:
            await index.flush()
            assert await _rollup(service.engine) == await _direct(service.engine)
            return _as_counter((await hourly_series(service.engine, *day)).groups())

        assert await counts() == Counter({("unclassified", None, hour): 1})
        await planner.locate(ticket.number, lat=point_in(CENTER)[0], lon=point_in(CENTER)[1])
        assert await counts() == Counter({("unclassified", "east", hour): 1})
        await triage.classify(ticket.number, "fraud", 2)
        assert await counts() == Counter({("fraud", "east", hour): 1})
        await triage.classify(ticket.number, "dispute", 3)  # re-classified: moved, not added
        assert await counts() == Counter({("dispute", "east", hour): 1})
        west = point_in(ring_cell(2))
        await planner.locate(ticket.number, lat=west[0], lon=west[1])  # corrected to another station's cell
        assert await counts() == Counter({("dispute", "west", hour): 1})
        assert await triage.reindex([ticket.number]) == 1  # rewriting the same values moves nothing
        assert await counts() == Counter({("dispute", "west", hour): 1})
    finally:
        remove()
        await index.stop()


async def test_the_old_rollup_of_an_upgraded_database_is_dropped_and_rebuilt_by_day(engine: AsyncEngine) -> None:
    numbers = await _add_tickets(engine, [H0 + 10, H0 + HOUR_US + 20])
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE ticket_hourly_counts (hour_us BIGINT, type TEXT, station TEXT, "
                                "count INTEGER, PRIMARY KEY (hour_us, type, station))"))
        await conn.execute(insert(TriageRow), [{"number": n, "created_at_us": c, "updated_at_us": c}
                                               for n, c in zip(numbers, [H0 + 10, H0 + HOUR_US + 20], strict=True)])
    assert await ensure_hourly_counts(engine)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "ticket_hourly_counts" not in tables and "ticket_daily_counts" in tables
    assert await _rollup(engine) == Counter({(H0, "", ""): 1, (H0 + HOUR_US, "", ""): 1})


async def test_opposite_moves_of_one_day_do_not_deadlock(engine: AsyncEngine) -> None:
    """Two tickets of one day re-classified in opposite directions at once, many times over.

    Each move takes one count out of a row and adds one to another; on
    PostgreSQL two such moves that locked their rows in opposite orders
    deadlocked and one was aborted (found by the concurrent rollup test).
    """
    created = [H0 + i for i in range(20)]
    numbers = await _add_tickets(engine, created)
    kinds = ["fraud", "dispute"]
    for i, (number, at) in enumerate(zip(numbers, created, strict=True)):
        await upsert_query_copy(engine, number, at, updated_at_us=at, station_id="east", type=kinds[i % 2])
    for round_ in range(6):
        await asyncio.gather(*(
            upsert_query_copy(engine, number, at, updated_at_us=round_, type=kinds[(i + round_ + 1) % 2])
            for i, (number, at) in enumerate(zip(numbers, created, strict=True))))
    assert await _rollup(engine) == await _direct(engine) == Counter({(H0, "east", "fraud"): 10,
                                                                       (H0, "east", "dispute"): 10})


async def test_a_rebuild_while_tickets_move_keeps_every_count(engine: AsyncEngine) -> None:
    """A rebuild (start-up, repair) and writers at once: nobody deadlocks, nothing is counted twice or lost."""
    created = [H0 + i * 60_000_000 for i in range(30)]
    numbers = await _add_tickets(engine, created)
    kinds = ["fraud", "dispute", "traffic"]
    for i, (number, at) in enumerate(zip(numbers, created, strict=True)):
        await upsert_query_copy(engine, number, at, updated_at_us=at, station_id=STATIONS[i % 4], type=kinds[i % 3])
    for round_ in range(4):
        moves = [upsert_query_copy(engine, number, at, updated_at_us=round_, type=kinds[(i + round_ + 1) % 3],
                                   station_id=STATIONS[(i + round_) % 4])
                 for i, (number, at) in enumerate(zip(numbers, created, strict=True))]
        await asyncio.gather(*moves[:15], rebuild_hourly_counts(engine), *moves[15:])
        assert await _rollup(engine) == await _direct(engine)
