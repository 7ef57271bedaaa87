"""Checkpoints of the logs the backend replays (Asterisk's CEL file): inode and byte offset, by name."""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tables import LogCheckpoint


class Checkpoints:
    def __init__(self, engine: AsyncEngine, *, clock=time.time) -> None:
        self._engine = engine
        self._clock = clock

    async def load(self, name: str) -> tuple[int, int] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                select(LogCheckpoint.inode, LogCheckpoint.offset).where(LogCheckpoint.name == name)
            )).first()
        return None if row is None else (int(row.inode), int(row.offset))

    async def save(self, name: str, inode: int, offset: int) -> None:
        if offset < 0 or inode < 0:
            raise ValueError("a checkpoint is a non-negative inode and offset")
        now_us = int(self._clock() * 1_000_000)
        values = {"inode": inode, "offset": offset, "updated_at_us": now_us}
        async with self._engine.begin() as conn:
            changed = await conn.execute(update(LogCheckpoint).where(LogCheckpoint.name == name).values(**values))
            if changed.rowcount == 0:
                await conn.execute(LogCheckpoint.__table__.insert().values(name=name, **values))
