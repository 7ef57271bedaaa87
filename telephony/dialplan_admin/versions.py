"""Every applied dialplan version, kept with who applied it, when, and how it went.

A version is a folder of the configuration files as they were copied into
Asterisk's live configuration, plus ``meta.json``. Versions are numbered and
never rewritten except for their status (applied → rolled back). The store
lives outside the checkout (``JIEJING_STATE_DIR``), next to the database.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class VersionMeta:
    version: int
    created_at: float
    by: str
    status: str  # applied | rolled back | snapshot | failed
    note: str = ""
    errors: int = 0
    warnings: int = 0
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256

    def describe(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created_at))
        return (f"{self.version:4d}  {stamp}  {self.by:<12} {self.status:<12} "
                f"{self.errors} errors, {self.warnings} warnings  {self.note}")


def digest_files(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


class VersionStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, version: int) -> Path:
        return self.root / f"{version:04d}"

    def list(self) -> list[VersionMeta]:
        if not self.root.exists():
            return []
        metas = []
        for d in sorted(self.root.iterdir()):
            meta = d / "meta.json"
            if d.is_dir() and meta.exists():
                metas.append(VersionMeta(**json.loads(meta.read_text())))
        return metas

    def latest(self) -> VersionMeta | None:
        versions = self.list()
        return versions[-1] if versions else None

    def get(self, version: int) -> VersionMeta:
        meta = self._dir(version) / "meta.json"
        if not meta.exists():
            raise LookupError(f"no dialplan version {version}")
        return VersionMeta(**json.loads(meta.read_text()))

    def files(self, version: int) -> dict[str, bytes]:
        d = self._dir(version)
        return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != "meta.json"}

    def add(self, files: dict[str, bytes], *, by: str, status: str, note: str = "", errors: int = 0,
            warnings: int = 0) -> VersionMeta:
        latest = self.latest()
        meta = VersionMeta(
            version=(latest.version + 1) if latest else 1, created_at=time.time(), by=by, status=status,
            note=note, errors=errors, warnings=warnings, files=digest_files(files),
        )
        tmp = self.root / f".{meta.version:04d}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps(asdict(meta), indent=2, ensure_ascii=False))
        tmp.rename(self._dir(meta.version))
        return meta

    def set_status(self, version: int, status: str, note: str | None = None) -> None:
        meta = self.get(version)
        meta.status = status
        if note is not None:
            meta.note = note
        path = self._dir(version) / "meta.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(meta), indent=2, ensure_ascii=False))
        tmp.replace(path)
