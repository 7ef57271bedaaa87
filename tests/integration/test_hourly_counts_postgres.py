"""The hourly rollup's upsert and locking paths on a real PostgreSQL (the unit tests run them on SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.tables import init_schema
from tests.integration.test_store_postgres import PG_URL, _engine, pg_schema  # noqa: F401  (fixture)
from tests.unit import test_hourly_counts as rollup

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="JIEJING_TEST_PG_URL is not set; sip-lab/test.sh sets it after starting PostgreSQL"
)


@pytest.fixture
async def pg(pg_schema: str) -> AsyncIterator[AsyncEngine]:  # noqa: F811
    engine = _engine(pg_schema)
    await init_schema(engine)
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counts_follow_random_classifications_and_relocations_on_postgresql(pg: AsyncEngine, seed: int):
    await rollup.test_counts_follow_random_classifications_and_relocations(pg, seed)


async def test_partial_hours_at_both_ends_on_postgresql(pg: AsyncEngine):
    await rollup.test_partial_hours_at_both_ends_are_counted_exactly(pg)


async def test_rebuild_on_postgresql(pg: AsyncEngine):
    await rollup.test_rebuild_at_start_when_the_counts_are_missing_and_only_then(pg)


async def test_backfilled_copies_are_counted_on_postgresql(pg: AsyncEngine):
    await rollup.test_backfilled_copies_are_counted(pg)


async def test_retention_takes_copies_and_counts_on_postgresql(pg: AsyncEngine):
    from core.calls.tickets import TicketService
    from tests.unit import test_retention as retention
    from tests.unit.conftest import FakeClock

    clock = FakeClock()
    await retention.test_expiry_takes_the_tickets_copies_and_counts_with_it(TicketService(pg, clock=clock), pg, clock)


async def test_ranges_across_days_on_postgresql(pg: AsyncEngine):
    await rollup.test_ranges_across_days_and_stations(pg, 4)


async def test_upgrade_from_the_hourly_rollup_on_postgresql(pg: AsyncEngine):
    await rollup.test_the_old_rollup_of_an_upgraded_database_is_dropped_and_rebuilt_by_day(pg)


async def test_opposite_moves_do_not_deadlock_on_postgresql(pg: AsyncEngine):
    await rollup.test_opposite_moves_of_one_day_do_not_deadlock(pg)


async def test_rebuild_while_tickets_move_on_postgresql(pg: AsyncEngine):
    await rollup.test_a_rebuild_while_tickets_move_keeps_every_count(pg)
