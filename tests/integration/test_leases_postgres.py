"""Leases on the real PostgreSQL, as two or more backends use them: racing holders, and the fence's row lock.

Runs when JIEJING_TEST_PG_URL names a database (sip-lab/test.sh sets it; in CI its absence is a failure). Each
test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from core.leases import LeaseLost, Leases
from core.tables import init_schema
from tests.integration.test_store_postgres import _engine, pg_schema, pytestmark  # noqa: F401
from tests.unit.conftest import FakeClock

TTL_S = 10.0


async def test_of_backends_racing_for_a_free_lease_exactly_one_holds_it(pg_schema: str) -> None:
    engines = [_engine(pg_schema) for _ in range(4)]
    try:
        await init_schema(engines[0])
        clock = FakeClock()
        backends = [Leases(engine, f"node-{i}:1", clock=clock) for i, engine in enumerate(engines)]
        for round_ in range(20):
            name = f"duty-{round_ % 5}"
            won = await asyncio.gather(*(leases.acquire(name, TTL_S) for leases in backends))
            winners = [lease for lease in won if lease is not None]
            assert len(winners) == 1, won  # the first take-over commits; the others re-read and lose
            assert winners[0] == await backends[0].holding(name)
            clock.now += TTL_S + 1  # every lease expires before the next round
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_take_over_waits_for_the_fenced_transaction_in_flight_then_fences_it_out(pg_schema: str) -> None:
    engine_a, engine_b = _engine(pg_schema), _engine(pg_schema)
    try:
        await init_schema(engine_a)
        async with engine_a.begin() as conn:
            await conn.execute(text("CREATE TABLE duty_writes (holder text, token bigint)"))
        clock = FakeClock()
        a, b = Leases(engine_a, "node-a:1", clock=clock), Leases(engine_b, "node-b:1", clock=clock)
        held = await a.acquire("outbox", TTL_S)
        order: list[str] = []

        async with engine_a.begin() as conn:
            await a.fence(conn, held)
            clock.now += TTL_S + 1  # a's lease expires while its fenced transaction is open
            take_over = asyncio.create_task(b.acquire("outbox", TTL_S))
            await asyncio.sleep(0.5)
            assert not take_over.done(), "the take-over went through a fenced transaction in flight"
            await conn.execute(text("INSERT INTO duty_writes VALUES ('node-a:1', :t)"), {"t": held.token})
            order.append("a wrote")
        taken = await asyncio.wait_for(take_over, 5)
        order.append("b took over")
        assert taken is not None and taken.token == held.token + 1 and order == ["a wrote", "b took over"]

        # a again, with its old token: refused, and nothing of it is written.
        try:
            async with engine_a.begin() as conn:
                await a.fence(conn, held)
                await conn.execute(text("INSERT INTO duty_writes VALUES ('node-a:1', :t)"), {"t": held.token})
            raise AssertionError("the old holder's fence passed after the take-over")
        except LeaseLost:
            pass
        async with engine_b.connect() as conn:
            rows = (await conn.execute(text("SELECT holder, token FROM duty_writes"))).all()
        assert [tuple(row) for row in rows] == [("node-a:1", 1)]
    finally:
        await engine_a.dispose()
        await engine_b.dispose()
