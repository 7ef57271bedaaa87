"""``jiejing journal verify``: run the journal's verification and print what it found."""

from __future__ import annotations

import asyncio
import json
from typing import TextIO

from core.config import Settings
from core.quality.config import QualitySettings
from core.quality.journal import Report, read_key, verify
from core.store import make_engine


async def _run(settings: Settings, quality: QualitySettings, *, recordings: bool) -> Report:
    key = read_key(quality.journal_key_file) if quality.journal_key_file else None
    engine = make_engine(settings.db_url)
    try:
        return await verify(
            engine,
            recordings=recordings,
            anchor_file=quality.journal_anchor_file or None,
            anchor_key=key,
            retention_days=quality.retention_days or None,
        )
    finally:
        await engine.dispose()


def verify_command(settings: Settings, *, recordings: bool, as_json: bool, out: TextIO) -> int:
    """0 when the journal is intact, 1 on any finding."""
    quality = QualitySettings.from_env()
    report = asyncio.run(_run(settings, quality, recordings=recordings))
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2), file=out)
        return 0 if report.ok else 1
    print(
        f"journal: {report.entries} entries, {report.anchors_checked} anchors checked, "
        f"{report.recordings_checked} recording files re-hashed, {report.pending} rows not yet journaled",
        file=out,
    )
    if not quality.journal_anchor_file:
        print("journal: no anchor file configured: a chain rewritten as a whole would go unnoticed, "
              "and expiry entries are checked against the retention rule only, not by signature", file=out)
    for note in report.notes:
        print(f"note: {note}", file=out)
    for finding in report.findings:
        where = f"entry {finding.seq}: " if finding.seq is not None else ""
        print(f"FOUND {finding.kind}: {where}{finding.message}", file=out)
    print("journal: intact" if report.ok else f"journal: {len(report.findings)} finding(s)", file=out)
    return 0 if report.ok else 1
