"""SIPp processes of the lab: the carrier's callers, the seats, the officers.

Scenario files in ``scenarios/`` are templates: ``@NAME@`` markers are filled
at start (SIPp reads timeouts and audio files as literal attributes, not as
per-call fields).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import audio

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ASTERISK_SIP = "127.0.0.1:5060"

# Ports of the simulated parties (all on loopback; Asterisk is on 5060).
SEAT_SIP_PORT = 5070
SEAT_MEDIA_PORT = 16000
CALLER_SIP_PORT = 5080
CALLER_MEDIA_PORT = 17000
OFFICER_SIP_PORT = 5090
OFFICER_MEDIA_PORT = 18000


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


def audio_pcap(run_dir: Path, seconds: float) -> Path:
    """A looped speech pcap at least ``seconds`` long (built once, reused)."""
    seconds = max(10, int(seconds) + 5)
    dest = run_dir / f"speech-{seconds}s.pcap"
    if not dest.exists():
        audio.write_pcap(dest, seconds)
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
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        pid = self.pid
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.pid:
                time.sleep(0.05)
            if self.pid:
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def start_answering_phones(
    run_dir: Path, *, name: str, sip_port: int, media_port: int, ring_ms: int, hold_s: float = 3600
) -> Process:
    """One SIPp UAS that answers every INVITE sent to its port after ring_ms."""
    proc = Process(name, run_dir / f"{name}.pid")
    if proc.pid:
        return proc
    pcap = audio_pcap(run_dir, hold_s if hold_s < 600 else 600)
    scenario = render("seat.xml", run_dir / name, RING_MS=ring_ms, AUDIO=pcap)
    log = open(run_dir / f"{name}.log", "ab")
    p = subprocess.Popen(
        [
            sipp_binary(), "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(sip_port),
            "-mi", "127.0.0.1", "-mp", str(media_port), "-nostdin", "-trace_err",
            "-error_file", str(run_dir / f"{name}.errors.log"),
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, cwd=run_dir / name,
    )
    log.close()
    proc.pid_file.write_text(str(p.pid))
    time.sleep(0.2)
    if p.poll() is not None:
        raise SippError(f"SIPp {name} exited at start; see {run_dir / (name + '.log')}")
    return proc
