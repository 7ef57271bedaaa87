"""A frozen backend never holds a caller: Asterisk bounds the intake request itself.

A backend stopped with ``kill -STOP`` (or with its event loop blocked) still has its intake port
open: the kernel completes the TCP handshake, Asterisk sends the request, and no answer comes. Here a
listener that accepts and reads but never answers stands for it (the same thing seen from Asterisk).
The caller must still be queued within the dialplan's bound and reach a seat, measured with
Asterisk's own AMI time stamps, and the recording is named after the uniqueid (the fallback branch).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from core.config import Settings
from siplab.drill_frozen_intake import FrozenIntake
from telephony.ami.client import AMIClient
from tests.integration.conftest import default_phones, recording_path

pytestmark = pytest.mark.lab

INTAKE_BOUND_S = 1.5  # the dialplan's JIEJING_INTAKE_BOUND_S


async def test_a_caller_is_queued_within_the_bound_while_the_backend_is_frozen(lab_paths, calls) -> None:
    default_phones(lab_paths)
    settings = Settings()
    frozen = FrozenIntake()
    await frozen.start(settings.intake_host, settings.intake_port)
    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    events = ami.subscribe()
    await ami.start()
    try:
        await ami.wait_connected(10)
        number = f"136{random.randrange(10**8):08d}"
        stats = await calls.place([(number, "Frozen")], talk_s=3, patience_s=15)
        assert stats.get("SuccessfulCall(C)") == "1", stats
        await asyncio.sleep(0.5)
    finally:
        await ami.stop()
        await frozen.close()
    seen: dict[str, float] = {}
    uniqueid = None
    while not events.empty():
        event = events.get_nowait()
        if event.name == "Newchannel" and event.get("CallerIDNum") == number and uniqueid is None:
            uniqueid = event.get("Uniqueid")
            seen["arrived"] = event.timestamp
        elif uniqueid and event.get("Uniqueid") == uniqueid and event.name in ("QueueCallerJoin", "AgentConnect",
                                                                              "Hangup"):
            seen.setdefault(event.name, event.timestamp)
    assert frozen.held, "Asterisk never reached the frozen intake"
    assert {"arrived", "QueueCallerJoin", "AgentConnect", "Hangup"} <= set(seen), seen
    queued_after = seen["QueueCallerJoin"] - seen["arrived"]
    # the bound, plus Asterisk's own few milliseconds to answer and start the recording
    assert INTAKE_BOUND_S - 0.1 <= queued_after <= INTAKE_BOUND_S + 0.3, f"queued {queued_after:.3f} s after arriving"
    # the lab's seats ring 1 s before answering
    assert seen["AgentConnect"] - seen["QueueCallerJoin"] <= 1.5, seen
    # the fallback branch: the recording is named after the caller's uniqueid alone
    assert uniqueid is not None and recording_path(lab_paths, uniqueid).exists()
