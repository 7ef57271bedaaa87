"""Routing rules: where a classified call goes besides (or instead of) police dispatch.

Admins keep the rules in ``dialplan/routing.toml``, next to the dialplan they
belong with. Each ``[[rule]]`` names an incident ``type`` (or ``"*"`` for
any), a ``target`` (``anti_fraud``, ``hotline_12345``, ``local_station``), a
``mode`` (``conference``: the desk joins caller and call-taker; ``transfer``:
the caller is handed over and the call-taker is free), the dial ``endpoint``
and where the ticket is ``push``-ed (an http(s) URL, or ``"none"``). An
optional ``when = { jurisdiction = "unclear" }`` limits a rule to incidents
whose station is not clear. The first matching rule in file order wins, so
type-specific rules go before the catch-all ones.

A file is checked whole before it replaces the running rules: unknown keys,
bad values, a type listed twice for the same condition, or a conference or
transfer to a desk with no endpoint are refused with ``file:line: reason``,
and the rules in force stay in force.

Jurisdiction is unclear when the incident has no station (its cell is
nobody's and no assigned cell is near), or when the incident point lies
within ``boundary_m`` metres of an edge of its cell whose neighbour across
that edge belongs to another station: there two stations could each think
the other one goes. The local station — the one of the caller's location —
then takes it first.

The voice side of a hand-over is the telephony layer's: it implements
``HandoverPort``. This module only decides.
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import h3

from core.dispatch.geo import EARTH_RADIUS_M
from core.errors import DomainError
from core.triage.classify import Classification, IncidentType

if TYPE_CHECKING:
    from core.calls.tickets import TicketView
    from core.dispatch.officers import OfficerService
    from core.dispatch.planner import Incident

__all__ = [
    "HandoverFailed",
    "HandoverPort",
    "Jurisdiction",
    "Mode",
    "Rule",
    "RuleBook",
    "RuleError",
    "RoutingDecision",
    "Target",
    "assess_jurisdiction",
    "load_rules",
    "parse_rules",
]

log = logging.getLogger(__name__)

DEFAULT_BOUNDARY_M = 150.0
# Beyond about half a cell's inradius at resolution 8 the ring-1 neighbours no
# longer cover every nearby boundary; a larger setting would be silently wrong.
BOUNDARY_MAX_M = 300.0
# How far (grid rings) to look for the nearest station of a cell nobody was assigned.
NEAREST_STATION_K = 10
ENDPOINT = re.compile(r"[A-Za-z][A-Za-z0-9]*/[A-Za-z0-9_.@:+-]{1,80}")


class Target(StrEnum):
    ANTI_FRAUD = "anti_fraud"  # the city's anti-fraud center (反诈中心): stop-payment while the caller is on
    HOTLINE_12345 = "hotline_12345"  # the citizens' service hotline: non-police matters
    LOCAL_STATION = "local_station"  # the station of the caller's location, when jurisdiction is unclear


class Mode(StrEnum):
    CONFERENCE = "conference"  # the desk joins caller and call-taker; the call-taker stays
    TRANSFER = "transfer"  # the caller is handed to the desk; the call-taker is free


class RuleError(ValueError):
    """A rule file that cannot be used; ``str()`` is ``file:line: reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True, slots=True)
class Rule:
    type: IncidentType | None  # None: any type
    target: Target
    mode: Mode
    endpoint: str | None  # None for local_station: the station's duty desk
    push: str | None  # URL the ticket is POSTed to, or None
    jurisdiction: str | None  # "clear", "unclear", or None: either
    line: int

    def matches(self, classification: Classification, jurisdiction: Jurisdiction | None) -> bool:
        if self.type is not None and self.type is not classification.type:
            return False
        if self.jurisdiction is None:
            return True
        if jurisdiction is None:
            return False
        return jurisdiction.unclear == (self.jurisdiction == "unclear")

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "*" if self.type is None else str(self.type),
            "target": str(self.target),
            "mode": str(self.mode),
            "endpoint": self.endpoint,
            "push": self.push,
            "when": None if self.jurisdiction is None else {"jurisdiction": self.jurisdiction},
            "line": self.line,
        }


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    unclear: bool
    reason: str
    local_station: str | None  # the station of the caller's location (nearest one if the cell is nobody's)
    local_desk: str | None = None  # that station's duty desk endpoint

    def to_json(self) -> dict[str, Any]:
        return {"unclear": self.unclear, "reason": self.reason, "local_station": self.local_station}


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """What the telephony side should do with the call, and where the ticket goes."""

    number: str
    target: Target
    mode: Mode
    endpoint: str
    push: str | None
    station: str | None  # for local_station: which one
    reason: str
    rule_line: int

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "target": str(self.target),
            "mode": str(self.mode),
            "endpoint": self.endpoint,
            "push": self.push is not None,
            "station": self.station,
            "reason": self.reason,
            "rule_line": self.rule_line,
        }


class NoHandoverRule(DomainError):
    """A hand-over asked for by hand that no rule (or no known desk, or no location) makes possible."""

    status = 409
    error_id = "no-routing-rule"


class HandoverFailed(DomainError):
    """The desk could not be reached or the transfer was refused; the call stays with the call-taker."""

    status = 502
    error_id = "handover-failed"


class HandoverPort(Protocol):
    """The telephony side of a hand-over, keyed by ticket number.

    Both must keep the ticket's recording going: the caller's channel carries
    the MixMonitor, so a conference adds the desk to the ticket's bridge and a
    transfer moves the caller's channel, never a new leg. Each returns once
    the desk has answered (conference) or the transfer is accepted, and raises
    ``HandoverFailed`` otherwise.
    """

    async def conference(self, number: str, endpoint: str) -> None: ...

    async def transfer(self, number: str, endpoint: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    boundary_m: float
    path: str


# -- the file ------------------------------------------------------------------------------

_RULE_KEYS = frozenset({"type", "target", "mode", "endpoint", "push", "when"})
_TOP_KEYS = frozenset({"rule", "boundary_m"})
_BLOCK = re.compile(r"^[ \t]*\[\[[ \t]*rule[ \t]*\]\]", re.MULTILINE)
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def _toml_line(exc: tomllib.TOMLDecodeError, text: str) -> int:
    # tomllib puts the position in the message only: "(at line 3, column 7)" or "(at end of document)".
    found = _TOML_POSITION.search(str(exc))
    if found:
        return int(found.group(1))
    return max(1, len(text.splitlines())) if "end of document" in str(exc) else 1


def _line_of(text: str, index: int | None = None, key: str | None = None) -> int:
    """The line of the ``index``-th ``[[rule]]`` block (or of ``key`` in it, or at the top level)."""
    lines = text.splitlines()
    if index is None:
        start, end = 0, len(lines)
        first = _BLOCK.search(text)
        if first is not None:
            end = text.count("\n", 0, first.start())
    else:
        starts = [text.count("\n", 0, m.start()) for m in _BLOCK.finditer(text)]
        if index >= len(starts):
            return len(lines) or 1
        start = starts[index]
        end = starts[index + 1] if index + 1 < len(starts) else len(lines)
    if key is not None:
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*[=.]")
        for number in range(start, end):
            if pattern.match(lines[number]):
                return number + 1
    return start + 1


def _url(value: Any) -> str | None:
    if value == "none":
        return None
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.netloc:
            return value
    raise ValueError(f'push must be an http(s) URL or "none", got {value!r}')


def parse_rules(text: str, path: str = "routing.toml") -> RuleSet:
    """The rules in ``text``; ``RuleError`` naming the line and the reason for the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(path, _toml_line(exc, text), f"not valid TOML: {exc}") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise RuleError(path, _line_of(text, None, key), f"unknown key {key!r} (expected [[rule]] or boundary_m)")
    boundary = data.get("boundary_m", DEFAULT_BOUNDARY_M)
    if isinstance(boundary, bool) or not isinstance(boundary, int | float) or not 0 <= boundary <= BOUNDARY_MAX_M:
        raise RuleError(path, _line_of(text, None, "boundary_m"),
                        f"boundary_m must be a number of metres from 0 to {BOUNDARY_MAX_M:g}, got {boundary!r}")
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise RuleError(path, _line_of(text, None, "rule"), "rule must be written as [[rule]] blocks")
    rules: list[Rule] = []
    seen: dict[tuple[IncidentType | None, str | None], int] = {}
    for index, entry in enumerate(entries):

        def fail(reason: str, key: str | None = None, index: int = index) -> RuleError:
            return RuleError(path, _line_of(text, index, key), reason)

        for key in entry:
            if key not in _RULE_KEYS:
                raise fail(f"unknown key {key!r} in rule (allowed: {', '.join(sorted(_RULE_KEYS))})", key)
        for key in ("type", "target"):
            if key not in entry:
                raise fail(f"rule has no {key}")
        raw_type = entry["type"]
        if raw_type == "*":
            kind = None
        else:
            try:
                kind = IncidentType(raw_type)
            except ValueError:
                raise fail(f"unknown incident type {raw_type!r} (one of {', '.join(IncidentType)}, or \"*\")",
                           "type") from None
        try:
            target = Target(entry["target"])
        except ValueError:
            raise fail(f"unknown target {entry['target']!r} (one of {', '.join(Target)})", "target") from None
        try:
            mode = Mode(entry.get("mode", Mode.CONFERENCE))
        except ValueError:
            raise fail(f"unknown mode {entry['mode']!r} (one of {', '.join(Mode)})", "mode") from None
        endpoint = entry.get("endpoint")
        if endpoint is None:
            if target is not Target.LOCAL_STATION:
                raise fail(f"a {mode} to {target} needs an endpoint, e.g. \"PJSIP/antifraud-desk\"")
        elif not isinstance(endpoint, str) or not ENDPOINT.fullmatch(endpoint):
            raise fail(f"endpoint must be a dial string such as PJSIP/antifraud-desk, got {endpoint!r}", "endpoint")
        try:
            push = _url(entry.get("push", "none"))
        except ValueError as exc:
            raise fail(str(exc), "push") from None
        jurisdiction = None
        if "when" in entry:
            when = entry["when"]
            if not isinstance(when, dict) or set(when) != {"jurisdiction"} or when["jurisdiction"] not in (
                "clear", "unclear"
            ):
                raise fail('when must be { jurisdiction = "unclear" } or { jurisdiction = "clear" }', "when")
            jurisdiction = when["jurisdiction"]
        line = _line_of(text, index)
        if (kind, jurisdiction) in seen:
            what = "*" if kind is None else str(kind)
            cond = "" if jurisdiction is None else f" when jurisdiction is {jurisdiction}"
            raise fail(f"type {what}{cond} is already routed by the rule at line {seen[(kind, jurisdiction)]}",
                       "type")
        seen[(kind, jurisdiction)] = line
        rules.append(Rule(kind, target, mode, endpoint, push, jurisdiction, line))
    return RuleSet(tuple(rules), float(boundary), path)


def load_rules(path: str | Path) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(str(path), 1, f"cannot read the file: {exc}") from None
    return parse_rules(text, str(path))


class RuleBook:
    """The routing rules in force; a reload with a bad file changes nothing."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self._set = rules or RuleSet((), DEFAULT_BOUNDARY_M, "(none)")
        self.last_error: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> RuleBook:
        return cls(load_rules(path))

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._set.rules

    @property
    def boundary_m(self) -> float:
        return self._set.boundary_m

    @property
    def path(self) -> str:
        return self._set.path

    def reload(self, path: str | Path) -> RuleSet:
        """Replace the rules with the file's; on ``RuleError`` the running rules stay and the error is raised."""
        try:
            rules = load_rules(path)
        except RuleError as exc:
            self.last_error = str(exc)
            log.error("routing rules not reloaded, the running ones stay: %s", exc)
            raise
        self._set = rules
        self.last_error = None
        log.info("routing rules loaded from %s: %d rules", path, len(rules.rules))
        return rules

    def route_for(
        self,
        ticket: TicketView,
        classification: Classification,
        incident: Incident | None,
        jurisdiction: Jurisdiction | None = None,
    ) -> RoutingDecision | None:
        """The first rule matching the classification (and jurisdiction), as a decision; None: dispatch as usual.

        ``incident`` is accepted for rules on the location to come; the
        jurisdiction is assessed beforehand (``assess_jurisdiction``) since it
        needs the store.
        """
        for rule in self.rules:
            if not rule.matches(classification, jurisdiction):
                continue
            station = None
            endpoint = rule.endpoint
            reason = f"{classification.type} → {rule.target}"
            if rule.target is Target.LOCAL_STATION:
                station = None if jurisdiction is None else jurisdiction.local_station
                if endpoint is None:
                    endpoint = None if jurisdiction is None else jurisdiction.local_desk
                if jurisdiction is not None:
                    reason = f"jurisdiction unclear ({jurisdiction.reason}) → station {station}"
            if endpoint is None:
                log.warning("%s: rule at line %d matches but no desk is known to reach; not routed",
                            ticket.number, rule.line)
                continue
            return RoutingDecision(ticket.number, rule.target, rule.mode, endpoint, rule.push, station, reason,
                                   rule.line)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "boundary_m": self.boundary_m,
            "rules": [r.to_json() for r in self.rules],
            "last_error": self.last_error,
        }


# -- jurisdiction --------------------------------------------------------------------------


def distance_to_segment_m(lat: float, lon: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Metres from a point to the segment a-b; a local flat projection, exact enough over a few hundred metres."""
    scale_y = math.pi / 180 * EARTH_RADIUS_M
    scale_x = scale_y * math.cos(math.radians(lat))
    ax, ay = (a[1] - lon) * scale_x, (a[0] - lat) * scale_y
    bx, by = (b[1] - lon) * scale_x, (b[0] - lat) * scale_y
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return math.hypot(ax + t * dx, ay + t * dy)


async def _nearest_station(officers: OfficerService, cell: str, lat: float, lon: float) -> str | None:
    from core.dispatch.planner import incident_station

    return await incident_station(officers, cell, lat, lon, NEAREST_STATION_K)


async def station_desk(officers: OfficerService, station: str | None) -> str | None:
    """The station's duty desk endpoint, or None."""
    from core.dispatch.officers import UnknownStation

    if station is None:
        return None
    try:
        return (await officers.station(station)).duty_desk
    except UnknownStation:
        return None


async def assess_jurisdiction(
    officers: OfficerService, incident: Incident | None, boundary_m: float = DEFAULT_BOUNDARY_M
) -> Jurisdiction:
    """Whether the incident's station is clear, and the local station that takes it first if not."""
    if incident is None:
        return Jurisdiction(True, "not located yet", None)
    if incident.station is None:
        station = await _nearest_station(officers, incident.cell, incident.lat, incident.lon)
        return Jurisdiction(True, "no station answers for this cell", station, await station_desk(officers, station))
    neighbours = set(h3.grid_ring(incident.cell, 1))
    owners: Mapping[str, str] = await officers.stations_of_cells(neighbours)
    closest: tuple[float, str] | None = None
    for neighbour, station in owners.items():
        if station == incident.station:
            continue
        try:
            edge = h3.cells_to_directed_edge(incident.cell, neighbour)
        except h3.H3BaseException:  # not adjacent (pentagon distortion); nothing to measure
            continue
        a, b = h3.directed_edge_to_boundary(edge)
        distance = distance_to_segment_m(incident.lat, incident.lon, a, b)
        if distance <= boundary_m and (closest is None or distance < closest[0]):
            closest = (distance, station)
    if closest is None:
        return Jurisdiction(False, "inside the station's area", incident.station)
    reason = f"{closest[0]:.0f} m from the boundary with station {closest[1]}"
    return Jurisdiction(True, reason, incident.station, await station_desk(officers, incident.station))
