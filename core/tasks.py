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


# Items a background worker may have waiting (a new ticket's repeat-caller check, its query copy, its surge count):
# a minute of 30 calls/s with the store stopped is 1,800 tickets.
WORK_MAX = 10_000


class Overflow:
    """A bounded work queue's overflow: what it had to leave out, counted, said in /healthz, repaired later.

    A listener offers each item with ``put(item, at_us)`` (``at_us``: the ticket's time); one that finds the
    queue full is left out and noted. Once the queue is empty again, the worker's ``after_item(repair)``
    redoes everything since the earliest such time from the store; until a repair has run to its end,
    ``health`` is not ok.
    """

    def __init__(self, what: str, queue: asyncio.Queue, *, log) -> None:
        self.what = what
        self.queue = queue
        self._log = log
        self.dropped = 0
        self.repairs = 0
        self._since_us: int | None = None

    def put(self, item, at_us: int) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            if self._since_us is None:
                self._log.warning("%s: queue full; work from here on is redone from the store once it drains",
                                  self.what)
            self.dropped += 1
            self._since_us = at_us if self._since_us is None else min(self._since_us, at_us)

    @property
    def pending(self) -> bool:
        return self._since_us is not None

    def health(self) -> dict:
        waiting = self.queue.qsize()
        reason = (f"{self.what}: queue was full ({self.dropped} left out so far); redone from the store once "
                  f"the {waiting} waiting are done") if self.pending else None
        return {"ok": reason is None, "reason": reason, "waiting": waiting, "dropped": self.dropped,
                "repairs": self.repairs}

    async def after_item(self, repair) -> None:
        """In the worker, after an item: if the queue is empty and items were left out, ``repair(since_us)``.

        A repair that fails stays due (tried again after the next item); one during which more was left out
        stays due as well, from the same time.
        """
        since = self._since_us
        if since is None or not self.queue.empty():
            return
        dropped = self.dropped
        try:
            await repair(since)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("%s: repair from the store failed; tried again after the next item", self.what)
            return
        self.repairs += 1
        if self.dropped == dropped:
            self._since_us = None
