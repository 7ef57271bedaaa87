"""Mobilising support for a major incident: several officers at once, each rung on his own ladder.

A supervisor asks for N officers (and/or N from named units, i.e. stations) for a ticket with an incident
location. The selection (``select_support``) takes, from officers who are available, rostered now and located:

1. named units first: each named station's officers, nearest first;
2. then, for the count, the tiers of the force around the incident, each exhausted before the next:
   ``station`` — the incident's own station; ``neighbour`` — the stations whose patrol area borders it;
   ``county`` — the other stations of the same county bureau. Within a tier the nearer station comes first
   (its nearest cell's centre to the incident), and within a station the nearer officer (whole metres, then
   the one free longest, then the badge). A station's officers are kept together so that one duty desk
   coordinates them; the city bureau's own reserves are beyond this service: what the county cannot give is
   reported as ``short``.

There is no ring limit: support comes from across the station's area and beyond, which the ordinary
dispatch (``max_k`` rings) does not search.

``Mobiliser`` reserves the picks (the same conditional UPDATE as a dispatch, under the planner's lock so a
dispatch and a mobilisation never interleave their choices), records ``support_requested``, then rings every
pick's ladder at the same time — the officer, then his unit's duty desk, then its superior, with the unit's
answer timeout — each phone alone: a mobilised officer is told and sent, not put into the caller's
conference (``docs/dispatch.md``). Every ring and outcome is a ticket step, so it is pushed on the event
stream like any dispatch step, and an officer holding the ticket sees its steps and briefing on his page.
The telephony side's Dispatcher sets the planner's ``ring_alone`` (the same call a text report's officer
gets, dialplan ``dispatch-notice``); without it (no Asterisk wired) mobilising is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from core.calls.lifecycle import Step, advance
from core.calls.tickets import Source, TicketView
from core.dispatch.geo import Grid, eta_s, haversine_m
from core.dispatch.officers import (
    CellStationRow,
    OfficerStatus,
    OfficerView,
    StationView,
    UnknownStation,
)
from core.dispatch.planner import (
    NO_ANSWER_OUTCOMES,
    Candidate,
    Choice,
    DispatchPlanner,
    DispatchSettings,
    Incident,
    Rung,
    RungKind,
    ladder,
)
from core.errors import DomainError

__all__ = [
    "MOBILISE_MAX",
    "MobilisationRefused",
    "Mobiliser",
    "Pick",
    "Selection",
    "SupportRequest",
    "Tier",
    "mobilisation_status",
    "select_support",
]

log = logging.getLogger(__name__)

MOBILISE_MAX = 50  # officers in one request: a large incident's first wave, not the whole force
UNITS_MAX = 10



class Tier(StrEnum):
    NAMED = "named"  # a unit the supervisor named
    STATION = "station"  # the incident's own station
    NEIGHBOUR = "neighbour"  # a station whose area borders the incident station's
    COUNTY = "county"  # another station of the same county bureau


class MobilisationRefused(DomainError):
    status = 409
    error_id = "mobilisation-refused"


@dataclass(frozen=True, slots=True)
class SupportRequest:
    officers: int = 0  # this many from the tiers around the incident
    units: Mapping[str, int] = field(default_factory=dict)  # station id → this many of its officers

    def checked(self) -> SupportRequest:
        if isinstance(self.officers, bool) or not isinstance(self.officers, int) or not 0 <= self.officers:
            raise ValueError(f"officers must be a whole number ≥ 0, got {self.officers!r}")
        if len(self.units) > UNITS_MAX:
            raise ValueError(f"at most {UNITS_MAX} named units")
        for station, count in self.units.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"unit {station!r}: a whole number of officers ≥ 1, got {count!r}")
        total = self.officers + sum(self.units.values())
        if not 1 <= total <= MOBILISE_MAX:
            raise ValueError(f"ask for 1 to {MOBILISE_MAX} officers in all, got {total}")
        return self

    def to_json(self) -> dict[str, Any]:
        return {"officers": self.officers, "units": dict(self.units)}


@dataclass(frozen=True, slots=True)
class Pick:
    officer: OfficerView
    tier: Tier
    distance_m: float
    eta_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "badge": self.officer.badge,
            "name": self.officer.name,
            "station": self.officer.station,
            "tier": str(self.tier),
            "distance_m": round(self.distance_m, 1),
            "eta_s": round(self.eta_s, 1),
        }


@dataclass(frozen=True, slots=True)
class Selection:
    picks: tuple[Pick, ...]  # in the order chosen
    short: int  # of the count, how many could not be found
    units_short: Mapping[str, int]  # named unit → how many it could not give
    tiers: Mapping[str, tuple[str, ...]]  # tier → its stations, nearest first (what was searched)
    reserve: tuple[Pick, ...] = ()  # the next candidates, should a pick be taken meanwhile


# -- the selection (pure) -------------------------------------------------------------------


def _eligible(officer: OfficerView, at_us: int, settings: DispatchSettings) -> bool:
    if officer.status is not OfficerStatus.AVAILABLE or not officer.on_roster(at_us):
        return False
    if officer.lat is None or officer.lon is None:
        return False
    if settings.max_fix_age_s is not None and (
        officer.located_at_us is None or at_us - officer.located_at_us > settings.max_fix_age_s * 1e6
    ):
        return False
    return True


def station_tiers(
    incident: Incident, stations: Sequence[StationView], cells: Mapping[str, str], grid: Grid, max_k: int
) -> dict[Tier, list[str]]:
    """The stations of each tier, nearest first. ``cells``: every assigned cell → its station."""
    by_station: dict[str, list[str]] = {}
    for cell, station in cells.items():
        by_station.setdefault(station, []).append(cell)

    def distance(station: str) -> float:
        own = by_station.get(station, ())
        if incident.cell in own:
            return 0.0
        return min((haversine_m(incident.lat, incident.lon, *grid.center_of(c)) for c in own), default=float("inf"))

    known = {s.id: s for s in stations}
    home = incident.station
    if home is None:
        # An incident outside every station's area: the stations within reach of the ordinary search border it.
        near = {cells[c] for c in grid.grid_disk(incident.cell, max_k) if c in cells}
        return {Tier.STATION: [], Tier.NEIGHBOUR: sorted(near, key=lambda s: (distance(s), s)), Tier.COUNTY: []}
    bordering: set[str] = set()
    for cell in by_station.get(home, ()):
        for other in grid.grid_disk(cell, 1):
            station = cells.get(other)
            if station is not None and station != home:
                bordering.add(station)
    bureau = known[home].bureau if home in known else None
    county = {s.id for s in stations if bureau is not None and s.bureau == bureau} - bordering - {home}
    return {
        Tier.STATION: [home],
        Tier.NEIGHBOUR: sorted(bordering, key=lambda s: (distance(s), s)),
        Tier.COUNTY: sorted(county, key=lambda s: (distance(s), s)),
    }


def select_support(
    officers: Iterable[OfficerView],
    *,
    incident: Incident,
    stations: Sequence[StationView],
    cells: Mapping[str, str],
    grid: Grid,
    at_us: int,
    request: SupportRequest,
    settings: DispatchSettings = DispatchSettings(),
) -> Selection:
    """Who to mobilise, by the rule in the module docstring. Nothing is reserved."""
    request = request.checked()
    known = {s.id for s in stations}
    for unit in request.units:
        if unit not in known:
            raise UnknownStation(f"no station {unit!r}", details={"station": unit})
    pool: dict[str, list[Pick]] = {}
    for officer in officers:
        if not _eligible(officer, at_us, settings):
            continue
        assert officer.lat is not None and officer.lon is not None
        d = haversine_m(incident.lat, incident.lon, officer.lat, officer.lon)
        pick = Pick(officer, Tier.STATION, d, eta_s(d, speed_kmh=settings.speed_kmh, detour=settings.detour))
        pool.setdefault(officer.station, []).append(pick)
    for picks in pool.values():
        picks.sort(key=lambda p: (round(p.distance_m), p.officer.status_changed_at_us, p.officer.badge))

    taken: set[str] = set()
    chosen: list[Pick] = []
    units_short: dict[str, int] = {}
    for unit, count in request.units.items():
        got = [p for p in pool.get(unit, ()) if p.officer.badge not in taken][:count]
        chosen.extend(Pick(p.officer, Tier.NAMED, p.distance_m, p.eta_s) for p in got)
        taken.update(p.officer.badge for p in got)
        if len(got) < count:
            units_short[unit] = count - len(got)

    tiers = station_tiers(incident, stations, cells, grid, settings.max_k)
    ordered = [
        Pick(p.officer, tier, p.distance_m, p.eta_s)
        for tier in (Tier.STATION, Tier.NEIGHBOUR, Tier.COUNTY)
        for station in tiers[tier]
        for p in pool.get(station, ())
        if p.officer.badge not in taken
    ]
    chosen.extend(ordered[: request.officers])
    return Selection(
        picks=tuple(chosen),
        short=max(0, request.officers - len(ordered)),
        units_short=units_short,
        tiers={str(t): tuple(s) for t, s in tiers.items()},
        reserve=tuple(ordered[request.officers :]),
    )


# -- what came of it (pure, from the ticket's steps) ----------------------------------------


def mobilisation_status(ticket: TicketView, *, running: bool = False) -> dict[str, Any]:
    """Every pick of the ticket's mobilisations and where it stands, from its steps alone.

    A pick is ``ringing`` (a rung of its ladder rings), ``on_the_way`` (the officer answered), ``escalated``
    (he did not; his duty desk or superior answered and took it over), ``unanswered`` (nobody on the ladder
    answered), or ``stood_down``.
    """
    requests: list[dict[str, Any]] = []
    picks: dict[str, dict[str, Any]] = {}
    for step in ticket.steps:
        d = step.detail
        if step.step is Step.SUPPORT_REQUESTED:
            requests.append({"at_us": step.at_us, "by": d.get("by"), "asked": d.get("asked"),
                             "short": d.get("short", 0), "units_short": d.get("units_short", {}),
                             "picks": [p.get("badge") for p in d.get("picks", ())]})
            for p in d.get("picks", ()):
                picks[p["badge"]] = {**p, "state": "picked", "rungs": [], "answered_by": None}
        elif step.step in (Step.SUPPORT_RINGING, Step.SUPPORT_NO_ANSWER, Step.SUPPORT_JOINED,
                           Step.SUPPORT_UNANSWERED):
            pick = picks.get(d.get("pick", ""))
            if pick is None:
                continue
            if step.step is Step.SUPPORT_RINGING:
                pick["state"] = "ringing"
                pick["rungs"].append({"kind": d.get("kind"), "endpoint": d.get("endpoint"), "at_us": step.at_us})
            elif step.step is Step.SUPPORT_NO_ANSWER:
                if pick["rungs"]:
                    pick["rungs"][-1]["outcome"] = d.get("outcome")
            elif step.step is Step.SUPPORT_JOINED:
                pick["state"] = "on_the_way" if d.get("kind") == RungKind.OFFICER else "escalated"
                pick["answered_by"] = d.get("kind")
                if pick["rungs"]:
                    pick["rungs"][-1]["outcome"] = "answered"
            else:
                pick["state"] = "unanswered"
        elif step.step is Step.SUPPORT_STOOD_DOWN:
            for badge in d.get("released", ()):
                if badge in picks:
                    picks[badge]["state"] = "stood_down"
    counts: dict[str, int] = {}
    for pick in picks.values():
        counts[pick["state"]] = counts.get(pick["state"], 0) + 1
    return {"number": ticket.number, "running": running, "requests": requests, "picks": list(picks.values()),
            "counts": counts}


# -- the service -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MobilisationPlan:
    number: str
    incident: Incident
    selection: Selection
    ladders: tuple[tuple[Pick, tuple[Rung, ...]], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "incident": self.incident.to_json(),
            "picks": [{**p.to_json(), "ladder": [r.to_json() for r in rungs]} for p, rungs in self.ladders],
            "short": self.selection.short,
            "units_short": dict(self.selection.units_short),
            "tiers": {k: list(v) for k, v in self.selection.tiers.items()},
        }


class Mobiliser:
    """Selection, reservation, the ladders rung in parallel, and every outcome as a ticket step."""

    def __init__(self, planner: DispatchPlanner) -> None:
        self.planner = planner
        self.officers = planner.officers
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # A desk rung for two unanswered officers at once would be busy for the second: one call at a time.
        self._phone_locks: dict[str, asyncio.Lock] = {}

    def running(self, number: str) -> bool:
        task = self._tasks.get(number)
        return task is not None and not task.done()

    async def select(self, number: str, request: SupportRequest, *, at: float | None = None) -> Selection:
        incident = await self.planner._located(number)
        at = self.planner.officers.now() if at is None else at
        async with self.planner._sessions() as session:
            cells = {c: s for c, s in await session.execute(select(CellStationRow.cell, CellStationRow.station_id))}
        return select_support(
            await self.officers.list(), incident=incident, stations=await self.officers.stations(), cells=cells,
            grid=self.officers.grid, at_us=round(at * 1_000_000), request=request, settings=self.planner.settings,
        )

    async def mobilise(
        self, number: str, request: SupportRequest, *, by: str, source: Source | str = Source.API
    ) -> MobilisationPlan:
        """Pick and reserve, record ``support_requested``, and start ringing every pick (an owned task)."""
        if self.planner.ring_alone is None:
            raise MobilisationRefused("no telephony is wired to ring officers' phones", status=503,
                                      error_id="mobilisation-unavailable")
        if self.running(number):
            raise MobilisationRefused(f"support for {number} is still being rung; wait for its outcomes",
                                      error_id="mobilisation-running", details={"number": number})
        ticket = await self.planner._ticket(number)
        advance(ticket.state, Step.SUPPORT_REQUESTED)  # closed: refused before anyone is reserved
        incident = await self.planner._located(number)
        at = self.officers.now()
        async with self.planner._choose_lock:
            selection = await self.select(number, request, at=at)
            picks = await self._reserve(number, selection)
        selection = Selection(tuple(picks), selection.short + (len(selection.picks) - len(picks)),
                              selection.units_short, selection.tiers)
        ladders = []
        for pick in picks:
            station = await self.officers.station(pick.officer.station)
            candidate = Candidate(pick.officer, 0, pick.distance_m, pick.eta_s)
            choice = Choice(incident.lat, incident.lon, incident.cell, incident.station, candidate)
            ladders.append((pick, tuple(ladder(choice, station))))
        plan = MobilisationPlan(number, incident, selection, tuple(ladders))
        detail = {"by": by, "asked": request.to_json(), "picks": [p.to_json() for p in picks],
                  "short": selection.short, "units_short": dict(selection.units_short),
                  "tiers": {k: list(v) for k, v in selection.tiers.items()}, "station": incident.station}
        try:
            await self.planner.tickets.record_step(ticket.uniqueid, Step.SUPPORT_REQUESTED, at=at, source=source,
                                                   **detail)
        except BaseException:
            for pick in picks:
                await self.officers.release(pick.officer.badge, number)
            raise
        if ladders:
            task = asyncio.create_task(self._run(number, plan), name=f"mobilise-{number}")
            self._tasks[number] = task
            task.add_done_callback(lambda t: self._tasks.pop(number, None) if self._tasks.get(number) is t else None)
        return plan

    async def status(self, number: str) -> dict[str, Any]:
        return mobilisation_status(await self.planner._ticket(number), running=self.running(number))

    async def stand_down(self, number: str, *, by: str) -> TicketView:
        """Release the officers mobilised for the ticket (on the way or still held); step ``support_stood_down``."""
        if self.running(number):
            raise MobilisationRefused(f"support for {number} is still being rung; wait for its outcomes",
                                      error_id="mobilisation-running", details={"number": number})
        ticket = await self.planner._ticket(number)
        advance(ticket.state, Step.SUPPORT_STOOD_DOWN)
        mobilised = {p["badge"] for p in mobilisation_status(ticket)["picks"] if p["state"] == "on_the_way"}
        released = []
        for badge in sorted(mobilised):
            if await self.officers.stand_down(badge, number):  # still held by this ticket, on his way or there
                released.append(badge)
        incident = await self.planner.incident(number)
        return await self.planner.tickets.record_step(
            ticket.uniqueid, Step.SUPPORT_STOOD_DOWN, at=self.officers.now(), source=Source.API, by=by,
            released=released, station=None if incident is None else incident.station)

    async def wait(self, number: str) -> None:
        """Until the ticket's ladders are done (tests, shutdown)."""
        task = self._tasks.get(number)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # -- the work ------------------------------------------------------------------

    async def _reserve(self, number: str, selection: Selection) -> list[Pick]:
        """Hold every pick; one taken meanwhile is replaced by the next of the tiers' order, if any."""
        spare = list(selection.reserve)
        held: list[Pick] = []
        for pick in selection.picks:
            if await self.officers.reserve(pick.officer.badge, number):
                held.append(pick)
                continue
            log.info("%s: officer %s was taken meanwhile", number, pick.officer.badge)
            if pick.tier is Tier.NAMED:
                continue  # a named unit's officer is replaced only from that unit, and the order gave none
            while spare:
                other = spare.pop(0)
                if await self.officers.reserve(other.officer.badge, number):
                    held.append(other)
                    break
        return held

    async def _record(self, number: str, step: Step, pick: Pick, rung: Rung | None = None, **detail: Any) -> None:
        try:
            ticket = await self.planner._ticket(number)
            incident = await self.planner.incident(number)
            payload = {"pick": pick.officer.badge, "tier": str(pick.tier),
                       "station": None if incident is None else incident.station,
                       **({} if rung is None else rung.to_json()), **detail}
            await self.planner.tickets.record_step(ticket.uniqueid, step, at=self.officers.now(),
                                                   source=Source.AMI, **payload)
        except Exception:
            # The trail must not stop the other ladders; the failure is logged loudly.
            log.exception("%s: mobilisation step %s for %s not recorded", number, step, pick.officer.badge)

    async def _run(self, number: str, plan: MobilisationPlan) -> None:
        results = await asyncio.gather(*(self._ladder(number, pick, rungs) for pick, rungs in plan.ladders),
                                       return_exceptions=True)
        for (pick, _), result in zip(plan.ladders, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s: the ladder of %s failed: %r", number, pick.officer.badge, result)
                await self.officers.release(pick.officer.badge, number)
                await self._record(number, Step.SUPPORT_UNANSWERED, pick, reason="internal_error")

    async def _ladder(self, number: str, pick: Pick, rungs: Sequence[Rung]) -> None:
        ring = self.planner.ring_alone
        assert ring is not None
        if not any(r.kind is RungKind.OFFICER for r in rungs):
            # His unit's ladder never rings officers (its desk sends them): he is not held while it rings.
            await self.officers.release(pick.officer.badge, number)
        for rung in rungs:
            async with self._phone_locks.setdefault(rung.endpoint, asyncio.Lock()):
                await self._record(number, Step.SUPPORT_RINGING, pick, rung)
                try:
                    answered, outcome = await ring(number, rung.endpoint, rung.timeout_s)
                except Exception:
                    log.exception("%s: ringing %s failed", number, rung.endpoint)
                    answered, outcome = False, "failed"
            if answered:
                if rung.kind is RungKind.OFFICER and not await self.officers.mark_dispatched(pick.officer.badge,
                                                                                               number):
                    log.warning("%s: officer %s answered but was no longer held", number, pick.officer.badge)
                await self._record(number, Step.SUPPORT_JOINED, pick, rung)
                return
            if rung.kind is RungKind.OFFICER:
                await self.officers.release(pick.officer.badge, number)
            await self._record(number, Step.SUPPORT_NO_ANSWER, pick, rung,
                               outcome=outcome if outcome in NO_ANSWER_OUTCOMES else "failed")
        await self._record(number, Step.SUPPORT_UNANSWERED, pick, reason="no_answer" if rungs else "nobody_to_ring")
