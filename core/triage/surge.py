"""Surge alerts: more incidents in a station's area (or one cell) than usual, told to that station.

Each located ticket counts once, at its call time, for its station and its
cell; a corrected location moves it. Over a sliding window (15 minutes by
default) the count is held against two tests, either of which starts a
surge:

* a threshold: ``station_threshold`` / ``cell_threshold`` incidents in the window;
* growth over the baseline: at least ``growth`` times the average count of the
  same window of the day on each of the previous ``baseline_days`` days, and
  at least ``min_count`` (three calls where there is usually one is not a surge).

Both are configured per region (``[region.<station id>]`` in
``dialplan/surge.toml``, over ``[default]``); a cell takes its station's.

No alert storm: a surge is one alert (kind ``surge``, reference
``station:<id>`` or ``cell:<cell>``) written when it starts, updated with the
count while it lasts, and resolved when the count falls below ``end_ratio``
of what started it — a surge hovering at the threshold does not flap. A
later surge at the same place reopens that row. Each change is also pushed
on the event stream to the station concerned.

The same file's ``[posture]`` table holds the thresholds of the room's surge
posture (calls waiting for a seat: ``core.seats.posture``); it is checked
here with the rest, and each configuration read is told to ``on_config``'s
listeners (the assembly hands it to the posture).
"""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.alerts.board import Alert
from core.calls.lifecycle import Step
from core.calls.tables import Ticket
from core.calls.tickets import StepView, TicketView, iso_utc
from core.dispatch.planner import IncidentRow
from core.seats.posture import PostureError, PostureRules, parse_posture
from core.tasks import WORK_MAX, Overflow, stop_task

__all__ = ["SurgeConfig", "SurgeError", "SurgeSettings", "SurgeWatch", "load_surge_config", "parse_surge_config"]

log = logging.getLogger(__name__)

KIND = "surge"
DAY_US = 86_400 * 1_000_000
TICK_S = 30.0
BASELINE_CACHE_US = 300 * 1_000_000  # a baseline is re-read at most every 5 minutes per place


class SurgeError(ValueError):
    """A surge configuration that cannot be used; ``str()`` names the file and the reason."""


@dataclass(frozen=True, slots=True)
class SurgeSettings:
    window_min: float = 15.0
    station_threshold: int = 40
    cell_threshold: int = 12
    growth: float = 3.0
    baseline_days: int = 7
    min_count: int = 6
    end_ratio: float = 0.7

    def checked(self, where: str) -> SurgeSettings:
        def bad(name: str, rule: str) -> SurgeError:
            return SurgeError(f"{where}: {name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("station_threshold", "cell_threshold", "baseline_days", "min_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100_000:
                raise bad(name, "an integer from 0 to 100000")
        for name, low, high in (("window_min", 1, 24 * 60), ("growth", 1, 1000), ("end_ratio", 0.1, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise bad(name, f"a number from {low} to {high}")
        return self

    @property
    def window_us(self) -> int:
        return round(self.window_min * 60 * 1_000_000)


@dataclass(frozen=True, slots=True)
class SurgeConfig:
    default: SurgeSettings
    regions: Mapping[str, SurgeSettings]  # by station id
    posture: PostureRules = PostureRules()  # the room's surge posture (calls waiting for a seat)

    def for_station(self, station: str | None) -> SurgeSettings:
        return self.regions.get(station or "", self.default)


_NAMES = {f.name for f in fields(SurgeSettings)}


def _settings(table: Any, base: SurgeSettings, where: str) -> SurgeSettings:
    if not isinstance(table, dict):
        raise SurgeError(f"{where} must be a table")
    unknown = set(table) - _NAMES
    if unknown:
        raise SurgeError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_NAMES))})")
    return replace(base, **table).checked(where)


def parse_surge_config(text: str, path: str = "surge.toml") -> SurgeConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SurgeError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"default", "region", "posture"}
    if unknown:
        raise SurgeError(f"{path}: unknown table {sorted(unknown)[0]!r} (allowed: default, region.<station>, posture)")
    default = _settings(data.get("default", {}), SurgeSettings(), f"{path} [default]")
    regions = {
        station: _settings(table, default, f"{path} [region.{station}]")
        for station, table in data.get("region", {}).items()
    }
    try:
        posture = parse_posture(data.get("posture", {}), f"{path} [posture]")
    except PostureError as exc:
        raise SurgeError(str(exc)) from None
    return SurgeConfig(default, regions, posture)


def load_surge_config(path: str | Path) -> SurgeConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SurgeError(f"{path}: cannot read the file: {exc}") from None
    return parse_surge_config(text, str(path))


@dataclass(slots=True)
class _Surge:
    started_us: int
    count: int
    peak: int
    reason: str


Publisher = Callable[[dict[str, Any], "str | None"], object]


class SurgeWatch:
    """Counts located incidents per station and cell; starts, updates and ends surge alerts."""

    def __init__(
        self, engine: AsyncEngine, config: SurgeConfig | None = None, *, clock: Callable[[], float] = time.time,
        publish: Publisher | None = None,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._config_listeners: list[Callable[[SurgeConfig], object]] = []
        self.config = config or SurgeConfig(SurgeSettings(), {})
        self._clock = clock
        self._publish = publish
        # place key ("station:x" / "cell:y") -> ticket number -> call time; newest last
        self._windows: dict[str, OrderedDict[str, int]] = {}
        self._placed: dict[str, tuple[str | None, str | None, int]] = {}  # number -> (station, cell, at_us)
        self._station_of_key: dict[str, str | None] = {}
        self._active: dict[str, _Surge] = {}
        self._baselines: dict[str, tuple[int, float]] = {}  # key -> (computed at, average)
        self._pending: asyncio.Queue[tuple[str, str | None, str | None, int]] = asyncio.Queue(WORK_MAX)
        self.overflow = Overflow("surge counts", self._pending, log=log)
        self._task: asyncio.Task[None] | None = None

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    @property
    def config(self) -> SurgeConfig:
        return self._config

    @config.setter
    def config(self, config: SurgeConfig) -> None:
        self._config = config
        for listener in tuple(self._config_listeners):
            try:
                listener(config)
            except Exception:
                log.exception("surge configuration listener %r failed", listener)

    def on_config(self, listener: Callable[[SurgeConfig], object]) -> None:
        """Tell ``listener`` the configuration now, and each one read after (a reload)."""
        self._config_listeners.append(listener)
        listener(self._config)

    # -- the listener and its worker ---------------------------------------------

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        """``TicketService`` listener: queue each located ticket (synchronous, no I/O)."""
        if step.step is Step.LOCATED:
            station = step.detail.get("station")
            cell = step.detail.get("cell")
            self.overflow.put((ticket.number, station if isinstance(station, str) else None,
                               cell if isinstance(cell, str) else None, ticket.created_at_us), ticket.created_at_us)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="surge-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def flush(self) -> None:
        await self._pending.join()

    async def _run(self) -> None:
        while True:
            try:
                item = await asyncio.wait_for(self._pending.get(), TICK_S)
            except TimeoutError:
                await self._guarded(self.tick())
                continue
            try:
                await self._guarded(self.observe(*item))
            finally:
                self._pending.task_done()
            await self.overflow.after_item(self.repair)

    def health(self) -> dict[str, Any]:
        return self.overflow.health()

    async def repair(self, since_us: int) -> int:
        """After a full queue: count every ticket located since ``since_us`` (a counted one is only moved)."""
        async with self._sessions() as session:
            rows = (await session.execute(
                select(IncidentRow.number, IncidentRow.station_id, IncidentRow.cell, Ticket.created_at_us)
                .join(Ticket, Ticket.number == IncidentRow.number)
                .where(IncidentRow.located_at_us >= since_us)
                .order_by(IncidentRow.located_at_us))).all()
        for number, station, cell, created_at_us in rows:
            await self.observe(number, station, cell, created_at_us)
        return len(rows)

    @staticmethod
    async def _guarded(work: Any) -> None:
        try:
            await work
        except Exception:
            log.exception("surge evaluation failed; the next event tries again")

    # -- counting ------------------------------------------------------------------

    async def observe(self, number: str, station: str | None, cell: str | None, at_us: int) -> None:
        """Count (or move) one located ticket and evaluate the places it touches."""
        previous = self._placed.get(number)
        if previous is not None:
            at_us = previous[2]  # a correction keeps the call time
            for key in self._keys(previous[0], previous[1]):
                self._windows.get(key, OrderedDict()).pop(number, None)
        self._placed[number] = (station, cell, at_us)
        touched = set()
        for key in self._keys(station, cell):
            window = self._windows.setdefault(key, OrderedDict())
            window[number] = at_us
            self._station_of_key[key] = station
            touched.add(key)
        if previous is not None:
            touched.update(self._keys(previous[0], previous[1]))
        self._expire()
        for key in sorted(touched):
            await self.evaluate(key)

    async def tick(self) -> None:
        """Slide the windows and re-evaluate the surges in progress, so one ends without a new call."""
        self._expire()
        for key in sorted(self._active):
            await self.evaluate(key)

    @staticmethod
    def _keys(station: str | None, cell: str | None) -> list[str]:
        return ([f"station:{station}"] if station else []) + ([f"cell:{cell}"] if cell else [])

    def _settings(self, key: str) -> SurgeSettings:
        return self.config.for_station(self._station_of_key.get(key))

    def _expire(self) -> None:
        now = self._now_us()
        longest = max([self.config.default.window_us, *(s.window_us for s in self.config.regions.values())])
        for key, window in list(self._windows.items()):
            horizon = now - self._settings(key).window_us
            while window and next(iter(window.values())) < horizon:
                window.popitem(last=False)
            if not window and key not in self._active:
                del self._windows[key]
        for number, (_, _, at_us) in list(self._placed.items()):
            if at_us < now - longest:
                del self._placed[number]

    def count(self, key: str) -> int:
        horizon = self._now_us() - self._settings(key).window_us
        return sum(1 for at in self._windows.get(key, {}).values() if at >= horizon)

    async def baseline(self, key: str) -> float:
        """The average count of the same window on each of the previous days (0 with no history)."""
        now = self._now_us()
        cached = self._baselines.get(key)
        if cached is not None and now - cached[0] < BASELINE_CACHE_US:
            return cached[1]
        settings = self._settings(key)
        if settings.baseline_days == 0:
            return 0.0
        kind, _, ident = key.partition(":")
        column = IncidentRow.station_id if kind == "station" else IncidentRow.cell
        total = 0
        async with self._engine.connect() as conn:
            for day in range(1, settings.baseline_days + 1):
                end = now - day * DAY_US
                total += await conn.scalar(
                    select(func.count())
                    .select_from(Ticket)
                    .join(IncidentRow, IncidentRow.number == Ticket.number)
                    .where(column == ident, Ticket.created_at_us > end - settings.window_us,
                           Ticket.created_at_us <= end)
                ) or 0
        average = total / settings.baseline_days
        self._baselines[key] = (now, average)
        return average

    # -- deciding --------------------------------------------------------------------

    async def evaluate(self, key: str) -> None:
        settings = self._settings(key)
        count = self.count(key)
        threshold = settings.station_threshold if key.startswith("station:") else settings.cell_threshold
        active = self._active.get(key)
        ratio = 1.0 if active is None else settings.end_ratio
        reason = None
        if threshold and count >= threshold * ratio:
            reason = f"{count} incidents in {settings.window_min:g} min (threshold {threshold})"
        elif count >= settings.min_count * ratio:
            base = await self.baseline(key)
            if base > 0 and count >= settings.growth * base * ratio:
                reason = (f"{count} incidents in {settings.window_min:g} min, {count / base:.1f}× the usual "
                          f"{base:.1f}")
            elif base == 0 and settings.baseline_days and count >= settings.min_count * ratio and active:
                reason = active.reason  # still going; a place with no history has no baseline to fall under
        now = self._now_us()
        if reason is not None and active is None:
            self._active[key] = _Surge(now, count, count, reason)
            await self._write(key, self._message(key, count, reason, now), now, resolve=False)
            self._tell(key, "surge_started", count, reason, now)
        elif reason is not None and active is not None and count != active.count:
            active.count, active.peak, active.reason = count, max(active.peak, count), reason
            await self._write(key, self._message(key, count, reason, active.started_us, active.peak), now,
                              resolve=False)
            self._tell(key, "surge_updated", count, reason, active.started_us)
        elif reason is None and active is not None:
            del self._active[key]
            await self._write(key, self._message(key, count, "ended", active.started_us, active.peak), now,
                              resolve=True)
            self._tell(key, "surge_ended", count, "ended", active.started_us)

    def surges(self) -> dict[str, dict[str, Any]]:
        return {key: {"since": iso_utc(s.started_us), "count": s.count, "peak": s.peak, "reason": s.reason}
                for key, s in self._active.items()}

    @staticmethod
    def _message(key: str, count: int, reason: str, started_us: int, peak: int | None = None) -> str:
        peak_text = "" if peak is None else f", peak {peak}"
        return f"警情激增 surge at {key} since {iso_utc(started_us)}: {reason}{peak_text}"

    async def _write(self, key: str, message: str, now: int, *, resolve: bool) -> None:
        # The alert board keeps one row per kind and reference and only inserts;
        # a surge is one row that changes, so it is written here.
        async with self._sessions() as session, session.begin():
            row = await session.scalar(select(Alert).where(Alert.kind == KIND, Alert.ref == key))
            if row is None:
                if resolve:
                    return
                session.add(Alert(kind=KIND, ref=key, message=message, created_at_us=now))
                return
            if not resolve and row.resolved_at_us is not None:
                row.created_at_us = now  # a new surge at a place that had one before
                row.acknowledged_at_us = row.acknowledged_by = None
            if row.resolved_at_us is not None and resolve:
                return  # resolved already (by a supervisor, or before)
            row.message = message
            row.resolved_at_us = now if resolve else None
            row.resolved_by, row.resolution = ("surge watch", "the surge is over") if resolve else (None, None)

    def _tell(self, key: str, what: str, count: int, reason: str, started_us: int) -> None:
        log.warning("%s at %s: %d (%s)", what, key, count, reason)
        if self._publish is None:
            return
        try:
            self._publish({"type": what, "ref": key, "count": count, "reason": reason,
                           "since": iso_utc(started_us)}, self._station_of_key.get(key))
        except Exception:
            log.exception("surge message for %s could not be published", key)
