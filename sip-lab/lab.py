"""`jiejing lab up|down|status`: the whole lab as one thing.

Up means: Asterisk 22 running in the sid chroot with the project's dialplan,
one SIPp process answering for all call-taker seats, one for the officers'
phones (idle until dispatch exists). Down means nothing of it is left running
or mounted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import asterisk, sipp

OFFICER_TALK_MS = 24 * 3600 * 1000


@dataclass
class LabSettings:
    seats: int = 100
    seat_ring_ms: int = 1000
    seat_talk_ms: int = 8000
    officer_ring_ms: int = 3000

    def validate(self) -> None:
        if not 1 <= self.seats <= 999:
            raise asterisk.LabError(f"--seats must be 1..999, not {self.seats}")
        if not 0 <= self.seat_ring_ms <= 60_000 or not 0 <= self.officer_ring_ms <= 60_000:
            raise asterisk.LabError("ring delays must be 0..60000 ms")
        if not 100 <= self.seat_talk_ms <= 3_600_000:
            raise asterisk.LabError("seat talk time must be 100..3600000 ms")


def _state_file(paths: asterisk.LabPaths) -> Path:
    return paths.run / "lab.json"


def running_settings(paths: asterisk.LabPaths) -> LabSettings | None:
    try:
        return LabSettings(**json.loads(_state_file(paths).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def processes(paths: asterisk.LabPaths) -> dict[str, sipp.Process]:
    return {name: sipp.Process(name, paths.run / f"{name}.pid") for name in ("seats", "officers", "silent")}


def up(settings: LabSettings, paths: asterisk.LabPaths | None = None, *, log=print) -> asterisk.LabPaths:
    settings.validate()
    paths = paths or asterisk.LabPaths()
    current = running_settings(paths)
    if asterisk.asterisk_pid(paths) and current and current.seats != settings.seats:
        log(f"lab: running with {current.seats} seats; restarting with {settings.seats}")
        down(paths, log=log)
    paths.run.mkdir(parents=True, exist_ok=True)
    asterisk.start(paths, asterisk.LabConfig(seats=settings.seats), seat_sip_port=sipp.SEAT_SIP_PORT, log=log)
    sipp.start_answering_phones(
        paths.run, name="seats", sip_port=sipp.SEAT_SIP_PORT, media_port=sipp.SEAT_MEDIA_PORT,
        ring_ms=settings.seat_ring_ms, talk_ms=settings.seat_talk_ms,
    )
    sipp.start_answering_phones(
        paths.run, name="officers", sip_port=sipp.OFFICER_SIP_PORT, media_port=sipp.OFFICER_MEDIA_PORT,
        # officers stay in the conference until Asterisk ends it
        ring_ms=settings.officer_ring_ms, talk_ms=OFFICER_TALK_MS,
    )
    sipp.start_answering_phones(
        paths.run, name="silent", sip_port=sipp.SILENT_SIP_PORT, media_port=sipp.SILENT_MEDIA_PORT,
        ring_ms=0, talk_ms=0, scenario_name="silent.xml",
    )
    _state_file(paths).write_text(json.dumps(asdict(settings)))
    log(f"lab: up — {settings.seats} seats ringing {settings.seat_ring_ms} ms, "
        f"talking {settings.seat_talk_ms} ms; "
        f"recordings in {paths.recordings}")
    return paths


def down(paths: asterisk.LabPaths | None = None, *, log=print) -> None:
    paths = paths or asterisk.LabPaths()
    for proc in processes(paths).values():
        proc.stop()
    asterisk.stop(paths, log=log)
    _state_file(paths).unlink(missing_ok=True)
    log("lab: down")


def status(paths: asterisk.LabPaths | None = None) -> dict:
    paths = paths or asterisk.LabPaths()
    pid = asterisk.asterisk_pid(paths)
    info: dict = {
        "chroot": str(paths.root),
        "provisioned": (paths.root / asterisk.READY_MARK).exists(),
        "asterisk_version": asterisk.asterisk_version(paths),
        "asterisk_pid": pid,
        "ami_port_open": asterisk.port_open(5038),
        "settings": asdict(s) if (s := running_settings(paths)) else None,
        "sipp": {name: proc.pid for name, proc in processes(paths).items()},
        "recordings": str(paths.recordings),
    }
    if pid:
        info["active_channels"] = asterisk.rx(paths, "core show channels count").strip().splitlines()
    return info
