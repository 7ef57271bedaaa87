"""What the store keeps about a call recording: duration, size and a SHA-256.

The digest lets an auditor show later that the file played in court is the one
written on the night of the call. Blocking file I/O: the service runs
``inspect_recording`` in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import wave
from dataclasses import dataclass

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    path: str
    duration_s: float | None  # None when the format is not one we can measure
    size_bytes: int
    sha256: str  # lowercase hex


def _wav_duration(path: str) -> float | None:
    try:
        with wave.open(path, "rb") as wav:
            rate = wav.getframerate()
            return wav.getnframes() / rate if rate else None
    except (wave.Error, EOFError):
        # Not PCM WAV (e.g. Asterisk's wav49 is GSM in a RIFF box), or truncated.
        return None


def _is_riff_wave(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file at ``path``, read in chunks; raises OSError if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_recording(path: str | os.PathLike[str]) -> RecordingInfo:
    """Measure and hash the file at ``path``; raises OSError if it cannot be read."""
    path = os.fspath(path)
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    # Sniff the header rather than trust the extension: MixMonitor names vary.
    duration = _wav_duration(path) if _is_riff_wave(path) else None
    return RecordingInfo(path=path, duration_s=duration, size_bytes=size, sha256=digest.hexdigest())
