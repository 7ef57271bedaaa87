"""Call audio for the simulated phones.

SIPp's own ``g711a.pcap`` is 7 s of PCMA speech in 30 ms packets. A 110 call in
the lab lasts longer, and a call leg that goes silent makes Asterisk's
``Answer()`` wait and the recording sound broken, so we build a longer pcap:
the same speech, looped, re-packetised into 20 ms packets with continuous RTP
sequence numbers and timestamps.
"""

from __future__ import annotations

import struct
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


def write_pcap(dest: Path, seconds: float, audio: bytes | None = None) -> Path:
    """Write ``seconds`` of looped PCMA audio as 20 ms RTP packets."""
    audio = audio if audio is not None else read_alaw()
    packets = int(seconds * 1000 / 20)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    pos = 0
    for i in range(packets):
        chunk = bytearray()
        while len(chunk) < SAMPLES_PER_PACKET:
            take = audio[pos : pos + SAMPLES_PER_PACKET - len(chunk)]
            chunk += take
            pos = (pos + len(take)) % len(audio)
        rtp = struct.pack("!BBHII", 0x80, PCMA, i & 0xFFFF, (i * SAMPLES_PER_PACKET) & 0xFFFFFFFF, 0x4A4A0110)
        frame = _frame(rtp + bytes(chunk))
        usec = i * 20_000
        out += struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(out)
    tmp.replace(dest)
    return dest
