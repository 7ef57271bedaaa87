"""The intake in a process of its own, started and watched by ``jiejing serve``.

The backend yields the CPU to Asterisk (``serve.yield_cpu``): under a storm its
record keeping waits and catches up from Asterisk's log. The intake's answer
must not wait with it, so it is another process (``jiejing intake``), in a
session of its own (on Linux, its own scheduling group, at full priority), that
holds nothing but its answer. It dies with the backend (the kernel's parent-death
signal), so no orphan keeps the port; while no intake answers, the dialplan's
fallback gives the same queue and priority after its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
import urllib.request
from typing import Any

from telephony.intake import Intake

log = logging.getLogger("jiejing.intake")

# How often the watcher looks at the child: alive, answering its health request.
WATCH_S = 1.0
# A child not heard from for this long is reported not ok.
SILENT_S = 5.0
# After the child ended, the next start waits this long (then doubles, up to RESTART_MAX_S).
RESTART_S = 0.5
RESTART_MAX_S = 10.0
STOP_WAIT_S = 5.0
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it ends (Linux); a parent already gone ends it now."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("the intake cannot ask to end with its parent on this system")
    if os.getppid() != parent or parent == 1:
        raise SystemExit("intake: the backend that started it is gone")


def full_priority() -> None:
    """In the child: undo the nice value inherited from the backend, where allowed."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class IntakeProcess:
    """Starts ``jiejing intake``, restarts it when it ends, and stops it."""

    def __init__(self, host: str, port: int, intake: Intake, *, command: list[str] | None = None) -> None:
        self.host, self.port, self.intake = host, port, intake
        self.command = command or [sys.executable, "-m", "telephony.cli", "intake", "--child"]
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.last_heard: float | None = None  # monotonic time of its last health answer
        self.last_stats: dict[str, Any] = {}
        self.last_exit: int | None = None
        self._task: asyncio.Task | None = None

    def _args(self) -> list[str]:
        return [*self.command, "--host", self.host, "--port", str(self.port), "--queue", self.intake.queue,
                "--priority", str(self.intake.priority)]

    async def _spawn(self) -> None:
        # From the event loop's thread: the parent-death signal follows the thread that started the child.
        self.proc = await asyncio.create_subprocess_exec(*self._args(), stdin=asyncio.subprocess.DEVNULL,
                                                         start_new_session=True)
        self.starts += 1
        self.last_heard = None  # ok again once this one has answered
        log.info("intake process started (pid %d)", self.proc.pid)

    async def start(self) -> None:
        """Start the child and wait (up to 10 s) until it answers; the backend starts in any case."""
        try:
            await self._spawn()
        except OSError:
            log.exception("intake process could not be started; calls take the dialplan's fallback")
        deadline = time.monotonic() + 10
        while self.proc is not None and self.proc.returncode is None and time.monotonic() < deadline:
            if await self._probe():
                break
            await asyncio.sleep(0.05)
        else:
            log.error("intake process not answering; calls take the dialplan's fallback until it does")
        self._task = asyncio.create_task(self._watch(), name="intake-process")

    async def _probe(self) -> bool:
        try:
            stats = await asyncio.to_thread(self._health)
        except (OSError, ValueError):
            return False
        self.last_heard, self.last_stats = time.monotonic(), stats
        return True

    def _health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.host}:{self.port}/intake/health", timeout=1.0) as r:
            return json.loads(r.read())

    async def _watch(self) -> None:
        pause = RESTART_S
        while True:
            await asyncio.sleep(WATCH_S)
            if self.proc is None or self.proc.returncode is not None:
                self.last_exit = None if self.proc is None else self.proc.returncode
                log.error("intake process ended (%s); starting it again in %.1f s", self.last_exit, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESTART_MAX_S)
                try:
                    await self._spawn()
                except OSError:
                    log.exception("intake process could not be started")
                continue
            if await self._probe():
                pause = RESTART_S

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_WAIT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def health(self) -> dict[str, Any]:
        alive = self.proc is not None and self.proc.returncode is None
        heard = None if self.last_heard is None else time.monotonic() - self.last_heard
        reasons = []
        if not alive:
            reasons.append(f"the intake process is not running (last exit {self.last_exit}): calls take the "
                           "dialplan's fallback")
        elif heard is None or heard > SILENT_S:
            reasons.append("the intake process does not answer: calls take the dialplan's fallback")
        return {**self.last_stats, "ok": not reasons, "reason": "; ".join(reasons) or None, "process": "own",
                "pid": self.proc.pid if alive else None, "starts": self.starts,
                "heard_s_ago": None if heard is None else round(heard, 1)}
