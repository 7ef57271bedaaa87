"""Leases of once-only duties on the embedded store: who holds them, take-over after expiry, the fencing token.

Two backends are two ``Leases`` with different holders on one database. The same rules against the real
PostgreSQL, with the holders racing, are tests/integration/test_leases_postgres.py.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.leases import Lease, LeaseLost, Leases, hold, run_leased
from tests.unit.conftest import FakeClock

TTL_S = 10.0


async def test_one_holder_at_a_time_and_a_take_over_raises_the_token(engine: AsyncEngine, clock: FakeClock) -> None:
    a, b = Leases(engine, "node-a:1", clock=clock), Leases(engine, "node-b:1", clock=clock)
    first = await a.acquire("retention", TTL_S)
    assert first is not None and first.token == 1 and first.holder == "node-a:1"
    assert await b.acquire("retention", TTL_S) is None  # a's is still valid

    clock.now += TTL_S / 2
    renewed = await a.acquire("retention", TTL_S)
    assert renewed is not None and renewed.token == 1  # a renewal keeps the token ...
    assert renewed.expires_at_us > first.expires_at_us  # ... and moves the expiry

    clock.now += TTL_S * 0.9  # not yet expired: the renewal counted
    assert await b.acquire("retention", TTL_S) is None
    clock.now += TTL_S  # a stopped renewing
    taken = await b.acquire("retention", TTL_S)
    assert taken is not None and (taken.holder, taken.token) == ("node-b:1", 2)
    assert await a.acquire("retention", TTL_S) is None  # a is back: b holds it now
    assert await a.holding("retention") == taken


async def test_a_holder_back_after_its_lease_expired_gets_a_new_token(engine: AsyncEngine, clock: FakeClock) -> None:
    a = Leases(engine, "node-a:1", clock=clock)
    first = await a.acquire("anchors", TTL_S)
    clock.now += TTL_S * 2
    again = await a.acquire("anchors", TTL_S)
    assert again is not None and again.token == first.token + 1
    # The work fenced with the old token is refused, even for the same holder: the expiry was a gap.
    async with engine.begin() as conn:
        with pytest.raises(LeaseLost):
            await a.fence(conn, first)


async def test_the_old_holders_fenced_write_is_refused_after_a_take_over(engine: AsyncEngine, clock: FakeClock) -> None:
    a, b = Leases(engine, "node-a:1", clock=clock), Leases(engine, "node-b:1", clock=clock)
    held = await a.acquire("outbox", TTL_S)
    async with engine.begin() as conn:
        await a.fence(conn, held)  # still the holding: passes
    clock.now += TTL_S + 1  # a froze past its lease
    assert await b.acquire("outbox", TTL_S) is not None
    async with engine.begin() as conn:
        with pytest.raises(LeaseLost) as refused:
            await a.fence(conn, held)
    assert refused.value.error_id == "lease-lost" and refused.value.details == {"lease": "outbox", "token": 1}


async def test_release_lets_the_next_holder_take_it_at_once(engine: AsyncEngine, clock: FakeClock) -> None:
    a, b = Leases(engine, "node-a:1", clock=clock), Leases(engine, "node-b:1", clock=clock)
    held = await a.acquire("spot-checks", TTL_S)
    await a.release(held)
    taken = await b.acquire("spot-checks", TTL_S)
    assert taken is not None and taken.token == 2


async def test_names_and_holders_are_checked(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError):
        Leases(engine, "")
    with pytest.raises(ValueError):
        Leases(engine, "x" * 129)
    with pytest.raises(ValueError):
        await Leases(engine, "node-a:1").acquire("", TTL_S)


async def test_a_duty_runs_where_its_lease_is_held_and_moves_when_that_backend_freezes(engine: AsyncEngine) -> None:
    """Two backends run the same duty loop; only the holder works. The holder freezes (its loop stops
    renewing, as under kill -STOP): the other takes the duty over; the frozen one, woken, writes nothing."""
    rounds: list[tuple[str, int]] = []
    frozen = asyncio.Event()
    thaw = asyncio.Event()
    stale: list[Lease] = []

    def duty(leases: Leases):
        async def work(lease: Lease) -> None:
            if leases.holder == "node-a:1" and frozen.is_set():
                stale.append(lease)
                await thaw.wait()  # frozen in the middle of a round, past its lease
            async with engine.begin() as conn:
                await leases.fence(conn, lease)
                rounds.append((leases.holder, lease.token))
        return work

    a, b = Leases(engine, "node-a:1"), Leases(engine, "node-b:1")
    task_a = asyncio.create_task(run_leased(a, "duty", duty(a), ttl_s=0.6, interval_s=0.05))
    await asyncio.sleep(0.15)
    task_b = asyncio.create_task(run_leased(b, "duty", duty(b), ttl_s=0.6, interval_s=0.05))
    try:
        await asyncio.sleep(0.4)
        assert rounds and {holder for holder, _ in rounds} == {"node-a:1"}
        frozen.set()
        deadline = asyncio.get_running_loop().time() + 5
        while not any(holder == "node-b:1" for holder, _ in rounds):
            assert asyncio.get_running_loop().time() < deadline, "the duty never moved to node-b"
            await asyncio.sleep(0.05)
        thaw.set()
        await asyncio.sleep(0.3)
        # After the take-over, every round is b's, with the new token; a's stale round wrote nothing.
        taken_at = next(i for i, (holder, _) in enumerate(rounds) if holder == "node-b:1")
        assert all(holder == "node-b:1" and token == 2 for holder, token in rounds[taken_at:])
        assert stale and stale[0].token == 1
    finally:
        for task in (task_a, task_b):
            task.cancel()
        await asyncio.gather(task_a, task_b, return_exceptions=True)


async def test_a_service_runs_only_where_its_lease_is_held_and_moves_on_a_freeze(engine: AsyncEngine) -> None:
    """``hold``: the service starts on the holder only; the holder freezes (its loop stops renewing), the other
    backend starts it; the frozen one, woken, stops its own at its first look; a clean stop hands over at once."""
    events: list[str] = []
    frozen, thaw = asyncio.Event(), asyncio.Event()

    def service(who: str):
        async def start() -> None:
            events.append(f"{who} start")

        async def stop() -> None:
            events.append(f"{who} stop")
        return start, stop

    async def sleep_a(seconds: float) -> None:
        if frozen.is_set():
            await thaw.wait()
        await asyncio.sleep(seconds)

    a, b = Leases(engine, "node-a:1"), Leases(engine, "node-b:1")
    start_a, stop_a = service("a")
    start_b, stop_b = service("b")
    task_a = asyncio.create_task(hold(a, "auto-callback", ttl_s=0.6, start=start_a, stop=stop_a, sleep=sleep_a))
    await asyncio.sleep(0.1)
    task_b = asyncio.create_task(hold(b, "auto-callback", ttl_s=0.6, start=start_b, stop=stop_b))
    try:
        await asyncio.sleep(0.5)
        assert events == ["a start"]  # b waits while a renews
        frozen.set()
        await until_events(events, "b start")
        thaw.set()
        await until_events(events, "a stop")
        assert events == ["a start", "b start", "a stop"]
        task_b.cancel()  # a clean stop: released, a takes it at its next look, not after the lease time
        await asyncio.gather(task_b, return_exceptions=True)
        await until_events(events, "a start", count=2, timeout=0.5)
        assert events[-2:] == ["b stop", "a start"]
    finally:
        for task in (task_a, task_b):
            task.cancel()
        await asyncio.gather(task_a, task_b, return_exceptions=True)


async def until_events(events: list[str], event: str, *, count: int = 1, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while events.count(event) < count:
        assert asyncio.get_running_loop().time() < deadline, f"no {event!r} within {timeout} s: {events}"
        await asyncio.sleep(0.02)
