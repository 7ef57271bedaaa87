"""The declared major incident on the Asterisk side (``core.triage.major``).

Asterisk learns which incident new 110 callers are offered from two global
variables the backend sets over AMI (``Setvar`` without a channel):
``JIEJING_MAJOR`` (the incident's id, empty when none is declared) and
``JIEJING_MAJOR_MOH`` (the music-on-hold class they hear: the recorded
message or the generic one). They are set again after every AMI log-in, so an
Asterisk restart (which forgets globals) is followed within seconds by the
same offer. The dialplan reads them itself: a backend that is down or slow
never holds a caller, it only leaves the offer as it last set it.

A caller who pressed 1 is marked in Asterisk's log (``jiejing_major``, read by
``telephony.call_events``), and linked there to the incident's ticket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.triage.major import MajorIncident, MajorIncidents
from telephony import channel_vars
from telephony.ami.client import AMIClient

log = logging.getLogger("jiejing.major")

RETRY_S = 2.0


class MajorIncidentLine:
    """Keeps Asterisk's two globals equal to the declared incident; one task applies changes in order."""

    def __init__(self, ami: AMIClient, incidents: MajorIncidents, *, timeout: float = 5.0) -> None:
        self._ami = ami
        self._incidents = incidents
        self._timeout = timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.applied: tuple[str, str] | None = None  # what Asterisk was last told (id, class)

    def attach(self) -> None:
        self._incidents.add_listener(self._changed)
        self._ami.add_connect_hook(self._connected)

    def _changed(self, _incident: MajorIncident) -> None:
        self._wake.set()

    async def _connected(self) -> None:
        self.applied = None  # Asterisk may have restarted: its globals are gone
        self._wake.set()

    def wanted(self) -> tuple[str, str]:
        current = self._incidents.current
        return ("", "") if current is None else (str(current.id), current.moh_class)

    async def apply(self) -> None:
        wanted = self.wanted()
        for name, value in zip((channel_vars.MAJOR, channel_vars.MAJOR_MOH), wanted, strict=True):
            response = await self._ami.action("Setvar", [("Variable", name), ("Value", value)], timeout=self._timeout)
            if not response.ok:
                raise RuntimeError(f"Setvar {name} refused: {response.message}")
        self.applied = wanted
        log.info("Asterisk offers major incident %s (%s)", wanted[0] or "none", wanted[1] or "-")

    async def run(self) -> None:
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.applied == self.wanted():
                continue
            try:
                await self.apply()
            except Exception as exc:  # AMI down or refusing: the next log-in or a retry applies it
                log.warning("major incident offer not set in Asterisk (%s); trying again", exc)
                await asyncio.sleep(RETRY_S)
                self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="major-incident-line")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
