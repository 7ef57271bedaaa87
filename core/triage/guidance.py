"""Guidance on scene: what the incident card tells the officers sent, by incident type, and the card itself.

Admins keep the guidance in ``dialplan/guidance.toml``, one table per incident type of
``core.triage.classify`` — every type, no other — with the lists ``secure`` (what to secure first),
``ask`` (what to ask the reporter and witnesses), ``legal`` (legal points) and, optionally, ``danger``.
A file with a mistake is refused whole with ``file:line: reason``; the triage desk then keeps the running
guidance, as for the other rule files, and ``jiejing rules check`` refuses it.

The card (``incident_card``) is the ticket's briefing (``core.triage.keywords.build_briefing``: place,
caller's and place's history, danger warnings) with the guidance for the ticket's type (``other`` while it
is not classified) and a short background: how many earlier tickets there are at the place and from the
caller, the last few of each, the danger warnings on record and the repeat-caller flags.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tables import Ticket
from core.calls.tickets import TicketView
from core.dispatch.planner import IncidentRow
from core.triage.classify import IncidentType, current_classification
from core.triage.keywords import HISTORY_MAX, table_line

__all__ = ["KEYS", "Guidance", "GuidanceError", "TypeGuidance", "incident_card", "load_guidance", "parse_guidance"]

REQUIRED = ("secure", "ask", "legal")
KEYS = (*REQUIRED, "danger")
LINES_MAX = 12
LINE_MAX = 200
BACKGROUND_LAST = 5  # earlier tickets named on the card; the counts cover them all
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_TYPES = {str(t): t for t in IncidentType}


class GuidanceError(ValueError):
    """A guidance file that cannot be used; ``str()`` is ``file:line: reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True, slots=True)
class TypeGuidance:
    type: IncidentType
    secure: tuple[str, ...]
    ask: tuple[str, ...]
    legal: tuple[str, ...]
    danger: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"type": str(self.type), "label": self.type.label, "secure": list(self.secure),
                "ask": list(self.ask), "legal": list(self.legal), "danger": list(self.danger)}


@dataclass(frozen=True, slots=True)
class Guidance:
    """The guidance for every incident type, as read from one file."""

    types: Mapping[IncidentType, TypeGuidance]
    path: str = "(built in)"

    def for_type(self, type: IncidentType | str | None) -> TypeGuidance:
        """The guidance for ``type``; an unclassified ticket (None) gets ``other``'s."""
        return self.types[IncidentType.OTHER if type is None else IncidentType(type)]


def parse_guidance(text: str, path: str = "guidance.toml") -> Guidance:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.search(str(exc))
        raise GuidanceError(path, int(found.group(1)) if found else 1, f"not valid TOML: {exc}") from None
    lines = text.splitlines()

    def line_of(table: str, key: str | None = None) -> int:
        return table_line(lines, table, key)

    types: dict[IncidentType, TypeGuidance] = {}
    for name, table in data.items():
        if name not in _TYPES:
            raise GuidanceError(path, line_of(name), f"[{name}]: unknown incident type (known: {', '.join(_TYPES)})")
        if not isinstance(table, dict):
            raise GuidanceError(path, line_of(name), f"{name!r} must be a table [{name}] with the lists "
                                                     f"{', '.join(KEYS)}")
        for key in table:
            if key not in KEYS:
                raise GuidanceError(path, line_of(name, key),
                                    f"[{name}] {key}: unknown key (allowed: {', '.join(KEYS)})")
        for key in REQUIRED:
            if key not in table:
                raise GuidanceError(path, line_of(name),
                                    f"[{name}] {key}: missing (required: {', '.join(REQUIRED)})")
        lists = {key: _lines(table[key], path, line_of(name, key), f"[{name}] {key}") for key in table}
        types[_TYPES[name]] = TypeGuidance(_TYPES[name], **lists)
    missing = [str(t) for t in IncidentType if t not in types]
    if missing:
        raise GuidanceError(path, 1, f"no guidance for the incident types {', '.join(missing)}: every type needs "
                                     "its table")
    return Guidance(types, path)


def _lines(value: Any, path: str, line: int, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= LINES_MAX:
        raise GuidanceError(path, line, f"{where}: must be a list of 1-{LINES_MAX} lines")
    out = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, str) or not item.strip():
            raise GuidanceError(path, line, f"{where}: line {n} must be a non-empty string")
        if len(item.strip()) > LINE_MAX:
            raise GuidanceError(path, line, f"{where}: line {n} is {len(item.strip())} characters long "
                                            f"(at most {LINE_MAX})")
        out.append(item.strip())
    return tuple(out)


def load_guidance(path: str | Path) -> Guidance:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GuidanceError(str(path), 1, f"cannot read the file: {exc}") from None
    return parse_guidance(text, str(path))


# -- the card ----------------------------------------------------------------------------------


async def incident_card(
    engine: AsyncEngine, ticket: TicketView, briefing: dict[str, Any], guidance: Guidance, flags: Mapping[str, Any]
) -> dict[str, Any]:
    """The ticket's briefing (as ``build_briefing`` made it) with its type's guidance and the background.

    ``flags`` are the ticket's repeat-caller flags (``repeat_of``, ``prank``). The briefing names at most
    ``HISTORY_MAX`` earlier tickets of each kind; the counts are read only when it named that many.
    """
    classification = current_classification(ticket)
    type = None if classification is None else classification.type
    calls = briefing["caller"]["earlier_tickets"]
    here = briefing["earlier_incidents_here"]
    location = briefing["location"]
    async with engine.connect() as conn:
        calls_count = len(calls)
        if calls_count >= HISTORY_MAX:
            calls_count = await conn.scalar(select(func.count()).select_from(Ticket).where(
                Ticket.caller_id == ticket.caller_id, Ticket.number != ticket.number))
        here_count = len(here)
        if here_count >= HISTORY_MAX and location is not None:
            # The place as build_briefing takes it: the same cell, or the same address.
            same_place = IncidentRow.cell == location["cell"]
            if location["address"]:
                same_place = or_(same_place, IncidentRow.address == location["address"])
            here_count = await conn.scalar(select(func.count()).select_from(IncidentRow).where(
                same_place, IncidentRow.number != ticket.number))
    return {
        **briefing,
        "incident_type": {"type": str(type or IncidentType.OTHER), "label": (type or IncidentType.OTHER).label,
                          "classified": type is not None},
        "priority": None if classification is None else {"value": int(classification.priority),
                                                          "label": classification.priority.label},
        "guidance": guidance.for_type(type).to_json(),
        "background": {
            "same_place": {"count": here_count,
                           "last": [_earlier(i, i["located_at"]) for i in here[:BACKGROUND_LAST]]},
            "same_caller": {"count": calls_count,
                            "last": [_earlier(t, t["created_at"]) for t in calls[:BACKGROUND_LAST]]},
            "danger_warnings": [{"kind": w["kind"], "text": w["text"]} for w in briefing["danger_warnings"]],
            "repeat_of": flags.get("repeat_of"),
            "prank": bool(flags.get("prank")),
        },
    }


def _earlier(entry: Mapping[str, Any], at: str) -> dict[str, Any]:
    type = entry.get("type")
    return {"number": entry["number"], "at": at, "type": type,
            "label": _TYPES[type].label if type in _TYPES else None}
