"""The triage desk: classification, routing, hand-overs, pushes, keywords, repeat callers and surges, assembled.

This is what the web API and the telephony side call. ``classify`` records
the classification, decides the routing (``core.triage.routing``), queues the
ticket push at once — the anti-fraud center can start a stop-payment while
the caller is still talking — and, when the telephony side has registered a
``HandoverPort``, conferences the desk in or transfers the call, stamping a
``handed_over`` step when that succeeded; an incident a station entered
itself is classified without routing (``entered_by_station``). ``add_note``
scans the note for major-incident keywords before writing it, alerts
supervisors, and pushes the briefing. An officer joining a ticket later gets its briefing pushed to
him when he joins (``brief_officer``), so one sent after the keyword matched
is not lost on him.

The desk owns the background parts (push worker, repeat-caller and surge
watches) and their ticket listeners: ``start`` and ``stop`` run from the
web application's cleanup context.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.alerts.board import AlertBoard
from core.calls.lifecycle import Step
from core.calls.tickets import Source, StepView, TicketService, TicketView
from core.config import DEFAULT_RULES_DIR
from core.dispatch.officers import OfficerService
from core.dispatch.planner import Incident, IncidentRow
from core.tasks import stop_task
from core.triage.callback_rules import load_callback_rules
from core.triage.classify import (
    Classification,
    IncidentType,
    Priority,
    TriageService,
    classification_history,
    current_classification,
)
from core.triage.guidance import Guidance, incident_card, load_guidance
from core.triage.keywords import DangerWarnings, KeywordSet, KeywordWatch, load_keywords
from core.triage.push import Poster, TicketPusher
from core.triage.queries import QueryIndex, ensure_indexes
from core.triage.repeat import RepeatCallers
from core.triage.routing import (
    HandoverFailed,
    HandoverPort,
    Jurisdiction,
    Mode,
    NoHandoverRule,
    RoutingDecision,
    RuleBook,
    Target,
    assess_jurisdiction,
    load_rules,
    station_desk,
)
from core.triage.surge import SurgeConfig, SurgeWatch, load_surge_config

__all__ = ["DIALPLAN", "TriageDesk", "default_files", "entered_by_station"]

log = logging.getLogger(__name__)
# Officers' briefings waiting to be built and pushed.
JOINS_MAX = 1000

DIALPLAN = DEFAULT_RULES_DIR

# ``(message, station)``; the event stream's also takes ``badge=`` to reach one officer only.
Publisher = Callable[..., object]


RULES_POLL_S = 2.0  # how often the rule files are looked at for a change


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def default_files(folder: str | Path | None = None) -> dict[str, Path]:
    """The rule files in ``folder`` (JIEJING_RULES_DIR), by default the source tree's dialplan/."""
    root = Path(folder) if folder else DIALPLAN
    return {"routing": root / "routing.toml", "keywords": root / "keywords.toml", "surge": root / "surge.toml",
            "guidance": root / "guidance.toml", "callback": root / "callback.toml"}


class TriageDesk:
    def __init__(
        self,
        tickets: TicketService,
        officers: OfficerService,
        alerts: AlertBoard,
        *,
        rules: RuleBook | None = None,
        keywords: KeywordSet | None = None,
        surge: SurgeConfig | None = None,
        guidance: Guidance | None = None,
        poster: Poster | None = None,
        files: dict[str, Path] | None = None,
        clock: Callable[[], float] = time.time,
        publish: Publisher | None = None,
        owns_alerts: bool = False,
    ) -> None:
        self.files = {**default_files(), **(files or {})}
        self.tickets = tickets
        self.officers = officers
        self.alerts = alerts
        self._owns_alerts = owns_alerts
        self._clock = clock
        self._publish_to = publish
        self.triage = TriageService(tickets, clock=clock)
        self.rules = rules if rules is not None else RuleBook(load_rules(self.files["routing"]))
        self.warnings = DangerWarnings(tickets.engine, clock=clock)
        self.watch = KeywordWatch(
            keywords if keywords is not None else load_keywords(self.files["keywords"]),
            alerts, self.warnings, tickets.engine, publish=self._publish,
        )
        self.pusher = TicketPusher(tickets.engine, poster, clock=clock)
        self.repeat = RepeatCallers(tickets, clock=clock, publish=self._publish)
        self.surge = SurgeWatch(
            tickets.engine, surge if surge is not None else load_surge_config(self.files["surge"]),
            clock=clock, publish=self._publish,
        )
        self.guidance = guidance if guidance is not None else load_guidance(self.files["guidance"])
        # The automatic call-backs' rules (core.triage.auto_callback reads them from here, as reloaded).
        self.callback_rules = load_callback_rules(self.files["callback"])
        self.index = QueryIndex(tickets.engine)
        self.port: HandoverPort | None = None
        self._removers: list[Callable[[], None]] = []
        self._joins: asyncio.Queue[tuple[str, str, bool]] = asyncio.Queue(JOINS_MAX)
        self._join_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        # The rule files as last read: sha256 of each, and the errors of the last reload (a bad file keeps the
        # running version; `jiejing rules apply` reads these back from /healthz).
        self.loaded: dict[str, str | None] = {name: _digest(path) for name, path in self.files.items()}
        self.reload_errors: dict[str, str] = {}

    # -- wiring ----------------------------------------------------------------------

    def set_publisher(self, publish: Publisher | None) -> None:
        """Where briefings, flags and surges go: the event stream's ``publish``."""
        self._publish_to = publish

    def _publish(self, message: dict[str, Any], station: str | None, badge: str | None = None) -> object:
        if self._publish_to is None:
            return None
        if badge is None:
            return self._publish_to(message, station)
        return self._publish_to(message, station, badge=badge)

    def set_handover_port(self, port: HandoverPort | None) -> None:
        """The telephony side registers how it conferences and transfers calls."""
        self.port = port

    async def start(self) -> None:
        await ensure_indexes(self.tickets.engine)
        await self.index.start()
        if self._owns_alerts:
            await self.alerts.start()
        await self.pusher.start()
        await self.repeat.start()
        await self.surge.start()
        self._join_task = asyncio.create_task(self._brief_joined(), name="briefing-on-join")
        self._watch_task = asyncio.create_task(self._watch_files(), name="rule-files")
        self._removers = [self.tickets.add_listener(self.index.on_step),
                          self.tickets.add_listener(self.repeat.on_step),
                          self.tickets.add_listener(self.surge.on_step),
                          self.tickets.add_listener(self._on_step)]

    async def stop(self) -> None:
        for remove in self._removers:
            remove()
        self._removers = []
        task, self._join_task = self._join_task, None
        await stop_task(task)
        task, self._watch_task = self._watch_task, None
        await stop_task(task)
        await self.surge.stop()
        await self.repeat.stop()
        await self.pusher.stop()
        await self.index.stop()
        if self._owns_alerts:
            await self.alerts.stop()

    async def _watch_files(self) -> None:
        """Reload when a rule file changes (``jiejing rules apply`` writes them); a bad one keeps the running one."""
        while True:
            await asyncio.sleep(RULES_POLL_S)
            try:
                now = {name: await asyncio.to_thread(_digest, path) for name, path in self.files.items()}
                if now != self.loaded:
                    changed = sorted(name for name in now if now[name] != self.loaded.get(name))
                    result = self.reload()
                    log.info("rule files changed (%s): %s", ", ".join(changed),
                             "reloaded" if result["ok"] else f"kept the running version of {sorted(result['errors'])}")
            except Exception:
                log.exception("watching the rule files failed; trying again")

    def reload(self) -> dict[str, Any]:
        """Re-read the rule files; each one that is bad keeps its running version, and its error is reported."""
        self.loaded = {name: _digest(path) for name, path in self.files.items()}
        errors: dict[str, str] = {}
        try:
            self.rules.reload(self.files["routing"])
        except ValueError as exc:
            errors["routing"] = str(exc)
        try:
            self.watch.reload(self.files["keywords"])
        except ValueError as exc:
            errors["keywords"] = str(exc)
        try:
            self.surge.config = load_surge_config(self.files["surge"])
        except ValueError as exc:
            errors["surge"] = str(exc)
            log.error("surge settings not reloaded, the running ones stay: %s", exc)
        try:
            self.guidance = load_guidance(self.files["guidance"])
        except ValueError as exc:
            errors["guidance"] = str(exc)
            log.error("guidance not reloaded, the running one stays: %s", exc)
        try:
            self.callback_rules = load_callback_rules(self.files["callback"])
        except ValueError as exc:
            errors["callback"] = str(exc)
            log.error("call-back rules not reloaded, the running ones stay: %s", exc)
        self.reload_errors = errors
        return {"ok": not errors, "errors": errors}

    def config_json(self) -> dict[str, Any]:
        return {
            "routing": self.rules.to_json(),
            "keywords": {**self.watch.keywords.to_json(), "last_error": self.watch.last_error},
            "surge": {"surges": self.surge.surges()},
            "handover_port": self.port is not None,
        }

    # -- classification and routing --------------------------------------------------

    async def incident(self, number: str) -> Incident | None:
        async with self.tickets.engine.connect() as conn:
            row = (await conn.execute(select(IncidentRow).where(IncidentRow.number == number))).first()
        if row is None:
            return None
        return Incident(row.number, row.address, row.lat, row.lon, row.cell, row.station_id, row.located_at_us)

    async def decide(
        self, ticket: TicketView, classification: Classification
    ) -> tuple[RoutingDecision | None, Jurisdiction | None]:
        incident = await self.incident(ticket.number)
        jurisdiction = None
        if any(rule.jurisdiction is not None for rule in self.rules.rules):
            jurisdiction = await assess_jurisdiction(self.officers, incident, self.rules.boundary_m)
        return self.rules.route_for(ticket, classification, incident, jurisdiction), jurisdiction

    async def classify(
        self, number: str, type: IncidentType | str, priority: Priority | int, *, by: str | None = None
    ) -> dict[str, Any]:
        """Classify, decide, push, hand over. Raises ``UnknownTicket``, ``ValueError``, ``IllegalTransition``."""
        ticket, classification = await self.triage.classify(number, type, priority, by=by)
        decision, jurisdiction = (None, None) if entered_by_station(ticket) else await self.decide(ticket, classification)
        result: dict[str, Any] = {
            "classification": classification.to_json(),
            "jurisdiction": None if jurisdiction is None else jurisdiction.to_json(),
            "decision": None if decision is None else decision.to_json(),
            "push": None,
            "handover": None,
        }
        if decision is None:
            result["ticket"] = ticket.to_json()
            return result
        if _handed_over_to(ticket, decision):
            result["handover"] = {"done": True, "already": True}
            result["ticket"] = ticket.to_json()
            return result
        if decision.push is not None:
            result["push"] = await self.push(ticket, classification, decision)
        result["handover"], ticket = await self.hand_over(ticket, decision)
        result["ticket"] = ticket.to_json()
        return result

    async def push(self, ticket: TicketView, classification: Classification, decision: RoutingDecision) -> int:
        assert decision.push is not None
        incident = await self.incident(ticket.number)
        payload = {
            "ticket": ticket.to_json(),
            "classification": classification.to_json(),
            "incident": None if incident is None else incident.to_json(),
            "routing": decision.to_json(),
            "sent_by": "jiejing",
        }
        return await self.pusher.enqueue(ticket.number, str(decision.target), decision.push, payload)

    async def hand_over(
        self, ticket: TicketView, decision: RoutingDecision
    ) -> tuple[dict[str, Any], TicketView]:
        """Have the telephony side conference or transfer, then stamp ``handed_over`` on the ticket.

        A text report has no call: its hand-over is the ticket data the rule
        pushes (enqueued by ``classify``, or here if that target has none
        yet), stamped as mode ``push`` with the push's id.
        """
        if ticket.steps and ticket.steps[0].step is Step.REPORTED:
            return await self._hand_over_report(ticket, decision)
        if self.port is None:
            return {"done": False, "error": "no telephony port registered; hand over by hand"}, ticket
        try:
            if decision.mode is Mode.CONFERENCE:
                await self.port.conference(ticket.number, decision.endpoint)
            else:
                await self.port.transfer(ticket.number, decision.endpoint)
        except HandoverFailed as exc:
            log.warning("%s: %s to %s failed: %s", ticket.number, decision.mode, decision.endpoint, exc)
            return {"done": False, "error": str(exc)}, ticket
        view = await self.record_handover(ticket.number, decision)
        return {"done": True}, view

    async def _hand_over_report(
        self, ticket: TicketView, decision: RoutingDecision
    ) -> tuple[dict[str, Any], TicketView]:
        if decision.push is None:
            return {"done": False, "by_hand": True, "error": "a text report has no call to conference or transfer "
                                                             "and this rule pushes no data: hand it over by hand"}, ticket
        if _handed_over_to(ticket, decision):
            return {"done": True, "mode": "push", "already": True}, ticket
        pushes = [p for p in await self.pusher.for_ticket(ticket.number) if p.target == str(decision.target)]
        if pushes:
            push_id = pushes[-1].id
        else:
            classification = current_classification(ticket)
            assert classification is not None  # a decision comes from a classification
            push_id = await self.push(ticket, classification, decision)
        view = await self.record_handover(ticket.number, decision, mode="push", push_id=push_id)
        return {"done": True, "mode": "push", "push_id": push_id}, view

    async def record_handover(
        self, number: str, decision: RoutingDecision, *, at: float | None = None, mode: str | None = None,
        push_id: int | None = None,
    ) -> TicketView:
        """Stamp a hand-over the telephony side carried out (also for ones it did on its own), or a data push."""
        ticket = await self.triage.ticket(number)
        if mode == "push":  # the push's id, not its address: the step is shown and pushed on to others
            detail: dict[str, Any] = {"to": str(decision.target), "mode": mode, "push_id": push_id}
        else:
            detail = {"to": str(decision.target), "mode": str(decision.mode), "endpoint": decision.endpoint,
                      "recording": "kept"}
        if decision.station is not None:
            detail["station"] = decision.station
        return await self.tickets.record_step(
            ticket.uniqueid, Step.HANDED_OVER, at=self._clock() if at is None else at, source=Source.API, **detail
        )

    async def decision_for(self, number: str, target: Target | str) -> RoutingDecision:
        """The hand-over to ``target`` the call-taker asked for by hand, from the first rule naming that target.

        The local station is the incident's: its duty desk unless the rule names one.
        """
        ticket = await self.triage.ticket(number)
        target = Target(target)
        rule = next((r for r in self.rules.rules if r.target is target), None)
        if rule is None:
            raise NoHandoverRule(f"no routing rule hands over to {target}", details={"target": str(target)})
        station = None
        endpoint = rule.endpoint
        if target is Target.LOCAL_STATION:
            incident = await self.incident(number)
            if incident is None or incident.station is None:
                raise NoHandoverRule("locate the incident first: the local station is the incident's",
                                     error_id="not-located", details={"target": str(target)})
            station = incident.station
            if endpoint is None:
                endpoint = await station_desk(self.officers, station)
        if endpoint is None:
            raise NoHandoverRule(f"no desk is known for {target}", details={"target": str(target)})
        return RoutingDecision(ticket.number, target, rule.mode, endpoint, rule.push, station,
                               f"by hand → {target}", rule.line)

    async def current_decision(self, number: str) -> RoutingDecision | None:
        ticket = await self.triage.ticket(number)
        classification = current_classification(ticket)
        if classification is None or entered_by_station(ticket):
            return None
        return (await self.decide(ticket, classification))[0]

    # -- notes, keywords, briefings ----------------------------------------------------

    async def add_note(self, number: str, text: str, *, by: str | None = None, source: str = "note") -> dict[str, Any]:
        found = self.watch.scan(text)
        ticket = await self.triage.add_note(number, text, by=by, keywords=found, source=source)
        briefing = None
        if found:
            incident = await self.incident(number)
            self.watch.alert(ticket, [*found, *([] if source == "note" else [f"({source})"])],
                             address=None if incident is None else incident.address)
            briefing = await self.watch.push_briefing(ticket)
        return {"ticket": ticket.to_json(), "keywords": found, "major_incident": bool(found), "briefing": briefing}

    async def briefing(self, number: str) -> dict[str, Any]:
        """The incident card: the briefing with the guidance for the ticket's type and its background."""
        ticket = await self.triage.ticket(number)
        flags = (await self.repeat.flags([ticket]))[ticket.number]
        card = await incident_card(self.tickets.engine, ticket, await self.watch.brief(ticket), self.guidance, flags)
        first = ticket.steps[0] if ticket.steps else None
        if first is not None and first.step is Step.REPORTED:  # a text report: the reporter's own words
            card["report_text"] = first.detail.get("text")
            card["report_channel"] = first.detail.get("channel")
            card.setdefault("attachments", [dict(a) for a in first.detail.get("attachments", ())])
        return card

    def _on_step(self, ticket: TicketView, step: StepView) -> None:
        """``TicketService`` listener: an officer who joins is queued for his briefing (built off the call path).

        An officer mobilised for a major incident always gets it (``support_joined``): he was sent to help at an
        incident he knows nothing of."""
        badge = step.detail.get("badge")
        mobilised = step.step is Step.SUPPORT_JOINED
        if (step.step is Step.OFFICER_JOINED or mobilised) and isinstance(badge, str):
            try:
                self._joins.put_nowait((ticket.number, badge, mobilised))
            except asyncio.QueueFull:
                # A briefing is a courtesy on top of the ticket the officer already has on his page.
                log.warning("%s: %d briefings waiting; officer %s gets none", ticket.number, JOINS_MAX, badge)

    def health(self) -> dict[str, Any]:
        """The background work on new tickets (repeat callers, query copies, surge counts): bounded queues."""
        parts = {"repeat": self.repeat.health(), "index": self.index.health(), "surge": self.surge.health()}
        reasons = [p["reason"] for p in parts.values() if p["reason"]]
        if self.reload_errors:
            reasons.append("rule files not loaded, the running versions stay: " + "; ".join(
                f"{name}: {error}" for name, error in sorted(self.reload_errors.items())))
        return {"ok": not reasons, "reason": "; ".join(reasons) or None, **parts,
                "briefings_waiting": self._joins.qsize(),
                "rule_files": {name: {"path": str(self.files[name]), "sha256": digest,
                                      "error": self.reload_errors.get(name)} for name, digest in self.loaded.items()}}

    async def _brief_joined(self) -> None:
        while True:
            number, badge, mobilised = await self._joins.get()
            try:
                await self.brief_officer(number, badge, always=mobilised)
            except Exception:
                log.exception("%s: the briefing for officer %s could not be pushed", number, badge)
            finally:
                self._joins.task_done()

    async def flush_joins(self) -> None:
        await self._joins.join()

    async def brief_officer(self, number: str, badge: str, *, always: bool = False) -> dict[str, Any] | None:
        """Push the ticket's briefing to the officer who just joined it, if there is one worth his attention.

        There is when a major-incident keyword matched (the station had the
        briefing then, before he was on the ticket), when a major-incident
        alert is on record, or when danger warnings touch the place or the
        caller: he is the one walking in; and ``always`` for an officer mobilised as support. Returns the
        briefing pushed, or None.
        """
        ticket = await self.tickets.get(number)
        if ticket is None:
            return None
        briefing = await self.watch.brief(ticket)
        if not (always or briefing["keywords"] or briefing["danger_warnings"]
                or await self.alerts.raised("major_incident", number)):
            return None
        briefing["pushed_to"] = badge
        try:
            self._publish(briefing, briefing["station"], badge)
        except Exception:
            log.exception("%s: the briefing for officer %s could not be published", number, badge)
        return briefing

    # -- reads for the ticket JSON ------------------------------------------------------

    async def annotate(self, tickets: Iterable[TicketView]) -> dict[str, dict[str, Any]]:
        """``{number: {"triage": …}}``: current classification, repeat link and prank flag."""
        tickets = list(tickets)
        flags = await self.repeat.flags(tickets)
        out = {}
        for ticket in tickets:
            current = current_classification(ticket)
            out[ticket.number] = {
                "classification": None if current is None else current.to_json(),
                "classifications": len(classification_history(ticket)),
                "handovers": [dict(s.detail) for s in ticket.steps if s.step is Step.HANDED_OVER],
                **flags.get(ticket.number, {"repeat_of": None, "prank": False}),
            }
        return out


def entered_by_station(ticket: TicketView) -> bool:
    """An incident a station entered itself: the routing rules hand it to nobody.

    There is no caller to conference or transfer, and the station that has it
    is where a hand-over would send it (a hand-over by hand stays possible).
    """
    return bool(ticket.steps) and ticket.steps[0].source == Source.STATION


def _handed_over_to(ticket: TicketView, decision: RoutingDecision) -> bool:
    return any(
        s.step is Step.HANDED_OVER and s.detail.get("to") == str(decision.target) for s in ticket.steps
    )
