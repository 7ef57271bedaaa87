"""Text reports: an SMS or a 110 app report becomes a numbered ticket, scanned for major-incident keywords.

A report is not a call: its ticket opens with a ``reported`` step (channel,
sender, text, attachments, the keywords found) and waits in state
``reported`` until a call-taker takes it (``GET /api/tickets?status=reported``
lists them, oldest last; ``POST /api/tickets/{n}/take``). Everything else is
the same as for a call: the ticket number, the time-stamped steps and their
journal, location (the app's position becomes a ``located`` step, so the
incident's cell and station are known at once), classification, notes,
counts in ``/api/stats``.

A keyword in the text raises the major-incident alert to supervisors as a
call-taker's note would, in the same request, and pushes the briefing to
the station. The alert does not wait for a call-taker: a report of a
kidnapping by SMS may be the only thing the victim can send.

One gateway message is one ticket: the ticket is keyed by the channel and
the message's id at its gateway (Twilio's MessageSid, the app's report id),
so a webhook retried after a timeout finds the ticket it made and raises no
second alert. Intake is serialised by one lock (a center receives about a
thousand text reports a day); a duplicate is answered with the existing ticket.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.lifecycle import Step
from core.tickets import Source, TicketService, TicketView

log = logging.getLogger(__name__)

__all__ = ["CHANNELS", "ReportIntake", "TextReport", "REPORT_TEXT_MAX", "parse_report"]

CHANNELS = ("app", "sms")
REPORT_TEXT_MAX = 2000  # an app form; a long SMS is 10 parts of 70 Chinese characters
REF_MAX = 64
ATTACHMENTS_MAX = 10
URL_MAX = 1000
ATTACHMENT_KINDS = ("photo", "video", "audio")
_REF = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SENDER = re.compile(r"\+?[0-9]{3,20}")


@dataclass(frozen=True, slots=True)
class TextReport:
    channel: str  # "app" or "sms"
    ref: str  # the message's id at its gateway
    sender: str  # the reporter's phone number
    text: str
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    attachments: tuple[Mapping[str, str], ...] = field(default_factory=tuple)  # {"kind", "url"}


def parse_report(body: Mapping[str, Any], *, channel: str) -> TextReport:
    """A ``TextReport`` from a JSON body already checked against its schema; ``ValueError`` names what is wrong."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    ref, sender, text = body.get("ref"), body.get("sender"), body.get("text")
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise ValueError("ref must be the report's id at its gateway: 1-64 letters, digits or _ . : -")
    if not isinstance(sender, str) or not _SENDER.fullmatch(sender):
        raise ValueError("sender must be a phone number: 3-20 digits, optionally after +")
    if not isinstance(text, str) or not text.strip() or len(text) > REPORT_TEXT_MAX:
        raise ValueError(f"text must be a non-empty text of at most {REPORT_TEXT_MAX} characters")
    lat, lon = body.get("lat"), body.get("lon")
    if (lat is None) != (lon is None):
        raise ValueError("give both lat and lon, or neither")
    address = body.get("address")
    if address is not None and not isinstance(address, str):
        raise ValueError("address must be a string")
    attachments = body.get("attachments") or []
    if not isinstance(attachments, list) or len(attachments) > ATTACHMENTS_MAX:
        raise ValueError(f"attachments must be a list of at most {ATTACHMENTS_MAX}")
    checked = []
    for item in attachments:
        if not isinstance(item, Mapping) or item.get("kind") not in ATTACHMENT_KINDS:
            raise ValueError(f"each attachment needs a kind: {', '.join(ATTACHMENT_KINDS)}")
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > URL_MAX:
            raise ValueError(f"each attachment needs an http(s) url of at most {URL_MAX} characters")
        checked.append({"kind": item["kind"], "url": url})
    return TextReport(channel, ref, sender, text, lat, lon, address, tuple(checked))


class ReportIntake:
    """Turns text reports into tickets: number, ``reported`` step, location, keyword alert and briefing.

    ``locate(number, lat=, lon=, address=)`` is the dispatch planner's (a
    location outside the city's grid is refused there and the report kept
    without one); ``desk`` is the triage desk whose keyword watch raises the
    alert. Both may be None in a backend without dispatch or triage.
    """

    def __init__(
        self,
        tickets: TicketService,
        *,
        desk: Any = None,  # core.triage_desk.TriageDesk (imported lazily by its users: it imports much)
        locate: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tickets = tickets
        self._desk = desk
        self._locate = locate
        self._clock = clock
        self._lock = asyncio.Lock()

    async def receive(self, report: TextReport) -> dict[str, Any]:
        """Open (or find) the report's ticket; the answer says what was done."""
        source = Source.SMS if report.channel == "sms" else Source.APP
        watch = None if self._desk is None else self._desk.watch
        found = [] if watch is None else watch.scan(report.text)
        async with self._lock:
            known = await self._tickets.find_by_uniqueid(f"{report.channel}:{report.ref}")
            if known is not None:
                log.info("text report %s:%s delivered again; ticket %s", report.channel, report.ref, known.number)
                return self._answer(known, duplicate=True)
            detail: dict[str, Any] = {"text": report.text}
            if report.attachments:
                detail["attachments"] = [dict(a) for a in report.attachments]
            if found:
                detail["keywords"] = found
            ticket = await self._tickets.open_report(
                channel=report.channel, ref=report.ref, sender=report.sender, at=self._clock(), source=source,
                **detail,
            )
        location_error = None
        if report.lat is not None and report.lon is not None and self._locate is not None:
            try:
                ticket, _ = await self._locate(ticket.number, lat=report.lat, lon=report.lon, address=report.address)
            except ValueError as exc:  # outside the grid, a bad coordinate: the report stands without a place
                location_error = str(exc)
                log.warning("text report %s: location not used: %s", ticket.number, exc)
        if found and self._desk is not None:
            await self._desk.report_keywords(ticket, [*found, f"({report.channel} report)"], address=report.address)
        log.info("text report %s:%s from %s is ticket %s%s", report.channel, report.ref, report.sender,
                 ticket.number, f" (keywords: {', '.join(found)})" if found else "")
        return self._answer(ticket, duplicate=False, location_error=location_error)

    @staticmethod
    def _answer(ticket: TicketView, *, duplicate: bool, location_error: str | None = None) -> dict[str, Any]:
        first = ticket.steps[0]
        keywords = list(first.detail.get("keywords", ())) if first.step is Step.REPORTED else []
        located = next((s.detail for s in reversed(ticket.steps) if s.step is Step.LOCATED), None)
        return {
            "number": ticket.number,
            "state": str(ticket.state),
            "duplicate": duplicate,
            "keywords": keywords,
            "major_incident": bool(keywords),
            "station": None if located is None else located.get("station"),
            "cell": None if located is None else located.get("cell"),
            "location_error": location_error,
        }
