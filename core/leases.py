"""Leases: a duty that must run once in the whole center runs where its lease is held, fenced by a token.

With two or more backends on one database, some work must still be done
exactly once: a ticket's dispatch, the survey outbox, retention, the day's
spot-check draw, the journal's anchors. Each such duty has a named lease in
the store. A backend holds it for ``ttl_s`` and renews it well before that;
a backend that dies or freezes stops renewing, and once the lease has
expired another one takes it over.

Expiry alone is not enough: a backend frozen for longer than the lease
(``kill -STOP``, a long pause of the host) wakes up believing it still holds
it. So every take-over raises the lease's **fencing token**, and a duty's
writes go through ``Leases.fence(connection, lease)`` in the same
transaction: it fails with ``LeaseLost`` unless the lease still has the token
this holder was given. On PostgreSQL the fence also takes the lease row's
lock, so a take-over waits for a fenced transaction in flight, and a fenced
transaction after a take-over sees the new token: the old holder's write is
refused, never interleaved.

Times are the backends' own clocks (epoch microseconds, as everywhere in the
store); the lease time must exceed the clock difference between hosts, which
NTP keeps to milliseconds. A wrong clock can make a take-over early, never a
double write: the token is what decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import BigInteger, String, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from core.errors import DomainError
from core.store import Base

__all__ = ["Lease", "LeaseLost", "LeaseRow", "Leases", "hold", "run_leased"]

log = logging.getLogger("jiejing.leases")

NAME_MAX = 64
HOLDER_MAX = 128


class LeaseRow(Base):
    """One row per duty: who holds it, until when, and the token of the current holding."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    holder: Mapped[str] = mapped_column(String(HOLDER_MAX))
    # Raised by every take-over (never by a renewal): the fencing token.
    token: Mapped[int] = mapped_column(BigInteger)
    acquired_at_us: Mapped[int] = mapped_column(BigInteger)
    expires_at_us: Mapped[int] = mapped_column(BigInteger)


class LeaseLost(DomainError):
    """The lease was taken over (or has expired and was taken): this holder's work must stop, unwritten."""

    status = 409
    error_id = "lease-lost"


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    token: int
    expires_at_us: int


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


class Leases:
    """The leases of one backend (``holder``: a name unique in the center, e.g. host and process id)."""

    def __init__(self, engine: AsyncEngine, holder: str, *, clock: Callable[[], float] = time.time) -> None:
        if not holder or len(holder) > HOLDER_MAX:
            raise ValueError(f"a lease holder's name is 1 to {HOLDER_MAX} characters")
        self._engine = engine
        self.holder = holder
        self._clock = clock

    async def acquire(self, name: str, ttl_s: float) -> Lease | None:
        """The lease ``name`` for ``ttl_s`` from now, or None while another holder's is still valid.

        Held by this holder and valid: renewed, same token. Free, expired or never taken: taken with a
        new token (the previous one plus one).
        """
        if not name or len(name) > NAME_MAX:
            raise ValueError(f"a lease's name is 1 to {NAME_MAX} characters")
        now = _us(self._clock())
        until = now + _us(ttl_s)
        async with self._engine.begin() as conn:
            renewed = await conn.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name, LeaseRow.holder == self.holder, LeaseRow.expires_at_us > now)
                .values(expires_at_us=until))
            if renewed.rowcount == 1:
                return await self._read(conn, name)
            taken = await conn.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name, LeaseRow.expires_at_us <= now)
                .values(holder=self.holder, token=LeaseRow.token + 1, acquired_at_us=now, expires_at_us=until))
            if taken.rowcount == 1:
                lease = await self._read(conn, name)
                log.info("lease %s taken by %s (token %d)", name, self.holder, lease.token)
                return lease
            exists = (await conn.execute(select(LeaseRow.name).where(LeaseRow.name == name))).first()
            if exists is not None:
                return None
        # Never taken: the first holder creates it. Two first holders at once: one insert wins, the
        # other finds the primary key taken and does not hold it.
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(LeaseRow).values(name=name, holder=self.holder, token=1,
                                                           acquired_at_us=now, expires_at_us=until))
        except IntegrityError:
            return None
        log.info("lease %s taken by %s (token 1)", name, self.holder)
        return Lease(name, self.holder, 1, until)

    async def release(self, lease: Lease) -> None:
        """Give the lease up at once (a clean stop), so another holder need not wait for it to expire."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(LeaseRow)
                .where(LeaseRow.name == lease.name, LeaseRow.holder == lease.holder, LeaseRow.token == lease.token)
                .values(expires_at_us=0))

    async def holding(self, name: str) -> Lease | None:
        """The current holding of ``name`` (any holder), valid or not; None if it was never taken."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(LeaseRow).where(LeaseRow.name == name))).first()
        return None if row is None else Lease(row.name, row.holder, row.token, row.expires_at_us)

    async def fence(self, conn: AsyncConnection, lease: Lease) -> None:
        """In the caller's transaction: ``LeaseLost`` unless ``lease`` is still the current holding.

        Call it in the same transaction as the duty's writes, before them. The no-op update locks the
        lease row on PostgreSQL (a take-over waits until this transaction ends) and is the write lock
        itself on SQLite.
        """
        fenced = await conn.execute(
            update(LeaseRow)
            .where(LeaseRow.name == lease.name, LeaseRow.holder == lease.holder, LeaseRow.token == lease.token)
            .values(token=LeaseRow.token))
        if fenced.rowcount != 1:
            raise LeaseLost(f"lease {lease.name} (token {lease.token}) is no longer held by {lease.holder}",
                            details={"lease": lease.name, "token": lease.token})

    async def _read(self, conn: AsyncConnection, name: str) -> Lease:
        row = (await conn.execute(select(LeaseRow).where(LeaseRow.name == name))).one()
        return Lease(row.name, row.holder, row.token, row.expires_at_us)


async def run_leased(leases: Leases, name: str, work: Callable[[Lease], Awaitable[None]], *, ttl_s: float,
                     interval_s: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """For an owned task's whole life: ``work(lease)`` every ``interval_s`` while this backend holds ``name``.

    The lease is tried (taken or renewed) every ``ttl_s / 3`` at least, so a holder renews it twice
    before it can expire and a standby takes it over at most about ``ttl_s * 4/3`` after the holder
    stopped. A round of work that fails is logged and the next comes on time; ``LeaseLost`` from a
    fence ends the round quietly (another backend has the duty now). The lease is released when the
    task is cancelled.
    """
    if interval_s <= 0 or ttl_s <= 0:
        raise ValueError("interval_s and ttl_s must be positive")
    step = min(interval_s, ttl_s / 3)
    lease: Lease | None = None
    due = 0.0
    try:
        while True:
            try:
                was = lease
                lease = await leases.acquire(name, ttl_s)
                if was is not None and (lease is None or lease.token != was.token):
                    log.warning("lease %s lost by %s", name, leases.holder)
                if lease is not None and time.monotonic() >= due:
                    due = time.monotonic() + interval_s
                    await work(lease)
            except asyncio.CancelledError:
                raise
            except LeaseLost as lost:
                log.warning("%s: %s", name, lost)
            except Exception:
                log.exception("%s failed; next try in %.1f s", name, step)
            await sleep(step)
    finally:
        if lease is not None:
            try:
                await asyncio.shield(leases.release(lease))
            except Exception:  # the store is gone: the lease expires by itself
                log.warning("lease %s not released; it expires in at most %.0f s", name, ttl_s)


async def hold(leases: Leases, name: str, *, ttl_s: float, start: Callable[[], Awaitable[None]],
               stop: Callable[[], Awaitable[None]], sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
               ) -> None:
    """For an owned task's whole life: a service runs (``start()``) only while this backend holds ``name``.

    For a duty that is a service of its own rather than a round of work (the automatic call-backs: an owner
    with timers and calls in flight). The lease is taken or renewed every ``ttl_s / 3``; on gaining it
    the service starts (and reads what it owes from the store, as after a restart); it is stopped as soon
    as the lease is held by another, has a new token (another held it in between), or could not be
    renewed before its expiry (the store unreachable: another backend may take it then). Cancelling the
    task stops the service and releases the lease.
    """
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    held: Lease | None = None
    running = False

    async def stop_running(why: str) -> None:
        nonlocal running
        if running:
            running = False
            log.warning("%s: stopped on %s (%s)", name, leases.holder, why)
            await stop()

    try:
        while True:
            try:
                lease = await leases.acquire(name, ttl_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: the lease could not be renewed", name)
                if held is not None and leases._clock() * 1_000_000 >= held.expires_at_us:
                    await stop_running("lease expired unrenewed")
                    held = None
            else:
                if lease is None or (held is not None and lease.token != held.token):
                    await stop_running("lease taken over" if lease is None else "lease lapsed")
                held = lease
                if held is not None and not running:
                    try:
                        await start()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("%s: could not start; next try in %.1f s", name, ttl_s / 3)
                    else:
                        running = True
                        log.info("%s: running on %s (token %d)", name, leases.holder, held.token)
            await sleep(ttl_s / 3)
    finally:
        await stop_running("stopping")
        if held is not None:
            try:
                await asyncio.shield(leases.release(held))
            except Exception:  # the store is gone: the lease expires by itself
                log.warning("lease %s not released; it expires in at most %.0f s", name, ttl_s)
