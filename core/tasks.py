"""Owned background tasks: the one way they are stopped.

Every long-running part (journal writer, outbox, survey, follow-up deadlines,
retention) owns one task; stopping it must cancel it and wait until it has
really ended, so that shutdown order holds and no exception goes unseen.
"""

from __future__ import annotations

import asyncio


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancel ``task`` (if any) and wait for it to end; its cancellation is expected."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
