"""The room's posture: normal, or surge, when calls pile up faster than seats free themselves.

In a surge (a fire, an explosion: hundreds of people dial within minutes)
the seats' wrap-up after each call keeps free call-takers out of the queue
while callers wait; in the surge posture wrap-up is suspended for every seat
(``SeatBoard.suspend_wrap_up``), supervisors get an alert, and the wallboard
and desks show it.

Rules of the state machine (``Posture.evaluate``, fed with the calls waiting
for a seat and the longest wait):

* Normal → surge (``auto``) as soon as ``enter_waiting`` calls wait or one
  has waited ``enter_longest_wait_s``.
* Surge (``auto``) → normal once the figures have stayed at or below
  ``leave_waiting`` and ``leave_longest_wait_s`` for ``calm_s`` without a
  break; any figure above them starts the calm over. Leave thresholds below
  the enter ones and the calm time keep the posture from flapping.
* A supervisor may declare a surge (``declared``) or end one, auto or
  declared; a declared surge is left only by a supervisor.

The thresholds are the ``[posture]`` table of the surge rules file
(``dialplan/surge.toml``), checked by ``parse_posture`` and handed over on
each reload (``Posture.set_rules``). Every change is kept with who, why and
when, in memory and in ``posture_changes`` (``save_change``); at start the
last one is restored (``last_change``, ``Posture.restore``), so a surge a
supervisor declared stays declared across a restart of the backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from sqlalchemy import BigInteger, String, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.alerts.board import Alert
from core.store import TEXT_MAX, Base, _Id

__all__ = ["Change", "Posture", "PostureChangeRow", "PostureError", "PostureRules", "last_change", "parse_posture",
           "record_alert", "run_posture", "save_change"]

log = logging.getLogger(__name__)

NORMAL = "normal"
SURGE = "surge"
AUTO = "auto"
DECLARED = "declared"
ALERT_KIND = "surge_mode"
EVALUATE_EVERY_S = 0.5
HISTORY_MAX = 100


class PostureError(ValueError):
    """Posture thresholds that cannot be used; ``str()`` names where and why."""


@dataclass(frozen=True, slots=True)
class PostureRules:
    enter_waiting: int = 3  # calls waiting for a seat (0: not a trigger)
    enter_longest_wait_s: float = 2.0  # the longest of them (0: not a trigger)
    leave_waiting: int = 0
    leave_longest_wait_s: float = 1.0
    calm_s: float = 60.0  # at or below both leave figures this long, without a break

    def checked(self, where: str) -> PostureRules:
        def bad(name: str, rule: str) -> PostureError:
            return PostureError(f"{where}: {name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("enter_waiting", "leave_waiting"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
                raise bad(name, "an integer from 0 to 10000")
        for name, low, high in (("enter_longest_wait_s", 0, 3600), ("leave_longest_wait_s", 0, 3600),
                                ("calm_s", 0, 24 * 3600)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise bad(name, f"a number from {low} to {high}")
        if not self.enter_waiting and not self.enter_longest_wait_s:
            raise PostureError(f"{where}: enter_waiting and enter_longest_wait_s are both 0; a surge would never "
                               "start by itself (set one of them)")
        if self.enter_waiting and self.leave_waiting >= self.enter_waiting:
            raise bad("leave_waiting", f"below enter_waiting ({self.enter_waiting}), or the posture flaps")
        if self.enter_longest_wait_s and self.leave_longest_wait_s >= self.enter_longest_wait_s:
            raise bad("leave_longest_wait_s",
                      f"below enter_longest_wait_s ({self.enter_longest_wait_s:g}), or the posture flaps")
        return self


_NAMES = {f.name for f in fields(PostureRules)}


def parse_posture(table: Any, where: str = "[posture]") -> PostureRules:
    """The ``[posture]`` table of the surge rules file, over the defaults; ``PostureError`` says what is wrong."""
    if not isinstance(table, dict):
        raise PostureError(f"{where} must be a table")
    unknown = set(table) - _NAMES
    if unknown:
        raise PostureError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_NAMES))})")
    return replace(PostureRules(), **table).checked(where)


@dataclass(frozen=True, slots=True)
class Change:
    """One change of posture: to ``mode``, how (``auto``/``declared``; ``None`` back to normal), why, by whom, when."""

    mode: str
    source: str | None
    reason: str
    by: str | None
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "source": self.source, "reason": self.reason, "by": self.by, "at": self.at}


class Posture:
    """Normal or surge; ``evaluate`` applies the rules, ``declare`` is a supervisor's word. Listeners get each ``Change``."""

    def __init__(self, rules: PostureRules | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.rules = rules if rules is not None else PostureRules()
        self._clock = clock
        self._current = Change(NORMAL, None, "start", None, clock())
        self._calm_since: float | None = None
        self.history: list[Change] = []
        self._listeners: list[Callable[[Change], object]] = []

    @property
    def surge(self) -> bool:
        return self._current.mode == SURGE

    @property
    def current(self) -> Change:
        return self._current

    def set_rules(self, rules: PostureRules) -> None:
        """New thresholds (a reloaded rules file); they apply from the next evaluation."""
        if rules != self.rules:
            log.info("posture thresholds now %s", rules)
        self.rules = rules

    def add_listener(self, listener: Callable[[Change], object]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _change(self, change: Change) -> Change:
        self._current = change
        self._calm_since = None
        self.history = [*self.history[-(HISTORY_MAX - 1):], change]
        log.warning("posture %s (%s) by %s: %s", change.mode, change.source or "-", change.by or "-", change.reason)
        for listener in tuple(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("posture listener %r failed", listener)
        return change

    def evaluate(self, now: float, waiting: int, longest_wait_s: float) -> Change | None:
        """Apply the rules to the figures at ``now``; the change made, if any."""
        rules = self.rules
        if not self.surge:
            reason = None
            if rules.enter_waiting and waiting >= rules.enter_waiting:
                reason = f"{waiting} calls waiting (threshold {rules.enter_waiting})"
            elif rules.enter_longest_wait_s and longest_wait_s >= rules.enter_longest_wait_s:
                reason = f"a call waiting {longest_wait_s:.1f} s (threshold {rules.enter_longest_wait_s:g} s)"
            if reason is None:
                return None
            return self._change(Change(SURGE, AUTO, reason, None, now))
        if self._current.source != AUTO:
            return None
        if waiting > rules.leave_waiting or longest_wait_s > rules.leave_longest_wait_s:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since < rules.calm_s:
            return None
        return self._change(Change(NORMAL, None, f"calm for {rules.calm_s:g} s ({waiting} calls waiting, "
                                                 f"longest {longest_wait_s:.1f} s)", None, now))

    def declare(self, surge: bool, *, by: str, reason: str) -> Change | None:
        """A supervisor enters or ends the surge posture; ``None`` when it is so already (a declared surge stays one)."""
        if surge and self._current.mode == SURGE and self._current.source == DECLARED:
            return None
        if not surge and not self.surge:
            return None
        if surge:
            return self._change(Change(SURGE, DECLARED, reason, by, self._clock()))
        return self._change(Change(NORMAL, None, reason, by, self._clock()))

    def restore(self, change: Change) -> None:
        """At start: the posture kept before the restart (``last_change``); listeners hear it like a change."""
        if change.mode == self._current.mode and change.source == self._current.source:
            return
        log.warning("posture restored: %s (%s) since %s by %s: %s", change.mode, change.source or "-", change.at,
                    change.by or "-", change.reason)
        self._change(change)

    def to_json(self) -> dict[str, Any]:
        current = self._current
        return {"mode": current.mode, "source": current.source, "since": current.at, "reason": current.reason,
                "by": current.by}


class PostureChangeRow(Base):
    """Every change of posture, in order; the last one is the posture a restarted backend takes up again."""

    __tablename__ = "posture_changes"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(TEXT_MAX))
    by: Mapped[str | None] = mapped_column(String(64))
    at_us: Mapped[int] = mapped_column(BigInteger)


async def save_change(engine: AsyncEngine, change: Change) -> None:
    async with engine.begin() as conn:
        await conn.execute(PostureChangeRow.__table__.insert().values(
            mode=change.mode, source=change.source, reason=change.reason[:TEXT_MAX], by=change.by,
            at_us=round(change.at * 1_000_000)))


async def last_change(engine: AsyncEngine) -> Change | None:
    """The last posture kept, or ``None`` (a new store: normal)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(PostureChangeRow).order_by(PostureChangeRow.id.desc()).limit(1))).first()
    if row is None:
        return None
    return Change(row.mode, row.source, row.reason, row.by, row.at_us / 1_000_000)


async def record_alert(engine: AsyncEngine, change: Change) -> None:
    """The supervisors' alert: opened when a surge starts (one row per surge), resolved when it ends."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    at_us = round(change.at * 1_000_000)
    async with sessions() as session, session.begin():
        open_row = await session.scalar(
            select(Alert).where(Alert.kind == ALERT_KIND, Alert.resolved_at_us.is_(None)).order_by(Alert.id.desc())
        )
        if change.mode == SURGE:
            text = (f"应急状态 surge posture ({change.source}{' by ' + change.by if change.by else ''}): "
                    f"{change.reason}; wrap-up suspended for every seat")
            if open_row is not None:  # automatic, then declared: the same surge goes on
                open_row.message = text
                return
            session.add(Alert(kind=ALERT_KIND, ref=f"posture:{at_us}", message=text, created_at_us=at_us))
        elif open_row is not None:
            open_row.resolved_at_us = at_us
            open_row.resolved_by = change.by or "posture"
            open_row.resolution = f"surge posture over: {change.reason}; wrap-up resumed"


async def run_posture(
    posture: Posture,
    figures: Callable[[], tuple[int, float]],
    changed: asyncio.Event | None = None,
    *,
    clock: Callable[[], float] = time.time,
    every_s: float = EVALUATE_EVERY_S,
) -> None:
    """Evaluate every ``every_s`` and whenever ``changed`` is set, until cancelled."""
    while True:
        try:
            posture.evaluate(clock(), *figures())
        except Exception:
            log.exception("posture evaluation failed; the next one tries again")
        if changed is None:
            await asyncio.sleep(every_s)
            continue
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), every_s)
        except TimeoutError:
            pass
