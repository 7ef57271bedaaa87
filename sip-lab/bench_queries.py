"""Incident queries over a million tickets on SQLite: p50/p95 per query type, printed as a table.

Generates a month of a large center's tickets (1,000,000 by default, ~32,000
a day) with their incident locations, classifications and query copies
(``ticket_triage``, one row per ticket, and its hourly rollup
``ticket_daily_counts``, filled by ``rebuild_hourly_counts``) into a temporary
SQLite file created by the backend's own schema code, then times the
queries ``GET /api/tickets`` and ``GET /api/stats`` run (``core.triage.queries``, and for stats the JSON encoding)
through the same async engine the backend uses.

Generation is fast because it bypasses the ticket service: the secondary
indexes are dropped, rows go in with ``executemany`` in one transaction,
and the indexes are rebuilt afterwards (what a restore would do). No
``ANALYZE`` is run unless ``--analyze``: a live database seldom has one.

    python sip-lab/bench_queries.py [--tickets 1000000] [--repeats 30] [--keep PATH] [--analyze]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.http.replies import dumps  # noqa: E402
from core.store import make_engine  # noqa: E402
from core.tables import init_schema  # noqa: E402
from core.triage.classify import IncidentType, rebuild_hourly_counts  # noqa: E402
from core.triage.queries import HOUR_US, TicketQuery, hourly_series, search  # noqa: E402

DAY_US = 24 * HOUR_US
START_US = 1_793_491_200 * 1_000_000  # 2026-11-01 00:00 UTC
STATIONS = [f"S{i:02d}" for i in range(1, 21)]
CELLS_PER_STATION = 30
# Rough shares of a city 110 center's calls.
TYPE_WEIGHTS = {
    IncidentType.DISPUTE: 22, IncidentType.TRAFFIC: 15, IncidentType.PROPERTY: 12, IncidentType.PUBLIC_SERVICE: 14,
    IncidentType.SILENT: 10, IncidentType.FRAUD: 6, IncidentType.PERSON: 5, IncidentType.FIRE_MEDICAL: 4,
    IncidentType.PRANK: 5, IncidentType.OTHER: 7,
}
STATE_WEIGHTS = {"closed": 90, "cleared": 3, "en_route": 2, "abandoned": 3, "answered": 1, "ended": 1}


def _cells() -> dict[str, list[str]]:
    import h3

    centre = h3.latlng_to_cell(31.2304, 121.4737, 8)
    disk = sorted(h3.grid_disk(centre, 20))
    return {s: disk[i * CELLS_PER_STATION:(i + 1) * CELLS_PER_STATION] for i, s in enumerate(STATIONS)}


def generate(path: Path, tickets: int, seed: int = 110) -> float:
    """Fill the (already created) schema at ``path``; returns the seconds it took."""
    started = time.perf_counter()
    rng = random.Random(seed)
    cells = _cells()
    types, type_w = zip(*TYPE_WEIGHTS.items(), strict=True)
    states, state_w = zip(*STATE_WEIGHTS.items(), strict=True)
    span_us = round(tickets / 32_000 * DAY_US)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    ticket_rows, incident_rows, triage_rows = [], [], []
    batch = 50_000

    def flush() -> None:
        db.executemany("INSERT INTO tickets (id, number, uniqueid, caller_id, caller_name, state, queue, priority, "
                       "seat, created_at_us, updated_at_us) VALUES (?,?,?,?,?,?,?,?,?,?,?)", ticket_rows)
        db.executemany("INSERT INTO incidents (number, address, lat, lon, cell, station_id, located_at_us) "
                       "VALUES (?,?,?,?,?,?,?)", incident_rows)
        db.executemany("INSERT INTO ticket_triage (number, created_at_us, type, priority, station_id, cell, "
                       "updated_at_us) VALUES (?,?,?,?,?,?,?)", triage_rows)
        ticket_rows.clear()
        incident_rows.clear()
        triage_rows.clear()

    db.execute("BEGIN")
    for i in range(1, tickets + 1):
        created = START_US + (i * span_us) // tickets + rng.randrange(1_000_000)
        number = f"110-{i:014d}"
        state = rng.choices(states, state_w)[0]
        ticket_rows.append((i, number, f"{created // 1_000_000}.{i}", f"138{rng.randrange(300_000):08d}", None,
                            state, "emergency-110", None, f"seat-{rng.randrange(60):02d}", created, created))
        station = cell = kind = priority = None
        if rng.random() < 0.85:
            station = rng.choice(STATIONS)
            cell = rng.choice(cells[station])
            incident_rows.append((number, f"{station}路{rng.randrange(500)}号", 31.2, 121.4, cell, station,
                                  created + 30_000_000))
        if rng.random() < 0.9:
            kind = str(rng.choices(types, type_w)[0])
            priority = rng.choices((1, 2, 3, 4), (5, 20, 50, 25))[0]
        triage_rows.append((number, created, kind, priority, station, cell, created + 60_000_000))
        if len(ticket_rows) >= batch:
            flush()
    flush()
    db.execute("COMMIT")
    for _, sql in indexes:
        db.execute(sql)
    db.commit()
    db.close()
    return time.perf_counter() - started


async def _time(fn: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, float, Any]:
    await fn()  # warm the page cache and SQLAlchemy's statement cache
    samples = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = await fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, result


async def bench(path: Path, tickets: int, repeats: int) -> list[tuple[str, float, float, str]]:
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    span_us = round(tickets / 32_000 * DAY_US)
    end = START_US + span_us
    day = (end - 2 * DAY_US, end - DAY_US)
    week = (end - 8 * DAY_US, end - DAY_US)
    cell = _cells()["S07"][3]
    first = await search(engine, TicketQuery(from_us=day[0], to_us=day[1], limit=50))
    cursor = first["next_cursor"]
    for _ in range(19):  # page 20 of a day
        cursor = (await search(engine, TicketQuery(from_us=day[0], to_us=day[1], limit=50, cursor=cursor)))[
            "next_cursor"]
    cases: list[tuple[str, TicketQuery | tuple[int, int, str | None]]] = [
        ("newest 50, no filter", TicketQuery(limit=50, page=1, from_us=0)),
        ("1 day", TicketQuery(from_us=day[0], to_us=day[1])),
        ("1 day, page 20 by cursor", TicketQuery(from_us=day[0], to_us=day[1], cursor=cursor)),
        ("station", TicketQuery(station="S07")),
        ("station + 1 day", TicketQuery(station="S07", from_us=day[0], to_us=day[1])),
        ("station, page 100 by offset", TicketQuery(station="S07", page=100)),
        ("cell + 7 days", TicketQuery(cell=cell, from_us=week[0], to_us=week[1])),
        ("type fraud", TicketQuery(type="fraud")),
        ("type + priority 1 + 1 day", TicketQuery(type="person", priority=1, from_us=day[0], to_us=day[1])),
        ("priority 1 + 7 days", TicketQuery(priority=1, from_us=week[0], to_us=week[1])),
        ("status answered (rare)", TicketQuery(states=("answered",))),
        ("unclassified + 1 day", TicketQuery(type="unclassified", from_us=day[0], to_us=day[1])),
        ("all filters", TicketQuery(from_us=week[0], to_us=week[1], station="S07", type="dispute", priority=3,
                                    states=("closed",))),
        ("stats 1 day", (day[0], day[1], None)),
        ("stats 1 day, one station", (day[0], day[1], "S07")),
        ("stats 7 days", (week[0], week[1], None)),
        ("stats 31 days (everything)", (START_US, end + DAY_US, None)),
        ("stats 31 days, one station", (START_US, end + DAY_US, "S07")),
    ]
    table = []
    try:
        for name, case in cases:
            if isinstance(case, TicketQuery):
                query = case

                async def run(query: TicketQuery = query) -> Any:
                    return await search(engine, query)

                p50, p95, result = await _time(run, repeats)
                note = f"{len(result['tickets'])} rows" + (", more" if result["next_cursor"] else "")
            else:
                start, stop, station = case

                async def run_stats(start: int = start, stop: int = stop, station: str | None = station) -> Any:
                    # What GET /api/stats does: count, then encode the body.
                    series = await hourly_series(engine, start, stop, station=station)
                    return series, dumps(series.to_json())

                p50, p95, (series, body) = await _time(run_stats, max(5, repeats // 3))
                groups = sum(1 for counts in series.counts.values() for n in counts if n)
                note = (f"{groups} groups in {len(series.counts)} series × {series.hours} h, {series.total} tickets, "
                        f"{len(body) / 1e6:.2f} MB")
            table.append((name, p50, p95, note))
    finally:
        await engine.dispose()
    return table


async def main_async(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="jiejing-bench-"))
    path = Path(args.keep) if args.keep else folder / "bench.db"
    if path.exists():
        path.unlink()
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    await init_schema(engine)  # the backend's own tables and indexes
    await engine.dispose()
    seconds = generate(path, args.tickets)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    started = time.perf_counter()
    groups = await rebuild_hourly_counts(engine)  # the rows went in around the write path that keeps it
    rollup_s = time.perf_counter() - started
    await engine.dispose()
    if args.analyze:
        with sqlite3.connect(path) as db:
            db.execute("ANALYZE")
    size_mb = path.stat().st_size / 1e6
    print(f"generated {args.tickets:,} tickets in {seconds:.1f} s ({size_mb:.0f} MB, SQLite {sqlite3.sqlite_version}"
          f"{', analyzed' if args.analyze else ''}); hourly counts rebuilt in {rollup_s:.1f} s ({groups:,} rows)")
    table = await bench(path, args.tickets, args.repeats)
    width = max(len(name) for name, *_ in table)
    print(f"\n{'query'.ljust(width)}  {'p50 ms':>8}  {'p95 ms':>8}  result")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 30}")
    for name, p50, p95, note in table:
        print(f"{name.ljust(width)}  {p50:8.1f}  {p95:8.1f}  {note}")
    if not args.keep:
        path.unlink()
        for extra in folder.iterdir():
            extra.unlink()
        folder.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--keep", help="write the database here and keep it")
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE before timing")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
