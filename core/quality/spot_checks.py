"""Daily spot checks: a reproducible, stratified random sample of the day's calls, scored by supervisors.

The sample is drawn with ``random.Random(seed)`` over the day's answered
calls in a fixed order; the seed, the size and a digest of that ordered
population are stored with the draw, so anyone can redraw it and get the same
calls. Strata are (shift, seat): every stratum gets one call before any gets
two, the rest is shared in proportion to size. Scores are 1-5 on a fixed
scorecard; the day's report (per seat and per station) is published as a
frozen copy that every station reads.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.calls.tables import Ticket
from core.calls.tickets import iso_utc
from core.errors import DomainError
from core.quality.tables import PublishedReport, SpotCheckDraw, SpotCheckItem

CRITERIA = ("speed", "attitude", "classification", "dispatch", "script")
_DAY = re.compile(r"[0-9]{8}")


class AlreadyDrawn(DomainError):
    status = 409
    error_id = "already-drawn"


class NotDrawn(DomainError, LookupError):
    status = 404
    error_id = "not-drawn"


class NotInSample(DomainError, LookupError):
    status = 404
    error_id = "not-in-sample"


@dataclass(frozen=True, slots=True, order=True)
class Call:
    number: str
    seat: str
    shift: str
    station: str | None = None


def shift_names(starts: Sequence[int]) -> list[tuple[int, str]]:
    """``(0, 8, 16)`` → ``[(0, "00-08"), (8, "08-16"), (16, "16-24")]``."""
    hours = sorted(set(starts))
    if not hours or any(not 0 <= h <= 23 for h in hours):
        raise ValueError("shift starts must be hours 0-23")
    ends = hours[1:] + [hours[0] + 24]
    return [(h, f"{h:02d}-{e if e <= 24 else e - 24:02d}") for h, e in zip(hours, ends, strict=True)]


def shift_of(hour: int, starts: Sequence[int]) -> str:
    names = shift_names(starts)
    current = names[-1][1]  # before the first start of the day: the night shift that began yesterday
    for start, name in names:
        if hour >= start:
            current = name
    return current


def population_digest(population: Sequence[Call]) -> str:
    text = "\n".join(f"{c.number}\t{c.seat}\t{c.shift}" for c in population)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def draw_sample(population: Sequence[Call], size: int, seed: int) -> list[Call]:
    """The sample for ``seed``: same population (in any order), same size, same seed → same calls."""
    rng = random.Random(seed)
    strata: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for call in sorted(population):
        strata[(call.shift, call.seat)].append(call)
    keys = sorted(strata)
    n = min(size, len(population))
    if n <= 0:
        return []
    allocation = dict.fromkeys(keys, 0)
    if n < len(keys):
        for key in rng.sample(keys, n):
            allocation[key] = 1
    else:
        for key in keys:
            allocation[key] = 1
        # The rest in proportion to what each stratum has left (largest remainder).
        remaining = n - len(keys)
        spare = {k: len(strata[k]) - 1 for k in keys}
        total = sum(spare.values())
        if remaining and total:
            shares = {k: remaining * spare[k] / total for k in keys}
            for k in keys:
                allocation[k] += int(shares[k])
            leftover = remaining - sum(int(s) for s in shares.values())
            by_fraction = sorted(keys, key=lambda k: (-(shares[k] - int(shares[k])), k))
            for k in by_fraction[:leftover]:
                allocation[k] += 1
    picked: list[Call] = []
    for key in keys:
        picked.extend(rng.sample(strata[key], allocation[key]))
    return sorted(picked)


def check_scores(scores: Mapping[str, Any]) -> dict[str, int]:
    """Exactly the scorecard's criteria, each an integer 1-5; ValueError names what is wrong."""
    missing = [c for c in CRITERIA if c not in scores]
    extra = [k for k in scores if k not in CRITERIA]
    if missing or extra:
        raise ValueError(f"scores need exactly {', '.join(CRITERIA)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(map(str, extra))}" if extra else ""))
    for name, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise ValueError(f"score {name} must be an integer from 1 to 5, got {value!r}")
    return {c: int(scores[c]) for c in CRITERIA}


def _check_day(day: str) -> None:
    if not _DAY.fullmatch(day):
        raise ValueError("day must be YYYYMMDD")
    datetime.strptime(day, "%Y%m%d")  # raises ValueError for 20261340


class SpotChecks:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        tz: str = "Asia/Shanghai",
        shift_starts: Sequence[int] = (0, 8, 16),
        default_size: int = 20,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._tz = ZoneInfo(tz)
        self.shift_starts = tuple(shift_starts)
        shift_names(self.shift_starts)  # fail at start-up, not at the first draw
        self.default_size = default_size

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    async def population(self, day: str) -> list[Call]:
        """The day's answered calls (center time), in ticket-number order."""
        _check_day(day)
        start = datetime.strptime(day, "%Y%m%d").replace(tzinfo=self._tz)
        end = (start + timedelta(days=1)).replace(tzinfo=self._tz)
        lo, hi = round(start.timestamp() * 1e6), round(end.timestamp() * 1e6)
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(Ticket.number, Ticket.seat, Ticket.created_at_us)
                    .where(Ticket.created_at_us >= lo, Ticket.created_at_us < hi, Ticket.seat.is_not(None))
                    .order_by(Ticket.number)
                )
            ).all()
        return [
            Call(number, seat, shift_of(datetime.fromtimestamp(at / 1e6, self._tz).hour, self.shift_starts))
            for number, seat, at in rows
        ]

    async def draw(self, day: str, *, by: str, size: int | None = None, seed: int | None = None) -> dict[str, Any]:
        """Draw and store the day's sample; a day is drawn once (AlreadyDrawn otherwise)."""
        size = self.default_size if size is None else size
        if size < 1:
            raise ValueError("size must be at least 1")
        seed = secrets.randbits(62) if seed is None else seed
        population = await self.population(day)
        sample = draw_sample(population, size, seed)
        try:
            async with self._sessions() as session, session.begin():
                draw = SpotCheckDraw(day=day, seed=seed, size=size, population=len(population),
                                     population_sha256=population_digest(population), drawn_by=by,
                                     drawn_at_us=self._now_us())
                session.add(draw)
                await session.flush()
                session.add_all(
                    SpotCheckItem(draw_id=draw.id, ticket_number=c.number, shift=c.shift, seat=c.seat,
                                  station=c.station) for c in sample
                )
        except IntegrityError:
            raise AlreadyDrawn(f"the sample of {day} was drawn already") from None
        return await self.sample(day)

    async def sample(self, day: str) -> dict[str, Any]:
        _check_day(day)
        async with self._sessions() as session:
            draw = await session.scalar(select(SpotCheckDraw).where(SpotCheckDraw.day == day))
            if draw is None:
                raise NotDrawn(f"no sample drawn for {day}")
            items = (
                await session.scalars(
                    select(SpotCheckItem).where(SpotCheckItem.draw_id == draw.id).order_by(SpotCheckItem.ticket_number)
                )
            ).all()
        return {
            "day": draw.day, "seed": draw.seed, "size": draw.size, "population": draw.population,
            "population_sha256": draw.population_sha256, "drawn_by": draw.drawn_by,
            "drawn_at": iso_utc(draw.drawn_at_us),
            "calls": [
                {"ticket": i.ticket_number, "shift": i.shift, "seat": i.seat, "station": i.station,
                 "scores": i.scores, "total": i.total, "comment": i.comment, "scored_by": i.scored_by,
                 "scored_at": None if i.scored_at_us is None else iso_utc(i.scored_at_us)}
                for i in items
            ],
        }

    async def redraw_matches(self, day: str) -> bool:
        """Whether drawing again from the stored seed over today's population gives the stored sample."""
        stored = await self.sample(day)
        population = await self.population(day)
        if population_digest(population) != stored["population_sha256"]:
            return False
        again = [c.number for c in draw_sample(population, stored["size"], stored["seed"])]
        return again == [c["ticket"] for c in stored["calls"]]

    async def score(
        self, day: str, ticket_number: str, *, scores: Mapping[str, Any], by: str, comment: str | None = None
    ) -> dict[str, Any]:
        checked = check_scores(scores)
        _check_day(day)
        async with self._sessions() as session, session.begin():
            draw = await session.scalar(select(SpotCheckDraw).where(SpotCheckDraw.day == day))
            if draw is None:
                raise NotDrawn(f"no sample drawn for {day}")
            item = await session.scalar(
                select(SpotCheckItem).where(SpotCheckItem.draw_id == draw.id,
                                            SpotCheckItem.ticket_number == ticket_number)
            )
            if item is None:
                raise NotInSample(f"{ticket_number} is not in the sample of {day}")
            item.scores = checked
            item.total = round(sum(checked.values()) / len(checked), 3)
            item.comment = comment
            item.scored_by = by
            item.scored_at_us = self._now_us()
            return {"ticket": ticket_number, "scores": checked, "total": item.total, "comment": comment}

    async def report(self, day: str) -> dict[str, Any]:
        """The day's report: the published copy if there is one, else computed now."""
        _check_day(day)
        async with self._sessions() as session:
            published = await session.get(PublishedReport, day)
        if published is not None:
            return {**published.report, "published": True, "published_by": published.published_by,
                    "published_at": iso_utc(published.published_at_us)}
        return {**self._compute((await self.sample(day))["calls"], day), "published": False}

    async def publish(self, day: str, *, by: str) -> dict[str, Any]:
        report = self._compute((await self.sample(day))["calls"], day)
        async with self._sessions() as session, session.begin():
            if await session.get(PublishedReport, day) is not None:
                raise AlreadyDrawn(f"the report of {day} was published already")
            session.add(PublishedReport(day=day, report=report, published_by=by, published_at_us=self._now_us()))
        return await self.report(day)

    @staticmethod
    def _compute(calls: Sequence[Mapping[str, Any]], day: str) -> dict[str, Any]:
        def summarise(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
            scored = [c for c in group if c["scores"]]
            averages = {
                c: round(sum(s["scores"][c] for s in scored) / len(scored), 3) if scored else None for c in CRITERIA
            }
            total = round(sum(s["total"] for s in scored) / len(scored), 3) if scored else None
            return {"sampled": len(group), "scored": len(scored), "average": averages, "total": total}

        by_seat: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        by_station: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for call in calls:
            by_seat[call["seat"]].append(call)
            by_station[call["station"] or "unassigned"].append(call)
        return {
            "day": day,
            "criteria": list(CRITERIA),
            "center": summarise(calls),
            "seats": {seat: summarise(group) for seat, group in sorted(by_seat.items())},
            "stations": {station: summarise(group) for station, group in sorted(by_station.items())},
        }
