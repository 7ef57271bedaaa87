"""Ticket numbers: ``110-YYYYMMDD-NNNNNN``, read aloud over the phone and radio.

The day is the call's arrival day in the center's time zone; NNNNNN counts the
day's tickets in ``ticket_counters``. The counter moves inside the transaction
that inserts the ticket, so a crash either keeps both or neither, and a number
is never handed out twice, also across restarts.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.calls.tables import TicketCounter

_PREFIX = re.compile(r"[A-Za-z0-9]{1,16}")
# Six digits cover a day's 32,000 calls many times over; more digits keep working.
_NUMBER = re.compile(r"(?P<prefix>[A-Za-z0-9]{1,16})-(?P<day>[0-9]{8})-(?P<seq>[0-9]{6,9})")

# Built once: the statements are the same for every ticket, so each compiles
# once per engine and later executions only bind the day.
_COUNTERS = TicketCounter.__table__
_BUMP = update(_COUNTERS).where(_COUNTERS.c.day == bindparam("counter_day")).values(last=_COUNTERS.c.last + 1)
_BUMP_RETURNING = _BUMP.returning(_COUNTERS.c.last)
_LAST = select(_COUNTERS.c.last).where(_COUNTERS.c.day == bindparam("counter_day"))
_FIRST = insert(_COUNTERS)


def format_number(prefix: str, day: str, seq: int) -> str:
    return f"{prefix}-{day}-{seq:06d}"


def looks_like_number(text: str) -> bool:
    """Whether ``text`` has the shape of a ticket number (any prefix)."""
    return _NUMBER.fullmatch(text) is not None


class TicketNumbering:
    """Hands out ticket numbers; used only inside a write transaction."""

    def __init__(self, *, tz: str = "Asia/Shanghai", prefix: str = "110") -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"ticket prefix must be 1-16 letters or digits, got {prefix!r}")
        self.tz = ZoneInfo(tz)  # raises ZoneInfoNotFoundError for an unknown zone
        self.prefix = prefix

    def day_of(self, at: float) -> str:
        """The center's calendar day (YYYYMMDD) at epoch seconds ``at``."""
        return datetime.fromtimestamp(at, self.tz).strftime("%Y%m%d")

    async def next_number(self, conn: AsyncConnection | AsyncSession, at: float) -> str:
        """Increment the day's counter in ``conn``'s transaction and format the number.

        Plain UPDATE-then-INSERT works on every backend (one ``UPDATE …
        RETURNING`` where the backend has it, as SQLite 3.35+ and PostgreSQL
        do). Two processes racing for a day's first number make one INSERT
        fail with IntegrityError; the caller retries its transaction.
        """
        day = self.day_of(at)
        params = {"counter_day": day}
        dialect = conn.dialect if isinstance(conn, AsyncConnection) else conn.get_bind().dialect
        if dialect.update_returning:
            seq = (await conn.execute(_BUMP_RETURNING, params)).scalar_one_or_none()
        else:
            bumped = await conn.execute(_BUMP, params)
            seq = None if bumped.rowcount == 0 else (await conn.execute(_LAST, params)).scalar_one()
        if seq is None:
            await conn.execute(_FIRST, {"day": day, "last": 1})
            seq = 1
        return format_number(self.prefix, day, seq)
