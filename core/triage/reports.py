"""Text reports: an SMS, a 110 app or a WeChat report becomes a numbered ticket, scanned for major-incident keywords.

A report is not a call: its ticket opens with a ``reported`` step (channel,
sender, text, attachments, the keywords found) and waits in state
``reported`` until a call-taker takes it (``GET /api/tickets?status=reported&order=oldest``
lists them, the longest waiting first; ``POST /api/tickets/{n}/take``).
Everything else is the same as for a call: the ticket number, the time-stamped steps and their
journal, location (the app's position becomes a ``located`` step, so the
incident's cell and station are known at once), classification, notes,
counts in ``/api/stats``.

A keyword in the text raises the major-incident alert to supervisors as a
call-taker's note would, in the same request, and pushes the briefing to
the station. The alert does not wait for a call-taker: a report of a
kidnapping by SMS may be the only thing the victim can send.

One gateway message is one ticket: the ticket is keyed by the channel and
the message's id at its gateway (Twilio's MessageSid, the app's report id, WeChat's MsgId),
so a webhook retried after a timeout finds the ticket it made and raises no
second alert. Intake is serialised by one lock (a center receives about a
thousand text reports a day); a duplicate is answered with the existing ticket.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.calls.lifecycle import Step
from core.calls.tickets import Source, TicketService, TicketView
from core.triage.repeat import PHONE

log = logging.getLogger(__name__)

__all__ = ["CHANNELS", "REF", "ReportIntake", "TextReport", "REPORT_TEXT_MAX", "WECHAT_SENDER", "clean_text",
           "media_attachments", "parse_report"]

CHANNELS = ("app", "sms", "wechat")
REPORT_TEXT_MAX = 2000  # an app form; a long SMS is 10 parts of 70 Chinese characters
ATTACHMENTS_MAX = 10
URL_MAX = 1000
ALERT_WRITE_S = 1.0  # how long a report's answer waits for its alert to be stored (the alert bound)
ATTACHMENT_KINDS = ("photo", "video", "audio")
REF = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # a report's id at its gateway
# A WeChat user has no phone number the account can see: "wx:" and the openid the official account knows
# them by. The prefix keeps it apart from every phone number (no call-back, survey or prank-list entry
# takes it), and the desk still lists the user's earlier reports by it.
WECHAT_SENDER = re.compile(r"wx:[A-Za-z0-9_-]{1,64}")
_SENDERS = {"app": PHONE, "sms": PHONE, "wechat": WECHAT_SENDER}
# "station": an incident a station entered (core.triage.station_incidents); never a channel of /api/reports.
_SOURCES = {"app": Source.APP, "sms": Source.SMS, "wechat": Source.WECHAT, "station": Source.STATION}


@dataclass(frozen=True, slots=True)
class TextReport:
    channel: str  # "app", "sms" or "wechat"
    ref: str  # the message's id at its gateway
    sender: str  # the reporter's phone number; for WeChat wx:<openid>
    text: str
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    attachments: tuple[Mapping[str, str], ...] = field(default_factory=tuple)  # {"kind", "url"}
    extra: Mapping[str, Any] = field(default_factory=dict)  # more for the reported step (a station's entry: how, who)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_characters(value: str, name: str) -> None:
    # JSON lets a lone surrogate ("\ud800") or a NUL through; neither can be stored
    # (UTF-8, PostgreSQL text), and the ticket must not fail after it was numbered.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} holds a lone surrogate, not text") from None
    if _CONTROL.search(value):
        raise ValueError(f"{name} holds control characters")


def _check_url(url: Any, name: str) -> str:
    if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > URL_MAX:
        raise ValueError(f"{name} must be an http(s) url of at most {URL_MAX} characters")
    _check_characters(url, name)
    return url


def clean_text(value: str) -> str:
    """``value`` with what cannot be stored replaced: for an SMS, whose sender nobody can ask to resend."""
    value = value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    return _CONTROL.sub(" ", value)


def media_attachments(params: Mapping[str, str]) -> list[dict[str, str]]:
    """Twilio's ``MediaUrl0…`` / ``MediaContentType0…`` of an MMS as report attachments (unknown types: photo).

    A URL that is not one Twilio would give (http(s), printable, not too
    long) is left out on its own; the message and its other media stay.
    """
    kinds = {"image": "photo", "video": "video", "audio": "audio"}
    found = []
    for i in range(ATTACHMENTS_MAX):
        url = params.get(f"MediaUrl{i}")
        if not url:
            break
        try:
            _check_url(url, f"MMS media {i}")
        except ValueError as exc:
            log.warning("%s not kept", exc)
            continue
        kind = kinds.get(params.get(f"MediaContentType{i}", "").partition("/")[0], "photo")
        found.append({"kind": kind, "url": url})
    return found


def parse_report(body: Mapping[str, Any], *, channel: str) -> TextReport:
    """A ``TextReport`` from a JSON body already checked against its schema; ``ValueError`` names what is wrong."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    ref, sender, text = body.get("ref"), body.get("sender"), body.get("text")
    if not isinstance(ref, str) or not REF.fullmatch(ref):
        raise ValueError("ref must be the report's id at its gateway: 1-64 letters, digits or _ . : -")
    if not isinstance(sender, str) or not _SENDERS[channel].fullmatch(sender):
        if channel == "wechat":
            raise ValueError("sender must be wx: and an openid: 1-64 letters, digits, _ or -")
        raise ValueError("sender must be a phone number: 3-20 digits, optionally after +")
    if not isinstance(text, str) or not text.strip() or len(text) > REPORT_TEXT_MAX:
        raise ValueError(f"text must be a non-empty text of at most {REPORT_TEXT_MAX} characters")
    _check_characters(text, "text")
    lat, lon = body.get("lat"), body.get("lon")
    if (lat is None) != (lon is None):
        raise ValueError("give both lat and lon, or neither")
    if lat is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in (lat, lon)):
        raise ValueError("lat and lon must be finite numbers")
    address = body.get("address")
    if address is not None:
        if not isinstance(address, str):
            raise ValueError("address must be a string")
        _check_characters(address, "address")
    attachments = body.get("attachments") or []
    if not isinstance(attachments, list) or len(attachments) > ATTACHMENTS_MAX:
        raise ValueError(f"attachments must be a list of at most {ATTACHMENTS_MAX}")
    checked = []
    for item in attachments:
        if not isinstance(item, Mapping) or item.get("kind") not in ATTACHMENT_KINDS:
            raise ValueError(f"each attachment needs a kind: {', '.join(ATTACHMENT_KINDS)}")
        checked.append({"kind": item["kind"], "url": _check_url(item.get("url"), "an attachment's url")})
    return TextReport(channel, ref, sender, text, lat, lon, address, tuple(checked))


class ReportIntake:
    """Turns text reports into tickets: number, ``reported`` step, location, keyword alert and briefing.

    ``locate(number, lat=, lon=, address=)`` is the dispatch planner's (a
    position in no station's cells is located with station None:
    jurisdiction unclear); ``desk`` is the triage desk whose keyword watch
    raises the alert. Both may be None in a backend without dispatch or triage.
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

    def urgent(self, text: str) -> bool:
        """Whether ``text`` holds a major-incident keyword (an SMS survey answer that does is a report too)."""
        return self._desk is not None and bool(self._desk.watch.scan(text))

    async def receive(self, report: TextReport) -> dict[str, Any]:
        """Open (or find) the report's ticket and see its alert and location through; the answer says what was done.

        The whole of it runs under one lock (a center gets about a thousand
        text reports a day): two deliveries of one report at once make one
        ticket, one location, one alert. A report delivered again finds
        its ticket and finishes what the first delivery may have left undone
        if it failed after the ticket was stored: the alert is raised again
        (one alert per ticket: the board keeps the first), the briefing pushed
        again, and a position not yet located is located. The alert is in the
        store before the answer goes back, so an SMS's receipt, stored after
        it, never outlives a lost alert.
        """
        async with self._lock:
            return await self._receive(report)

    async def _receive(self, report: TextReport) -> dict[str, Any]:
        source = _SOURCES[report.channel]
        watch = None if self._desk is None else self._desk.watch
        ticket = await self._tickets.find_by_uniqueid(f"{report.channel}:{report.ref}")
        duplicate = ticket is not None
        if ticket is None:
            detail: dict[str, Any] = {**report.extra, "text": report.text}
            # The place as the reporter gave it stays on the step, located or not.
            detail.update({k: v for k, v in (("lat", report.lat), ("lon", report.lon),
                                             ("address", report.address)) if v is not None})
            if report.attachments:
                detail["attachments"] = [dict(a) for a in report.attachments]
            found = [] if watch is None else watch.scan(report.text)
            if found:
                detail["keywords"] = found
            ticket = await self._tickets.open_report(
                channel=report.channel, ref=report.ref, sender=report.sender, at=self._clock(), source=source,
                **detail,
            )
        else:
            log.info("text report %s:%s delivered again; ticket %s", report.channel, report.ref, ticket.number)
        found = list(ticket.steps[0].detail.get("keywords", ()))
        # The ticket is stored: from here on nothing fails the request. The alert goes first.
        if found and watch is not None:
            watch.alert(ticket, [*found, f"({report.channel} report)"], address=report.address)
            try:
                await asyncio.wait_for(self._desk.alerts.flush(), ALERT_WRITE_S)
            except Exception:
                log.exception("text report %s: the alert is not yet stored", ticket.number)
        location_error = None
        located = any(s.step is Step.LOCATED for s in ticket.steps)
        if report.lat is not None and report.lon is not None and self._locate is not None and not located:
            try:
                ticket, _ = await self._locate(ticket.number, lat=report.lat, lon=report.lon, address=report.address)
            except Exception:  # the report stands, with the position on its step; a call-taker can set it
                location_error = "the position could not be stored as the incident location; it is on the report"
                log.exception("text report %s: location not stored", ticket.number)
        if found and watch is not None:
            try:
                await watch.push_briefing(ticket)
            except Exception:
                log.exception("text report %s: briefing not pushed; GET /api/tickets/%s/briefing has it",
                              ticket.number, ticket.number)
        if not duplicate:
            log.info("text report %s:%s from %s is ticket %s%s", report.channel, report.ref, report.sender,
                     ticket.number, f" (keywords: {', '.join(found)})" if found else "")
        return self._answer(ticket, duplicate=duplicate, location_error=location_error)

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
