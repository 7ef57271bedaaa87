"""Is a recording finished? Asterisk's word: it no longer has the file open.

MixMonitor writes a call's recording and closes it when its thread ends, a
moment after the caller's channel. A file is bound (and hashed) only once the
call has ended *and* no Asterisk process has it open, seen in the kernel's own
table of open files (``/proc/<pid>/fd``, compared by device and inode, so the
lab's chroot and a real install look the same). A file that merely stopped
growing is not finished by this rule.

One look at the table serves every recording waiting at that moment: in a
storm, dozens of calls end each second (a look each, per recording and per
retry, took a sixth of the backend's time at 20 calls/s). A look is reused only if it was taken after
the caller's ``seen_after`` (its call had ended by then, so a file still open
is in it) and is at most ``SNAPSHOT_S`` old.

The backend must be allowed to read Asterisk's ``/proc/<pid>/fd`` (the same
user, or root). Where it cannot, ``is_open`` answers None and the caller
decides (the call events adapter then binds after the call's end, and says so
once in the log).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROC = Path("/proc")
# Processes whose open files count: Asterisk's main process carries every thread's descriptors.
NAMES = ("asterisk",)
PIDS_FRESH_S = 10.0
# How old a look at the open files may be and still answer for a recording.
SNAPSHOT_S = 0.2


def asterisk_pids(proc: Path = PROC, names: Iterable[str] = NAMES) -> list[int]:
    wanted = set(names)
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() in wanted:
                pids.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return pids


class OpenFiles:
    """Whether any Asterisk process has a file open."""

    def __init__(self, find_pids: Callable[[], list[int]] = asterisk_pids, proc: Path = PROC,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._find_pids = find_pids
        self._proc = proc
        self._clock = clock
        self._pids: list[int] = []
        self._found_at: float | None = None
        self._lock = threading.Lock()  # callers run in worker threads; one look at a time
        self._keys: frozenset[tuple[int, int]] | None = None
        self._keys_at: float | None = None
        self.scans = 0

    def _current_pids(self) -> list[int]:
        now = self._clock()
        if self._found_at is None or now - self._found_at > PIDS_FRESH_S or not self._pids:
            self._pids = self._find_pids()
            self._found_at = now
        return self._pids

    def _scan(self) -> frozenset[tuple[int, int]] | None:
        """(device, inode) of every file Asterisk has open; None when no Asterisk process can be read."""
        pids = self._current_pids()
        if not pids:
            return None
        self.scans += 1
        keys: set[tuple[int, int]] = set()
        readable = False
        for pid in pids:
            fd_dir = self._proc / str(pid) / "fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue  # not allowed, or the process is gone
            readable = True
            for fd in fds:
                try:
                    target = os.stat(fd_dir / fd)
                except OSError:
                    continue  # closed meanwhile
                keys.add((target.st_dev, target.st_ino))
        if not readable:
            self._found_at = None  # look again next time: Asterisk may have restarted
            return None
        return frozenset(keys)

    def is_open(self, path: Path, *, seen_after: float | None = None) -> bool | None:
        """True or False; None when no Asterisk process is visible or its open files cannot be read.

        With ``seen_after`` (a time of ``clock``), a look taken since then and at most ``SNAPSHOT_S`` ago
        answers; without it, the table is read afresh.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        with self._lock:
            now = self._clock()
            fresh = (seen_after is not None and self._keys is not None and self._keys_at is not None
                     and self._keys_at >= seen_after and now - self._keys_at <= SNAPSHOT_S)
            if not fresh:
                self._keys_at, self._keys = now, self._scan()
            keys = self._keys
        if keys is None:
            return None
        return (st.st_dev, st.st_ino) in keys
