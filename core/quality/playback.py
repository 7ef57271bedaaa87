"""A recording played in the browser: only a bound, unaltered file, and never without its journal entry.

Each playback appends an ``access`` entry to the journal (who, which ticket and recording, its sha256, when)
before the file is served: if the entry cannot be written the recording is not played. The file must still
match the sha256 it was bound with (an altered file is refused and ``journal verify`` names it), and must lie
inside the recordings folder when one is set (a path in the store is not trusted to point anywhere else).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.recordings import file_sha256
from core.calls.tables import Recording, Ticket
from core.quality.journal import KIND_ACCESS, append_entry


class PlaybackRefused(Exception):
    """Why a recording is not played: ``status`` 404 (unknown, gone) or 409 (altered, outside the folder)."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_id = status, error_id


async def open_for_playback(engine: AsyncEngine, number: str, sha256: str, *, by: str,
                            recordings_dir: str | Path | None = None,
                            clock: Callable[[], float] = time.time) -> Path:
    """The file of ticket ``number``'s recording ``sha256``, once its playback by ``by`` is journaled."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        row = (await session.execute(
            select(Recording.id, Recording.path).join(Ticket, Ticket.id == Recording.ticket_id)
            .where(Ticket.number == number, Recording.sha256 == sha256)
        )).first()
    if row is None:
        raise PlaybackRefused(404, "unknown-recording", f"ticket {number} has no recording {sha256}")
    path = Path(row.path)
    if recordings_dir is not None:
        real, folder = path.resolve(), Path(recordings_dir).resolve()
        if folder not in real.parents:
            raise PlaybackRefused(409, "recording-outside-folder",
                                  f"the recording's file is not inside the recordings folder {recordings_dir}")
    try:
        actual = await asyncio.to_thread(file_sha256, path)
    except OSError:
        raise PlaybackRefused(404, "recording-gone", f"the recording file of {number} is gone") from None
    if actual != sha256:
        raise PlaybackRefused(409, "recording-altered",
                              f"the recording file of {number} no longer matches its sha256: it is not played "
                              "(jiejing journal verify names it)")
    await record_access(engine, "recording_played", number, by=by, ref_id=row.id,
                        extra={"recording": row.id, "sha256": sha256}, clock=clock)
    return path


async def record_access(engine: AsyncEngine, what: str, number: str, *, by: str, ref_id: int | None = None,
                        extra: dict | None = None, clock: Callable[[], float] = time.time) -> None:
    """Append an ``access`` entry (who did ``what`` with ticket ``number``, when) to the journal's chain."""
    at_us = round(clock() * 1_000_000)
    payload = {"kind": KIND_ACCESS, "what": what, "ticket": number, "by": by, "at_us": at_us, **(extra or {})}
    # If it cannot be written, what it records is refused rather than done unrecorded.
    await append_entry(async_sessionmaker(engine, expire_on_commit=False), KIND_ACCESS, ref_id, payload,
                       at_us=at_us)
