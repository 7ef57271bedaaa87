"""Is a recording finished? Asterisk's word: it no longer has the file open.

MixMonitor writes a call's recording and closes it when its thread ends, a
moment after the caller's channel. A file is bound (and hashed) only once the
call has ended *and* no Asterisk process has it open, seen in the kernel's own
table of open files (``/proc/<pid>/fd``, compared by device and inode, so the
lab's chroot and a real install look the same). A file that merely stopped
growing is not finished by this rule.

The backend must be allowed to read Asterisk's ``/proc/<pid>/fd`` (the same
user, or root). Where it cannot, ``is_open`` answers None and the caller
decides (the call events adapter then binds after the call's end, and says so
once in the log).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROC = Path("/proc")
# Processes whose open files count: Asterisk's main process carries every thread's descriptors.
NAMES = ("asterisk",)
PIDS_FRESH_S = 10.0


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

    def _current_pids(self) -> list[int]:
        now = self._clock()
        if self._found_at is None or now - self._found_at > PIDS_FRESH_S or not self._pids:
            self._pids = self._find_pids()
            self._found_at = now
        return self._pids

    def is_open(self, path: Path) -> bool | None:
        """True or False; None when no Asterisk process is visible or its open files cannot be read."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        key = (st.st_dev, st.st_ino)
        pids = self._current_pids()
        if not pids:
            return None
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
                if (target.st_dev, target.st_ino) == key:
                    return True
        if not readable:
            self._found_at = None  # look again next time: Asterisk may have restarted
            return None
        return False
