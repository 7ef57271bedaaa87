"""SIPp processes of the lab: the carrier's callers, the seats, the officers.

Scenario files in ``scenarios/`` are templates: ``@NAME@`` markers are filled
at start (SIPp reads timeouts and audio files as literal attributes, not as
per-call fields).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from . import audio
from .asterisk import pid_alive, spawn_daemon

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ASTERISK_SIP = "127.0.0.1:5060"

# Ports of the simulated parties (all on loopback; Asterisk is on 5060).
SEAT_SIP_PORT = 5070
SEAT_MEDIA_PORT = 16000
CALLER_SIP_PORT = 5080
CALLER_MEDIA_PORT = 17000
OFFICER_SIP_PORT = 5090
OFFICER_MEDIA_PORT = 18000
SILENT_SIP_PORT = 5091
SILENT_MEDIA_PORT = 19000


class SippError(RuntimeError):
    pass


def sipp_binary() -> str:
    for cand in ("/usr/bin/sipp", "/usr/local/bin/sipp"):
        if os.path.exists(cand):
            return cand
    raise SippError("sipp is missing: run sip-lab/bootstrap.sh (Debian package sip-tester)")


def render(name: str, dest_dir: Path, **values: object) -> Path:
    text = (SCENARIOS / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if leftover:
        raise SippError(f"{name}: unfilled template markers {leftover}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    dest.write_text(text)
    return dest


def audio_pcap(run_dir: Path) -> Path:
    """Ten minutes of looped speech, longer than any lab call (built once, reused)."""
    dest = run_dir / "speech-600s.pcap"
    if not dest.exists():
        audio.write_pcap(dest, 600)
    return dest


@dataclass
class Process:
    name: str
    pid_file: Path

    @property
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def stop(self) -> None:
        pid = self.pid
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.pid:
                time.sleep(0.05)
            if self.pid:
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def start_answering_phones(
    run_dir: Path, *, name: str, sip_port: int, media_port: int, ring_ms: int, talk_ms: int,
    scenario_name: str = "seat.xml",
) -> Process:
    """One SIPp UAS answering every INVITE sent to its port after ring_ms, hanging up after talk_ms.

    Already running with the same parameters: kept. Otherwise (re)started.
    """
    proc = Process(name, run_dir / f"{name}.pid")
    params = run_dir / f"{name}.params"
    values = {"RING_MS": ring_ms, "TALK_MS": talk_ms, "AUDIO": audio_pcap(run_dir)}
    template = (SCENARIOS / scenario_name).read_text()
    scenario = render(scenario_name, run_dir / name, **{k: v for k, v in values.items() if f"@{k}@" in template})
    # The scenario text itself is part of the identity: an edited scenario restarts the phones.
    wanted = f"port={sip_port} scenario={hashlib.sha256(scenario.read_bytes()).hexdigest()}"
    if proc.pid:
        if params.exists() and params.read_text() == wanted:
            return proc
        proc.stop()
    pid = spawn_daemon(
        [
            sipp_binary(), "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(sip_port),
            "-mi", "127.0.0.1", "-mp", str(media_port), "-nostdin", "-trace_err",
            "-error_file", str(run_dir / f"{name}.errors.log"),
        ],
        run_dir / f"{name}.log",
        cwd=run_dir / name,
    )
    proc.pid_file.write_text(str(pid))
    params.write_text(wanted)
    time.sleep(0.2)
    if not proc.pid:
        raise SippError(f"SIPp {name} exited at start; see {run_dir / (name + '.log')}")
    return proc
