"""Call audio for the simulated phones.

SIPp's own ``g711a.pcap`` is 7 s of PCMA speech in 30 ms packets. A 110 call in
the lab lasts longer, and a call leg that goes silent makes Asterisk's
``Answer()`` wait and the recording sound broken, so we build a longer pcap:
the same speech, looped, re-packetised into 20 ms packets with continuous RTP
sequence numbers and timestamps.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

SOURCE_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
PCMA = 8
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz, one byte per A-law sample


def read_alaw(path: Path = SOURCE_PCAP) -> bytes:
    """Concatenate the PCMA payloads of an Ethernet/IPv4/UDP/RTP pcap."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic != 0xA1B2C3D4:
        raise ValueError(f"{path}: not a little-endian classic pcap file")
    link = struct.unpack("<I", data[20:24])[0]
    if link != 1:
        raise ValueError(f"{path}: link type {link}, expected Ethernet")
    off, audio = 24, bytearray()
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8 : off + 12])[0]
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ihl = (frame[14] & 0x0F) * 4
        udp = frame[14 + ihl :]
        rtp = udp[8:]
        if len(rtp) > 12 and (rtp[1] & 0x7F) == PCMA:
            csrc = (rtp[0] & 0x0F) * 4
            audio += rtp[12 + csrc :]
    if not audio:
        raise ValueError(f"{path}: no PCMA packets found")
    return bytes(audio)


def _frame(payload: bytes) -> bytes:
    src, dst = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    udp_len = 8 + len(payload)
    udp = struct.pack("!HHHH", 6000, 6002, udp_len, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    return b"\x00" * 12 + b"\x08\x00" + ip + udp


def write_rtp_pcap(dest: Path, packets: Iterable[tuple[int, bytes]]) -> Path:
    """A pcap of RTP packets, each ``(microseconds from the start, packet)``, over loopback UDP; written atomically."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for usec, rtp in packets:
        frame = _frame(rtp)
        out += struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(out)
    tmp.replace(dest)
    return dest


def write_pcap(dest: Path, seconds: float, audio: bytes | None = None) -> Path:
    """Write ``seconds`` of looped PCMA audio as 20 ms RTP packets."""
    audio = audio if audio is not None else read_alaw()
    packets = []
    pos = 0
    for i in range(int(seconds * 1000 / 20)):
        chunk = bytearray()
        while len(chunk) < SAMPLES_PER_PACKET:
            take = audio[pos : pos + SAMPLES_PER_PACKET - len(chunk)]
            chunk += take
            pos = (pos + len(take)) % len(audio)
        rtp = struct.pack("!BBHII", 0x80, PCMA, i & 0xFFFF, (i * SAMPLES_PER_PACKET) & 0xFFFFFFFF, 0x4A4A0110)
        packets.append((i * 20_000, rtp + bytes(chunk)))
    return write_rtp_pcap(dest, packets)


# -- a browser seat's voice and how to find it in a recording --------------------------------------


def write_tone_wav(dest: Path, freq_hz: float, seconds: float = 2.0, rate: int = 48_000,
                   amplitude: float = 0.5) -> Path:
    """A mono 16-bit WAV of one steady tone: Chromium's fake microphone plays it in a loop
    (``--use-file-for-fake-audio-capture``), so a browser seat's voice is a tone no caller makes."""
    import math
    import wave

    samples = int(seconds * rate)
    # A whole number of periods per loop, so the loop has no click.
    freq_hz = round(freq_hz * seconds) / seconds
    pcm = struct.pack(f"<{samples}h", *(int(amplitude * 32767 * math.sin(2 * math.pi * freq_hz * i / rate))
                                         for i in range(samples)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(dest), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return dest


def read_wav(path: Path) -> tuple[list[int], int]:
    """Samples and rate of a mono 16-bit WAV (what MixMonitor writes)."""
    import wave

    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        rate, data = wav.getframerate(), wav.readframes(wav.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data)), rate


def tone_frames(samples: list[int], rate: int, freq_hz: float, frame_s: float = 0.1) -> list[tuple[float, float]]:
    """Per frame of ``frame_s``: (RMS of the tone at ``freq_hz``, RMS of everything else), by Goertzel.

    A steady tone of amplitude A over N samples gives |X(f)|² = (N·A/2)², i.e. an
    energy of 2·|X|²/N; the rest of the frame's energy is the other voice.
    """
    import math

    n = int(rate * frame_s)
    coeff = 2 * math.cos(2 * math.pi * freq_hz / rate)
    out = []
    for start in range(0, len(samples) - n + 1, n):
        frame = samples[start:start + n]
        s1 = s2 = 0.0
        for x in frame:
            s1, s2 = x + coeff * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        total = sum(x * x for x in frame)
        tone = min(2 * power / n, total)
        out.append((math.sqrt(tone / n), math.sqrt((total - tone) / n)))
    return out
