"""Log-in throttling: too many failed log-ins for a name from one address, or from one address at all, and
further attempts are refused for a while, before any password is checked.

Counted per (name, address) — so a desk that mistypes locks out only itself, and nobody can lock a
call-taker out from elsewhere — and per address, which stops one client from trying many names. The
addresses are what the web server sees (a reverse proxy in front must pass the client's own). Memory is
bounded: at most ``max_keys`` counters, each holding at most its limit of failure times; beyond that the
least recently touched counter is forgotten.

A lock-out tells its first refusal apart (``Refusal.first``) so the audit log can record the lock-out
once rather than every refused attempt; how many were refused is logged when the lock-out is over.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PER_NAME = 5  # failures of one name from one address within the window
PER_ADDRESS = 30  # failures from one address within the window, whatever the names (a center's desks may share one)
WINDOW_S = 300.0
LOCKOUT_S = 300.0
MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after_s: int  # whole seconds, as Retry-After wants them
    first: bool  # the first refusal of this lock-out


@dataclass(slots=True)
class _Counter:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    refused: int = 0  # attempts refused during the current lock-out


class LoginThrottle:
    """Counts failed log-ins and says when to refuse one outright."""

    def __init__(
        self,
        *,
        per_name: int = PER_NAME,
        per_address: int = PER_ADDRESS,
        window_s: float = WINDOW_S,
        lockout_s: float = LOCKOUT_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(per_name, per_address, max_keys) < 1 or not window_s > 0 or not lockout_s > 0:
            raise ValueError("limits, window and lock-out must be positive")
        self._limits = {"name": per_name, "address": per_address}
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._max_keys = max_keys
        self._clock = clock
        self._counters: OrderedDict[tuple[str, ...], _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counters)

    @staticmethod
    def _keys(name: str, address: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("name", name, address), ("address", address)

    def check(self, name: str, address: str) -> Refusal | None:
        """A refusal while the name (from this address) or the address is locked out, else None."""
        now = self._clock()
        refusals = []
        for key in self._keys(name, address):
            counter = self._counters.get(key)
            if counter is None:
                continue
            if counter.locked_until <= now:
                if counter.refused:
                    log.warning("log-in lock-out of %s over: %d attempts were refused during it",
                                key, counter.refused)
                    counter.refused = 0
                continue
            counter.refused += 1
            refusals.append(Refusal(max(1, math.ceil(counter.locked_until - now)), counter.refused == 1))
        if not refusals:
            return None
        return Refusal(max(r.retry_after_s for r in refusals), any(r.first for r in refusals))

    def failed(self, name: str, address: str) -> None:
        """A failed log-in: counted, and a lock-out begins when a limit is reached within the window."""
        now = self._clock()
        for key in self._keys(name, address):
            limit = self._limits[key[0]]
            counter = self._counter(key)
            counter.failures.append(now)
            while counter.failures and (counter.failures[0] <= now - self._window_s
                                        or len(counter.failures) > limit):
                counter.failures.popleft()
            if len(counter.failures) >= limit and counter.locked_until <= now:
                counter.locked_until = now + self._lockout_s
                counter.failures.clear()
                log.warning("log-in locked out for %.0f s: %s after %d failures", self._lockout_s, key, limit)

    def succeeded(self, name: str, address: str) -> None:
        """The name's failures from this address are forgotten (the address's are not)."""
        self._counters.pop(self._keys(name, address)[0], None)

    def _counter(self, key: tuple[str, ...]) -> _Counter:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter()
            while len(self._counters) > self._max_keys:
                self._counters.popitem(last=False)
        else:
            self._counters.move_to_end(key)
        return counter
