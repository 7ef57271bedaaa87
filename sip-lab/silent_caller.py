"""A silent caller's audio: A-law silence with the keys he presses (RFC 4733 events), as one RTP stream.

SIPp plays a pcap as it is (``play_pcap_audio``). A second pcap started for a
key would stop the first and restart the stream with another SSRC and
sequence, so the whole call is one file made here: 20 ms packets of PCMA
silence, with each key at its time as telephone-event packets of the same
stream (payload type 101, as the lab callers offer it), the audio paused
while a key is down, sequence numbers and timestamps continuous throughout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from siplab.audio import write_rtp_pcap

PCMA = 8
TELEPHONE_EVENT = 101
SAMPLES = 160  # 20 ms at 8 kHz
ALAW_SILENCE = b"\xd5" * SAMPLES
KEY_MS = 200  # how long each key is held
END_PACKETS = 3  # the end of an event is sent three times (RFC 4733 2.5.1.4)
VOLUME = 10  # -10 dBm0
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
SSRC = 0x51E17110


def packets(seconds: float, keys: Iterable[tuple[float, str]]) -> list[tuple[int, bytes]]:
    """(microseconds from the start, RTP packet) for ``seconds`` of silence with ``keys`` (at seconds, key)."""
    starts: dict[int, str] = {}
    for at, key in keys:
        if key not in EVENTS:
            raise ValueError(f"not a telephone key: {key!r}")
        starts[round(at * 1000 / 20)] = key
    held = KEY_MS // 20
    out: list[tuple[int, bytes]] = []
    seq, tick, ticks = 0, 0, round(seconds * 1000 / 20)
    while tick < ticks:
        key = starts.get(tick)
        if key is None:
            header = struct.pack("!BBHII", 0x80, PCMA, seq & 0xFFFF, (tick * SAMPLES) & 0xFFFFFFFF, SSRC)
            out.append((tick * 20_000, header + ALAW_SILENCE))
            seq, tick = seq + 1, tick + 1
            continue
        stamp = (tick * SAMPLES) & 0xFFFFFFFF
        for k in range(held + END_PACKETS):
            end = k >= held
            duration = min(k + 1, held) * SAMPLES
            marker = 0x80 if k == 0 else 0
            header = struct.pack("!BBHII", 0x80, marker | TELEPHONE_EVENT, seq & 0xFFFF, stamp, SSRC)
            body = struct.pack("!BBH", EVENTS[key], (0x80 if end else 0) | VOLUME, duration)
            out.append(((tick + k) * 20_000, header + body))
            seq += 1
        tick += held + END_PACKETS
    return out


def write_pcap(dest: Path, seconds: float, keys: Iterable[tuple[float, str]] = ()) -> Path:
    """The pcap SIPp plays for a caller who says nothing and presses ``keys``."""
    return write_rtp_pcap(dest, packets(seconds, keys))
