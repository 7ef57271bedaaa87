"""Major-incident keywords, danger warnings, and the briefing pushed to the officers sent.

Keyword lists live in ``dialplan/keywords.toml`` (admins edit them): one
table per list with ``zh`` and ``en`` words. Chinese words match anywhere in
the text (Chinese has no spaces between words); English words match whole
words, in any case, with a trailing ``*`` for any ending (``kidnap*``). Word
edges are Latin letters and digits only, so "有人杀人robbery" still finds
"robbery" though Python's ``\\b`` would see no edge between 人 and r.

Matching is one compiled regular expression, microseconds per note, done in
the request that adds the note: the supervisors' alert is queued before the
call-taker's screen gets its answer, and the alert writer stores it within
milliseconds. The briefing — where, who called before, what happened there
before, which dangers are on record for the place or the caller — is built
right after and pushed on the event stream; officers of the ticket read it at
``GET /api/tickets/{number}/briefing``.
"""

from __future__ import annotations

import logging
import re
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Boolean, Index, String, Text, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.calls.lifecycle import Step
from core.calls.tables import Ticket
from core.calls.tickets import TicketView, iso_utc
from core.dispatch.planner import IncidentRow
from core.store import TEXT_MAX, Base, _Id
from core.triage.attachments import briefing_attachments
from core.triage.classify import TriageRow, current_classification

if TYPE_CHECKING:
    from core.alerts.board import AlertBoard

__all__ = [
    "DangerWarnings",
    "KeywordError",
    "KeywordSet",
    "KeywordWatch",
    "WarningKind",
    "build_briefing",
    "load_keywords",
    "parse_keywords",
]

log = logging.getLogger(__name__)

WORD_MAX = 50
WARNING_TEXT_MAX = 1000
ADDRESS_MAX = 500
PHONE_MAX = 32
# How much history a briefing carries: enough for a radio read-out, not a report.
HISTORY_MAX = 10
_LATIN_EDGE_BEFORE = r"(?<![A-Za-z0-9])"
_LATIN_EDGE_AFTER = r"(?![A-Za-z0-9])"
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def _toml_line(exc: tomllib.TOMLDecodeError, text: str) -> int:
    # tomllib puts the position in the message only: "(at line 3, column 7)" or "(at end of document)".
    found = _TOML_POSITION.search(str(exc))
    if found:
        return int(found.group(1))
    return max(1, len(text.splitlines())) if "end of document" in str(exc) else 1


class KeywordError(ValueError):
    """A keyword file that cannot be used; ``str()`` is ``file:line: reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True)  # no slots: the compiled pattern is kept beside the fields
class KeywordSet:
    """Named lists of keywords, matched by one pattern."""

    lists: dict[str, tuple[str, ...]]
    path: str = "(built in)"

    def __post_init__(self) -> None:
        words = sorted({w for ws in self.lists.values() for w in ws}, key=len, reverse=True)
        parts = []
        for word in words:
            if _is_latin(word):
                stem = word[:-1] if word.endswith("*") else word
                tail = "[A-Za-z]*" if word.endswith("*") else ""
                parts.append(f"{_LATIN_EDGE_BEFORE}{re.escape(stem)}{tail}{_LATIN_EDGE_AFTER}")
            else:
                parts.append(re.escape(word))
        pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        object.__setattr__(self, "_pattern", pattern)
        keys: dict[str, str] = {}
        for word in words:
            keys[word.lower()] = word
        object.__setattr__(self, "_words", keys)

    def match(self, text: str) -> list[str]:
        """The keywords found in ``text`` as the list spells them, in order of first appearance, once each."""
        pattern: re.Pattern[str] | None = getattr(self, "_pattern")  # noqa: B009 - set in __post_init__
        if pattern is None or not text:
            return []
        found: list[str] = []
        for hit in pattern.finditer(text):
            word = self._word_of(hit.group(0))
            if word not in found:
                found.append(word)
        return found

    def spans(self, text: str) -> list[tuple[int, int, str, str | None]]:
        """Every hit in ``text`` as (start, end, keyword, list), in order: the same pattern ``match`` uses,
        so what a screen highlights is exactly what raises the alert."""
        pattern: re.Pattern[str] | None = getattr(self, "_pattern")  # noqa: B009 - set in __post_init__
        if pattern is None or not text:
            return []
        hits = []
        for hit in pattern.finditer(text):
            word = self._word_of(hit.group(0))
            hits.append((hit.start(), hit.end(), word, self.list_of(self._listed(word))))
        return hits

    def _listed(self, word: str) -> str:
        # A starred word's hit ("kidnapping") belongs to the list that has the stem with its star.
        if self.list_of(word) is not None:
            return word
        for words in self.lists.values():
            for listed in words:
                if listed.endswith("*") and word.lower().startswith(listed[:-1].lower()):
                    return listed
        return word

    def _word_of(self, matched: str) -> str:
        words: dict[str, str] = getattr(self, "_words")  # noqa: B009
        lowered = matched.lower()
        if lowered in words:
            return words[lowered]
        return lowered  # a starred word with its ending, as said: "kidnapping", not "kidnap*"

    def list_of(self, word: str) -> str | None:
        for name, words in self.lists.items():
            if word in words:
                return name
        return None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "lists": {name: list(words) for name, words in self.lists.items()}}


def _is_latin(word: str) -> bool:
    return all(ch.isascii() for ch in word)


def table_line(lines: list[str], table: str, key: str | None = None) -> int:
    """The 1-based line of ``[table]`` (or of ``key = …`` in it) in a rule file's lines; 1 when not found."""
    header = re.compile(rf"^\s*\[\s*\"?{re.escape(table)}\"?\s*\]")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return 1
    if key is not None:
        for i in range(start + 1, len(lines)):
            if lines[i].lstrip().startswith("["):
                break
            if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
                return i + 1
    return start + 1


def parse_keywords(text: str, path: str = "keywords.toml") -> KeywordSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeywordError(path, _toml_line(exc, text), f"not valid TOML: {exc}") from None
    lines = text.splitlines()

    def line_of(name: str, key: str | None = None) -> int:
        return table_line(lines, name, key)

    lists: dict[str, tuple[str, ...]] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise KeywordError(path, 1, f"{name!r} must be a table [{name}] with zh and en lists")
        words: list[str] = []
        for key, value in table.items():
            if key not in ("zh", "en"):
                raise KeywordError(path, line_of(name, key), f"unknown key {key!r} in [{name}] (allowed: zh, en)")
            if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
                raise KeywordError(path, line_of(name, key), f"{name}.{key} must be a list of strings")
            for word in value:
                word = word.strip()
                if not word or len(word) > WORD_MAX or word == "*":
                    raise KeywordError(path, line_of(name, key),
                                       f"{name}.{key}: keyword {word!r} must be 1-{WORD_MAX} characters")
                if key == "en" and not _is_latin(word):
                    raise KeywordError(path, line_of(name, key), f"{name}.en: {word!r} is not a Latin-script word")
                if "*" in word[:-1] or (word.endswith("*") and key != "en"):
                    raise KeywordError(path, line_of(name, key),
                                       f"{name}.{key}: {word!r}: only an English word may end in * (any ending)")
                words.append(word)
        lists[name] = tuple(dict.fromkeys(words))
    if not any(lists.values()):
        raise KeywordError(path, 1, "no keywords at all; an empty list would silence every major-incident alert")
    return KeywordSet(lists, path)


def load_keywords(path: str | Path) -> KeywordSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeywordError(str(path), 1, f"cannot read the file: {exc}") from None
    return parse_keywords(text, str(path))


# -- danger warnings -------------------------------------------------------------------------


class WarningKind(StrEnum):
    PLACE = "place"  # by cell or address: a dog, a weapons cache, a history of violence at the door
    PERSON = "person"  # by phone number: the caller or someone who uses that phone


class DangerWarningRow(Base):
    __tablename__ = "danger_warnings"
    __table_args__ = (
        Index("ix_danger_warnings_cell", "cell"),
        Index("ix_danger_warnings_address", "address"),
        Index("ix_danger_warnings_phone", "phone"),
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    cell: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(ADDRESS_MAX))
    phone: Mapped[str | None] = mapped_column(String(PHONE_MAX))
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(TEXT_MAX))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


@dataclass(frozen=True, slots=True)
class DangerWarning:
    id: int
    kind: WarningKind
    cell: str | None
    address: str | None
    phone: str | None
    text: str
    created_by: str
    created_at_us: int
    active: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": str(self.kind), "cell": self.cell, "address": self.address, "phone": self.phone,
            "text": self.text, "created_by": self.created_by, "created_at": iso_utc(self.created_at_us),
            "created_at_us": self.created_at_us, "active": self.active,
        }


def _warning(row: DangerWarningRow) -> DangerWarning:
    return DangerWarning(row.id, WarningKind(row.kind), row.cell, row.address, row.phone, row.text, row.created_by,
                         row.created_at_us, row.active)


class DangerWarnings:
    """Warnings recorded for a place or a person, read into every briefing that touches them."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock

    async def add(
        self, kind: WarningKind | str, text: str, *, by: str, cell: str | None = None, address: str | None = None,
        phone: str | None = None,
    ) -> DangerWarning:
        kind = WarningKind(kind)
        if not isinstance(text, str) or not text.strip() or len(text) > WARNING_TEXT_MAX:
            raise ValueError(f"text must be a non-empty string of at most {WARNING_TEXT_MAX} characters")
        if kind is WarningKind.PLACE and not (cell or address):
            raise ValueError("a place warning needs a cell or an address")
        if kind is WarningKind.PERSON and not phone:
            raise ValueError("a person warning needs a phone number")
        if cell is not None:
            from core.dispatch.geo import GeoError, Grid

            try:
                Grid().check_cell(cell)
            except GeoError as exc:
                raise ValueError(str(exc)) from None
        async with self._sessions() as session, session.begin():
            row = DangerWarningRow(kind=str(kind), cell=cell, address=address, phone=phone, text=text,
                                   created_by=by[:TEXT_MAX], created_at_us=round(self._clock() * 1e6), active=True)
            session.add(row)
            await session.flush()
            return _warning(row)

    async def retire(self, warning_id: int) -> DangerWarning:
        async with self._sessions() as session, session.begin():
            row = await session.get(DangerWarningRow, warning_id)
            if row is None:
                raise LookupError(f"no danger warning {warning_id}")
            row.active = False
            return _warning(row)

    async def matching(
        self, *, cell: str | None = None, address: str | None = None, phone: str | None = None, limit: int = 100
    ) -> list[DangerWarning]:
        """Active warnings for the cell, the address or the phone number (any of them)."""
        clauses = []
        if cell:
            clauses.append(DangerWarningRow.cell == cell)
        if address:
            clauses.append(DangerWarningRow.address == address)
        if phone:
            clauses.append(DangerWarningRow.phone == phone)
        query = select(DangerWarningRow).where(DangerWarningRow.active.is_(True))
        if clauses:
            query = query.where(or_(*clauses))
        async with self._sessions() as session:
            rows = await session.scalars(query.order_by(DangerWarningRow.id.desc()).limit(limit))
            return [_warning(r) for r in rows]


# -- the briefing ------------------------------------------------------------------------------


def dispatched_badges(ticket: TicketView) -> list[str]:
    """Officers who joined the ticket's conference or were rung for it (mobilised ones too), in order, once each."""
    badges: list[str] = []
    for step in ticket.steps:
        if step.step in (Step.OFFICER_JOINED, Step.OFFICER_RINGING, Step.ARRIVED, Step.SUPPORT_RINGING,
                         Step.SUPPORT_JOINED):
            badge = step.detail.get("badge")
            if isinstance(badge, str) and badge not in badges:
                badges.append(badge)
    return badges


def _keywords_of(ticket: TicketView) -> list[str]:
    found: list[str] = []
    for step in ticket.steps:
        # Found in call-takers' notes, or in a text report's own words.
        for word in step.detail.get("keywords", ()) if step.step in (Step.NOTE_ADDED, Step.REPORTED) else ():
            if word not in found:
                found.append(word)
    return found


async def build_briefing(engine: AsyncEngine, ticket: TicketView, warnings: DangerWarnings) -> dict[str, Any]:
    """What the officers should know on the way: location, the caller's history, the place's, dangers on record."""
    async with engine.connect() as conn:
        incident = (await conn.execute(select(IncidentRow).where(IncidentRow.number == ticket.number))).first()
        earlier_calls = []
        anonymous = not ticket.caller_id or not any(ch.isdigit() for ch in ticket.caller_id)
        if not anonymous:
            rows = await conn.execute(
                select(Ticket.number, Ticket.created_at_us, Ticket.state, TriageRow.type, TriageRow.priority)
                .outerjoin(TriageRow, TriageRow.number == Ticket.number)
                .where(Ticket.caller_id == ticket.caller_id, Ticket.number != ticket.number)
                .order_by(Ticket.created_at_us.desc())
                .limit(HISTORY_MAX)
            )
            earlier_calls = [
                {"number": r.number, "created_at": iso_utc(r.created_at_us), "state": r.state, "type": r.type,
                 "priority": r.priority}
                for r in rows
            ]
        earlier_incidents = []
        if incident is not None:
            same_place = IncidentRow.cell == incident.cell
            if incident.address:
                same_place = or_(same_place, IncidentRow.address == incident.address)
            rows = await conn.execute(
                select(IncidentRow.number, IncidentRow.address, IncidentRow.cell, IncidentRow.located_at_us,
                       TriageRow.type, TriageRow.priority)
                .outerjoin(TriageRow, TriageRow.number == IncidentRow.number)
                .where(and_(same_place, IncidentRow.number != ticket.number))
                .order_by(IncidentRow.located_at_us.desc())
                .limit(HISTORY_MAX)
            )
            earlier_incidents = [
                {"number": r.number, "address": r.address, "cell": r.cell, "same_address":
                 bool(incident.address) and r.address == incident.address, "located_at": iso_utc(r.located_at_us),
                 "type": r.type, "priority": r.priority}
                for r in rows
            ]
    found = await warnings.matching(
        cell=None if incident is None else incident.cell,
        address=None if incident is None else incident.address,
        phone=None if anonymous else ticket.caller_id,
    )
    classification = current_classification(ticket)
    return {
        "type": "briefing",
        "number": ticket.number,
        "station": None if incident is None else incident.station_id,
        "classification": None if classification is None else classification.to_json(),
        "keywords": _keywords_of(ticket),
        "location": None if incident is None else {
            "address": incident.address, "lat": incident.lat, "lon": incident.lon, "cell": incident.cell,
            "station": incident.station_id,
        },
        "caller": {"caller_id": ticket.caller_id, "earlier_tickets": earlier_calls},
        "earlier_incidents_here": earlier_incidents,
        "danger_warnings": [w.to_json() for w in found],
        "officers": dispatched_badges(ticket),
        "attachments": briefing_attachments(ticket),  # a text report's photos and videos, kept or linked
    }


# -- the watch ---------------------------------------------------------------------------------

Publisher = Callable[[dict[str, Any], "str | None"], object]


class KeywordWatch:
    """Scans text for major-incident keywords; a hit alerts supervisors and pushes a briefing."""

    def __init__(
        self, keywords: KeywordSet, alerts: AlertBoard, warnings: DangerWarnings, engine: AsyncEngine,
        *, publish: Publisher | None = None,
    ) -> None:
        self.keywords = keywords
        self._alerts = alerts
        self._warnings = warnings
        self._engine = engine
        self._publish = publish
        self.last_error: str | None = None

    def reload(self, path: str | Path) -> KeywordSet:
        """Replace the lists with the file's; on ``KeywordError`` the running lists stay and the error is raised."""
        try:
            keywords = load_keywords(path)
        except KeywordError as exc:
            self.last_error = str(exc)
            log.error("keywords not reloaded, the running ones stay: %s", exc)
            raise
        self.keywords = keywords
        self.last_error = None
        return keywords

    def scan(self, text: str) -> list[str]:
        return self.keywords.match(text)

    def alert(self, ticket: TicketView, found: Iterable[str], *, address: str | None = None) -> None:
        """Queue the supervisors' alert; synchronous, so nothing stands between the match and the alert."""
        words = list(found)
        where = f" at {address}" if address else ""
        self._alerts.raise_alert(
            "major_incident", ticket.number,
            f"重大警情 major incident {ticket.number}{where}: {', '.join(words)} (caller {ticket.caller_id})",
        )

    async def brief(self, ticket: TicketView) -> dict[str, Any]:
        briefing = await build_briefing(self._engine, ticket, self._warnings)
        briefing["generated_at"] = iso_utc(round(time.time() * 1_000_000))
        return briefing

    async def push_briefing(self, ticket: TicketView) -> dict[str, Any]:
        """Build the briefing and publish it on the event stream to the ticket's station and the bureaus."""
        briefing = await self.brief(ticket)
        if self._publish is not None:
            try:
                self._publish(briefing, briefing["station"])
            except Exception:
                log.exception("%s: the briefing could not be published", ticket.number)
        return briefing
