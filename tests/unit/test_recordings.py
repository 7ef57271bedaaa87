"""inspect_recording: WAV duration from the header, size and SHA-256 of any file."""

from __future__ import annotations

import hashlib
import struct
import wave
from pathlib import Path

import pytest

from core.calls import recordings
from core.calls.recordings import RecordingInfo, inspect_recording


def test_pcm_wav(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x01\x02" * 24000)  # 1.5 s
    info = inspect_recording(path)
    assert info == RecordingInfo(
        path=str(path),
        duration_s=1.5,
        size_bytes=path.stat().st_size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def test_wav49_has_no_duration_but_a_digest(tmp_path: Path) -> None:
    # Asterisk's wav49: GSM (format tag 49) in a RIFF box, which the wave module cannot read.
    fmt = struct.pack("<HHIIHH", 49, 1, 8000, 1625, 65, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 65) + bytes(65)
    path = tmp_path / "call.WAV"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    info = inspect_recording(path)
    assert info.duration_s is None
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00", b"RIFF\x24\x00\x00\x00WAVEfmt "])
def test_empty_or_truncated_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    info = inspect_recording(path)
    assert (info.duration_s, info.size_bytes) == (None, len(content))
    assert info.sha256 == hashlib.sha256(content).hexdigest()


def test_digest_is_streamed_over_many_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recordings, "_CHUNK", 7)
    data = bytes(range(256)) * 41
    path = tmp_path / "call.gsm"
    path.write_bytes(data)
    info = inspect_recording(str(path))
    assert (info.duration_s, info.size_bytes, info.sha256) == (
        None,
        len(data),
        hashlib.sha256(data).hexdigest(),
    )


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        inspect_recording(tmp_path / "nope.wav")
