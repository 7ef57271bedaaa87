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


async def every(interval_s: float, work, *, what: str, log) -> None:
    """Run ``work()`` now and then every ``interval_s`` seconds, for an owned task's whole life.

    A failing round is logged and the next one comes on time: a periodic
    duty (deadlines, retention) must not end because one round failed.
    """
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; next try in %.0f s", what, interval_s)
        await asyncio.sleep(interval_s)
